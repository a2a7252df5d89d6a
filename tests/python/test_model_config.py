"""Three model-config features of the engine with the stock `tritonclient` on both doors:
the response cache (`--cache-config local,size=BYTES` and `response_cache { enable: true }`),
model warmup (`model_warmup`), and config fields that are either refused at load or, for
Triton's own hints, accepted and listed under the `nereid_ignored_fields` parameter, so
that no field is silently dropped.

Counts are asserted exactly: a cache that executes on a hit, evicts the wrong entry or
keys on the request id, and a warmup that shows in statistics, all change a number.
"""

import json
import re
import subprocess
import time
import urllib.request
from collections import namedtuple

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

import conftest
from conftest import REPEAT_CONFIG, SIMPLE_CONFIG, start_server

pytestmark = pytest.mark.timeout(180)

PROTOCOLS = ("http", "grpc")
# A gateway's statistics count the requests it forwards; cache hits and executions happen
# in the engine behind it, so tests that count them run against an engine.
ENGINE_STATS = pytest.mark.engine_only("cache hits and executions are counted by the engine")
CACHE_ON = "response_cache { enable: true }\n"
ZERO, RANDOM = "zero_data: true", "random_data: true"



# Configs --------------------------------------------------------------------------------

def replaced(text, old, new):
    # A silent no-op replace would turn a refusal test into a plain load.
    assert old in text, old
    return text.replace(old, new)


def simple_config(name, extra="", instances="count: 1 kind: KIND_CPU"):
    text = replaced(SIMPLE_CONFIG, 'name: "simple"', 'name: "%s"' % name)
    return replaced(text, "count: 1 kind: KIND_CPU", instances) + extra


def tensor(name, dtype, dims, source):
    return 'inputs { key: "%s" value: { data_type: %s dims: [ %s ] %s } }' % (
        name, dtype, ", ".join(map(str, dims)), source)


def sample(name, batch_size, *inputs, count=0):
    head = ('name: "%s" ' % name if name else "") + "batch_size: %d " % batch_size
    return "{ " + head + ("count: %d " % count if count else "") + " ".join(inputs) + " }"


def simple_sample(name, batch_size, source0, source1=ZERO, count=0, *more):
    return sample(name, batch_size, tensor("INPUT0", "TYPE_INT32", [16], source0),
                  tensor("INPUT1", "TYPE_INT32", [16], source1), *more, count=count)


def warmup(*samples):
    return "model_warmup [\n  %s\n]\n" % ",\n  ".join(samples)


def write_model(root, name, config, files=None):
    (root / name / "1").mkdir(parents=True)
    (root / name / "config.pbtxt").write_text(config)
    for file, data in (files or {}).items():
        # Beside the version folders, where Triton looks for warmup data.
        (root / name / "warmup").mkdir(exist_ok=True)
        (root / name / "warmup" / file).write_bytes(data)


def cache_repo(root):
    write_model(root, "simple", simple_config("simple", CACHE_ON))
    write_model(root, "plain", simple_config("plain"))
    return ["--model-repository", str(root)]


# Clients --------------------------------------------------------------------------------

Counts = namedtuple("Counts", "hits misses executions inferences successes")


def client_for(srv, protocol):
    return httpclient.InferenceServerClient(srv.http) if protocol == "http" else grpcclient.InferenceServerClient(srv.grpc)


def is_grpc(client):
    return isinstance(client, grpcclient.InferenceServerClient)


def counts(client, model):
    raw = client.get_inference_statistics(model, **({"as_json": True} if is_grpc(client) else {}))
    [stats] = raw["model_stats"]
    # gRPC's JSON leaves zero fields out and writes uint64 as strings.
    inference = {k: int(v.get("count", 0)) for k, v in stats.get("inference_stats", {}).items()}
    return Counts(inference.get("cache_hit", 0), inference.get("cache_miss", 0), int(stats.get("execution_count", 0)),
                  int(stats.get("inference_count", 0)), inference.get("success", 0))


