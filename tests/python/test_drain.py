"""SIGTERM under load: a fleet of REST and gRPC clients sends requests without pause while
the server is told to stop.

What the server does today on SIGTERM (src/serve.rs): every listener stops accepting at
once (new connections are refused), open HTTP/1.1 connections close once their current
answer is written, HTTP/2 and gRPC connections get GOAWAY, a grpc.health.v1 `Watch` is told
NOT_SERVING, and the engine refuses whatever still reaches it (UNAVAILABLE / 503 "shutting
down") while everything it accepted is computed and answered; then the process exits 0.
It should exit at the latest when `--exit-timeout-secs` has passed, but a request still
computing then holds the exit until it is done (FINDING 2, the second test).

So a probe after the signal is answered "connection refused" (a failed probe, for
Kubernetes as for any load balancer), not 503 or NOT_SERVING, except on a health `Watch`
opened before; a connection still waiting in the listener's backlog when it closed is
reset ("closed"). The tests accept each of these forms and print which they saw.

"Zero accepted requests lost" compares the clients' successes with the engine's own count
of successful requests after the drain. Behind a gateway (NEREID_E2E_GATEWAY=1) the gateway
is what is stopped and the engine behind it is still up to be asked; a lone engine can only
say it on its way out, in its last log line (`stopped ... succeeded=N failed=M`), which it
does not write yet (FINDING 1: until it does, the first test ends as xfail once everything
else about the drain has been checked).
"""

import re
import signal
import threading
import time

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from conftest import SLEEP_CONFIG, THROUGH_GATEWAY, start_server

pytestmark = pytest.mark.timeout(180)

MS = 150                 # compute time of one request: the fleet keeps the instance busy
REST_CLIENTS = 3
GRPC_CLIENTS = 3
EXIT_TIMEOUT = 20        # --exit-timeout-secs
ACCEPTED_MARGIN = 0.5    # a request sent this long before the signal has surely reached the server
AT_ONCE = 1.0            # seconds after the signal within which readiness must be false


def engine_of(srv):
    """The process that computes: the engine behind a gateway, or the server itself."""
    return getattr(srv, "engine", srv)


def statistics(srv):
    """(successes, failures, requests that began computing) of `sleep`, from the engine."""
    r = requests.get("http://%s/v2/models/sleep/stats" % engine_of(srv).http, timeout=10)
    inference = r.json()["model_stats"][0]["inference_stats"]
    return int(inference["success"]["count"]), int(inference["fail"]["count"]), int(inference["queue"]["count"])


def final_counts(log):
    """(succeeded, failed) from the server's last log line `stopped ... succeeded=N failed=M`
    (text logs; `"succeeded":N` in JSON ones)."""
    for line in reversed(log):
        if re.search(r"\bstopped\b", line):
            succeeded, failed = (re.search(r'\b%s"?[=:](\d+)' % k, line) for k in ("succeeded", "failed"))
            if succeeded and failed:
                return int(succeeded.group(1)), int(failed.group(1))
    return None


def repository(root):
    (root / "sleep" / "1").mkdir(parents=True)
    (root / "sleep" / "config.pbtxt").write_text(SLEEP_CONFIG)
    return str(root)


def body(ms):
    return {"inputs": [{"name": "MS", "datatype": "UINT32", "shape": [1], "data": [ms]}]}


def connection_failure(e):
    """How a connection-level failure reads: 'refused' when the listener is gone, 'closed'
    when an open connection was closed before an answer."""
    text = repr(e)
    return "refused" if "Connection refused" in text or "Errno 111" in text else "closed"


class Fleet:
    """Client threads that send requests back to back until stopped, recording each one as
    (door, sent, ended, outcome, detail), outcome 'ok', 'refused' or 'error'."""

    def __init__(self, srv):
        self.srv, self.stop, self.records, self.lock = srv, threading.Event(), [], threading.Lock()
        self.threads = [threading.Thread(target=self.rest, daemon=True) for _ in range(REST_CLIENTS)]
        self.threads += [threading.Thread(target=self.grpc, daemon=True) for _ in range(GRPC_CLIENTS)]

    def start(self):
        for t in self.threads:
            t.start()

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join(60)
        assert not any(t.is_alive() for t in self.threads), "a client hung"

    def record(self, door, sent, outcome, detail=None):
        with self.lock:
            self.records.append((door, sent, time.monotonic(), outcome, detail))
        if outcome != "ok":
            time.sleep(0.02)  # refused at once: do not spin

    def rest(self):
        session = requests.Session()
        url = "http://%s/v2/models/sleep/infer" % self.srv.http
        while not self.stop.is_set():
            sent = time.monotonic()
            try:
                r = session.post(url, json=body(MS), timeout=60)
            except requests.ConnectionError as e:
                self.record("rest", sent, "refused", connection_failure(e))
                continue
            except requests.RequestException as e:
                self.record("rest", sent, "error", repr(e))
                continue
            try:
                answer = r.json()
            except ValueError:
                answer = None
            if r.status_code == 200 and answer and answer["outputs"][0]["data"] == [MS]:
                self.record("rest", sent, "ok")
            elif r.status_code == 503 and r.headers.get("Retry-After") == "1" and "shutting down" in str(answer):
                self.record("rest", sent, "refused", "503")
            else:
                self.record("rest", sent, "error", "%d %s" % (r.status_code, r.text))

    def grpc(self):
        client = grpcclient.InferenceServerClient(self.srv.grpc)
        tensor = grpcclient.InferInput("MS", [1], "UINT32")
        tensor.set_data_from_numpy(np.array([MS], dtype="uint32"))
        while not self.stop.is_set():
            sent = time.monotonic()
            try:
                result = client.infer("sleep", [tensor], client_timeout=60)
            except InferenceServerException as e:
                if e.status() == "StatusCode.UNAVAILABLE":
                    self.record("grpc", sent, "refused", "UNAVAILABLE")
                else:
                    self.record("grpc", sent, "error", "%s %s" % (e.status(), e.message()))
                continue
            if result.as_numpy("OUT").tolist() == [MS]:
                self.record("grpc", sent, "ok")
            else:
                self.record("grpc", sent, "error", repr(result.as_numpy("OUT")))
        client.close()


