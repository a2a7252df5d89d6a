"""The sequence batcher through tritonclient's sequence calls (`sequence_id`,
`sequence_start`, `sequence_end`) over HTTP, gRPC and the gRPC stream, after the flows of
Triton's `simple_*_sequence_*_client.py` examples, against the demo repository's
`simple_sequence`, `simple_dyna_sequence` and `simple_string_dyna_sequence`; and, on
repositories of their own, idle release, the backlog of sequences beyond the live bound,
initial state from a file, and the errors Triton gives."""

import queue
import threading
import time
import uuid

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import start_server

PROTOCOLS = ("http", "grpc")
# The examples' values: each sequence starts with its own first value, then these.
VALUES = [11, 7, 5, 3, 2, 0, 1]


def client_for(srv, protocol):
    if protocol == "http":
        return httpclient, httpclient.InferenceServerClient(srv.http, concurrency=4)
    return grpcclient, grpcclient.InferenceServerClient(srv.grpc)


def one(door, value, name="INPUT"):
    tensor = door.InferInput(name, [1, 1], "INT32")
    tensor.set_data_from_numpy(np.full((1, 1), value, dtype=np.int32))
    return [tensor]


def step(client, door, model, sequence_id, value, start=False, end=False, **kwargs):
    result = client.infer(model, one(door, value), sequence_id=sequence_id,
                          sequence_start=start, sequence_end=end, **kwargs)
    return int(result.as_numpy("OUTPUT")[0][0])


def interleaved(client, door, model, sequences):
    """Sends the sequences' requests round-robin, one request of each in turn, and returns
    each sequence's outputs in order."""
    outputs = {sid: [] for sid, _ in sequences}
    longest = max(len(values) for _, values in sequences)
    for i in range(longest):
        for sid, values in sequences:
            if i < len(values):
                outputs[sid].append(step(client, door, model, sid, values[i],
                                         start=i == 0, end=i == len(values) - 1))
    return outputs


def expected_simple(first, values, corrid=None):
    """`simple_sequence`: the input plus one on the first request; `simple_dyna_sequence`
    adds the correlation id on the last."""
    out = [first + 1] + list(values)
    if corrid is not None:
        out[-1] += corrid
    return out


def expected_accumulated(first, values, corrid):
    sums = list(np.cumsum([first] + list(values)))
    sums[-1] += corrid
    return [int(s) for s in sums]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_simple_sequence_interleaved_with_integer_and_string_ids(server, protocol):
    door, client = client_for(server, protocol)
    base = 1000 if protocol == "http" else 2000
    text_id = str(uuid.uuid4())
    negated = [-v for v in VALUES]
    got = interleaved(client, door, "simple_sequence",
                      [(base, [0] + VALUES), (base + 1, [100] + negated), (text_id, [20] + negated)])
    assert got[base] == expected_simple(0, VALUES)
    assert got[base + 1] == expected_simple(100, negated)
    assert got[text_id] == expected_simple(20, negated)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_dyna_sequences_add_the_correlation_id_on_the_last_request(server, protocol):
    door, client = client_for(server, protocol)
    base = 3000 if protocol == "http" else 4000
    negated = [-v for v in VALUES]
    got = interleaved(client, door, "simple_dyna_sequence",
                      [(base, [0] + VALUES), (base + 1, [100] + negated)])
    assert got[base] == expected_simple(0, VALUES, corrid=base)
    assert got[base + 1] == expected_simple(100, negated, corrid=base + 1)
    # The string-id model keeps a running sum in implicit state.
    text_id = str(base + 2)
    got = interleaved(client, door, "simple_string_dyna_sequence",
                      [(text_id, [20] + negated), (str(base + 3), [5] + VALUES)])
    assert got[text_id] == expected_accumulated(20, negated, base + 2)
    assert got[str(base + 3)] == expected_accumulated(5, VALUES, base + 3)


