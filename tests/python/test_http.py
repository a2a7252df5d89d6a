"""The HTTP frontend against the STOCK `tritonclient.http` (and plain requests/curl):
JSON and binary tensors, compression, concurrency, metadata, model control errors,
generate, and the status of each bad input."""

import asyncio
import gzip
import json
import pathlib
import shutil
import subprocess
import tempfile
import zlib

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

from conftest import start_server

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
DTYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "BF16", "FP32", "FP64", "BYTES"]


def config_type(dtype):
    return "TYPE_STRING" if dtype == "BYTES" else "TYPE_" + dtype


ECHO_TEXT = """name: "echo_text"
backend: "identity"
max_batch_size: 4
input [ { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "text_output" data_type: TYPE_STRING dims: [ 1 ] } ]
"""


@pytest.fixture(scope="module")
def client(server):
    c = httpclient.InferenceServerClient(server.http, concurrency=16)
    yield c
    c.close()


@pytest.fixture(scope="module")
def extra_server():
    """A server over a repository with an identity of every datatype and a text echo."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="nereid-http-"))
    ins = ",\n".join('  { name: "%s" data_type: %s dims: [ -1 ] optional: true }' % (d, config_type(d)) for d in DTYPES)
    outs = ",\n".join('  { name: "%s_OUT" data_type: %s dims: [ -1 ] }' % (d, config_type(d)) for d in DTYPES)
    for name, text in [("identity_all", IDENTITY_ALL % (ins, outs)), ("echo_text", ECHO_TEXT)]:
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(text)
    srv = start_server(["--model-repository", str(root)])
    yield srv
    srv.stop()
    shutil.rmtree(root, ignore_errors=True)


def simple_inputs(a, b, binary):
    inputs = [httpclient.InferInput("INPUT0", list(a.shape), "INT32"), httpclient.InferInput("INPUT1", list(b.shape), "INT32")]
    inputs[0].set_data_from_numpy(a, binary_data=binary)
    inputs[1].set_data_from_numpy(b, binary_data=binary)
    return inputs


@pytest.mark.parametrize("binary_in", [False, True])
@pytest.mark.parametrize("binary_out", [False, True])
def test_simple_json_and_binary(client, binary_in, binary_out):
    a = np.arange(32, dtype=np.int32).reshape(2, 16)
    b = np.full((2, 16), 7, dtype=np.int32)
    outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary_out),
               httpclient.InferRequestedOutput("OUTPUT1", binary_data=not binary_out)]
    result = client.infer("simple", simple_inputs(a, b, binary_in), outputs=outputs, request_id="r-%d%d" % (binary_in, binary_out))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    response = result.get_response()
    assert response["id"] == "r-%d%d" % (binary_in, binary_out)
    assert response["model_name"] == "simple"


def test_all_outputs_binary_by_default(client):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    result = client.infer("simple", simple_inputs(a, a, True))  # no outputs: binary_data_output
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a * 2)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a * 0)


@pytest.mark.parametrize("binary", [False, True])
def test_identity_fp32(client, binary):
    x = np.random.default_rng(1).standard_normal((3, 100)).astype(np.float32)
    inp = httpclient.InferInput("INPUT0", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)
    result = client.infer("identity_fp32", [inp], outputs=[out], model_version="1")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compression_both_ways(client, algorithm):
    a = np.arange(128, dtype=np.int32).reshape(8, 16)
    b = np.ones((8, 16), dtype=np.int32)
    for binary in (False, True):
        result = client.infer(
            "simple",
            simple_inputs(a, b, binary),
            outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)],
            request_compression_algorithm=algorithm,
            response_compression_algorithm=algorithm,
        )
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)


def test_only_inference_responses_are_compressed_as_in_triton(server):
    base = "http://%s" % server.http
    for path in ("/v2", "/v2/models/simple", "/v2/models/simple/config", "/v2/models/simple/stats"):
        r = requests.get(base + path, headers={"accept-encoding": "gzip"}, stream=True)
        assert r.status_code == 200 and "content-encoding" not in r.headers, (path, r.headers)
        json.loads(r.raw.read())
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    body = {"inputs": [{"name": n, "shape": [1, 16], "datatype": "INT32", "data": a.flatten().tolist()}
                       for n in ("INPUT0", "INPUT1")]}
    r = requests.post(base + "/v2/models/simple/infer", json=body, headers={"accept-encoding": "gzip"}, stream=True)
    assert r.headers.get("content-encoding") == "gzip", r.headers
    out = json.loads(gzip.decompress(r.raw.read()))
    assert out["outputs"][0]["data"] == (2 * a).flatten().tolist()

    # tritonclient.http.aio turns automatic decompression off and parses what comes.
    async def statistics_and_config():
        client = httpaio.InferenceServerClient(server.http)
        try:
            return (await client.get_inference_statistics("simple"),
                    await client.get_model_config("simple"))
        finally:
            await client.close()

    stats, config = asyncio.run(statistics_and_config())
    assert stats["model_stats"][0]["name"] == "simple" and config["name"] == "simple"


def test_concurrent_async_requests(client):
    pending = []
    for i in range(64):
        a = np.full((1, 16), i, dtype=np.int32)
        b = np.arange(16, dtype=np.int32).reshape(1, 16)
        pending.append((i, client.async_infer("simple", simple_inputs(a, b, i % 2 == 0))))
    for i, request in pending:
        result = request.get_result()
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), i + np.arange(16).reshape(1, 16))
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), i - np.arange(16).reshape(1, 16))


def test_health_metadata_config_stats_index(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("simple") and not client.is_model_ready("nope")
    meta = client.get_server_metadata()
    assert meta["name"] == "nereid" and "binary_tensor_data" in meta["extensions"]
    model = client.get_model_metadata("simple")
    assert model["inputs"][0] == {"name": "INPUT0", "datatype": "INT32", "shape": [-1, 16]}
    assert client.get_model_metadata("simple", model_version="1")["versions"] == ["1"]
    config = client.get_model_config("simple")
    assert config["max_batch_size"] == 8 and config["input"][1]["name"] == "INPUT1"
    client.infer("simple", simple_inputs(np.zeros((1, 16), np.int32), np.zeros((1, 16), np.int32), True))
    stats = client.get_inference_statistics("simple")["model_stats"][0]
    assert stats["name"] == "simple" and int(stats["inference_stats"]["success"]["count"]) >= 1
    demo = {"simple", "identity_fp32", "repeat_int32", "simple_string", "simple_int8", "simple_identity",
            "simple_sequence", "simple_dyna_sequence", "simple_string_dyna_sequence", "ensemble_add_sub"}
    assert len(client.get_inference_statistics()["model_stats"]) == len(demo)
    index = client.get_model_repository_index()
    assert {m["name"] for m in index} == demo
    assert all(m["state"] == "READY" for m in index)
    with pytest.raises(InferenceServerException) as e:
        client.get_model_metadata("nope")
    assert "nope" in str(e.value)


def test_load_unload_refused_without_explicit_mode(client):
    with pytest.raises(InferenceServerException) as e:
        client.load_model("simple")
    assert "explicit" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        client.unload_model("simple")
    assert "explicit" in e.value.message()
    with pytest.raises(InferenceServerException):
        client.load_model("simple", config=json.dumps({"name": "simple", "max_batch_size": 2}))
    assert client.is_model_ready("simple")


def test_every_datatype_with_the_stock_client(extra_server):
    import ml_dtypes  # tritonclient's numpy type for BF16

    client = httpclient.InferenceServerClient(extra_server.http)
    arrays = {
        "BOOL": np.array([True, False, True]),
        "BYTES": np.array([b"hello", "w\u00f6rld".encode(), b""], dtype=np.object_),
        "FP16": np.array([1.5, -2.25, 65504], dtype=np.float16),
        "BF16": np.array([1.5, -2.0, 8.0], dtype=ml_dtypes.bfloat16),
    }
    for d in DTYPES:
        if d not in arrays:
            arrays[d] = np.array([0, 1, 100], dtype=triton_to_np_dtype(d))
    for binary in (False, True):
        inputs, outputs = [], []
        for d, x in arrays.items():
            if d == "BF16" and not binary:
                continue  # tritonclient sends BF16 only as binary
            inp = httpclient.InferInput(d, list(x.shape), d)
            inp.set_data_from_numpy(x, binary_data=binary)
            inputs.append(inp)
            outputs.append(httpclient.InferRequestedOutput(d + "_OUT", binary_data=binary))
        result = client.infer("identity_all", inputs, outputs=outputs)
        for inp in inputs:
            name = inp.name()
            got, want = result.as_numpy(name + "_OUT"), arrays[name]
            if name == "BYTES" and not binary:
                want = np.array([w.decode() for w in want], dtype=np.object_)  # JSON strings come back as str
            np.testing.assert_array_equal(got, want, err_msg="%s binary=%s" % (name, binary))
    client.close()


def test_generate_and_generate_stream(server, extra_server):
    url = "http://%s/v2/models/echo_text/generate" % extra_server.http
    r = requests.post(url, json={"id": "7", "text_input": "hello nereid"})
    assert r.status_code == 200, r.text
    assert r.json() == {"id": "7", "model_name": "echo_text", "model_version": "1", "text_output": "hello nereid"}

    r = requests.post("http://%s/v2/models/simple/generate" % server.http, json={"INPUT0": list(range(16)), "INPUT1": [1] * 16})
    assert r.json()["OUTPUT0"] == list(range(1, 17))

    with requests.post("http://%s/v2/models/repeat_int32/generate_stream" % server.http, json={"IN": [1, 2, 3]}, stream=True) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[len("data: "):]) for line in r.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    assert [(e["OUT"], e["IDX"]) for e in events] == [(1, 0), (2, 1), (3, 2)]


def post(server, path, body, headers=None):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post("http://%s%s" % (server.http, path), data=data, headers=headers or {})


def good_input1():
    return {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": [1] * 16}


def input0(**kw):
    x = {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": list(range(16))}
    x.update(kw)
    return x


BAD = [
    ("bad json", "{\"inputs\": [", 400, "invalid JSON"),
    ("wrong datatype", {"inputs": [input0(datatype="FP32"), good_input1()]}, 400, "datatype FP32"),
    ("unknown datatype", {"inputs": [input0(datatype="FLOAT"), good_input1()]}, 400, "unknown datatype"),
    ("short data", {"inputs": [input0(data=[1] * 15), good_input1()]}, 400, "needs 16 elements"),
    ("negative dim", {"inputs": [input0(shape=[1, -16]), good_input1()]}, 400, "negative"),
    ("huge shape", {"inputs": [input0(shape=[1000000000000]), good_input1()]}, 400, "1000000000000"),
    ("unknown output", {"inputs": [input0(), good_input1()], "outputs": [{"name": "NOPE"}]}, 400, "NOPE"),
    ("missing input", {"inputs": [good_input1()]}, 400, "missing input 'INPUT0'"),
    ("nested too deep", {"inputs": [input0(data=[[[list(range(16))]]]), good_input1()]}, 400, "nested deeper"),
]


@pytest.mark.parametrize("name,body,status,needle", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs(server, client, name, body, status, needle):
    r = post(server, "/v2/models/simple/infer", body)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"], r.json()
    test_all_outputs_binary_by_default(client)  # and the server goes on


def test_binary_header_errors_and_unknown_model(server):
    header = json.dumps({"inputs": [input0(parameters={"binary_data_size": 64}, data=None), good_input1()]}).replace(', "data": null', "")
    r = post(server, "/v2/models/simple/infer", header.encode() + b"\0" * 64, {"Inference-Header-Content-Length": str(len(header) + 100)})
    assert r.status_code == 400 and "Inference-Header-Content-Length" in r.json()["error"]
    r = post(server, "/v2/models/simple/infer", header.encode() + b"\0" * 10, {"Inference-Header-Content-Length": str(len(header))})
    assert r.status_code == 400 and "binary_data_size" in r.json()["error"]
    r = post(server, "/v2/models/nope/infer", {"inputs": []})
    assert r.status_code == 404 and "nope" in r.json()["error"]
    r = post(server, "/v2/models/repeat_int32/infer", {"inputs": [{"name": "IN", "shape": [1], "datatype": "INT32", "data": [1]}]})
    assert r.status_code == 501


def test_compressed_request_with_plain_http(server):
    body = json.dumps({"inputs": [input0(), good_input1()]}).encode()
    for encoding, packed in [("gzip", gzip.compress(body)), ("deflate", zlib.compress(body))]:
        r = post(server, "/v2/models/simple/infer", packed, {"Content-Encoding": encoding, "Accept-Encoding": encoding})
        assert r.status_code == 200, r.text
        assert r.headers["content-encoding"] == encoding
        assert r.json()["outputs"][0]["data"] == list(range(1, 17))  # requests inflates it


def test_curl_http1_and_h2c(server):
    body = json.dumps({"inputs": [input0(), good_input1()]})
    for flag in ["--http1.1", "--http2-prior-knowledge"]:
        out = subprocess.run(
            ["curl", "-sS", flag, "-w", "\n%{http_version}", "-H", "Content-Type: application/json", "-d", body,
             "http://%s/v2/models/simple/infer" % server.http],
            check=True, capture_output=True, text=True,
        ).stdout
        text, version = out.rsplit("\n", 1)
        assert json.loads(text)["outputs"][1]["data"] == [i - 1 for i in range(16)]
        assert version == ("2" if "http2" in flag else "1.1")
    docs = subprocess.run(["curl", "-sS", "http://%s/docs" % server.http], check=True, capture_output=True, text=True).stdout
    assert "/v2/models/{model}/infer" in docs