def infer(client, a, b, request_id, model="simple", outputs=None, binary=True, **kw):
    """One add_sub request; checks the sums, that only the requested outputs came back, and
    that the answer carries this request's id (a cache hit must not echo the first one)."""
    door = grpcclient if is_grpc(client) else httpclient
    inputs = [door.InferInput("INPUT0", list(a.shape), "INT32"), door.InferInput("INPUT1", list(b.shape), "INT32")]
    for tensor_in, value in zip(inputs, (a, b)):
        tensor_in.set_data_from_numpy(value, **({} if is_grpc(client) else {"binary_data": binary}))
    requested = [door.InferRequestedOutput(name) for name in outputs] if outputs else None
    result = client.infer(model, inputs, outputs=requested, request_id=request_id, **kw)
    for name, want in (("OUTPUT0", a + b), ("OUTPUT1", a - b)):
        if outputs is None or name in outputs:
            np.testing.assert_array_equal(result.as_numpy(name), want)
        else:
            assert result.as_numpy(name) is None, name
    response = result.get_response()
    assert (response.get("id") if isinstance(response, dict) else response.id) == request_id


def row(n):
    return (np.arange(16, dtype=np.int32) + n).reshape(1, 16)


ONES = np.ones((1, 16), dtype=np.int32)


# Response cache -------------------------------------------------------------------------

# One `simple` entry costs 128 + 2 * (128 + 64) = 512 bytes, so 1100 bytes hold two.
# (request, hit?) in order; the comments say what each step proves.
LRU = [
    ("A", False), ("B", False),
    ("A", True),   # A is now more recent than B
    ("C", False),  # evicts B, the least recently used, not A, the first inserted
    ("A", True),   # so A survived (a FIFO cache would miss here)
    ("B", False),  # B was gone; keeping it evicts C, used before A
    ("A", True),
    ("C", False),  # C was gone; keeping it evicts B
]


def run_lru(client):
    values = {"A": row(0), "B": row(100), "C": row(200)}
    hits = misses = 0
    for step, (key, hit) in enumerate(LRU):
        infer(client, values[key], ONES, "lru-%d-%s" % (step, key))
        hits, misses = hits + hit, misses + (not hit)
        got = counts(client, "simple")
        # A hit never reaches the model: executions grow with misses only.
        assert (got.hits, got.misses, got.executions, got.inferences) == (hits, misses, misses, misses), (step, key, got)
    assert got.successes == len(LRU), got


@ENGINE_STATS
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_cache_answers_repeats_without_the_model_and_evicts_the_least_recently_used(tmp_path, protocol):
    srv = start_server(cache_repo(tmp_path) + ["--cache-config", "local,size=1100"])
    try:
        run_lru(client_for(srv, protocol))
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def cache_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    write_model(root, "cache_decoupled", REPEAT_CONFIG % "cache_decoupled" + CACHE_ON)
    srv = start_server(cache_repo(root) + ["--cache-config", "local,size=1048576",
                                           "--model-control-mode", "explicit", "--load-model", "simple,plain"])
    yield srv
    srv.stop()


# (what changes from the first request, request keywords, inputs from (a, b), hit?)
KEY_STEPS = [
    ("nothing but the request id", {}, lambda a, b: (a, b), True),
    ("priority and timeout", {"priority": 1, "timeout": 60_000_000}, lambda a, b: (a, b), True),
    ("a request parameter", {"parameters": {"tag": "x"}}, lambda a, b: (a, b), False),
    ("the same parameter again", {"parameters": {"tag": "x"}}, lambda a, b: (a, b), True),
    ("another parameter value", {"parameters": {"tag": "y"}}, lambda a, b: (a, b), False),
    ("the requested outputs", {"outputs": ["OUTPUT0"]}, lambda a, b: (a, b), False),
    ("one input byte", {}, lambda a, b: (a + np.eye(1, 16, dtype=np.int32), b), False),
    ("the shape", {}, lambda a, b: (np.vstack([a, a]), np.vstack([b, b])), False),
]