def test_grpc_stream_sequences_answer_in_order(server):
    # The stream example: three sequences written onto one stream back to back, results
    # matched to their sequence by request id.
    results = queue.Queue()

    def callback(result, error):
        results.put(error if error else result)

    sequences = [(5000, [0] + VALUES, "simple_sequence"),
                 (5001, [100] + [-v for v in VALUES], "simple_sequence"),
                 (str(5002), [20] + [-v for v in VALUES], "simple_string_dyna_sequence")]
    with grpcclient.InferenceServerClient(server.grpc) as client:
        client.start_stream(callback=callback)
        for sid, values, model in sequences:
            for i, value in enumerate(values):
                client.async_stream_infer(model, one(grpcclient, value), request_id=f"{sid}_{i}",
                                          sequence_id=sid, sequence_start=i == 0,
                                          sequence_end=i == len(values) - 1)
        got = {str(sid): [] for sid, _, _ in sequences}
        for _ in range(sum(len(v) for _, v, _ in sequences)):
            item = results.get(timeout=30)
            assert not isinstance(item, InferenceServerException), item
            sid, index = item.get_response().id.split("_")
            got[sid].append((int(index), int(item.as_numpy("OUTPUT")[0][0])))
        client.stop_stream()
    for sid, values, _ in sequences[:2]:
        assert [i for i, _ in got[str(sid)]] == list(range(len(values))), "a sequence answered out of order"
    assert [v for _, v in got["5000"]] == expected_simple(0, VALUES)
    assert [v for _, v in got["5001"]] == expected_simple(100, [-v for v in VALUES])
    assert [v for _, v in sorted(got["5002"])] == expected_accumulated(20, [-v for v in VALUES], 5002)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_triton_errors_for_requests_outside_a_sequence(server, protocol):
    door, client = client_for(server, protocol)
    with pytest.raises(InferenceServerException) as err:
        client.infer("simple_sequence", one(door, 1))
    assert "inference request to model 'simple_sequence' must specify a non-zero or non-empty correlation ID" in str(err.value)
    sid = 6000 if protocol == "http" else 6100
    with pytest.raises(InferenceServerException) as err:
        step(client, door, "simple_sequence", sid, 1)
    assert (f"inference request for sequence {sid} to model 'simple_sequence' must specify the START flag "
            "on the first request of the sequence") in str(err.value)
    # Two batch rows in one request of a sequence.
    two = door.InferInput("INPUT", [2, 1], "INT32")
    two.set_data_from_numpy(np.ones((2, 1), dtype=np.int32))
    with pytest.raises(InferenceServerException) as err:
        client.infer("simple_sequence", [two], sequence_id=sid, sequence_start=True)
    assert "must specify batch-size 1 due to requirements of sequence batcher" in str(err.value)
    # A correlation id the CORRID control cannot hold.
    with pytest.raises(InferenceServerException) as err:
        step(client, door, "simple_dyna_sequence", "not-a-number", 1, start=True)
    assert "'sequence_id' is the string 'not-a-number'" in str(err.value)
    # A control input is the server's to fill.
    start = door.InferInput("START", [1, 1], "INT32")
    start.set_data_from_numpy(np.ones((1, 1), dtype=np.int32))
    with pytest.raises(InferenceServerException) as err:
        client.infer("simple_sequence", one(door, 1) + [start], sequence_id=sid, sequence_start=True)
    assert "unexpected input 'START'" in str(err.value)
    # After its end, a sequence must start again.
    assert step(client, door, "simple_sequence", sid, 4, start=True, end=True) == 5
    with pytest.raises(InferenceServerException) as err:
        step(client, door, "simple_sequence", sid, 4)
    assert "must specify the START flag" in str(err.value)
    assert step(client, door, "simple_sequence", sid, 4, start=True) == 5
    assert step(client, door, "simple_sequence", sid, 9, end=True) == 9


def test_state_outputs_stay_on_the_server(server):
    door, client = client_for(server, "http")
    sid = "7000"
    step(client, door, "simple_string_dyna_sequence", sid, 3, start=True)
    result = client.infer("simple_string_dyna_sequence", one(door, 4), sequence_id=sid,
                          outputs=[door.InferRequestedOutput("OUTPUT")])
    assert int(result.as_numpy("OUTPUT")[0][0]) == 7
    assert result.as_numpy("ACCUMULATOR_OUT") is None
    result = client.infer("simple_string_dyna_sequence", one(door, 1), sequence_id=sid, sequence_end=True)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["OUTPUT"]
    assert int(result.as_numpy("OUTPUT")[0][0]) == 8 + 7000
    config = client.get_model_config("simple_string_dyna_sequence")
    assert config["sequence_batching"]["state"][0]["output_name"] == "ACCUMULATOR_OUT"


