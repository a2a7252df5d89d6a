#!/usr/bin/env bash
# Runs every test of the project on a fresh clone: formatting, clippy (warnings denied),
# the Rust unit and integration tests, and the end-to-end tests with real Python clients
# (tritonclient, openai, grpc health) against the real `nereid serve` binary.
# Installs what it needs (a Python venv under .venv); model weights are fetched by the
# project's own code into ~/.cache/nereid on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=never
echo "== rustfmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== build"
cargo build --workspace --all-targets --locked
echo "== cargo test"
cargo test --workspace --locked

echo "== system packages"
# curl: the end-to-end tests drive the server with it too (HTTP/1.1 and h2c).
# debootstrap: the container tests make their Debian base image with it (no registry).
# chromium: the console's browser tests drive it through Playwright.
missing=()
for package in curl debootstrap chromium; do
  command -v "$package" >/dev/null || missing+=("$package")
done
if ((${#missing[@]})); then
  SUDO=$([[ $(id -u) == 0 ]] || echo sudo)
  $SUDO apt-get update -q && $SUDO apt-get install -y -q "${missing[@]}"
fi

echo "== python clients"
if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r tests/python/requirements.txt
echo "== end-to-end (pytest)"
NEREID_BIN="$PWD/target/debug/nereid" .venv/bin/python -m pytest -q -p no:cacheprovider tests/python
echo "== end-to-end through a gateway (pytest)"
# The same suite with a `nereid gateway` in front of every engine it starts: a client must
# not be able to tell them apart (tests of an engine's internals are marked engine_only).
NEREID_E2E_GATEWAY=1 NEREID_BIN="$PWD/target/debug/nereid" .venv/bin/python -m pytest -q -p no:cacheprovider tests/python

echo "== spark recipe"
# docs/BATCH.md's PySpark recipe (predict_batch_udf + tritonclient) against engines behind a
# gateway; installs Java and pyspark when missing (about 1.5 minutes cold).
NEREID_BIN="$PWD/target/debug/nereid" scripts/spark-recipe.sh

echo "== containers"
# The CPU image from the binary built above, the compose stack (3 engines + Prometheus),
# hadolint on every Dockerfile and the Kubernetes manifests against their schemas
# (tests/containers, docs/DEPLOY.md). Needs a Docker Engine and docker-compose or the
# compose plugin; the base image is made with debootstrap (there is no registry) and kept.
NEREID_BIN="$PWD/target/debug/nereid" .venv/bin/python -m pytest -q -p no:cacheprovider tests/containers