@ENGINE_STATS
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_cache_key_is_what_decides_the_result(cache_server, protocol):
    client = client_for(cache_server, protocol)
    # Values of its own per protocol, so the other run's entries cannot answer this one.
    a, b = row(1000 if protocol == "http" else 2000), ONES
    before = counts(client, "simple")
    infer(client, a, b, "key-%s-first" % protocol)
    hits, misses = 0, 1
    for i, (what, kw, inputs, hit) in enumerate(KEY_STEPS):
        infer(client, *inputs(a, b), "key-%s-%d" % (protocol, i), **kw)
        hits, misses = hits + hit, misses + (not hit)
        got = counts(client, "simple")
        assert (got.hits - before.hits, got.misses - before.misses) == (hits, misses), (what, got)
    assert got.executions - before.executions == misses, got
    assert got.successes - before.successes == len(KEY_STEPS) + 1, got


@ENGINE_STATS
def test_an_entry_kept_from_one_door_answers_the_other(cache_server):
    # REST's stock client asks for binary_data_output; that parameter only says how the
    # answer is encoded, so the gRPC request (without it) must hit.
    http, grpc = client_for(cache_server, "http"), client_for(cache_server, "grpc")
    before = counts(grpc, "simple")
    infer(http, row(3000), ONES, "door-http", binary=False)
    infer(grpc, row(3000), ONES, "door-grpc")
    got = counts(http, "simple")
    assert (got.hits - before.hits, got.misses - before.misses, got.executions - before.executions) == (1, 1, 1), got


@ENGINE_STATS
def test_a_model_without_response_cache_is_never_cached(cache_server):
    client = client_for(cache_server, "grpc")
    before = counts(client, "plain")
    for i in range(2):
        infer(client, row(4000), ONES, "plain-%d" % i, model="plain")
    got = counts(client, "plain")
    assert (got.hits, got.misses, got.executions - before.executions) == (0, 0, 2), got


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_decoupled_model_cannot_use_the_cache(cache_server, protocol):
    # On a server that has a cache, so the refusal is about streaming, not a missing flag.
    client = client_for(cache_server, protocol)
    with pytest.raises(InferenceServerException) as refused:
        client.load_model("cache_decoupled")
    message = refused.value.message()
    assert "'cache_decoupled'" in message, message
    assert "field 'response_cache' is not supported for decoupled models" in message, message
    assert not client.is_model_ready("cache_decoupled")


def metric(text, name, **labels):
    """Values of `name` whose labels include `labels`; a counter may carry `_total`."""
    pattern = re.compile(r"^%s(?:_total)?(?:\{([^}]*)\})? (\S+)$" % re.escape(name), re.M)
    return [float(value) for raw, value in pattern.findall(text)
            if all(dict(re.findall(r'(\w+)="([^"]*)"', raw)).get(k) == v for k, v in labels.items())]


def scrape(srv):
    with urllib.request.urlopen("http://%s/metrics" % srv.metrics, timeout=10) as r:
        return r.read().decode()


@pytest.mark.engine_only("the cache metrics are the engine's; a gateway's /metrics is its own")
def test_cache_metrics_count_hits_misses_entries_and_evictions(tmp_path):
    srv = start_server(cache_repo(tmp_path) + ["--cache-config", "local,size=1100"])
    try:
        run_lru(client_for(srv, "grpc"))
        model = {"model": "simple", "version": "1"}
        expected = [("nv_cache_num_hits_per_model", model, 3), ("nv_cache_num_misses_per_model", model, 5),
                    ("nv_cache_num_entries", {}, 2), ("nv_cache_num_evictions", {}, 3)]
        want = [[float(v)] for _, _, v in expected]
        deadline = time.monotonic() + 10
        while True:
            text = scrape(srv)
            got = [metric(text, name, **labels) for name, labels, _ in expected]
            if got == want or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert got == want, text
        assert metric(text, "nv_cache_util") == pytest.approx([1024 / 1100]), text
        for name in ("nv_cache_hit_duration_per_model", "nv_cache_miss_duration_per_model"):
            values = metric(text, name, **model)
            assert len(values) == 1 and values[0] >= 0, (name, text)
    finally:
        srv.stop()


@pytest.mark.engine_only("a gateway never takes --cache-config: the engine's exit is checked")
@pytest.mark.parametrize("value,says", [("redis,size=10", "unknown cache 'redis'"),
                                        ("local,size=big", "size 'big' is not a number of bytes")])