ACCUMULATE = """name: "%(name)s"
backend: "accumulate"
max_batch_size: 4
sequence_batching {
  max_sequence_idle_microseconds: %(idle)d
  oldest { max_candidate_sequences: %(candidates)d }
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1 ] } ] },
    { name: "END" control [ { kind: CONTROL_SEQUENCE_END bool_false_true: [ false, true ] } ] }
  ]
  state [ { input_name: "ACC_IN" output_name: "ACC_OUT" data_type: TYPE_INT32 dims: [ 1 ]
            %(initial)s } ]
}
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""


@pytest.fixture(scope="module")
def sequence_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("sequence-repo")
    models = {
        "short_idle": dict(idle=300_000, candidates=16, initial=""),
        "one_at_a_time": dict(idle=10_000_000, candidates=1, initial=""),
        "from_file": dict(idle=10_000_000, candidates=4,
                          initial='initial_state { name: "seed" data_type: TYPE_INT32 dims: [ 1 ] data_file: "seed.bin" }'),
    }
    for name, knobs in models.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(ACCUMULATE % dict(name=name, **knobs))
    (root / "from_file" / "initial_state").mkdir()
    (root / "from_file" / "initial_state" / "seed.bin").write_bytes(np.array([1000], dtype=np.int32).tobytes())
    srv = start_server(["--model-repository", str(root)])
    yield srv
    srv.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_idle_sequence_is_released(sequence_server, protocol):
    door, client = client_for(sequence_server, protocol)
    sid = 10 if protocol == "http" else 11
    assert step(client, door, "short_idle", sid, 5, start=True) == 5
    assert step(client, door, "short_idle", sid, 5) == 10
    time.sleep(1.0)
    with pytest.raises(InferenceServerException) as err:
        step(client, door, "short_idle", sid, 5)
    assert "must specify the START flag" in str(err.value)
    assert step(client, door, "short_idle", sid, 2, start=True) == 2


def test_sequences_beyond_the_candidates_wait_in_the_backlog(sequence_server):
    door, client = client_for(sequence_server, "grpc")
    assert step(client, door, "one_at_a_time", 1, 1, start=True) == 1
    answered = queue.Queue()
    client.async_infer("one_at_a_time", one(door, 40), lambda result, error: answered.put(error or result),
                       sequence_id=2, sequence_start=True)
    with pytest.raises(queue.Empty):
        answered.get(timeout=0.5)  # the only live slot is taken
    assert step(client, door, "one_at_a_time", 1, 2, end=True) == 3
    result = answered.get(timeout=10)  # the first sequence ended: the second starts
    assert not isinstance(result, InferenceServerException), result
    assert int(result.as_numpy("OUTPUT")[0][0]) == 40
    assert step(client, door, "one_at_a_time", 2, 2, end=True) == 42


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_initial_state_from_a_data_file(sequence_server, protocol):
    door, client = client_for(sequence_server, protocol)
    sid = f"seed-{protocol}"
    # Every sequence starts from the file's 1000.
    assert step(client, door, "from_file", sid, 1, start=True) == 1001
    assert step(client, door, "from_file", sid, 1, end=True) == 1002
    assert step(client, door, "from_file", sid, 7, start=True) == 1007


def test_concurrent_sequences_keep_their_own_state(sequence_server):
    # Sixteen clients, each running its own sequence at once: every sum is its own.
    door, client = client_for(sequence_server, "grpc")
    errors = []

    def run(k):
        try:
            total = 0
            for i, v in enumerate(range(k, k + 6)):
                total += v
                got = step(client, door, "short_idle", 100 + k, v, start=i == 0, end=i == 5)
                assert got == total, (k, i, got, total)
        except Exception as e:  # noqa: BLE001 - collected for the assertion below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


@pytest.mark.engine_only("a gateway's index lists the models its engines serve")
def test_a_bad_sequence_config_is_refused_naming_the_field(tmp_path):
    bad = ACCUMULATE % dict(name="bad", idle=0, candidates=0, initial="")
    (tmp_path / "bad" / "1").mkdir(parents=True)
    (tmp_path / "bad" / "config.pbtxt").write_text(bad)
    srv = start_server(["--model-repository", str(tmp_path)])
    try:
        client = httpclient.InferenceServerClient(srv.http)
        index = {m["name"]: m for m in client.get_model_repository_index()}
        assert index["bad"]["state"] == "UNAVAILABLE"
        assert "max_candidate_sequences must be at least 1" in index["bad"]["reason"]
    finally:
        srv.stop()
