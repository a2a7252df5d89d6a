"""A client that leaves while its request waits in the queue costs nothing: the request is
dropped unanswered and never computed. Each case holds the single instance of the built-in
`sleep` model with one long request, queues a second request from the door under test,
makes sure the engine holds it (its pending-request gauge), kills the client, and reads the
model's statistics once the long request is done: one execution, one success, one request
that left the queue to compute.

gRPC has the same test in Rust (`frontends/grpc/tests/deadline.rs`
`a_dropped_call_leaves_the_queue_without_running`), REST over HTTP/2 too
(`frontends/rest/tests/disconnect.rs`); here the SSE door (`generate_stream`) and REST, each
over HTTP/1.1 and h2c, and WebSocket, all with stock clients (curl, websockets) killed the
way a real client dies: the kernel closes the socket, nothing is said first. Over HTTP/1.1
too the server notices the closed connection while the request waits (hyper watches a
connection for EOF while its handler runs) and drops the handler, and the request with it.
"""

import contextlib
import json
import re
import subprocess
import threading
import time
import urllib.request

import pytest
import requests
from websockets.sync.client import connect

from conftest import SLEEP_CONFIG, start_server

pytestmark = pytest.mark.timeout(180)


HOLD_MS = 1500


def engine_of(srv):
    """The process that computes: the engine behind a gateway, or the server itself."""
    return getattr(srv, "engine", srv)


def pending(srv):
    """The engine's queued-request gauge for `sleep` (0 when the gauge is not there yet)."""
    with urllib.request.urlopen("http://%s/metrics" % engine_of(srv).metrics, timeout=10) as r:
        text = r.read().decode()
    for labels, value in re.findall(r"^nv_inference_pending_request_count\{([^}]*)\} (\S+)$", text, re.M):
        if 'model="sleep"' in labels:
            return float(value)
    return 0.0


def counts(srv):
    """(executions, successes, requests that began computing) of `sleep`, from the engine's
    own statistics (a request's queue time is recorded when it leaves the queue to compute)."""
    r = requests.get("http://%s/v2/models/sleep/stats" % engine_of(srv).http, timeout=10)
    stats = r.json()["model_stats"][0]
    inference = stats["inference_stats"]
    return int(stats["execution_count"]), int(inference["success"]["count"]), int(inference["queue"]["count"])


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    repo = tmp_path_factory.mktemp("models")
    (repo / "sleep" / "1").mkdir(parents=True)
    (repo / "sleep" / "config.pbtxt").write_text(SLEEP_CONFIG)
    server = start_server(["--model-repository", str(repo)])
    yield server
    server.stop()


def curl(srv, http, path, body):
    """A curl client posting `body`, killed later by the test (it never gets an answer)."""
    return subprocess.Popen(
        ["curl", "-sS", "-N", http, "-H", "content-type: application/json", "-d", json.dumps(body),
         "http://%s%s" % (srv.http, path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def curl_client(http, path, body):
    def start(srv):
        proc = curl(srv, http, path, body)

        def leave():
            proc.kill()  # SIGKILL: the kernel closes the socket, nothing is said first
            proc.wait()
        return leave
    return start


def websocket_client(srv):
    ws = contextlib.ExitStack().enter_context(connect("ws://%s/v2/ws" % srv.http))
    ws.send(json.dumps({"id": "victim", "model_name": "sleep", "inputs": [
        {"name": "MS", "datatype": "UINT32", "shape": [1], "data": [1]}]}))

    def leave():
        ws.socket.close()  # no close frame: the TCP connection just goes away
    return leave


INFER = {"inputs": [{"name": "MS", "datatype": "UINT32", "shape": [1], "data": [1]}]}
CLIENTS = {
    "sse-http1.1": curl_client("--http1.1", "/v2/models/sleep/generate_stream", {"MS": 1}),
    "sse-h2c": curl_client("--http2-prior-knowledge", "/v2/models/sleep/generate_stream", {"MS": 1}),
    "rest-http1.1": curl_client("--http1.1", "/v2/models/sleep/infer", INFER),
    "rest-h2c": curl_client("--http2-prior-knowledge", "/v2/models/sleep/infer", INFER),
    "websocket": websocket_client,
}

@pytest.mark.parametrize("door", list(CLIENTS))
def test_a_client_that_leaves_while_queued_is_never_computed(srv, door):
    executions0, successes0, started0 = counts(srv)
    assert pending(srv) == 0
    held = {}

    def hold():
        r = requests.post("http://%s/v2/models/sleep/infer" % srv.http, timeout=60, json={
            "inputs": [{"name": "MS", "datatype": "UINT32", "shape": [1], "data": [HOLD_MS]}]})
        held["status"] = r.status_code

    holder = threading.Thread(target=hold)
    holder.start()
    # The long request computes (its answer is HOLD_MS away) before the victim comes.
    deadline = time.monotonic() + 30
    while counts(srv)[2] == started0:
        assert time.monotonic() < deadline and holder.is_alive(), "the long request never started"
        time.sleep(0.01)
    leave = CLIENTS[door](srv)
    # The victim is in the engine's queue behind the long request.
    deadline = time.monotonic() + 20
    while pending(srv) != 1:
        assert time.monotonic() < deadline, "the victim never reached the queue"
        assert holder.is_alive(), "the long request ended before the victim was queued"
        time.sleep(0.01)
    leave()
    holder.join(60)
    assert held.get("status") == 200, held
    # Had the victim stayed, it would run right after the long request: give it the time.
    time.sleep(0.5)
    executions, successes, started = counts(srv)
    assert (executions - executions0, successes - successes0, started - started0) == (1, 1, 1), \
        "%s: the queued request of a client that left was computed" % door
    assert pending(srv) == 0
