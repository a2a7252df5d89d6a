"""Triton's system shared memory extension against the STOCK `tritonclient` and its
`tritonclient.utils.shared_memory`, used as Triton's simple_*_shm_client examples do:
register, status, unregister, tensors read from and written to regions, and the refusal
of each bad region or tensor, each followed by a good request.

Under NEREID_E2E_GATEWAY=1 the gateway maps the client's memory itself (it runs on the
same host), so none of these tests is engine_only: the same flows must work through it.
"""

import contextlib
import os

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from conftest import start_server

pytestmark = pytest.mark.timeout(180)

PROTOCOLS = ("http", "grpc")
MODULES = {"http": httpclient, "grpc": grpcclient}
A = np.arange(16, dtype=np.int32).reshape(1, 16)
B = (5 - 3 * np.arange(16, dtype=np.int32)).reshape(1, 16)
# Prefilled where outputs go, so a result equal to it proves the server never wrote there.
SENTINEL = np.full((1, 16), -12345, dtype=np.int32)
TENSOR = 64  # bytes of one INT32 [1, 16] tensor


@pytest.fixture(scope="module")
def clients(server):
    c = {"http": httpclient.InferenceServerClient(server.http),
         "grpc": grpcclient.InferenceServerClient(server.grpc)}
    yield c
    for client in c.values():
        client.close()


def unique(tag, protocol):
    # /dev/shm and the session server are shared by every run on the host and every test file.
    return "nereid-%s-%s-%d" % (tag, protocol, os.getpid())


@contextlib.contextmanager
def regions(client, protocol, tag, *specs):
    """Creates and registers one region per spec (an object size, or (object size, offset,
    byte_size)); yields [(name, handle)]; unregisters by name and destroys them after."""
    made = []
    try:
        for i, spec in enumerate(specs):
            size, offset, byte_size = (spec, 0, spec) if isinstance(spec, int) else spec
            name = "%s-%d" % (unique(tag, protocol), i)
            made.append((name, shm.create_shared_memory_region(name, "/" + name, size)))
            client.register_system_shared_memory(name, "/" + name, byte_size, offset=offset)
        yield made
    finally:
        for name, _ in made:
            with contextlib.suppress(InferenceServerException):
                client.unregister_system_shared_memory(name)
        for _, handle in made:
            shm.destroy_shared_memory_region(handle)


def read(handle, offset):
    # A copy: a view would dangle once the region is destroyed, and may stop its unmapping.
    return shm.get_contents_as_numpy(handle, np.int32, [1, 16], offset=offset).copy()


def infer(client, protocol, inputs, outputs):
    """`simple` with inputs {name: array, or (region, byte_size, offset)} and outputs
    {name: None (in the response), or (region, byte_size, offset)}."""
    m = MODULES[protocol]
    ins, outs = [], []
    for name, source in inputs.items():
        tensor = m.InferInput(name, [1, 16], "INT32")
        if isinstance(source, np.ndarray):
            tensor.set_data_from_numpy(source)
        else:
            tensor.set_shared_memory(*source)
        ins.append(tensor)
    for name, target in outputs.items():
        out = m.InferRequestedOutput(name)
        if target:
            out.set_shared_memory(*target)
        outs.append(out)
    return client.infer("simple", ins, outputs=outs)


def assert_serving(client, protocol):
    result = infer(client, protocol, {"INPUT0": A, "INPUT1": B}, {"OUTPUT0": None, "OUTPUT1": None})
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)


def assert_placed(result, protocol, name, region):
    """An output written to REGION: over HTTP, as Triton answers, the output is its name,
    datatype and shape alone (Triton's C++ client reads any output with parameters as
    binary data); over gRPC its parameters name the region."""
    out = result.get_output(name)
    if protocol == "http":
        assert set(out) == {"name", "datatype", "shape"}, out
    else:
        assert out.parameters["shared_memory_region"].string_param == region


def bytes_in_response(result, protocol, name):
    """How much of NAME's data the response itself carried. (The stock as_numpy cannot say:
    for an output in shared memory it raises rather than returning None.)"""
    if protocol == "http":
        out = result.get_output(name)
        return 4 * len(out.get("data", [])) + out.get("parameters", {}).get("binary_data_size", 0)
    response = result.get_response()
    index = [o.name for o in response.outputs].index(name)
    raw = response.raw_output_contents  # one entry per output, in order, when any is present
    return len(raw[index]) if index < len(raw) else 0


def status(client, protocol, name=""):
    """Registered regions as {name: (key, offset, byte_size)}."""
    if protocol == "http":
        return {r["name"]: (r["key"], int(r["offset"]), int(r["byte_size"]))
                for r in client.get_system_shared_memory_status(region_name=name)}
    got = client.get_system_shared_memory_status(region_name=name, as_json=True)
    # Protobuf JSON leaves out zeros and writes 64-bit numbers as strings.
    listed = got.get("regions", {})
    assert all(r["name"] == n for n, r in listed.items()), got
    return {n: (r["key"], int(r.get("offset", 0)), int(r["byte_size"])) for n, r in listed.items()}


