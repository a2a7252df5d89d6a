"""Fixtures for the container tests: a Docker client that can use BuildKit, the local base
image (scripts/images/base.sh), and images built from the host's `nereid` binary.

There is no registry here: every image is built on the base that debootstrap makes, and the
CPU image takes the binary from $NEREID_BIN (default target/debug/nereid) through the
Dockerfile's `prebuilt` stage. Images are tagged nereid-test:* and removed at the end; the
base image stays, since making it is the slow part (about a minute).
"""

import os
import pathlib
import re
import shutil
import socket
import subprocess
import time
import uuid

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("NEREID_BIN", str(ROOT / "target" / "debug" / "nereid")))
BASE_IMAGE = os.environ.get("NEREID_BASE_IMAGE", "nereid-base:bookworm")
CPU_IMAGE = "nereid-test:cpu"
PROMETHEUS_IMAGE = "nereid-test:prometheus"
PREBUILT = ROOT / "deploy" / ".bin" / "nereid"


def run(cmd, timeout=300, check=True, env=None, **kwargs):
    """Runs a command, returns the CompletedProcess; on failure the error shows its output."""
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})}, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError("%s exited %d:\n%s\n%s" % (cmd, result.returncode, result.stdout[-4000:],
                                                       result.stderr[-4000:]))
    return result


def _buildkit_docker():
    """A docker CLI whose `docker build` uses BuildKit, which the Dockerfiles need (only it
    skips the cargo stage). Docker 23+ CLIs build with BuildKit only through the buildx
    plugin; older CLIs (Debian's docker.io 20.10) have BuildKit built in. Some machines here
    have a newer CLI without buildx first on PATH and Debian's in /usr/bin."""
    candidates = []
    for name in ("docker", "/usr/bin/docker"):
        path = shutil.which(name)
        if path and os.path.realpath(path) not in [os.path.realpath(c) for c in candidates]:
            candidates.append(path)
    for cli in candidates:
        if subprocess.run([cli, "buildx", "version"], capture_output=True).returncode == 0:
            return cli
        version = subprocess.run([cli, "version", "--format", "{{.Client.Version}}"],
                                 capture_output=True, text=True).stdout.strip()
        if version and int(version.split(".")[0]) < 23:
            return cli
    raise AssertionError("no docker CLI with BuildKit (buildx plugin, or a 20.x CLI) among %s" % candidates)


DOCKER = _buildkit_docker()


def docker(*args, **kwargs):
    return run([DOCKER, *args], **kwargs)


def build(tag, dockerfile, context, **build_args):
    args = [DOCKER, "build", "--quiet", "-t", tag, "-f", str(dockerfile)]
    for key, value in build_args.items():
        args += ["--build-arg", "%s=%s" % (key, value)]
    run(args + [str(context)], env={"DOCKER_BUILDKIT": "1"}, timeout=600)


def infer_simple(module, client):
    """One `simple` (add_sub) inference through a tritonclient module (http or grpc), both
    outputs checked."""
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 3, dtype=np.int32)
    inputs = [module.InferInput("INPUT0", [1, 16], "INT32"), module.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    result = client.infer("simple", inputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what, interval=0.5):
    """Polls predicate() until it returns something truthy; fails naming `what`. A
    connection refused or reset counts as not yet: a published port accepts (docker-proxy)
    before the service behind it listens."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = predicate()
        except OSError as e:
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError("timed out after %ss waiting for %s (last: %r)" % (timeout, what, last))


@pytest.fixture(scope="session")
def base_image():
    run([str(ROOT / "scripts" / "images" / "base.sh"), BASE_IMAGE], timeout=600)
    return BASE_IMAGE


@pytest.fixture(scope="session")
def cpu_image(base_image):
    """deploy/Dockerfile's runtime built from the host binary (stripped: debug info is most
    of a debug build's size and nothing in the image reads it)."""
    assert BIN.is_file(), "build the binary first (cargo build): %s" % BIN
    PREBUILT.parent.mkdir(parents=True, exist_ok=True)
    run(["strip", "-o", str(PREBUILT), str(BIN)])
    try:
        build(CPU_IMAGE, ROOT / "deploy" / "Dockerfile", ROOT, BINARY_FROM="prebuilt", BASE_IMAGE=base_image)
    finally:
        PREBUILT.unlink()
    yield CPU_IMAGE
    docker("rmi", CPU_IMAGE)


@pytest.fixture(scope="session")
def prometheus_image(base_image):
    build(PROMETHEUS_IMAGE, ROOT / "deploy" / "prometheus" / "Dockerfile", ROOT / "deploy" / "prometheus",
          BASE_IMAGE=base_image)
    yield PROMETHEUS_IMAGE
    docker("rmi", PROMETHEUS_IMAGE)


@pytest.fixture
def container_name():
    """A unique name; the container is removed whatever the test did."""
    name = "nereid-test-%s" % uuid.uuid4().hex[:8]
    yield name
    docker("rm", "-f", "-v", name, check=False)


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metric_samples(text):
    """Prometheus text exposition -> [(name, {label: value}, float)], comments skipped."""
    samples = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and not line.startswith("#"):
            samples.append((match.group(1), dict(_LABEL.findall(match.group(2) or "")), float(match.group(3))))
    return samples


def metric_value(samples, name, **labels):
    """The value of the one sample of `name` whose labels include `labels`; None if none."""
    found = [v for n, l, v in samples if n == name and labels.items() <= l.items()]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None
