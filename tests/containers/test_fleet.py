"""The fleet across hosts: three engines and `nereid gateway`, each its own container (its
own IP, its own network stack) on a dedicated Docker network, the way they would sit on
separate machines. The engines share the network alias `engines`, so Docker's DNS answers
that name with every engine's IP, as a Kubernetes headless Service does; the gateway
discovers them with --backend-dns engines:8001 and clients reach it on 127.0.0.1.

Each test runs a bounded load (gRPC and REST, stock tritonclient, every answer checked) and
breaks something: an engine SIGKILLed, one cut off the network and let back, one frozen
(`docker pause`) and thawed, a fourth one joining and leaving, every engine restarted in
turn. None may cost a client a failed request. After each test the fleet is put back to
three engines in rotation. Figures (seconds, requests, failures, retries) are printed at
the end of the module (and written to $NEREID_FLEET_FIGURES when set); docs/DEPLOY.md
quotes them.
"""

import concurrent.futures
import json
import os
import queue
import random
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from conftest import docker, metric_samples, metric_value, wait_for

ALIAS = "engines"
GRPC_PORT = 8001
# The gateway's flags at their documented defaults, spelled out: the figures below are
# for these.
DISCOVERY_MS, HEALTH_MS, EJECT_AFTER, RETRIES = 2000, 1000, 3, 2
ENGINE_EXIT_TIMEOUT = 10
# Bounds the tests hold the gateway to (measured figures are well under them, see
# docs/DEPLOY.md); generous because two cores run five processes and the load here.
EJECT_WITHIN_S = 8
READMIT_WITHIN_S = 10
JOIN_WITHIN_S = 15
# No request through the gateway may take longer, whatever broke (calls stuck on a dead
# connection wait for HTTP/2 keepalive, about 3 s, before they move).
SLOWEST_S = 8

FIGURES = {}
pytestmark = pytest.mark.timeout(240)


def seconds_until(predicate, timeout, what, interval=0.1):
    """Seconds until predicate() is true (polled every `interval`), or fails naming `what`."""
    began = time.time()
    last = None
    while time.time() - began < timeout:
        last = predicate()
        if last:
            return round(time.time() - began, 2)
        time.sleep(interval)
    raise AssertionError("timed out after %ss waiting for %s (last: %r)" % (timeout, what, last))


def http_status(url, data=None):
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError as e:
        return None, repr(e).encode()


