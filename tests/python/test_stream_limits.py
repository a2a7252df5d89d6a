"""Event streams per client address (`--http-max-streams-per-client`): a client at the
limit is refused a further stream with 429, `Retry-After` and a JSON error naming the flag,
while plain requests still pass; a stream that ends frees its slot."""

import http.client
import json
import time

import pytest

from conftest import REPEAT_CONFIG, start_server

pytestmark = pytest.mark.timeout(120)

# repeat_int32 with four sequences live at once, so every stream gets its first event at
# once; each then waits DELAY microseconds before its next element.
REPEAT_WIDE = (REPEAT_CONFIG % "repeat_wide").replace(
    "instance_group", 'parameters { key: "max_sequences" value: { string_value: "4" } }\ninstance_group')


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    (repo / "repeat_wide" / "1").mkdir(parents=True)
    (repo / "repeat_wide" / "config.pbtxt").write_text(REPEAT_WIDE)
    srv = start_server(["--model-repository", str(repo), "--http-max-streams-per-client", "2"])
    yield srv
    srv.stop()


def open_stream(srv, delays_us):
    """POSTs a generate_stream of len(delays_us) elements; returns (connection, response)
    with the response headers read and the body left open."""
    conn = http.client.HTTPConnection(*_split(srv.http), timeout=30)
    body = json.dumps({"IN": list(range(len(delays_us))), "DELAY": delays_us})
    conn.request("POST", "/v2/models/repeat_wide/generate_stream", body, {"Content-Type": "application/json"})
    return conn, conn.getresponse()


def test_a_client_past_its_stream_limit_is_refused_until_one_ends(limited):
    held = [open_stream(limited, [0, 20_000_000]) for _ in range(2)]
    try:
        for _, response in held:
            assert response.status == 200
            assert response.getheader("Content-Type").startswith("text/event-stream")
            assert b"data:" in response.readline()

        conn, refused = open_stream(limited, [0])
        body = json.loads(refused.read())
        conn.close()
        assert refused.status == 429, body
        assert refused.getheader("Retry-After") == "1"
        assert "--http-max-streams-per-client" in body["error"], body

        # Plain requests are not streams: they still pass.
        conn = http.client.HTTPConnection(*_split(limited.http), timeout=30)
        conn.request("GET", "/v2/health/ready")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        first_conn, _ = held.pop(0)
        first_conn.close()

    # The closed stream's slot is free again (the server notices the close at once: its
    # next write, or the engine stream's cancellation, drops the body).
    deadline = time.time() + 10
    while True:
        conn, response = open_stream(limited, [0])
        status = response.status
        response.read()
        conn.close()
        if status == 200 or time.time() > deadline:
            break
        time.sleep(0.2)
    assert status == 200
    for conn, _ in held:
        conn.close()


def _split(address):
    host, port = address.rsplit(":", 1)
    return host, int(port)
