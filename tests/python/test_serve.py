"""`nereid serve` end to end: batching visible on /metrics, model control flags, and a
graceful exit on SIGTERM."""

import concurrent.futures
import pathlib
import re
import signal
import tempfile
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import start_server


def metric(text, name, model):
    pattern = re.compile(r"^%s\{([^}]*)\} (\S+)$" % re.escape(name), re.M)
    for labels, value in pattern.findall(text):
        if 'model="%s"' % model in labels:
            return float(value)
    raise AssertionError("no %s for %s in:\n%s" % (name, model, text))


def scrape(server):
    with urllib.request.urlopen("http://%s/metrics" % server.metrics) as r:
        return r.read().decode()


def simple_inputs(a, b):
    inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"), grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs


@pytest.mark.engine_only("reads the batcher's execution counters on the engine's own /metrics")
def test_concurrent_requests_are_batched(server):
    client = grpcclient.InferenceServerClient(server.grpc)
    before = scrape(server)
    count0 = metric(before, "nv_inference_count", "simple") if "nv_inference_count" in before else 0
    exec0 = metric(before, "nv_inference_exec_count", "simple") if "nv_inference_exec_count" in before else 0

    def one(i):
        a = np.full((1, 16), i, dtype=np.int32)
        b = np.arange(16, dtype=np.int32).reshape(1, 16)
        result = client.infer("simple", simple_inputs(a, b))
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)

    with concurrent.futures.ThreadPoolExecutor(max_workers=64) as pool:
        list(pool.map(one, range(256)))

    after = scrape(server)
    count = metric(after, "nv_inference_count", "simple") - count0
    executions = metric(after, "nv_inference_exec_count", "simple") - exec0
    assert count == 256
    assert executions < count, "256 requests ran in %d executions" % executions
    assert metric(after, "nv_inference_request_success", "simple") >= 256
    assert "nv_cpu_memory_total_bytes" in after


def test_explicit_mode_loads_only_named_models():
    with tempfile.TemporaryDirectory() as repo:
        srv = start_server(["--model-repository", _builtin_repo(repo), "--model-control-mode", "explicit",
                            "--load-model", "simple", "--log-format", "json"])
        try:
            client = httpclient.InferenceServerClient(srv.http)
            assert client.is_model_ready("simple")
            assert not client.is_model_ready("identity_fp32")
            client.load_model("identity_fp32")
            assert client.is_model_ready("identity_fp32")
            client.unload_model("identity_fp32")
            assert not client.is_model_ready("identity_fp32")
        finally:
            assert srv.stop() == 0
        assert any(line.startswith("{") for line in srv.log), "json logs expected"


def test_sigterm_finishes_in_flight_work_then_exits_zero():
    srv = start_server(["--demo-models", "builtin", "--exit-timeout-secs", "20"])
    client = grpcclient.InferenceServerClient(srv.grpc)
    results = []

    def callback(result, error):
        results.append((result, error))

    # Each response of repeat_int32 waits DELAY microseconds: this stream takes ~1 s.
    client.start_stream(callback=callback)
    inputs = [grpcclient.InferInput("IN", [5], "INT32"), grpcclient.InferInput("DELAY", [5], "UINT32")]
    inputs[0].set_data_from_numpy(np.arange(5, dtype=np.int32))
    inputs[1].set_data_from_numpy(np.full(5, 200_000, dtype=np.uint32))
    client.async_stream_infer("repeat_int32", inputs, request_id="long")
    time.sleep(0.3)
    srv.proc.send_signal(signal.SIGTERM)
    code = srv.proc.wait(30)
    client.stop_stream()
    assert code == 0
    outs = [r.as_numpy("OUT")[0] for r, e in results if e is None and r.as_numpy("OUT") is not None]
    assert outs == [0, 1, 2, 3, 4], results


def _builtin_repo(root):
    """Writes the built-in demo models' configs into `root` (Triton layout)."""
    import os

    for name, text in _demo_configs().items():
        os.makedirs(os.path.join(root, name, "1"), exist_ok=True)
        with open(os.path.join(root, name, "config.pbtxt"), "w") as f:
            f.write(text)
    return root


def _demo_configs():
    """The built-in demo configs, read from the engine's source so they never drift."""
    import os

    src = open(os.path.join(os.path.dirname(__file__), "..", "..", "engine", "src", "builtin", "demo.rs")).read()
    found = dict(re.findall(r'pub const \w+: &str = r#"name: "(\w+)"(.*?)"#;', src, re.S))
    return {name: 'name: "%s"%s' % (name, body) for name, body in found.items()}


def test_a_panicking_model_fails_only_its_own_batch():
    with tempfile.TemporaryDirectory() as repo:
        _builtin_repo(repo)
        config = pathlib.Path(repo, "identity_fp32", "config.pbtxt")
        config.write_text(config.read_text() + 'parameters { key: "panic_marker" value: { string_value: "-7" } }\n')
        srv = start_server(["--model-repository", repo])
        try:
            http = httpclient.InferenceServerClient(srv.http)
            grpc = grpcclient.InferenceServerClient(srv.grpc)

            def identity(module, client, values):
                x = np.array([values], dtype=np.float32)
                tensor = module.InferInput("INPUT0", list(x.shape), "FP32")
                tensor.set_data_from_numpy(x)
                return client.infer("identity_fp32", [tensor]).as_numpy("OUTPUT0")

            for module, client in ((httpclient, http), (grpcclient, grpc)):
                with pytest.raises(InferenceServerException) as err:
                    identity(module, client, [-7.0, 1.0])
                assert "panic" in str(err.value), err.value
                # The instance lives on: the next request is computed, the model stays ready.
                np.testing.assert_array_equal(identity(module, client, [1.0, 2.0]), [[1.0, 2.0]])
                assert client.is_model_ready("identity_fp32")
            stats = http.get_inference_statistics("identity_fp32")["model_stats"][0]["inference_stats"]
            assert int(stats["fail"]["count"]) == 2 and int(stats["success"]["count"]) == 2, stats
        finally:
            assert srv.stop() == 0
