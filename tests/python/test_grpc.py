"""The gRPC frontend against the STOCK `tritonclient.grpc` and `grpcio-health-checking`:
health and metadata, raw tensors of every datatype, streaming (decoupled and plain models),
compression, and the status of each bad request, each followed by a good one."""

import pathlib
import queue
import shutil
import tempfile

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from conftest import start_server

DTYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "BF16", "FP32", "FP64", "BYTES"]

IDENTITY_ALL = """name: "identity_all"
backend: "identity"
max_batch_size: 0
input [
%s
]
output [
%s
]
"""


def config_type(dtype):
    return "TYPE_STRING" if dtype == "BYTES" else "TYPE_" + dtype


@pytest.fixture(scope="module")
def client(server):
    c = grpcclient.InferenceServerClient(server.grpc)
    yield c
    c.close()


@pytest.fixture(scope="module")
def extra_server():
    """A server over a repository with an identity of every datatype (plus the demo models)."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="nereid-grpc-"))
    ins = ",\n".join('  { name: "%s" data_type: %s dims: [ -1 ] optional: true }' % (d, config_type(d)) for d in DTYPES)
    outs = ",\n".join('  { name: "%s_OUT" data_type: %s dims: [ -1 ] }' % (d, config_type(d)) for d in DTYPES)
    (root / "identity_all" / "1").mkdir(parents=True)
    (root / "identity_all" / "config.pbtxt").write_text(IDENTITY_ALL % (ins, outs))
    srv = start_server(["--model-repository", str(root)])
    yield srv
    srv.stop()
    shutil.rmtree(root, ignore_errors=True)


def simple_inputs(batch=1, a=None, b=None):
    a = np.arange(16 * batch, dtype=np.int32).reshape(batch, 16) if a is None else a
    b = np.ones((batch, 16), dtype=np.int32) if b is None else b
    inputs = [grpcclient.InferInput("INPUT0", list(a.shape), "INT32"), grpcclient.InferInput("INPUT1", list(b.shape), "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs, a, b


def infer_simple(client, **kwargs):
    inputs, a, b = simple_inputs()
    result = client.infer("simple", inputs, **kwargs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    return result


def test_health_and_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("simple")
    assert client.is_model_ready("repeat_int32")
    assert not client.is_model_ready("nope")
    meta = client.get_server_metadata()
    assert meta.name == "nereid"
    assert "statistics" in meta.extensions
    m = client.get_model_metadata("simple", as_json=True)
    assert m["name"] == "simple" and m["versions"] == ["1"]
    assert [(t["name"], t["datatype"], t["shape"]) for t in m["inputs"]] == [("INPUT0", "INT32", ["-1", "16"]), ("INPUT1", "INT32", ["-1", "16"])]
    cfg = client.get_model_config("simple").config
    assert cfg.name == "simple" and cfg.max_batch_size == 8
    assert client.get_model_config("repeat_int32").config.model_transaction_policy.decoupled
    index = client.get_model_repository_index()
    states = {(m.name, m.version): m.state for m in index.models}
    assert states[("simple", "1")] == "READY"
    assert states[("repeat_int32", "1")] == "READY"


def test_infer_raw_and_statistics(client):
    before = client.get_inference_statistics("simple").model_stats[0].inference_stats.success.count
    result = infer_simple(client, request_id="req-7")
    assert result.get_response().id == "req-7"
    assert result.get_response().model_version == "1"
    # A batch of 4, asking for one output only.
    inputs, a, b = simple_inputs(4)
    result = client.infer("simple", inputs, outputs=[grpcclient.InferRequestedOutput("OUTPUT1")])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    assert result.as_numpy("OUTPUT0") is None
    stats = client.get_inference_statistics("simple").model_stats
    assert len(stats) == 1 and stats[0].name == "simple" and stats[0].version == "1"
    assert stats[0].inference_stats.success.count == before + 2
    everything = client.get_inference_statistics(as_json=True)
    assert {"simple", "identity_fp32", "repeat_int32"} <= {s["name"] for s in everything["model_stats"]}


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests(client, algorithm):
    infer_simple(client, compression_algorithm=algorithm)


def test_every_datatype_round_trips(extra_server):
    c = grpcclient.InferenceServerClient(extra_server.grpc)
    rng = np.random.default_rng(0)
    inputs, expected = [], {}
    for d in DTYPES:
        if d == "BYTES":
            data = np.array([b"hello", b"", bytes(range(256)), "ünï".encode()], dtype=np.object_)
        elif d == "BOOL":
            data = np.array([True, False, True])
        elif d == "BF16":
            import ml_dtypes  # tritonclient's numpy type for BF16

            data = np.array([1.0, -2.5, 0.0], dtype=ml_dtypes.bfloat16)
        elif d.startswith("FP"):
            data = rng.standard_normal(5).astype({"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}[d])
        else:
            data = rng.integers(0, 100, 6).astype(getattr(np, d.lower()))
        inp = grpcclient.InferInput(d, list(data.shape), d)
        inp.set_data_from_numpy(data)
        inputs.append(inp)
        expected[d] = data
    result = c.infer("identity_all", inputs)
    for d in DTYPES:
        out = result.as_numpy(d + "_OUT")
        assert out is not None, d
        if d == "BYTES":
            assert list(out) == list(expected[d])
        else:
            np.testing.assert_array_equal(out, expected[d], err_msg=d)
    c.close()


def stream_collect(client, requests, expect):
    """Sends (model, inputs, kwargs) requests on one stream and collects `expect` callbacks."""
    results = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        for model, inputs, kwargs in requests:
            client.async_stream_infer(model, inputs, **kwargs)
        got = [results.get(timeout=30) for _ in range(expect)]
    finally:
        client.stop_stream()
    assert results.empty()
    return got


def repeat_inputs(values, delays=None):
    values = np.array(values, dtype=np.int32)
    inputs = [grpcclient.InferInput("IN", [len(values)], "INT32")]
    inputs[0].set_data_from_numpy(values)
    if delays is not None:
        inputs.append(grpcclient.InferInput("DELAY", [len(delays)], "UINT32"))
        inputs[1].set_data_from_numpy(np.array(delays, dtype=np.uint32))
    return inputs


def final_flag(result):
    return result.get_response().parameters["triton_final_response"].bool_param


def test_stream_decoupled_model(server):
    c = grpcclient.InferenceServerClient(server.grpc)
    got = stream_collect(c, [("repeat_int32", repeat_inputs([4, 5, 6], [0, 1000, 1000]), {"request_id": "rep"})], 3)
    for i, (result, error) in enumerate(got):
        assert error is None
        assert result.get_response().id == "rep"
        assert result.as_numpy("OUT").tolist() == [[4, 5, 6][i]]
        assert result.as_numpy("IDX").tolist() == [i]
        assert final_flag(result) == (i == 2)
    # An empty request answers with one empty final response, only when asked for.
    got = stream_collect(
        c,
        [("repeat_int32", repeat_inputs([]), {"request_id": "none"}),
         ("repeat_int32", repeat_inputs([]), {"request_id": "empty", "enable_empty_final_response": True})],
        1,
    )
    assert got[0][1] is None and got[0][0].get_response().id == "empty" and final_flag(got[0][0])
    c.close()


def test_stream_plain_model_and_errors_keep_the_stream(server):
    c = grpcclient.InferenceServerClient(server.grpc)
    good, a, b = simple_inputs()
    bad, _, _ = simple_inputs(a=np.zeros((1, 8), dtype=np.int32), b=np.zeros((1, 8), dtype=np.int32))
    got = stream_collect(
        c,
        [("simple", good, {"request_id": "s1"}),
         ("nope", good, {"request_id": "s2"}),
         ("simple", bad, {"request_id": "s3"}),
         ("simple", good, {"request_id": "s4"})],
        4,
    )
    results = [r for r, e in got if e is None]
    errors = [e for r, e in got if e is not None]
    assert sorted(r.get_response().id for r in results) == ["s1", "s4"]
    for r in results:
        np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), a + b)
        assert final_flag(r)
    assert len(errors) == 2
    messages = sorted(str(e) for e in errors)
    assert any("nope" in m for m in messages), messages
    assert any("INPUT0" in m and "[1, 8]" in m for m in messages), messages
    c.close()


def test_unary_on_decoupled_model_says_to_stream(client):
    with pytest.raises(InferenceServerException) as e:
        client.infer("repeat_int32", repeat_inputs([1, 2]))
    assert e.value.status() == "StatusCode.UNIMPLEMENTED"
    assert "ModelStreamInfer" in e.value.message()
    infer_simple(client)


@pytest.mark.parametrize(
    "case,status,needle",
    [
        ("unknown model", "StatusCode.NOT_FOUND", "Request for unknown model: 'nope' is not found"),
        ("wrong dtype", "StatusCode.INVALID_ARGUMENT", "datatype FP32"),
        ("wrong shape", "StatusCode.INVALID_ARGUMENT", "shape [1, 8]"),
        ("batch over max", "StatusCode.INVALID_ARGUMENT", "batch size 9"),
        ("missing input", "StatusCode.INVALID_ARGUMENT", "missing input 'INPUT1'"),
        ("unknown output", "StatusCode.INVALID_ARGUMENT", "unknown requested output 'OUTPUT9'"),
        ("unknown version", "StatusCode.NOT_FOUND", "version 3"),
    ],
)
def test_errors_then_a_good_request(client, case, status, needle):
    model, kwargs = "simple", {}
    inputs, _, _ = simple_inputs()
    if case == "unknown model":
        model = "nope"
    elif case == "wrong dtype":
        inputs[0] = grpcclient.InferInput("INPUT0", [1, 16], "FP32")
        inputs[0].set_data_from_numpy(np.zeros((1, 16), dtype=np.float32))
    elif case == "wrong shape":
        inputs, _, _ = simple_inputs(a=np.zeros((1, 8), dtype=np.int32), b=np.zeros((1, 8), dtype=np.int32))
    elif case == "batch over max":
        inputs, _, _ = simple_inputs(9)
    elif case == "missing input":
        inputs = inputs[:1]
    elif case == "unknown output":
        kwargs["outputs"] = [grpcclient.InferRequestedOutput("OUTPUT9")]
    elif case == "unknown version":
        kwargs["model_version"] = "3"
    with pytest.raises(InferenceServerException) as e:
        client.infer(model, inputs, **kwargs)
    assert e.value.status() == status, (e.value.status(), e.value.message())
    assert needle in e.value.message(), e.value.message()
    infer_simple(client)


def test_stream_deadline(server):
    # The stream's deadline passes while a request is still answering: the call ends with
    # DEADLINE_EXCEEDED and the request is dropped.
    c = grpcclient.InferenceServerClient(server.grpc)
    results = queue.Queue()
    c.start_stream(callback=lambda result, error: results.put((result, error)), stream_timeout=0.5)
    try:
        c.async_stream_infer("repeat_int32", repeat_inputs([1, 2], [0, 5_000_000]), request_id="slow")
        first, error = results.get(timeout=10)
        assert error is None and first.get_response().id == "slow"
        _, error = results.get(timeout=10)
        assert error is not None and "DEADLINE_EXCEEDED" in str(error.status()), error
    finally:
        c.stop_stream()
    infer_simple(c, client_timeout=10)
    c.close()


def test_unimplemented_rpcs_say_so(client):
    with pytest.raises(InferenceServerException) as e:
        client.register_cuda_shared_memory("gpu", b"\x00" * 64, 0, 64)
    assert e.value.status() == "StatusCode.UNIMPLEMENTED"
    assert "not implemented by Nereid" in e.value.message()
    infer_simple(client)


def test_grpc_health_checking(server):
    with grpc.insecure_channel(server.grpc) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ["", "simple", "repeat_int32"]:
            resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.RpcError) as e:
            stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
