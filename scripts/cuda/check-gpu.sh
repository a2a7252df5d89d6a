#!/usr/bin/env bash
# On the GPU machine (no Rust, no network): unpacks target/gpu-bundle (made by
# scripts/cuda/build.sh and carried there), points the loader at the CUDA 13 libraries inside
# the machine's Python packages, and runs the check:
#   - all-MiniLM-L6-v2 on the GPU in FP32, FP16 and BF16 against the CPU in FP32: the lowest
#     cosine over 32 ragged sentences must reach 0.9999 (FP32) and 0.999 (FP16); BF16 is
#     reported only; each is timed at batch 32x16 tokens (tok/s);
#   - the quantized llama path (a tiny random GGUF written on the spot) on GPU vs CPU logits,
#     and a GPU KV cache started from another prompt's prefix against a fresh one;
#   - with SMOLLM2_GGUF=/path/to/SmolLM2-135M-Instruct.Q4_1.gguf, smollm2 decode tok/s on the
#     GPU for 1 and 8 sequences.
# Prints "GPU CHECK PASSED" and exits 0, or exits non-zero naming what failed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUNDLE=${1:-$ROOT/target/gpu-bundle}
WORK=${TMPDIR:-/tmp}/nereid-gpu-check
mkdir -p "$WORK"

if command -v xz >/dev/null; then
  xz -d -c "$BUNDLE/gpu_check.xz" >"$WORK/gpu_check"
else
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" \
    "$BUNDLE/gpu_check.xz" "$WORK/gpu_check"
fi
chmod +x "$WORK/gpu_check"

LIBS=$(python3 - <<'PY'
import os
try:
    import nvidia
    for base in nvidia.__path__:
        lib = os.path.join(base, "cu13", "lib")
        if os.path.isdir(lib):
            print(lib)
            break
except ImportError:
    pass
PY
)
if [ -n "$LIBS" ]; then
  export LD_LIBRARY_PATH="$LIBS:${LD_LIBRARY_PATH:-}"
fi
echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
if ldd "$WORK/gpu_check" | grep "not found"; then
  echo "missing libraries (see above): set LD_LIBRARY_PATH to the nvidia/cu13/lib folder" >&2
  exit 1
fi

# The check never fetches: weights come from the bundle; the cache is a scratch folder.
export NEREID_CACHE="$WORK/cache"
"$WORK/gpu_check" "$BUNDLE/minilm-f16"
