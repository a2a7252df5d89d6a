"""Every door of the real binary means the same thing: model version strings, body limits
and their error shapes, one layer stack over KServe, OpenAI and WebSocket routes, and a
server that refuses to announce itself when one of its doors cannot serve."""

import gzip
import json
import subprocess
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException
from websockets.sync.client import connect

from conftest import BIN, start_server


def post(url, body, headers=None):
    """POST raw bytes; returns (status, content type, parsed JSON body)."""
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, r.headers.get("content-type"), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type"), json.loads(e.read())


def simple_inputs(module):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    inputs = [module.InferInput("INPUT0", [1, 16], "INT32"), module.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(a)
    return inputs


def test_version_strings_mean_the_same_on_every_door(server):
    # Triton: no version is the newest ready one, an integer selects one, "-1" is refused.
    grpc_client = grpcclient.InferenceServerClient(server.grpc)
    http_client = httpclient.InferenceServerClient(server.http)
    for client, module in ((grpc_client, grpcclient), (http_client, httpclient)):
        assert client.infer("simple", simple_inputs(module)).as_numpy("OUTPUT0")[0][1] == 2
        assert client.infer("simple", simple_inputs(module), model_version="1").as_numpy("OUTPUT0")[0][1] == 2
        with pytest.raises(InferenceServerException) as err:
            client.infer("simple", simple_inputs(module), model_version="-1")
        assert "'-1'" in str(err.value), err.value
        with pytest.raises(InferenceServerException) as err:
            client.infer("simple", simple_inputs(module), model_version="7")
        assert "7" in str(err.value), err.value
    assert grpc_client.is_model_ready("simple", "1") and http_client.is_model_ready("simple", "1")
    assert not http_client.is_model_ready("simple", "-1")

    # The wire statuses behind those exceptions.
    stub_error = None
    try:
        grpc_client.get_model_metadata("simple", model_version="-1")
    except InferenceServerException as e:
        stub_error = e.status()
    assert stub_error == "StatusCode.INVALID_ARGUMENT"
    status, _, body = post("http://%s/v2/models/simple/versions/-1/infer" % server.http, b"{}")
    assert status == 400 and "'-1'" in body["error"], body
    status, _, body = post("http://%s/v2/models/simple/versions/7/infer" % server.http, b'{"inputs":[]}')
    assert status == 404, body

    with connect("ws://%s/v2/ws" % server.http) as ws:
        request = {"id": "a", "model_name": "repeat_int32", "inputs": [
            {"name": "IN", "datatype": "INT32", "shape": [1], "data": [4]}]}
        for version, code in (("-1", 400), ("7", 404)):
            ws.send(json.dumps({**request, "model_version": version}))
            frame = json.loads(ws.recv(timeout=30))
            assert (frame["id"], frame["code"], frame["final"]) == ("a", code, True), frame
        ws.send(json.dumps(request))
        frame = json.loads(ws.recv(timeout=30))
        assert frame["outputs"][0]["data"] == [4], frame


@pytest.fixture(scope="module")
def small_limit():
    """A server whose --http-max-input-size is 100 kB."""
    srv = start_server(["--demo-models", "builtin", "--http-max-input-size", "100000"])
    yield srv
    srv.stop()


def test_body_limit_and_its_error_shape_hold_on_every_route(small_limit, server):
    big = json.dumps({"model": "simple", "input": "x" * 200_000}).encode()
    # OpenAI routes answer in OpenAI's error shape, which the SDKs read.
    status, ctype, body = post("http://%s/v1/embeddings" % small_limit.http, big, {"content-type": "application/json"})
    assert (status, ctype) == (413, "application/json"), body
    assert body["error"]["type"] == "invalid_request_error" and "100000" in body["error"]["message"], body
    # Chunked (no Content-Length) and gzip bodies meet the same limit while being read.
    squeezed = gzip.compress(big)
    assert len(squeezed) < 100_000
    status, _, body = post("http://%s/v1/embeddings" % small_limit.http, squeezed, {"content-encoding": "gzip"})
    assert status == 413 and "100000" in body["error"]["message"], body
    # KServe routes answer in KServe's shape.
    status, _, body = post("http://%s/v2/models/simple/infer" % small_limit.http, big)
    assert status == 413 and "100000" in body["error"], body
    # With the default limit (64 MiB), a 3 MB OpenAI body is read in full: no hidden 2 MiB cap.
    three_mb = json.dumps({"model": "no-such-model", "input": "x" * 3_000_000}).encode()
    status, _, body = post("http://%s/v1/embeddings" % server.http, three_mb)
    assert status == 404 and body["error"]["code"] == "model_not_found", body
    # Compressed requests are accepted on /v1 as on /v2.
    status, _, body = post("http://%s/v1/embeddings" % server.http, gzip.compress(three_mb), {"content-encoding": "gzip"})
    assert status == 404, body


def test_openai_responses_are_compressed_when_asked(server):
    # OpenAI's clients decompress; only Triton's /v2 routes other than infer are left plain.
    request = urllib.request.Request("http://%s/v1/models" % server.http, headers={"accept-encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=30) as r:
        assert r.headers.get("content-encoding") == "gzip"
        models = json.loads(gzip.decompress(r.read()))
    assert "simple" in {m["id"] for m in models["data"]}


def test_a_door_that_cannot_serve_stops_the_server_before_it_is_announced(tmp_path):
    missing = tmp_path / "missing.pem"
    proc = subprocess.run(
        [BIN, "serve", "--demo-models", "builtin", "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
         "--grpc-use-ssl", "--grpc-server-cert", str(missing), "--grpc-server-key", str(missing)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert "NEREID_READY" not in proc.stdout
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and str(missing) in errors[0] and "gRPC" in errors[0], proc.stderr


def test_a_port_taken_by_another_process_is_one_clear_error(server):
    taken = server.grpc.rsplit(":", 1)[1]
    proc = subprocess.run(
        [BIN, "serve", "--demo-models", "builtin", "--http-port", "0", "--grpc-port", taken, "--metrics-port", "0"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0 and "NEREID_READY" not in proc.stdout
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and taken in errors[0], proc.stderr


def test_the_server_wide_inflight_limit_answers_each_door_in_its_own_words():
    srv = start_server(["--max-inflight", "1"])
    try:
        with connect("ws://%s/v2/ws" % srv.http) as ws:
            # One long request holds the only slot: 40 responses 50 ms apart.
            ws.send(json.dumps({"id": "long", "model_name": "repeat_int32", "inputs": [
                {"name": "IN", "datatype": "INT32", "shape": [40], "data": list(range(40))},
                {"name": "DELAY", "datatype": "UINT32", "shape": [40], "data": [50_000] * 40}]}))
            assert json.loads(ws.recv(timeout=30))["id"] == "long"

            request = urllib.request.Request(
                "http://%s/v2/models/simple/infer" % srv.http, method="POST",
                data=json.dumps({"inputs": [
                    {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": [0] * 16},
                    {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": [0] * 16}]}).encode())
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(request, timeout=30)
            assert err.value.code == 503 and err.value.headers["retry-after"] == "1"
            assert "--max-inflight" in json.loads(err.value.read())["error"]

            status, _, body = post("http://%s/v1/embeddings" % srv.http,
                                   json.dumps({"model": "minilm", "input": "hi"}).encode())
            assert status == 503 and body["error"]["code"] == "server_overloaded", body

            with pytest.raises(InferenceServerException) as err:
                grpcclient.InferenceServerClient(srv.grpc).infer("simple", simple_inputs(grpcclient))
            assert err.value.status() == "StatusCode.RESOURCE_EXHAUSTED", err.value

            ws.send(json.dumps({"id": "second", "model_name": "repeat_int32", "inputs": [
                {"name": "IN", "datatype": "INT32", "shape": [1], "data": [1]}]}))
            while True:
                frame = json.loads(ws.recv(timeout=30))
                if frame["id"] == "second":
                    assert (frame["code"], frame["final"]) == (503, True), frame
                    break
            while not json.loads(ws.recv(timeout=30))["final"]:
                pass
        # The slot is free again: every door serves.
        assert grpcclient.InferenceServerClient(srv.grpc).infer("simple", simple_inputs(grpcclient)) is not None
    finally:
        srv.stop()


def test_api_keys_guard_every_door_but_health():
    key = "k3y-" + "x" * 20
    srv = start_server(["--demo-models", "builtin", "--api-key", "other-key," + key])
    try:
        bearer = {"Authorization": "Bearer " + key}
        # Probes need no key.
        with urllib.request.urlopen("http://%s/v2/health/ready" % srv.http, timeout=30) as r:
            assert r.status == 200
        # KServe REST: 401 in KServe's shape, with WWW-Authenticate; the key opens it.
        http = httpclient.InferenceServerClient(srv.http)
        with pytest.raises(InferenceServerException) as refused:
            http.infer("simple", simple_inputs(httpclient))
        assert "401" in str(refused.value.status()) and "API key" in refused.value.message()
        request = urllib.request.Request("http://%s/v2/models/simple" % srv.http,
                                         headers={"Authorization": "Bearer wrong"})
        with pytest.raises(urllib.error.HTTPError) as wrong:
            urllib.request.urlopen(request, timeout=30)
        assert wrong.value.code == 401 and wrong.value.headers["WWW-Authenticate"] == "Bearer"
        assert "error" in json.loads(wrong.value.read())
        assert http.infer("simple", simple_inputs(httpclient), headers=bearer).as_numpy("OUTPUT0") is not None
        # gRPC: UNAUTHENTICATED without the key; health checking stays open.
        grpc = grpcclient.InferenceServerClient(srv.grpc)
        with pytest.raises(InferenceServerException) as unauthenticated:
            grpc.infer("simple", simple_inputs(grpcclient))
        assert unauthenticated.value.status() == "StatusCode.UNAUTHENTICATED"
        metadata = {"authorization": "Bearer " + key}  # gRPC metadata keys are lower case
        assert grpc.infer("simple", simple_inputs(grpcclient), headers=metadata).as_numpy("OUTPUT1") is not None
        import grpc as grpc_lib
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        with grpc_lib.insecure_channel(srv.grpc) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert status.status == health_pb2.HealthCheckResponse.SERVING
        # OpenAI routes: the SDK's api_key is the bearer token; a wrong one is its AuthenticationError.
        import openai
        good = openai.OpenAI(base_url="http://%s/v1" % srv.http, api_key=key, max_retries=0)
        assert "simple" in {m.id for m in good.models.list()}
        bad = openai.OpenAI(base_url="http://%s/v1" % srv.http, api_key="nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
    finally:
        srv.stop()


@pytest.mark.engine_only("a gateway reads its engines' repository and configs: restrict groups at the gateway, not behind it")
def test_restricted_api_groups_answer_only_with_their_header():
    admin = {"admin-key": "s3cret"}
    srv = start_server(["--demo-models", "builtin", "--model-control-mode", "explicit", "--load-model", "simple",
                        "--http-restricted-api", "model-repository,statistics:Admin-Key=s3cret",
                        "--grpc-restricted-protocol", "model-repository:admin-key=s3cret"])
    try:
        http = httpclient.InferenceServerClient(srv.http)
        # Inference and metadata stay open; the restricted groups are 403 naming the header, never its value.
        assert http.infer("simple", simple_inputs(httpclient)).as_numpy("OUTPUT0") is not None
        assert http.get_model_metadata("simple")["name"] == "simple"
        for call in (lambda h: http.get_model_repository_index(headers=h),
                     lambda h: http.get_inference_statistics("simple", headers=h)):
            with pytest.raises(InferenceServerException) as refused:
                call(None)
            assert "403" in str(refused.value.status()), refused.value
            assert "admin-key" in refused.value.message() and "s3cret" not in refused.value.message()
            with pytest.raises(InferenceServerException):
                call({"admin-key": "s3cre"})
            assert call(admin) is not None
        http.load_model("identity_fp32", headers=admin)
        assert http.is_model_ready("identity_fp32")
        # A plain client gets the refusal as KServe's JSON error.
        status, _, body = post("http://%s/v2/repository/index" % srv.http, b"{}")
        assert status == 403 and "admin-key" in body["error"]
        # gRPC: PERMISSION_DENIED for the restricted group only; statistics are not restricted there.
        grpc = grpcclient.InferenceServerClient(srv.grpc)
        with pytest.raises(InferenceServerException) as denied:
            grpc.unload_model("identity_fp32")
        assert denied.value.status() == "StatusCode.PERMISSION_DENIED"
        assert "admin-key" in denied.value.message()
        assert grpc.is_model_ready("identity_fp32")
        assert grpc.get_inference_statistics("simple") is not None
        assert grpc.infer("simple", simple_inputs(grpcclient)).as_numpy("OUTPUT1") is not None
        grpc.unload_model("identity_fp32", headers=admin)
        assert not grpc.is_model_ready("identity_fp32")
    finally:
        srv.stop()


@pytest.mark.parametrize("flag,named", [
    (["--http-restricted-api", "infer:k=v"], "unknown API group 'infer'"),
    (["--grpc-restricted-protocol", "inference"], "GROUP[,GROUP...]:HEADER=VALUE"),
    (["--http-restricted-api", "inference:a=1", "--http-restricted-api", "inference,trace:b=2"],
     "API group 'inference' is restricted twice"),
])
def test_a_bad_restriction_stops_the_server_with_one_line(flag, named):
    result = subprocess.run([BIN, "serve", "--demo-models", "builtin", "--http-port", "0", "--grpc-port", "0",
                             "--metrics-port", "0", *flag], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert named in result.stderr, result.stderr
    assert "NEREID_READY" not in result.stdout


@pytest.mark.engine_only("a gateway shows its engines --backend-api-key; the key file is the engine's flag")
def test_api_keys_from_a_file_join_the_flag_and_an_empty_file_is_refused(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# operators\n\n  from-file-1  \nfrom-file-2\n")
    srv = start_server(["--demo-models", "builtin", "--api-key", "from-flag", "--api-key-file", str(keys)])
    try:
        http = httpclient.InferenceServerClient(srv.http)
        for key in ("from-flag", "from-file-1", "from-file-2"):
            headers = {"Authorization": "Bearer " + key}
            assert http.infer("simple", simple_inputs(httpclient), headers=headers).as_numpy("OUTPUT0") is not None
        for wrong in ("# operators", "from-file", ""):
            with pytest.raises(InferenceServerException) as refused:
                http.infer("simple", simple_inputs(httpclient), headers={"Authorization": "Bearer " + wrong})
            assert "401" in str(refused.value.status())
    finally:
        srv.stop()
    empty = tmp_path / "empty"
    empty.write_text("# nothing yet\n")
    for path, named in ((empty, "holds no key"), (tmp_path / "absent", "cannot read")):
        result = subprocess.run([BIN, "serve", "--demo-models", "builtin", "--http-port", "0", "--grpc-port", "0",
                                 "--metrics-port", "0", "--api-key-file", str(path)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode != 0 and named in result.stderr, result.stderr
        assert "NEREID_READY" not in result.stdout
