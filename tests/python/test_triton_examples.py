"""The flows of Triton's own example clients (tritonclient's `src/python/examples`), which
are what a Triton user runs first against a new server: the `simple_string`,
`simple_identity` and `simple_int8` models of the built-in demo repository, read and
written exactly as those examples do, and Triton's error texts that clients match on.
Written in our own code after the examples' flows."""

import queue
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

PROTOCOLS = ("http", "grpc")


def client_for(server, protocol):
    if protocol == "http":
        return httpclient, httpclient.InferenceServerClient(server.http)
    return grpcclient, grpcclient.InferenceServerClient(server.grpc)


def as_text(values):
    return np.array([str(v).encode("utf-8") for v in values.flatten()], dtype=np.object_).reshape(values.shape)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_simple_string_adds_integers_written_as_text(server, protocol):
    door, client = client_for(server, protocol)
    in0 = np.arange(16, dtype=np.int32).reshape(1, 16)
    in1 = np.ones((1, 16), dtype=np.int32)
    inputs = [door.InferInput("INPUT0", [1, 16], "BYTES"), door.InferInput("INPUT1", [1, 16], "BYTES")]
    # The HTTP example sends one tensor binary and one as JSON, and asks the same of outputs.
    binary = [{"binary_data": True}, {"binary_data": False}] if protocol == "http" else [{}, {}]
    for tensor, values, how in zip(inputs, (in0, in1), binary):
        tensor.set_data_from_numpy(as_text(values), **how)
    outputs = [door.InferRequestedOutput(name, **how) for name, how in zip(("OUTPUT0", "OUTPUT1"), binary)]
    result = client.infer("simple_string", inputs, outputs=outputs)
    sums = np.array([int(x) for x in result.as_numpy("OUTPUT0").flatten()])
    diffs = np.array([int(x) for x in result.as_numpy("OUTPUT1").flatten()])
    np.testing.assert_array_equal(sums, (in0 + in1).flatten())
    np.testing.assert_array_equal(diffs, (in0 - in1).flatten())


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_simple_string_names_an_element_that_is_not_a_number(server, protocol):
    door, client = client_for(server, protocol)
    words = np.array([b"7"] * 15 + [b"seven"], dtype=np.object_).reshape(1, 16)
    inputs = [door.InferInput("INPUT0", [1, 16], "BYTES"), door.InferInput("INPUT1", [1, 16], "BYTES")]
    for tensor in inputs:
        tensor.set_data_from_numpy(words)
    with pytest.raises(InferenceServerException) as err:
        client.infer("simple_string", inputs)
    assert "element 15 is \"seven\"" in str(err.value), err.value
    # The server goes on answering.
    for tensor in inputs:
        tensor.set_data_from_numpy(as_text(np.full((1, 16), 2)))
    result = client.infer("simple_string", inputs)
    assert {int(x) for x in result.as_numpy("OUTPUT0").flatten()} == {4}


@pytest.mark.parametrize("binary", [True, False])
def test_simple_identity_keeps_null_characters_over_http(server, binary):
    # The example's string with an embedded NUL, in binary and in JSON.
    _, client = client_for(server, "http")
    data = np.array(["he\x00llo".encode("utf-8")] * 16, dtype=np.object_).reshape(1, 16)
    tensor = httpclient.InferInput("INPUT0", [1, 16], "BYTES")
    tensor.set_data_from_numpy(data, binary_data=binary)
    out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)
    got = client.infer("simple_identity", [tensor], outputs=[out]).as_numpy("OUTPUT0")
    flat = [x if isinstance(x, bytes) else str(x).encode("utf-8") for x in got.flatten()]
    assert flat == [b"he\x00llo"] * 16


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_simple_identity_returns_binary_blobs(server, protocol):
    door, client = client_for(server, protocol)
    data = np.array([b"\x00\x01\x02\x03"] * 16, dtype=np.bytes_).reshape(1, 16)
    tensor = door.InferInput("INPUT0", [1, 16], "BYTES")
    tensor.set_data_from_numpy(data, **({"binary_data": True} if protocol == "http" else {}))
    got = client.infer("simple_identity", [tensor]).as_numpy("OUTPUT0")
    assert [bytes(x) for x in got.flatten()] == [b"\x00\x01\x02\x03"] * 16


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_simple_int8_wraps_like_int8(server, protocol):
    door, client = client_for(server, protocol)
    in0 = np.arange(120, 136, dtype=np.int64).astype(np.int8).reshape(1, 16)
    in1 = np.full((1, 16), 10, dtype=np.int8)
    inputs = [door.InferInput("INPUT0", [1, 16], "INT8"), door.InferInput("INPUT1", [1, 16], "INT8")]
    for tensor, values in zip(inputs, (in0, in1)):
        tensor.set_data_from_numpy(values)
    result = client.infer("simple_int8", inputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), in0 + in1)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), in0 - in1)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unknown_models_and_versions_get_tritons_texts(server, protocol):
    door, client = client_for(server, protocol)
    tensor = door.InferInput("INPUT0", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 4), np.float32))
    with pytest.raises(InferenceServerException) as err:
        client.infer("no_such_model", [tensor])
    assert "Request for unknown model: 'no_such_model' is not found" in str(err.value)
    with pytest.raises(InferenceServerException) as err:
        client.infer("identity_fp32", [tensor], model_version="9")
    assert "Request for unknown model: 'identity_fp32' version 9 is not found" in str(err.value)
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("no_such_model")
    assert "Request for unknown model: 'no_such_model' is not found" in str(err.value)