def refused(call):
    with pytest.raises(InferenceServerException) as e:
        call()
    return e.value.message()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_inputs_and_outputs_in_shared_memory(clients, protocol):
    c = clients[protocol]
    with regions(c, protocol, "flow", 2 * TENSOR, 2 * TENSOR) as [(inp, hin), (out, hout)]:
        shm.set_shared_memory_region(hin, [A, B])
        shm.set_shared_memory_region(hout, [SENTINEL, SENTINEL])
        result = infer(c, protocol, {"INPUT0": (inp, TENSOR, 0), "INPUT1": (inp, TENSOR, TENSOR)},
                       {"OUTPUT0": (out, TENSOR, 0), "OUTPUT1": (out, TENSOR, TENSOR)})
        np.testing.assert_array_equal(read(hout, 0), A + B)
        np.testing.assert_array_equal(read(hout, TENSOR), A - B)
        for name in ("OUTPUT0", "OUTPUT1"):
            assert_placed(result, protocol, name, out)
            assert bytes_in_response(result, protocol, name) == 0, name
        np.testing.assert_array_equal(read(hin, 0), A)  # inputs are only read


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_shared_memory_and_request_tensors_mix(clients, protocol):
    c = clients[protocol]
    with regions(c, protocol, "mix", TENSOR, TENSOR) as [(inp, hin), (out, hout)]:
        shm.set_shared_memory_region(hin, [B])
        shm.set_shared_memory_region(hout, [SENTINEL])
        # The output in shared memory comes first: the response's later one must still
        # line up with its own data.
        result = infer(c, protocol, {"INPUT0": A, "INPUT1": (inp, TENSOR, 0)},
                       {"OUTPUT0": (out, TENSOR, 0), "OUTPUT1": None})
        np.testing.assert_array_equal(read(hout, 0), A + B)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)
        assert_placed(result, protocol, "OUTPUT0", out)
        assert bytes_in_response(result, protocol, "OUTPUT0") == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_status_and_a_region_at_an_offset(clients, protocol):
    c = clients[protocol]
    # Page-aligned, as Triton maps a region from its offset.
    page = 4096
    with regions(c, protocol, "status", 2 * TENSOR, (page + 2 * TENSOR, page, 2 * TENSOR)) as made:
        (first, _), (second, handle) = made
        everything = status(c, protocol)
        assert everything[first] == ("/" + first, 0, 2 * TENSOR)
        assert everything[second] == ("/" + second, page, 2 * TENSOR)
        assert status(c, protocol, second) == {second: ("/" + second, page, 2 * TENSOR)}
        unknown = unique("status-unknown", protocol)
        assert unknown in refused(lambda: status(c, protocol, unknown))
        # A tensor's offset counts from the region's start, not the object's.
        shm.set_shared_memory_region(handle, [SENTINEL, A, B], offset=page - TENSOR)
        result = infer(c, protocol, {"INPUT0": (second, TENSOR, 0), "INPUT1": (second, TENSOR, TENSOR)},
                       {"OUTPUT0": None, "OUTPUT1": None})
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unregister_by_name(clients, protocol):
    c = clients[protocol]
    with regions(c, protocol, "unreg", 2 * TENSOR, 2 * TENSOR) as [(inp, hin), (out, hout)]:
        shm.set_shared_memory_region(hin, [A, B])
        c.unregister_system_shared_memory(inp)
        listed = status(c, protocol)
        assert inp not in listed and out in listed
        message = refused(lambda: infer(c, protocol, {"INPUT0": (inp, TENSOR, 0), "INPUT1": (inp, TENSOR, TENSOR)},
                                        {"OUTPUT0": None, "OUTPUT1": None}))
        assert inp in message
        # The other region is untouched.
        shm.set_shared_memory_region(hout, [SENTINEL])
        infer(c, protocol, {"INPUT0": A, "INPUT1": B}, {"OUTPUT0": (out, TENSOR, 0), "OUTPUT1": None})
        np.testing.assert_array_equal(read(hout, 0), A + B)


