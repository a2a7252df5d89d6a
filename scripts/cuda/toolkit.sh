#!/usr/bin/env bash
# Builds a candle `cuda` binary on a machine without a GPU or an installed CUDA toolkit:
# the toolkit comes from NVIDIA's wheels on PyPI, and the GPU libraries the linker needs
# are replaced by link-only stubs. Usage, from the repository root:
#   scripts/cuda/toolkit.sh --features nereid-models/cuda -p nereid-models --example gpu_check
# Arguments go to `cargo build --release`. The toolkit lives in $CUDA_WORK
# (default ~/.cache/nereid-cuda), never in the repository.
#
# Why it is done this way:
# - The toolkit may not be newer than the device's driver (R580 series = CUDA 13.0): candle
#   loads its kernels as PTX at run time, and a newer nvcc writes a PTX ISA the driver
#   refuses. So the wheels are pinned to 13.0.
# - The nvcc wheel alone lacks cicc/libdevice (in nvidia-nvvm) and the crt headers (in
#   nvidia-cuda-crt).
# - candle's kernel build needs CUDA_COMPUTE_CAP when there is no nvidia-smi: 90 is
#   H100/H200.
# - libcuda (the driver), libcublas and libcublasLt are stubs whose every function fails:
#   they only satisfy the linker. The binary must never run with them; at run time the GPU
#   machine's real libraries are found through LD_LIBRARY_PATH (scripts/cuda/check-gpu.sh).
set -euo pipefail
WORK=${CUDA_WORK:-$HOME/.cache/nereid-cuda}
CUDA=$WORK/cuda

if [[ ! -x $CUDA/bin/nvcc ]]; then
  mkdir -p "$WORK/wheels"
  (cd "$WORK/wheels" && python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_27_x86_64 \
      nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.96 \
      nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88 nvidia-curand==10.4.0.35)
  rm -rf "$WORK/unpacked" "$CUDA" && mkdir -p "$WORK/unpacked"
  for wheel in "$WORK"/wheels/*.whl; do unzip -q -o "$wheel" -d "$WORK/unpacked"; done
  cp -a "$WORK/unpacked/nvidia/cu13" "$CUDA"
  # The layout build scripts expect of a CUDA_HOME.
  mkdir -p "$CUDA/targets/x86_64-linux" "$CUDA/lib/stubs"
  ln -s ../../include "$CUDA/targets/x86_64-linux/include"
  ln -s ../../lib "$CUDA/targets/x86_64-linux/lib"
  ln -s lib "$CUDA/lib64"
  (cd "$CUDA/lib" && ln -sf libcudart.so.13 libcudart.so && ln -sf libnvrtc.so.13 libnvrtc.so \
      && ln -sf libcurand.so.10 libcurand.so)
fi

# Stubs: one C function per symbol cudarc declares for the library, returning an error code.
cargo fetch -q
CUDARC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* | tail -1)
stub() { # cudarc module, symbol prefix, soname, value every function returns
  local source=$CUDA/lib/stubs/$3.c
  grep -oP '^\s+fn \K\w+(?=\()' "$CUDARC/src/$1/sys/mod.rs" | grep "^$2" | sort -u \
    | sed "s/.*/int &(void){return $4;}/" >"$source"
  gcc -shared -fPIC -Wl,-soname,"$3" -o "$CUDA/lib/stubs/$3" "$source"
  ln -sf "$3" "$CUDA/lib/stubs/${3%%.so.*}.so"
}
stub driver cu libcuda.so.1 100
stub cublas cublas libcublas.so.13 1
stub cublaslt cublasLt libcublasLt.so.13 1

export CUDA_HOME=$CUDA PATH=$CUDA/bin:$PATH
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-$(nproc)}
nvcc --version | tail -1
cargo build --release "$@"