def repeat_inputs(values, delays_us=None, wait_us=None):
    """repeat_int32's inputs as the custom-repeat example builds them: IN, DELAY and WAIT."""
    tensors = [grpcclient.InferInput("IN", [len(values)], "INT32")]
    tensors[-1].set_data_from_numpy(np.array(values, dtype=np.int32))
    if delays_us is not None:
        tensors.append(grpcclient.InferInput("DELAY", [len(values)], "UINT32"))
        tensors[-1].set_data_from_numpy(np.array(delays_us, dtype=np.uint32))
    if wait_us is not None:
        tensors.append(grpcclient.InferInput("WAIT", [1], "UINT32"))
        tensors[-1].set_data_from_numpy(np.array([wait_us], dtype=np.uint32))
    return tensors


def stream_repeat(server, requests, count):
    """Sends each (request id, inputs) on one stream, back to back, and returns the first
    `count` answers as (request id, OUT, seconds since the first request went out)."""
    answers = queue.Queue()
    with grpcclient.InferenceServerClient(server.grpc) as client:
        client.start_stream(callback=lambda result, error: answers.put(error or result))
        started = time.monotonic()
        for request_id, inputs in requests:
            client.async_stream_infer("repeat_int32", inputs, request_id=request_id)
        got = []
        for _ in range(count):
            item = answers.get(timeout=30)
            assert not isinstance(item, InferenceServerException), item
            got.append((item.get_response().id, int(item.as_numpy("OUT")[0]),
                        time.monotonic() - started))
        client.stop_stream()
    return got


def test_custom_repeat_example_with_delay_and_wait(server):
    # The example's request: ten values from 100, each response DELAY after the last, and
    # a WAIT: the ten come back in order.
    got = stream_repeat(server, [("r", repeat_inputs(list(range(100, 110)), [1000] * 10, 1000))], 10)
    assert [out for _, out, _ in got] == list(range(100, 110))


def test_wait_shorter_than_the_delays_lets_the_next_request_in(server):
    # The first request gives its place up at once (WAIT 0) but answers over 0.6 s; the
    # second, on the same single instance, answers in between.
    slow = repeat_inputs([1, 2, 3], [0, 300_000, 300_000], 0)
    got = stream_repeat(server, [("slow", slow), ("quick", repeat_inputs([9]))], 4)
    order = [request for request, _, _ in got]
    assert order.index("quick") < order.index("slow") + 2, order
    assert [out for request, out, _ in got if request == "slow"] == [1, 2, 3]


def test_wait_longer_than_the_responses_holds_the_instance(server):
    # The first request answers at once but keeps the instance for 0.5 s: a second one
    # sent once the first has answered (so it surely arrives second, also through a
    # gateway) is answered only after that.
    answers = queue.Queue()
    with grpcclient.InferenceServerClient(server.grpc) as client:
        client.start_stream(callback=lambda result, error: answers.put(error or result))
        started = time.monotonic()
        client.async_stream_infer("repeat_int32", repeat_inputs([1], None, 500_000), request_id="held")
        first = answers.get(timeout=30)
        assert not isinstance(first, InferenceServerException), first
        client.async_stream_infer("repeat_int32", repeat_inputs([2]), request_id="next")
        second = answers.get(timeout=30)
        assert not isinstance(second, InferenceServerException), second
        waited = time.monotonic() - started
        client.stop_stream()
    assert (first.get_response().id, second.get_response().id) == ("held", "next")
    assert waited >= 0.45, waited
