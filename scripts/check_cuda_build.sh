#!/usr/bin/env bash
# Compile check of the `cuda` feature (llm.device = "cuda") on a machine without a GPU:
# installs NVIDIA's CUDA compiler and headers from PyPI into .wander/tools/cuda (about 300 MB,
# once), then `cargo check`s the wander binary with the feature into target/cuda, which runs
# candle's kernel build (nvcc compiling its CUDA kernels to PTX and its quantized-matmul
# kernels to a static library) and type-checks every GPU path of wander. `cargo check` does
# not link, so no CUDA driver library is needed; running on a GPU needs a machine with one
# (README, "On a GPU"). Not part of .ci/run: the kernels take about 6 minutes to compile on
# 2 cores, the whole check about 15 the first time.
# Usage: scripts/check_cuda_build.sh [compute capability, default 90 (H100)]
set -euo pipefail
cd "$(dirname "$0")/.."
cap=${1:-90}
venv=.wander/tools/cuda
# CUDA 13.4: the newest toolkit the cudarc that candle 0.11 uses knows (13.5 is refused).
version=13.4.92
if [ ! -x "$venv/bin/pip" ]; then python3 -m venv "$venv"; fi
"$venv/bin/pip" install -q "nvidia-cuda-nvcc==$version" "nvidia-nvvm==$version" \
    "nvidia-cuda-crt==$version" "nvidia-cuda-runtime==$version" "nvidia-cuda-cccl<13.4"
toolkit=$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')
export PATH="$toolkit/bin:$PATH" NVCC="$toolkit/bin/nvcc" CUDA_HOME="$toolkit" CUDA_PATH="$toolkit"
export CUDA_COMPUTE_CAP="$cap"
nvcc --version | tail -1
started=$(date +%s)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda}
# The binary and the GPU test (wander-llm's tests/tiny.rs, run only where a GPU is) in one
# invocation, so that candle is built with one feature set and its kernels compile once.
cargo check --release -p wander-cli -p wander-llm --features cuda --tests
echo "check_cuda_build: the cuda feature compiles (sm_$cap) in $(( $(date +%s) - started )) s"
