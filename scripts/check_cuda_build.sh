#!/usr/bin/env bash
# Compile loglm with the `cuda` feature on a machine without a GPU or a system
# CUDA toolkit: nvcc, the CUDA headers and libcudart come from NVIDIA's PyPI
# wheels, installed into a scratch virtual environment (never the project's).
#
# What it proves: candle's CUDA kernels (candle-kernels, built by its build
# script with nvcc: PTX for the elementwise/reduction kernels plus the static
# MMQ/MMVQ/MoE library), cudarc and loglm's own CUDA code paths compile and the
# extension links. It runs nothing on a GPU.
#
# Usage: scripts/check_cuda_build.sh [check|build|python]
#   check   cargo check --release --features cuda (type-checks; still runs nvcc)
#   build   cargo build --release --lib --features cuda (default; links libloglm.so)
#   python  the Python extension: --features cuda,python,pyo3/extension-module
# Environment:
#   CUDA_VENV          scratch venv for the wheels (default /tmp/loglm-cudavenv)
#   CUDA_COMPUTE_CAP   GPU architecture to compile for (default 80 = A100; 90 = H100)
#   CARGO_TARGET_DIR   default /root/.cache/loglm-target-cuda (kept apart from CPU builds)
#   CARGO_BUILD_JOBS, CUDAFORGE_THREADS   parallelism (default 1: small shared machines)
set -euo pipefail

mode="${1:-build}"
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${CUDA_VENV:-/tmp/loglm-cudavenv}"
# cudarc 0.19 knows CUDA up to 13.4: pin the toolkit wheels to one release.
cuda_ver="13.4.92"

if [ ! -x "$venv/bin/pip" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q \
    "nvidia-cuda-nvcc==$cuda_ver" "nvidia-cuda-crt==$cuda_ver" \
    "nvidia-cuda-runtime==$cuda_ver" "nvidia-nvvm==$cuda_ver" nvidia-cuda-cccl

root="$("$venv/bin/python" -c 'import os, nvidia; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')"
[ -x "$root/bin/nvcc" ] || { echo "nvcc not found under $root" >&2; exit 1; }
# The wheels ship libcudart.so.13 only; the linker wants the unversioned name.
# cudaforge looks for <root>/lib64.
ln -sf libcudart.so.13 "$root/lib/libcudart.so"
[ -e "$root/lib64" ] || ln -s lib "$root/lib64"

# candle links cudarc with `dynamic-linking`: the driver (libcuda) and libnvrtc,
# libcurand, libcublas, libcublasLt must be found at link time. A real toolkit has
# them (the driver as lib64/stubs/libcuda.so); here empty link stubs stand in for
# them, which checks everything but the symbols those libraries export (they stay
# undefined in the test artifact, which is never run).
stubs="$venv/link-stubs"
mkdir -p "$stubs"
: > "$stubs/empty.c"
for lib in cuda nvrtc curand cublas cublasLt; do
    [ -e "$stubs/lib$lib.so" ] || cc -shared -o "$stubs/lib$lib.so" "$stubs/empty.c"
done

export PATH="$root/bin:$PATH"
export NVCC="$root/bin/nvcc"
export CUDA_ROOT="$root" CUDA_PATH="$root" CUDA_HOME="$root"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"
export LIBRARY_PATH="$root/lib:$stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/root/.cache/loglm-target-cuda}"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"
export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-1}"

nvcc --version | tail -2
echo "compute capability $CUDA_COMPUTE_CAP, target dir $CARGO_TARGET_DIR"
cd "$here"
case "$mode" in
    check) nice -n 10 cargo check --release --lib --features cuda ;;
    build) nice -n 10 cargo build --release --lib --features cuda ;;
    python) nice -n 10 cargo build --release --lib --features cuda,python,pyo3/extension-module ;;
    *) echo "unknown mode $mode (check, build or python)" >&2; exit 2 ;;
esac
echo "CUDA build ($mode) OK"
