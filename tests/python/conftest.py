"""Starts the real `nereid serve` binary on port 0 for end-to-end tests with stock clients.

The binary prints one line `NEREID_READY http=HOST:PORT grpc=HOST:PORT metrics=HOST:PORT`
on stdout once every listener is bound; the fixtures read the chosen ports from it.
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


class Server:
    """A running `nereid serve` process and its addresses."""

    def __init__(self, args, env=None):
        self.log = []
        self.proc = subprocess.Popen(
            [BIN, "serve", "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0", *args],
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


def start_server(args=(), env=None):
    """Starts a server with extra CLI args (e.g. a model repository)."""
    return Server(list(args), env)


@pytest.fixture(scope="session")
def server():
    """One server over the built-in demo models (simple, identity_fp32, repeat_int32)."""
    srv = start_server(["--demo-models", "builtin"])
    yield srv
    srv.stop()
