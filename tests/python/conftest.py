"""Starts the real `nereid serve` binary on port 0 for end-to-end tests with stock clients.

The binary prints one line `NEREID_READY http=HOST:PORT grpc=HOST:PORT metrics=HOST:PORT`
on stdout once every listener is bound; the fixtures read the chosen ports from it.

With NEREID_E2E_GATEWAY=1 every server a test starts is an engine with a `nereid gateway`
in front, and the test talks to the gateway: the same suite proves a client cannot tell
the two apart. Tests of one process's internals are marked `engine_only` and skipped then.
"""

import os
import pathlib
import re
import signal
import subprocess
import threading
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("NEREID_BIN", str(ROOT / "target" / "debug" / "nereid"))
READY = re.compile(r"NEREID_READY http=(\S+) grpc=(\S+) metrics=(\S+)")


THROUGH_GATEWAY = os.environ.get("NEREID_E2E_GATEWAY") == "1"

# Flags of `serve` alone (each takes one value); every other flag is a door's, and a
# gateway gets it too, so a limit a test sets holds at the door the test talks to.
SERVE_ONLY = {"--model-repository", "--demo-models", "--model-control-mode", "--load-model",
              "--repository-poll-secs", "--strict-readiness", "--cache-config"}


# Configs tests write into their own repositories (a temporary folder each, so parallel
# runs never share one). `sleep` answers after MS milliseconds; `simple` is Triton's.
SLEEP_CONFIG = """name: "sleep"
backend: "sleep"
max_batch_size: 0
input [ { name: "MS" data_type: TYPE_UINT32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_UINT32 dims: [ 1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
"""

# The demo's decoupled repeat_int32 under the name NAME (`REPEAT_CONFIG % NAME`).
REPEAT_CONFIG = """name: "%s"
backend: "repeat"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [
  { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] },
  { name: "DELAY" data_type: TYPE_UINT32 dims: [ -1 ] optional: true }
]
output [
  { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "IDX" data_type: TYPE_UINT32 dims: [ 1 ] }
]
instance_group [ { count: 1 kind: KIND_CPU } ]
"""

SIMPLE_CONFIG = """name: "simple"
backend: "add_sub"
max_batch_size: 8
input [
  { name: "INPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "INPUT1" data_type: TYPE_INT32 dims: [ 16 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 16 ] }
]
dynamic_batching { }
instance_group [ { count: 1 kind: KIND_CPU } ]
"""


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "engine_only(reason): tests an engine process's internals, not a door")


def pytest_collection_modifyitems(config, items):
    if not THROUGH_GATEWAY:
        return
    for item in items:
        marker = item.get_closest_marker("engine_only")
        if marker:
            item.add_marker(pytest.mark.skip(reason="engine only: " + marker.args[0]))


class Server:
    """A running `nereid serve` (or `nereid gateway`) process and its addresses."""

    def __init__(self, args, env=None, command="serve"):
        self.log = []
        self.proc = subprocess.Popen(
            [BIN, command, "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )
        deadline = time.time() + 120
        match = None
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.log.append(line)
            match = READY.search(line)
            if match:
                break
        if not match:
            self.proc.kill()
            raise RuntimeError("nereid did not start:\n" + "".join(self.log))
        self.http, self.grpc, self.metrics = match.groups()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.proc.stdout:
            self.log.append(line)

    def stop(self, timeout=30):
        """SIGTERM, then wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class Fleet:
    """An engine and a gateway in front of it; addresses and process are the gateway's."""

    def __init__(self, args, env=None):
        args = list(args)
        door_args, i = [], 0
        while i < len(args):
            flag = args[i]
            takes_value = "=" not in flag and flag in SERVE_ONLY
            if flag.split("=")[0] not in SERVE_ONLY:
                door_args.append(flag)
            i += 2 if takes_value else 1
        self.engine = Server(args, env)
        gateway_args = ["--backend", self.engine.grpc, "--health-interval-ms", "200",
                        "--discovery-interval-ms", "500", *door_args]
        if "--api-key" in door_args:
            # The gateway's doors take the test's keys; it shows the engine the first.
            key = door_args[door_args.index("--api-key") + 1].split(",")[-1]
            gateway_args += ["--backend-api-key", key]
        try:
            self.gateway = Server(gateway_args, env, command="gateway")
        except Exception:
            self.engine.stop()
            raise
        self.http, self.grpc, self.metrics = self.gateway.http, self.gateway.grpc, self.gateway.metrics
        self.proc, self.log = self.gateway.proc, self.gateway.log

    def stop(self, timeout=30):
        """SIGTERM to the gateway, then the engine; returns the gateway's exit code."""
        code = self.gateway.stop(timeout)
        self.engine.stop(timeout)
        return code


def start_server(args=(), env=None):
    """Starts a server with extra CLI args (e.g. a model repository); behind a gateway
    under NEREID_E2E_GATEWAY=1."""
    if THROUGH_GATEWAY:
        return Fleet(args, env)
    return Server(list(args), env)


@pytest.fixture(scope="session")
def server():
    """One server over the built-in demo models (simple, identity_fp32, repeat_int32)."""
    srv = start_server(["--demo-models", "builtin"])
    yield srv
    srv.stop()
