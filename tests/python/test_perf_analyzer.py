"""Triton's own load generator, `perf_analyzer` (PyPI `perf-analyzer`, run through
scripts/perf-analyzer.sh: its binary needs a newer glibc than Debian 12's), against Nereid:
`simple` over gRPC and HTTP, with tensors in the requests and in system shared memory, and
the sequence models `simple_sequence` (direct) and `simple_dyna_sequence` (oldest), whose
sequence ids and start/end flags perf_analyzer sends itself. Each run must exit 0 with a
positive throughput, and the server's statistics must count at least the requests
perf_analyzer says it measured; a shared-memory run must leave no region registered or in
/dev/shm. Short windows (300 ms, stability check off): a smoke test, not a benchmark.

The setup downloads on first use (cached): without network the tests fail, never skip.
perf_analyzer's region names are its tensors' (/INPUT0_0_0, /OUTPUT0...), the same for
every run on the host, and it unregisters every region of the server at start and exit;
so these tests use a server of their own.
"""

import csv
import os
import pathlib
import re
import subprocess
import threading
import time

import pytest
import tritonclient.http as httpclient

from conftest import ROOT, start_server

pytestmark = pytest.mark.timeout(300)

SCRIPT = ROOT / "scripts" / "perf-analyzer.sh"
WINDOW = ["-p", "300", "--concurrency-range", "1:2", "-s", "1000"]
SHM = ["--shared-memory", "system", "--output-shared-memory-size", "4096"]
SIMPLE_REGIONS = {"INPUT0_0_0", "INPUT1_0_0", "OUTPUT0", "OUTPUT1"}

@pytest.fixture(scope="module")
def perf_analyzer():
    """The script, set up once (a download on first use); a failure fails the tests."""
    proc = subprocess.run([str(SCRIPT), "--version"], capture_output=True, text=True,
                          timeout=240)
    if proc.returncode != 0 or "Perf Analyzer Version" not in proc.stdout + proc.stderr:
        pytest.fail("scripts/perf-analyzer.sh did not set up (exit %d):\n%s%s"
                    % (proc.returncode, proc.stdout, proc.stderr))
    return SCRIPT


@pytest.fixture(scope="module")
def srv():
    s = start_server(["--demo-models", "builtin"])
    yield s
    s.stop()


def successes(server, model):
    stats = httpclient.InferenceServerClient(server.http).get_inference_statistics(model)
    return sum(m["inference_stats"]["success"]["count"] for m in stats["model_stats"])


def registered(server, client=None):
    client = client or httpclient.InferenceServerClient(server.http)
    return {region["name"] for region in client.get_system_shared_memory_status()}


def run(script, server, model, protocol, tmp_path, *extra, watch=None):
    """Runs perf_analyzer; returns (process, CSV rows, regions seen registered meanwhile
    when `watch` is a server to poll)."""
    url = server.grpc if protocol == "grpc" else server.http
    report = tmp_path / ("%s-%s.csv" % (model, protocol))
    seen, done = set(), threading.Event()

    def poll():
        client = httpclient.InferenceServerClient(watch.http)
        while not done.is_set():
            seen.update(registered(watch, client))
            time.sleep(0.05)

    poller = threading.Thread(target=poll, daemon=True)
    if watch:
        poller.start()
    try:
        proc = subprocess.run(
            [str(script), "-m", model, "-u", url, "-i", protocol, *WINDOW, *extra,
             "-f", str(report)],
            capture_output=True, text=True, timeout=120)
    finally:
        done.set()
        if watch:
            poller.join()
    rows = list(csv.DictReader(report.open())) if report.exists() else []
    return proc, rows, seen


def check(proc, rows, before, after, label):
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, "perf_analyzer exited %d:\n%s" % (proc.returncode, out)
    # perf_analyzer's CSV is sorted by throughput, not concurrency.
    assert sorted(row["Concurrency"] for row in rows) == ["1", "2"], out
    for row in rows:
        assert float(row["Inferences/Second"]) > 0, out
    measured = sum(int(n) for n in re.findall(r"Client:\s*\n\s*Request count: (\d+)", out))
    assert measured > 0, out
    # The server counted every request perf_analyzer measured (and its warm-up's).
    assert after - before >= measured, (before, after, measured, out)
    print("%s: %s" % (label, "; ".join(
        "c=%s %s infer/s p50 %s us" % (r["Concurrency"], r["Inferences/Second"],
                                       r["p50 latency"]) for r in rows)))


CASES = [
    pytest.param("simple", "grpc", False, id="simple-grpc"),
    pytest.param("simple", "http", False, id="simple-http"),
    pytest.param("simple", "grpc", True, id="simple-grpc-shm"),
    pytest.param("simple", "http", True, id="simple-http-shm"),
    pytest.param("simple_sequence", "grpc", False, id="simple_sequence-grpc"),
    pytest.param("simple_sequence", "http", False, id="simple_sequence-http"),
    pytest.param("simple_dyna_sequence", "grpc", False, id="simple_dyna_sequence-grpc"),
    pytest.param("simple_dyna_sequence", "http", False, id="simple_dyna_sequence-http"),
]


@pytest.mark.parametrize("model,protocol,shm", CASES)
def test_perf_analyzer_measures_and_the_server_counts(perf_analyzer, srv, tmp_path,
                                                      model, protocol, shm):
    before = successes(srv, model)
    proc, rows, seen = run(perf_analyzer, srv, model, protocol, tmp_path,
                           *(SHM if shm else ()), watch=srv if shm else None)
    after = successes(srv, model)
    check(proc, rows, before, after, "%s %s%s" % (model, protocol, " shm" if shm else ""))
    if shm:
        # The tensors really went through regions: the server had them registered.
        assert SIMPLE_REGIONS <= seen, seen


def test_shared_memory_regions_are_gone_after_a_run(perf_analyzer, srv, tmp_path):
    """perf_analyzer unregisters every region and unlinks its own at exit (also when a run
    fails). Regions another run on the host holds are left."""
    ours = [pathlib.Path("/dev/shm", name) for name in SIMPLE_REGIONS]
    ours = [path for path in ours if not path.exists()]
    try:
        before = successes(srv, "simple")
        run(perf_analyzer, srv, "simple", "grpc", tmp_path, *SHM)
        assert successes(srv, "simple") > before, "no traffic"
        assert registered(srv) == set()
        assert [path for path in ours if path.exists()] == []
    finally:
        client = httpclient.InferenceServerClient(srv.http)
        for name in registered(srv) & SIMPLE_REGIONS:
            client.unregister_system_shared_memory(name)
        for path in ours:
            if path.exists():
                os.unlink(path)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_shared_memory_run_ends_without_errors(perf_analyzer, srv, tmp_path, protocol):
    """At exit perf_analyzer unregisters all system, then all CUDA regions; a failure of
    either prints "Unable to unregister all shared memory regions"."""
    proc, _, _ = run(perf_analyzer, srv, "simple", protocol, tmp_path, *SHM)
    assert "Unable to unregister" not in proc.stdout + proc.stderr, proc.stderr