def test_unregister_all_on_one_registry_for_both_protocols():
    # Its own server: unregistering everything on the shared one would pull regions from
    # under other tests.
    srv = start_server(["--demo-models", "builtin"])
    c = {"http": httpclient.InferenceServerClient(srv.http), "grpc": grpcclient.InferenceServerClient(srv.grpc)}
    try:
        for protocol, other in (("http", "grpc"), ("grpc", "http")):
            with regions(c[protocol], protocol, "all", TENSOR, TENSOR) as made:
                assert set(status(c[other], other)) == {name for name, _ in made}
                c[other].unregister_system_shared_memory()
                assert status(c[protocol], protocol) == {} and status(c[other], other) == {}
            assert_serving(c[protocol], protocol)
    finally:
        for client in c.values():
            client.close()
        srv.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_register_refuses_a_missing_key(clients, protocol):
    c = clients[protocol]
    name, key = unique("missing", protocol), "/" + unique("absent-key", protocol)
    message = refused(lambda: c.register_system_shared_memory(name, key, TENSOR))
    assert key.lstrip("/") in message
    assert name not in status(c, protocol)
    assert_serving(c, protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_register_refuses_a_name_twice(clients, protocol):
    c = clients[protocol]
    with regions(c, protocol, "twice", TENSOR) as [(name, _)]:
        message = refused(lambda: c.register_system_shared_memory(name, "/" + name, TENSOR))
        assert name in message and "already" in message.lower()
        assert status(c, protocol, name) == {name: ("/" + name, 0, TENSOR)}  # the first stands
        assert_serving(c, protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("offset,byte_size", [(0, TENSOR + 1), (TENSOR // 2, TENSOR)])
def test_register_refuses_a_region_past_the_object(clients, protocol, offset, byte_size):
    c = clients[protocol]
    name = unique("past-end", protocol)
    handle = shm.create_shared_memory_region(name, "/" + name, TENSOR)
    try:
        message = refused(lambda: c.register_system_shared_memory(name, "/" + name, byte_size, offset=offset))
        assert "size" in message.lower()
        assert name not in status(c, protocol)
        assert_serving(c, protocol)
    finally:
        with contextlib.suppress(InferenceServerException):
            c.unregister_system_shared_memory(name)
        shm.destroy_shared_memory_region(handle)


# (INPUT0, INPUT1, OUTPUT0) as (byte_size, offset) in a 128-byte input region and a 64-byte
# output region; what the message must name ("region": the input region).
BAD_TENSORS = {
    "input_size_not_its_shape": ((60, 0), (TENSOR, TENSOR), (TENSOR, 0), "INPUT0"),
    "input_past_its_region": ((TENSOR, 0), (TENSOR, TENSOR + 32), (TENSOR, 0), "region"),
    "output_region_too_small": ((TENSOR, 0), (TENSOR, TENSOR), (32, 0), "OUTPUT0"),
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("case", sorted(BAD_TENSORS))
def test_bad_tensor_in_shared_memory_is_refused(clients, protocol, case):
    c = clients[protocol]
    in0, in1, out0, named = BAD_TENSORS[case]
    with regions(c, protocol, "bad-" + case, 2 * TENSOR, TENSOR) as [(inp, hin), (out, _)]:
        shm.set_shared_memory_region(hin, [A, B])
        message = refused(lambda: infer(c, protocol, {"INPUT0": (inp, *in0), "INPUT1": (inp, *in1)},
                                        {"OUTPUT0": (out, *out0), "OUTPUT1": None}))
        assert (inp if named == "region" else named) in message
        assert_serving(c, protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_one_region_for_inputs_and_outputs(clients, protocol):
    c = clients[protocol]
    with regions(c, protocol, "inplace", 3 * TENSOR) as [(name, handle)]:
        shm.set_shared_memory_region(handle, [A, SENTINEL, SENTINEL])
        # Both inputs read the same bytes; the outputs land after them in the same region.
        infer(c, protocol, {"INPUT0": (name, TENSOR, 0), "INPUT1": (name, TENSOR, 0)},
              {"OUTPUT0": (name, TENSOR, TENSOR), "OUTPUT1": (name, TENSOR, 2 * TENSOR)})
        np.testing.assert_array_equal(read(handle, 0), A)
        np.testing.assert_array_equal(read(handle, TENSOR), 2 * A)
        np.testing.assert_array_equal(read(handle, 2 * TENSOR), np.zeros_like(A))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_cuda_regions_are_none_and_unregistering_them_succeeds(clients, protocol):
    # This server has no CUDA shared memory: it lists none, knows no name, refuses to
    # register one, and unregistering (as perf_analyzer does on exit) has nothing to do.
    c = clients[protocol]
    status = c.get_cuda_shared_memory_status()
    assert (status if protocol == "http" else list(status.regions)) == []
    with pytest.raises(InferenceServerException) as err:
        c.get_cuda_shared_memory_status("gpu0")
    assert "CUDA shared-memory region 'gpu0' is not registered" in str(err.value)
    c.unregister_cuda_shared_memory("gpu0")
    c.unregister_cuda_shared_memory()
    with pytest.raises(InferenceServerException) as err:
        c.register_cuda_shared_memory("gpu0", b"\x00" * 64, 0, 64)
    assert "not" in str(err.value) and "CUDA" in str(err.value).upper()
    assert_serving(c, protocol)