class Fleet:
    """Engines and one gateway on their own network; every container made is removed."""

    def __init__(self, image):
        self.image = image
        self.prefix = "nereid-fleet-%s" % uuid.uuid4().hex[:8]
        self.network = self.prefix
        self.containers = []
        self.engines = []
        self.gateway = self.prefix + "-gateway"

    def create_network(self):
        # A subnet of our own so a disconnected engine can come back on the same IP
        # (`docker network connect --ip` needs a user-configured subnet): the gateway
        # then sees the same backend address readmitted, not a new one.
        for _ in range(10):
            subnet = "10.%d.%d.0/24" % (random.randint(200, 254), random.randint(0, 255))
            if docker("network", "create", "--subnet", subnet, self.network, check=False).returncode == 0:
                return
        docker("network", "create", self.network)

    def start_engine(self, n):
        name = "%s-engine-%d" % (self.prefix, n)
        self.containers.append(name)
        docker("run", "-d", "--name", name, "--network", self.network, "--network-alias", ALIAS,
               "--health-interval", "1s", self.image,
               "--demo-models", "builtin", "--exit-timeout-secs", str(ENGINE_EXIT_TIMEOUT))
        return name

    def start_gateway(self):
        self.containers.append(self.gateway)
        docker("run", "-d", "--name", self.gateway, "--network", self.network, "--health-interval", "1s",
               "-p", "127.0.0.1::8000", "-p", "127.0.0.1::8001", "-p", "127.0.0.1::8002",
               "--entrypoint", "nereid", self.image, "gateway",
               "--backend-dns", "%s:%d" % (ALIAS, GRPC_PORT),
               "--discovery-interval-ms", str(DISCOVERY_MS), "--health-interval-ms", str(HEALTH_MS),
               "--eject-after", str(EJECT_AFTER), "--retries", str(RETRIES), "--exit-timeout-secs", "5")
        self.http = self.published(8000)
        self.grpc = self.published(8001)
        self.metrics_url = "http://%s/metrics" % self.published(8002)

    def published(self, port):
        return docker("port", self.gateway, "%d/tcp" % port).stdout.split()[0]

    def remove(self):
        for name in reversed(self.containers):
            docker("rm", "-f", "-v", name, check=False)
        docker("network", "rm", self.network, check=False)

    def ip(self, name):
        networks = json.loads(docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", name).stdout)
        return networks[self.network]["IPAddress"] if self.network in networks else None

    def backend(self, name):
        """The gateway's `backend` label for an engine: its IP and gRPC port."""
        return "%s:%d" % (self.ip(name), GRPC_PORT)

    def engine_ready(self, name):
        # Asked inside the container: works whatever network the engine is on.
        result = docker("exec", name, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                        "http://127.0.0.1:8000/v2/health/ready", check=False)
        return result.stdout.strip() == "200"

    def served(self, name):
        """The engine's own count of successful `simple` inferences."""
        out = docker("exec", name, "curl", "-sf", "http://127.0.0.1:8000/v2/models/simple/stats").stdout
        return json.loads(out)["model_stats"][0]["inference_stats"]["success"]["count"]

    def samples(self):
        with urllib.request.urlopen(self.metrics_url, timeout=5) as r:
            return metric_samples(r.read().decode())

    def gauge(self, name, **labels):
        return metric_value(self.samples(), name, **labels)

    def healthy(self, backend):
        """1 or 0 from nereid_gateway_backend_healthy, None when the gateway does not list it."""
        return self.gauge("nereid_gateway_backend_healthy", backend=backend)

    def counter_sum(self, name, **labels):
        return sum(v for n, l, v in self.samples() if n == name and labels.items() <= l.items())

    def all_in_rotation(self):
        """True when every engine is listed healthy under its current address and nothing
        else is healthy (an address an engine had before a restart may still be listed,
        ejected, until discovery drops it); else what the gateway lists."""
        want = {self.backend(e) for e in self.engines}
        listed = {l["backend"]: v for n, l, v in self.samples() if n == "nereid_gateway_backend_healthy"}
        return {b for b, v in listed.items() if v == 1} == want or listed

    def wait_in_rotation(self, timeout=60):
        for name in self.engines:
            wait_for(lambda: self.engine_ready(name), timeout, "%s ready" % name)
        wait_for(lambda: self.all_in_rotation() is True, timeout, "the gateway to list every engine healthy")

    def heal(self):
        """Undoes what a test did to the engines (also when it failed half-way), so the
        next test starts from three engines in rotation."""
        for name in self.containers:
            if name not in self.engines and name != self.gateway:
                docker("rm", "-f", "-v", name, check=False)
        for name in self.engines:
            state = json.loads(docker("inspect", "-f", "{{json .State}}", name).stdout)
            if state["Paused"]:
                docker("unpause", name)
            if not state["Running"]:
                docker("start", name)
            if self.ip(name) is None:
                docker("network", "connect", "--alias", ALIAS, self.network, name)
        self.wait_in_rotation()

    def logs(self, name):
        result = docker("logs", name, check=False)
        return result.stdout + result.stderr


def add_sub(module, client, a, b, **kwargs):
    inputs = [module.InferInput("INPUT0", list(a.shape), "INT32"), module.InferInput("INPUT1", list(b.shape), "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    result = client.infer("simple", inputs, **kwargs)
    if not (np.array_equal(result.as_numpy("OUTPUT0"), a + b) and np.array_equal(result.as_numpy("OUTPUT1"), a - b)):
        raise AssertionError("wrong answer: %r %r" % (result.as_numpy("OUTPUT0"), result.as_numpy("OUTPUT1")))


def outcomes(fleet, backend):
    """The gateway's request count on one backend by outcome, since it started."""
    return {l["outcome"]: v for n, l, v in fleet.samples()
            if n == "nereid_gateway_requests_total" and l.get("backend") == backend}


def client_for(fleet, protocol):
    if protocol == "grpc":
        return grpcclient, grpcclient.InferenceServerClient(fleet.grpc), {"client_timeout": 30}
    return httpclient, httpclient.InferenceServerClient(fleet.http, connection_timeout=5, network_timeout=30), {}


class Load:
    """Threads sending `simple` requests (random operands, both outputs checked) through the
    gateway, half over gRPC and half over REST, until the block ends. A failure is any
    exception or wrong answer; it is kept with its time and message."""

    def __init__(self, fleet, threads_per_protocol=2, pause=0.01):
        self.fleet, self.pause = fleet, pause
        self.protocols = ["grpc", "http"] * threads_per_protocol
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures = []
        self.latencies = []

    def worker(self, protocol):
        module, client, kwargs = client_for(self.fleet, protocol)
        rng = np.random.default_rng()
        while not self.stop.is_set():
            a = rng.integers(-10_000, 10_000, (1, 16), dtype=np.int32)
            b = rng.integers(-10_000, 10_000, (1, 16), dtype=np.int32)
            began = time.time()
            try:
                add_sub(module, client, a, b, **kwargs)
                with self.lock:
                    self.ok += 1
                    self.latencies.append(time.time() - began)
            except Exception as e:  # every kind of failure counts
                with self.lock:
                    self.failures.append((round(began - self.started, 2), protocol, str(e)[:300]))
            time.sleep(self.pause)

    def __enter__(self):
        self.started = time.time()
        self.threads = [threading.Thread(target=self.worker, args=(p,), daemon=True) for p in self.protocols]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=40)
        self.seconds = time.time() - self.started
        assert not any(t.is_alive() for t in self.threads), "a load thread hung past its 30 s timeout"

    def check(self):
        """No failed request, and none waited anywhere near its timeout."""
        assert not self.failures, self.failures[:10]
        assert self.ok > 100, self.figures()
        assert max(self.latencies) < SLOWEST_S, self.figures()

    def figures(self):
        latencies = sorted(self.latencies) or [0]
        return {"requests": self.ok + len(self.failures), "failed": len(self.failures),
                "seconds": round(self.seconds, 1), "rps": round((self.ok + len(self.failures)) / self.seconds),
                "p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
                "max_ms": round(1000 * latencies[-1], 1)}


@pytest.fixture(scope="module")
def fleet(cpu_image, request):
    fleet = Fleet(cpu_image)
    try:
        fleet.create_network()
        fleet.engines = [fleet.start_engine(n) for n in (1, 2, 3)]
        fleet.start_gateway()
        began = time.time()
        wait_for(lambda: http_status("http://%s/v2/health/ready" % fleet.http)[0] == 200, 60,
                 "the gateway to be ready")
        fleet.wait_in_rotation()
        FIGURES["fleet_ready_s"] = round(time.time() - began, 1)
        yield fleet
    finally:
        logs = tempfile.mkdtemp(prefix=fleet.prefix + "-logs-")
        for name in fleet.containers:
            with open(os.path.join(logs, name + ".log"), "w") as f:
                f.write(fleet.logs(name))
        fleet.remove()
        say = request.config.pluginmanager.getplugin("terminalreporter")
        text = "fleet figures: %s\nfleet container logs: %s" % (json.dumps(FIGURES, indent=1), logs)
        say.write_line(text) if say else print(text)
        if os.environ.get("NEREID_FLEET_FIGURES"):
            with open(os.environ["NEREID_FLEET_FIGURES"], "w") as f:
                json.dump(FIGURES, f, indent=1)


@pytest.fixture(autouse=True)
def healed(fleet):
    yield
    fleet.heal()


def test_the_gateway_shares_load_and_answers_like_an_engine(fleet):
    http = httpclient.InferenceServerClient(fleet.http)
    grpc = grpcclient.InferenceServerClient(fleet.grpc)
    assert http.is_server_live() and http.is_server_ready()
    assert grpc.is_server_live() and grpc.is_server_ready() and grpc.is_model_ready("simple")
    assert {i["name"] for i in grpc.get_model_metadata("simple", as_json=True)["inputs"]} == {"INPUT0", "INPUT1"}
    # A model nobody serves: the gateway answers as an engine does.
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "INT32", "data": [1]}]}).encode()
    for path, data in (("/v2/models/nobody/ready", None), ("/v2/models/nobody/infer", body)):
        at_gateway = http_status("http://%s%s" % (fleet.http, path), data)[0]
        args = ["-X", "POST", "-H", "Content-Type: application/json", "--data-binary", body.decode()] if data else []
        at_engine = int(docker("exec", fleet.engines[0], "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                               *args, "http://127.0.0.1:8000" + path).stdout)
        assert at_gateway == at_engine and at_engine in (400, 404), (path, at_gateway, at_engine)

    n = 300
    before = {e: fleet.served(e) for e in fleet.engines}
    ok_before = {e: fleet.counter_sum("nereid_gateway_requests_total", backend=fleet.backend(e), outcome="ok")
                 for e in fleet.engines}
    local = threading.local()

    def one(i):
        protocol = "grpc" if i % 2 else "http"
        if not hasattr(local, protocol):
            setattr(local, protocol, client_for(fleet, protocol))
        module, client, kwargs = getattr(local, protocol)
        a = np.full((1, 16), i, dtype=np.int32)
        b = np.arange(16, dtype=np.int32).reshape(1, 16)
        add_sub(module, client, a, b, **kwargs)

    began = time.time()
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        list(pool.map(one, range(n)))  # raises the first failure, if any
    seconds = time.time() - began
    served = {e: fleet.served(e) - before[e] for e in fleet.engines}
    counted = {e: fleet.counter_sum("nereid_gateway_requests_total", backend=fleet.backend(e), outcome="ok")
               - ok_before[e] for e in fleet.engines}
    FIGURES["shared"] = {"requests": n, "seconds": round(seconds, 1), "rps": round(n / seconds),
                         "per_engine": sorted(served.values())}
    assert sum(served.values()) == n, served
    assert all(count >= 0.15 * n for count in served.values()), served
    # The gateway's per-backend counter agrees with what each engine served.
    assert counted == served, (counted, served)


def test_sigkill_of_an_engine_under_load_loses_no_request(fleet):
    victim = fleet.engines[1]
    backend = fleet.backend(victim)
    retries = fleet.counter_sum("nereid_gateway_retries_total")
    ejections = fleet.counter_sum("nereid_gateway_ejections_total", backend=backend)
    with Load(fleet) as load:
        time.sleep(2)
        docker("kill", victim)
        out_after = seconds_until(lambda: fleet.healthy(backend) != 1, 30, "the killed engine out of rotation")
        time.sleep(3)
    ejected = fleet.counter_sum("nereid_gateway_ejections_total", backend=backend) > ejections
    FIGURES["sigkill"] = {**load.figures(), "out_of_rotation_s": out_after, "ejected": ejected,
                          "retries": fleet.counter_sum("nereid_gateway_retries_total") - retries,
                          "outcomes_on_it": outcomes(fleet, backend)}
    load.check()
    assert out_after < EJECT_WITHIN_S


def test_a_call_in_flight_on_a_sigkilled_engine_is_answered_by_another(fleet):
    # The same, made certain: one streamed repeat_int32 call whose only response is due in
    # 2 s, and the engine holding it (the one the gateway counts it in flight on) is
    # SIGKILLed before then. Nothing had reached the client, so the gateway must send it
    # to another engine: the client only sees a slower answer.
    client = grpcclient.InferenceServerClient(fleet.grpc)
    answers = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        inputs = [grpcclient.InferInput("IN", [1], "INT32"), grpcclient.InferInput("DELAY", [1], "UINT32")]
        inputs[0].set_data_from_numpy(np.array([42], dtype=np.int32))
        inputs[1].set_data_from_numpy(np.array([2_000_000], dtype=np.uint32))
        engines = {fleet.backend(e): e for e in fleet.engines}
        retries = fleet.counter_sum("nereid_gateway_retries_total")
        began = time.time()
        client.async_stream_infer("repeat_int32", inputs, request_id="in-flight")

        def holder():
            busy = [l["backend"] for n, l, v in fleet.samples() if n == "nereid_gateway_backend_inflight" and v > 0]
            return busy[0] if len(busy) == 1 else None

        backend = wait_for(holder, 1.5, "the call in flight on one engine", interval=0.05)
        docker("kill", engines[backend])
        killed_at = time.time() - began
        result, error = answers.get(timeout=15)
        answered = time.time() - began
    finally:
        client.stop_stream()
    FIGURES["in_flight_on_sigkilled"] = {"killed_at_s": round(killed_at, 2), "answered_after_s": round(answered, 2),
                                         "retries": fleet.counter_sum("nereid_gateway_retries_total") - retries}
    assert error is None, (error.status(), error.message())
    assert result.as_numpy("OUT").tolist() == [42]
    assert killed_at < 2 and answered >= 2, FIGURES["in_flight_on_sigkilled"]
    assert FIGURES["in_flight_on_sigkilled"]["retries"] == 1


def readmission_figures(fleet, victim, backend, figures):
    """Seconds until the gateway readmits `victim` and until it serves requests again."""
    figures["readmitted_after_s"] = seconds_until(lambda: fleet.healthy(backend) == 1, 30,
                                                  "the engine readmitted")
    before = fleet.served(victim)
    figures["serving_again_after_s"] = round(figures["readmitted_after_s"] + seconds_until(
        lambda: fleet.served(victim) > before, 30, "requests on the readmitted engine", interval=0.3), 2)
    time.sleep(1)


def test_a_partitioned_engine_leaves_rotation_then_comes_back(fleet):
    victim = fleet.engines[2]
    ip = fleet.ip(victim)
    backend = "%s:%d" % (ip, GRPC_PORT)
    retries = fleet.counter_sum("nereid_gateway_retries_total")
    ejections = fleet.counter_sum("nereid_gateway_ejections_total", backend=backend)
    figures = {}
    with Load(fleet) as load:
        time.sleep(2)
        # Cut off, not stopped: packets to it go nowhere, nothing answers or resets. On
        # Docker the alias stops resolving to it at once too, so the gateway may drop it by
        # discovery before a health check fails; the hung-engine test below covers the
        # circuit breaker alone.
        docker("network", "disconnect", fleet.network, victim)
        figures["out_of_rotation_s"] = seconds_until(lambda: fleet.healthy(backend) != 1, 30,
                                                     "the partitioned engine out of rotation")
        time.sleep(4)
        # Back on the network, on the same IP and with the alias.
        docker("network", "connect", "--alias", ALIAS, "--ip", ip, fleet.network, victim)
        readmission_figures(fleet, victim, backend, figures)
    figures["ejected"] = fleet.counter_sum("nereid_gateway_ejections_total", backend=backend) > ejections
    figures["outcomes_on_it"] = outcomes(fleet, backend)
    figures["retries"] = fleet.counter_sum("nereid_gateway_retries_total") - retries
    FIGURES["partition"] = {**load.figures(), **figures}
    load.check()
    assert figures["out_of_rotation_s"] < EJECT_WITHIN_S, figures
    assert figures["readmitted_after_s"] < READMIT_WITHIN_S, figures


def test_a_hung_engine_is_ejected_by_health_checks_then_readmitted(fleet):
    # `docker pause` freezes the engine: it stays in DNS and its kernel still holds the
    # connections, but nothing answers, not even HTTP/2 pings. Only the gateway's own
    # checks can take it out: the circuit breaker, with no help from discovery.
    victim = fleet.engines[0]
    backend = fleet.backend(victim)
    retries = fleet.counter_sum("nereid_gateway_retries_total")
    ejections = fleet.counter_sum("nereid_gateway_ejections_total", backend=backend)
    figures = {}
    with Load(fleet) as load:
        time.sleep(2)
        docker("pause", victim)
        figures["ejected_after_s"] = seconds_until(lambda: fleet.healthy(backend) == 0, 30,
                                                   "the hung engine ejected")
        assert fleet.counter_sum("nereid_gateway_ejections_total", backend=backend) == ejections + 1
        assert fleet.gauge("nereid_gateway_backends") == 3, "still discovered, only ejected"
        # Calls already sent there get no answer: HTTP/2 keepalive finds the dead
        # connection and they move to another engine.
        figures["inflight_cleared_after_s"] = round(figures["ejected_after_s"] + seconds_until(
            lambda: fleet.gauge("nereid_gateway_backend_inflight", backend=backend) == 0, 30,
            "the calls in flight on the hung engine to end"), 2)
        attempts = fleet.counter_sum("nereid_gateway_requests_total", backend=backend)
        time.sleep(3)
        # Nothing is sent to an ejected backend.
        figures["sent_while_ejected"] = fleet.counter_sum("nereid_gateway_requests_total", backend=backend) - attempts
        docker("unpause", victim)
        readmission_figures(fleet, victim, backend, figures)
    figures["outcomes_on_it"] = outcomes(fleet, backend)
    figures["retries"] = fleet.counter_sum("nereid_gateway_retries_total") - retries
    FIGURES["hung"] = {**load.figures(), **figures}
    load.check()
    assert figures["sent_while_ejected"] == 0, figures
    assert figures["ejected_after_s"] < EJECT_WITHIN_S, figures
    assert figures["readmitted_after_s"] < READMIT_WITHIN_S, figures


def test_a_new_engine_with_the_alias_gets_requests(fleet):
    with Load(fleet, threads_per_protocol=1) as load:
        began = time.time()
        newcomer = fleet.start_engine(4)
        wait_for(lambda: fleet.engine_ready(newcomer), 60, "the fourth engine ready", interval=0.2)
        ready = time.time() - began
        backend = fleet.backend(newcomer)
        listed = seconds_until(lambda: fleet.healthy(backend) == 1, 30, "the fourth engine listed healthy")
        served = seconds_until(lambda: fleet.served(newcomer) > 0, 30, "requests on the fourth engine", interval=0.3)
        assert fleet.gauge("nereid_gateway_backends") == 4
        # And it leaves: stopped, it drops out of rotation without a failed request.
        docker("stop", "-t", "20", newcomer)
        gone = seconds_until(lambda: fleet.healthy(backend) != 1, 30, "the fourth engine out of rotation")
        time.sleep(1)
    docker("rm", "-f", "-v", newcomer)
    # Gone from DNS, so gone from the gateway's list.
    dropped = seconds_until(lambda: fleet.gauge("nereid_gateway_backends") == 3, 30, "the gateway back to 3 backends")
    FIGURES["join"] = {**load.figures(), "engine_ready_s": round(ready, 1), "listed_after_ready_s": listed,
                       "serving_after_ready_s": round(listed + served, 2), "out_after_stop_s": gone,
                       "dropped_after_removal_s": dropped}
    load.check()
    assert listed + served < JOIN_WITHIN_S, FIGURES["join"]
    assert gone < EJECT_WITHIN_S, FIGURES["join"]


def test_rolling_restart_under_load_loses_no_request(fleet):
    steps = []
    retries = fleet.counter_sum("nereid_gateway_retries_total")
    with Load(fleet) as load:
        time.sleep(1)
        for name in fleet.engines:
            began = time.time()
            docker("stop", "-t", str(ENGINE_EXIT_TIMEOUT + 10), name)
            stopped = time.time() - began
            began = time.time()
            docker("start", name)
            # One at a time: the next engine goes only once this one is back in rotation
            # (ready itself, then healthy in the gateway's eyes).
            wait_for(lambda: fleet.engine_ready(name), 60, "%s ready again" % name, interval=0.2)
            seconds_until(lambda: fleet.all_in_rotation() is True, 60, "%s back in rotation" % name, 0.2)
            steps.append({"stop_s": round(stopped, 1), "back_in_rotation_s": round(time.time() - began, 1)})
        time.sleep(1)
    FIGURES["rolling_restart"] = {**load.figures(), "engines": steps,
                                  "retries": fleet.counter_sum("nereid_gateway_retries_total") - retries}
    load.check()
    assert all(step["stop_s"] < ENGINE_EXIT_TIMEOUT for step in steps), steps