class HealthWatch(threading.Thread):
    """A grpc.health.v1 Watch of the server, opened before the signal: (time, status) seen."""

    def __init__(self, address):
        super().__init__(daemon=True)
        self.channel = grpc.insecure_channel(address)
        self.seen, self.first = [], threading.Event()

    def run(self):
        try:
            stub = health_pb2_grpc.HealthStub(self.channel)
            for reply in stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=120):
                self.seen.append((time.monotonic(), health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)))
                self.first.set()
        except grpc.RpcError as e:
            self.seen.append((time.monotonic(), "ended " + e.code().name))
        finally:
            self.first.set()


def probe_readiness(srv):
    """Readiness as each probe sees it, on new connections: {probe: answer}."""
    answers = {}
    try:
        answers["http /v2/health/ready"] = requests.get("http://%s/v2/health/ready" % srv.http, timeout=5).status_code
    except requests.ConnectionError as e:
        answers["http /v2/health/ready"] = connection_failure(e)
    try:
        answers["grpc ServerReady"] = grpcclient.InferenceServerClient(srv.grpc).is_server_ready(client_timeout=5)
    except InferenceServerException as e:
        answers["grpc ServerReady"] = e.status().replace("StatusCode.", "")
    with grpc.insecure_channel(srv.grpc) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            answers["grpc health Check"] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except grpc.RpcError as e:
            answers["grpc health Check"] = e.code().name
    return answers


NOT_READY = {
    "http /v2/health/ready": {503, "refused", "closed"},
    "grpc ServerReady": {False, "UNAVAILABLE"},
    "grpc health Check": {"NOT_SERVING", "UNAVAILABLE"},
}


def probe_new_requests(srv):
    """A new inference request on each door, on a new connection: {door: answer}."""
    answers = {}
    try:
        r = requests.post("http://%s/v2/models/sleep/infer" % srv.http, json=body(1), timeout=10)
        answers["rest"] = (r.status_code, r.headers.get("Retry-After"), r.text)
    except requests.ConnectionError as e:
        answers["rest"] = connection_failure(e)
    tensor = grpcclient.InferInput("MS", [1], "UINT32")
    tensor.set_data_from_numpy(np.array([1], dtype="uint32"))
    try:
        grpcclient.InferenceServerClient(srv.grpc).infer("sleep", [tensor], client_timeout=10)
        answers["grpc"] = "OK"
    except InferenceServerException as e:
        answers["grpc"] = e.status().replace("StatusCode.", "")
    return answers


