"""WebSocket inference (`/v2/ws`) with the stock `websockets` client: many requests in flight
on one socket, binary frames, errors that leave the socket open, and cancellation."""

import json
import struct
import time

import numpy as np
import pytest
from websockets.sync.client import connect

pytestmark = pytest.mark.timeout(120)


def repeat(rid, values, delay_us=0):
    n = len(values)
    return {
        "id": rid,
        "model_name": "repeat_int32",
        "inputs": [
            {"name": "IN", "datatype": "INT32", "shape": [n], "data": values},
            {"name": "DELAY", "datatype": "UINT32", "shape": [n], "data": [delay_us] * n},
        ],
    }


def simple(rid, a, b):
    return {
        "id": rid,
        "model_name": "simple",
        "inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": a.tolist()},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": b.tolist()},
        ],
    }


def read(ws):
    """The next frame as (header, raw bytes after the header)."""
    message = ws.recv(timeout=30)
    if isinstance(message, str):
        return json.loads(message), b""
    (n,) = struct.unpack_from("<I", message)
    return json.loads(message[4 : 4 + n]), message[4 + n :]


def test_many_requests_in_flight(server):
    with connect("ws://%s/v2/ws" % server.http) as ws:
        b = np.arange(16, dtype=np.int32)
        for i in range(10):
            ws.send(json.dumps(repeat("r%d" % i, [i, i + 1, i + 2, i + 3], 500)))
            ws.send(json.dumps(simple("s%d" % i, np.full(16, i, dtype=np.int32), b)))
        streamed, done = {}, set()
        while len(done) < 20:
            frame, _ = read(ws)
            assert "error" not in frame, frame
            rid = frame["id"]
            outputs = {o["name"]: o["data"] for o in frame["outputs"]}
            if rid.startswith("s"):
                i = int(rid[1:])
                assert outputs["OUTPUT0"] == (i + b).tolist()
                assert outputs["OUTPUT1"] == (i - b).tolist()
            elif outputs:
                streamed.setdefault(rid, []).append(outputs["OUT"][0])
            if frame["final"]:
                done.add(rid)
        for i in range(10):
            assert streamed["r%d" % i] == [i, i + 1, i + 2, i + 3]


def test_binary_frames(server):
    with connect("ws://%s/v2/models/simple/infer/ws" % server.http) as ws:
        a = np.arange(16, dtype=np.int32).reshape(1, 16)
        b = np.full((1, 16), 3, dtype=np.int32)
        header = json.dumps(
            {
                "id": "bin",
                "inputs": [
                    {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "parameters": {"binary_data_size": 64}},
                    {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "parameters": {"binary_data_size": 64}},
                ],
            }
        ).encode()
        ws.send(struct.pack("<I", len(header)) + header + a.tobytes() + b.tobytes())
        frame, raw = read(ws)
        assert frame["id"] == "bin" and frame["final"]
        sizes = [o["parameters"]["binary_data_size"] for o in frame["outputs"]]
        assert sizes == [64, 64]
        out = np.frombuffer(raw, dtype="<i4").reshape(2, 16)
        np.testing.assert_array_equal(out[0], (a + b)[0])
        np.testing.assert_array_equal(out[1], (a - b)[0])


def test_errors_leave_the_socket_open(server):
    with connect("ws://%s/v2/ws" % server.http) as ws:
        ws.send("{oops")
        frame, _ = read(ws)
        assert frame["id"] is None and frame["code"] == 400 and frame["final"]
        bad = repeat("nope", [1])
        bad["model_name"] = "no_such_model"
        ws.send(json.dumps(bad))
        frame, _ = read(ws)
        assert (frame["id"], frame["code"]) == ("nope", 404)
        ws.send(json.dumps(repeat("ok", [5])))
        frame, _ = read(ws)
        assert frame["id"] == "ok" and frame["outputs"][0]["data"] == [5] and frame["final"]


def test_cancel_and_disconnect_free_the_only_slot(server):
    url = "ws://%s/v2/ws" % server.http
    with connect(url) as ws:
        ws.send(json.dumps(repeat("long", [1] * 50, 200_000)))
        assert read(ws)[0]["id"] == "long"
        ws.send(json.dumps({"cancel": "long"}))
        while True:
            frame, _ = read(ws)
            if frame["final"]:
                assert frame["code"] == 499
                break
        ws.send(json.dumps(repeat("long2", [1] * 50, 200_000)))
        assert read(ws)[0]["id"] == "long2"
    # The socket above closed with long2 still running: its slot must come back at once.
    started = time.monotonic()
    with connect(url) as ws:
        ws.send(json.dumps(repeat("next", [1, 2])))
        while not read(ws)[0]["final"]:
            pass
    assert time.monotonic() - started < 3


def test_a_tensor_in_shared_memory_is_refused_as_such(server):
    # Frames carry their tensors: an input naming a region gets a 400 that says so (not
    # that the region is unknown), and the socket goes on.
    request = simple("shm", np.zeros(16, np.int32), np.zeros(16, np.int32))
    del request["inputs"][1]["data"]
    request["inputs"][1]["parameters"] = {"shared_memory_region": "r", "shared_memory_byte_size": 64}
    with connect("ws://%s/v2/ws" % server.http) as ws:
        ws.send(json.dumps(request))
        frame, _ = read(ws)
        assert (frame["id"], frame["code"]) == ("shm", 400)
        assert "WebSocket frames carry their tensors" in frame["error"], frame
        ws.send(json.dumps(simple("ok", np.ones(16, np.int32), np.ones(16, np.int32))))
        frame, _ = read(ws)
        assert frame["id"] == "ok" and frame["final"]