def test_a_bad_cache_config_stops_the_server(value, says):
    done = subprocess.run([conftest.BIN, "serve", "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
                           "--demo-models", "builtin", "--cache-config", value],
                          capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode != 0 and says in output, output
    assert "NEREID_READY" not in output, output


# Model control: warmup, refused fields and ignored hints --------------------------------

NAP_MS = 200

GOOD = {  # name: (config, warmup files)
    "warm_simple": (simple_config("warm_simple", warmup(
        simple_sample("zeros", 1, ZERO, count=3),
        simple_sample("random", 4, RANDOM, RANDOM, count=3),
        simple_sample("file", 4, 'input_data_file: "input0.bin"', 'input_data_file: "input1.bin"')),
        instances="count: 2 kind: KIND_CPU"),
        {"input0.bin": np.arange(16, dtype="<i4").tobytes(), "input1.bin": np.full(16, 2, dtype="<i4").tobytes()}),
    # `sleep` holds its instance for MS milliseconds: the load's length shows the runs.
    "warm_sleep": (replaced(conftest.SLEEP_CONFIG, 'name: "sleep"', 'name: "warm_sleep"') + warmup(
        sample("nap", 1, tensor("MS", "TYPE_UINT32", [1], 'input_data_file: "nap.bin"'), count=3),
        sample("once", 1, tensor("MS", "TYPE_UINT32", [1], 'input_data_file: "nap.bin"'))),
        {"nap.bin": np.array([NAP_MS], dtype="<u4").tobytes()}),
    "warm_repeat": (REPEAT_CONFIG % "warm_repeat" + warmup(
        sample("stream", 1, tensor("IN", "TYPE_INT32", [3], RANDOM), tensor("DELAY", "TYPE_UINT32", [3], ZERO))), None),
    "field_hints": (simple_config("field_hints", "optimization { graph { level: 1 } }\n",
                                  instances='count: 1 kind: KIND_CPU rate_limiter { resources [ { name: "R" count: 1 } ] }'), None),
    "plain": (simple_config("plain"), None),
}

REFUSED = {  # name: (config, warmup files, what the load error must say)
    "cache_without_flag": (simple_config("cache_without_flag", CACHE_ON), None,
                           ["start it with --cache-config local,size=BYTES"]),
    "warm_short_file": (simple_config("warm_short_file", warmup(simple_sample("short", 1, 'input_data_file: "short.bin"'))),
                        {"short.bin": np.arange(15, dtype="<i4").tobytes()}, ["warmup sample 'short'", "holds 60 bytes"]),
    "warm_unknown_input": (simple_config("warm_unknown_input", warmup(
        simple_sample("nope", 1, ZERO, ZERO, 0, tensor("NOPE", "TYPE_INT32", [1], ZERO)))), None,
        ["warmup sample 'nope': input 'NOPE' is not an input of the model"]),
    "warm_batch_too_big": (simple_config("warm_batch_too_big", warmup(simple_sample("big", 9, ZERO))), None,
                           ["warmup sample 'big': batch_size 9 is not between 1 and max_batch_size 8"]),
    # An unnamed sample is labelled by its index: the second one here, after a good one.
    "warm_unnamed": (simple_config("warm_unnamed", warmup(simple_sample("fine", 1, ZERO), simple_sample(None, 9, ZERO))),
                     None, ["warmup sample #1: batch_size 9 is not between 1 and max_batch_size 8"]),
    # The field names differ from the model names, so a message naming only the field fails.
    "refuse_reshape": (replaced(simple_config("refuse_reshape"), 'name: "INPUT0" data_type: TYPE_INT32 dims: [ 16 ]',
                                'name: "INPUT0" data_type: TYPE_INT32 dims: [ 16 ] reshape { shape: [ 16 ] }'),
                       None, ["field 'input.reshape' is not supported: "]),
    "refuse_agents": (simple_config("refuse_agents", 'model_repository_agents { agents [ { name: "checksum" } ] }\n'),
                      None, ["field 'model_repository_agents' is not supported: "]),
    # dynamic_batching and sequence_batching are one oneof: drop the first to set the second.
    "refuse_iterative": (replaced(simple_config("refuse_iterative"), "dynamic_batching { }",
                                  "sequence_batching { iterative_sequence: true }"),
                         None, ["field 'sequence_batching.iterative_sequence' is not supported: "]),
}


@pytest.fixture(scope="module")
def control_server(tmp_path_factory):
    """Explicit mode without a cache: each test loads what it needs, and a refused load
    leaves the server serving the next."""
    root = tmp_path_factory.mktemp("configs")
    for name, (config, files, *_) in list(GOOD.items()) + list(REFUSED.items()):
        write_model(root, name, config, files)
    srv = start_server(["--model-repository", str(root), "--model-control-mode", "explicit"])
    yield srv
    srv.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("model", sorted(REFUSED))
def test_a_config_the_server_cannot_honour_fails_the_load(control_server, model, protocol):
    client = client_for(control_server, protocol)
    with pytest.raises(InferenceServerException) as refused:
        client.load_model(model)
    message = refused.value.message()
    for needle in REFUSED[model][2] + ["'%s'" % model]:
        assert needle in message, (needle, message)
    assert not client.is_model_ready(model)
    assert client.is_server_ready()


@ENGINE_STATS
def test_warmup_runs_before_ready_and_is_not_counted(control_server):
    http, grpc = client_for(control_server, "http"), client_for(control_server, "grpc")
    http.load_model("warm_simple")
    assert http.is_model_ready("warm_simple") and grpc.is_model_ready("warm_simple")
    # 2 instances x (3 + 3 + 1) runs happened, yet a client has sent nothing.
    for client in (http, grpc):
        assert counts(client, "warm_simple") == Counts(0, 0, 0, 0, 0)
    infer(grpc, row(7), ONES, "after-warmup", model="warm_simple")
    for client in (http, grpc):
        assert counts(client, "warm_simple") == Counts(0, 0, 1, 1, 1)


def test_warmup_runs_each_sample_count_times_before_the_load_returns(control_server):
    client = client_for(control_server, "grpc")
    started = time.monotonic()
    client.load_model("warm_sleep")
    took = time.monotonic() - started
    # Its instance slept through 3 runs of "nap" and 1 of "once" (count 0 is one run)
    # before the load answered.
    assert took >= 4 * NAP_MS / 1000, took
    assert client.is_model_ready("warm_sleep")
    assert counts(client, "warm_sleep") == Counts(0, 0, 0, 0, 0)


def test_a_decoupled_model_warms_up_and_then_streams(control_server):
    client = client_for(control_server, "http")
    client.load_model("warm_repeat")
    assert client.is_model_ready("warm_repeat")
    assert counts(client, "warm_repeat") == Counts(0, 0, 0, 0, 0)
    url = "http://%s/v2/models/warm_repeat/generate_stream" % control_server.http
    with requests.post(url, json={"IN": [4, 5]}, stream=True, timeout=30) as r:
        assert r.status_code == 200, r.text
        events = [json.loads(line[len("data: "):]) for line in r.iter_lines(decode_unicode=True)
                  if line.startswith("data: ")]
    assert [(e["OUT"], e["IDX"]) for e in events] == [(4, 0), (5, 1)], events


def ignored_fields(client, model):
    config = client.get_model_config(model, as_json=True)["config"] if is_grpc(client) else client.get_model_config(model)
    listed = config.get("parameters", {}).get("nereid_ignored_fields")
    return None if listed is None else set(listed["string_value"].split(","))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_hint_fields_load_and_are_listed_as_ignored(control_server, protocol):
    client = client_for(control_server, protocol)
    for model in ("field_hints", "plain"):
        if not client.is_model_ready(model):  # the other protocol's run may have loaded it
            client.load_model(model)
        assert client.is_model_ready(model)
    # Outermost paths only: optimization.graph.level is covered by optimization.
    assert ignored_fields(client, "field_hints") == {"optimization", "instance_group.rate_limiter"}
    assert ignored_fields(client, "plain") is None
    infer(client, row(9), ONES, "hints-%s" % protocol, model="field_hints")