def test_sigterm_under_load_refuses_new_work_finishes_accepted_work_and_loses_none(tmp_path):
    srv = start_server(["--model-repository", repository(tmp_path), "--exit-timeout-secs", str(EXIT_TIMEOUT)])
    fleet = Fleet(srv)
    try:
        watch = HealthWatch(srv.grpc)
        watch.start()
        assert watch.first.wait(30) and watch.seen[0][1] == "SERVING", watch.seen
        fleet.start()
        # Steady state: the clients have had answers, and each has a request in flight.
        deadline = time.monotonic() + 60
        while sum(1 for r in fleet.records if r[3] == "ok") < 2 * len(fleet.threads):
            assert time.monotonic() < deadline, fleet.records
            time.sleep(0.05)
        before = statistics(srv)

        signalled = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        # Readiness, probed over and over until every probe says "not ready".
        probes = []
        while True:
            answers = probe_readiness(srv)
            probes.append((time.monotonic() - signalled, answers))
            if all(answers[k] in NOT_READY[k] for k in NOT_READY) or time.monotonic() - signalled > 10:
                break
        not_ready_at = time.monotonic()
        new_requests = probe_new_requests(srv)
        code = srv.proc.wait(EXIT_TIMEOUT + 10)
        exited = time.monotonic() - signalled
        fleet.join()
        watch.join(10)
        if THROUGH_GATEWAY:
            final = statistics(srv)[:2]  # the gateway is gone; the engine behind it still answers
        else:
            final = final_counts(srv.log)
    finally:
        fleet.stop.set()
        srv.stop()

    records = fleet.records
    ok = [r for r in records if r[3] == "ok"]
    in_flight_at_signal = [r for r in ok if r[1] < signalled < r[2]]
    finished_after_not_ready = [r for r in ok if r[2] > not_ready_at]
    refusals = {}
    for door, _, _, outcome, detail in records:
        if outcome == "refused":
            refusals[(door, detail)] = refusals.get((door, detail), 0) + 1
    print("\ndrain: %d requests sent (%d before the signal), %d succeeded, %d in flight at the signal"
          % (len(records), sum(1 for r in records if r[1] < signalled), len(ok), len(in_flight_at_signal)))
    print("readiness after the signal:", *("%.3f s %s" % p for p in probes), sep="\n  ")
    print("health Watch opened before:", watch.seen and ["%+.3f s %s" % (t - signalled, s) for t, s in watch.seen])
    print("new requests once not ready:", new_requests)
    print("refusals seen by the fleet:", refusals)
    print("last success %.3f s after the signal; exit %s after %.2f s" % (
        max(r[2] for r in ok) - signalled, code, exited))
    print("engine statistics before the signal (success, fail, started): %s; final count %s; clients %d"
          % (before, final, len(ok)))

    errors = [r for r in records if r[3] == "error"]
    assert not errors, errors[:10]
    # Readiness turned false at once, on every probe, while accepted work was still running.
    last_time, last = probes[-1]
    assert all(last[k] in NOT_READY[k] for k in NOT_READY), probes
    assert last_time < AT_ONCE, "readiness took %.3f s to turn false: %r" % (last_time, probes)
    assert any(s == "NOT_SERVING" and t - signalled < AT_ONCE for t, s in watch.seen), watch.seen
    assert len(in_flight_at_signal) >= 3 and finished_after_not_ready, \
        "no accepted work was left to finish after readiness turned false"
    # New requests were refused: connection refused (the listener closed) or the door's 503 /
    # UNAVAILABLE.
    assert new_requests["rest"] in ("refused", "closed") or new_requests["rest"][:2] == (503, "1"), new_requests
    assert new_requests["grpc"] == "UNAVAILABLE", new_requests
    # Every request accepted before the signal completed successfully; refusals came after it.
    early = [r for r in records if r[1] < signalled - ACCEPTED_MARGIN]
    assert all(r[3] == "ok" for r in early), [r for r in early if r[3] != "ok"]
    assert all(r[2] >= signalled for r in records if r[3] == "refused")
    # The process exits 0, within the exit timeout.
    assert code == 0 and exited < EXIT_TIMEOUT, (code, exited)
    # Zero accepted requests lost: the engine's successes are the clients' successes, and it
    # failed none.
    if final is None:
        pytest.xfail("FINDING 1: after SIGTERM the server says nowhere how many requests it served "
                     "(wanted: its last log line `stopped succeeded=N failed=M`)")
    assert final == (len(ok), 0), (final, len(ok))


# FINDING 2: past the exit timeout the engine still stops each model by letting its queue
# finish and joining its instance threads (engine/src/scheduler/mod.rs `stop`, called from
# Engine::shutdown's unload_all), so a request that outlasts the timeout holds the exit.
def test_the_process_exits_by_the_exit_timeout_even_when_work_outlasts_it(tmp_path):
    exit_timeout, long_ms = 2, 10_000
    srv = start_server(["--model-repository", repository(tmp_path), "--exit-timeout-secs", str(exit_timeout)])
    answers = []
    try:
        started0 = statistics(srv)[2]

        def long_request():
            try:
                answers.append(requests.post("http://%s/v2/models/sleep/infer" % srv.http,
                                             json=body(long_ms), timeout=60).status_code)
            except requests.ConnectionError as e:
                answers.append(connection_failure(e))

        client = threading.Thread(target=long_request, daemon=True)
        client.start()
        deadline = time.monotonic() + 30
        while statistics(srv)[2] == started0:
            assert time.monotonic() < deadline, "the long request never started"
            time.sleep(0.02)
        signalled = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        try:
            code = srv.proc.wait(long_ms / 1000 + 20)
        except Exception:
            code = None
        exited = time.monotonic() - signalled
        client.join(30)
    finally:
        srv.stop()
    print("\nexit timeout %d s, a request of %d s in flight: exit %s after %.2f s; the client got %s"
          % (exit_timeout, long_ms // 1000, code, exited, answers))
    # The exit timeout, the 2 s the doors get to close, and some slack for a slow machine.
    assert exited < exit_timeout + 2 + 3, "exited %.2f s after SIGTERM (--exit-timeout-secs %d)" % (exited, exit_timeout)
    assert code is not None
