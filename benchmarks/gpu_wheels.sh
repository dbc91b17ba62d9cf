#!/usr/bin/env bash
# The pure-Python packages captioner needs that a bare PyTorch image may lack (a GPU machine that can reach
# no package index), downloaded here as wheels into .whl/ (git ignores it):
#
#     bash benchmarks/gpu_wheels.sh            # on a machine that reaches PyPI
#
# Copy or carry .whl/ with the repository to the GPU machine: benchmarks/bench_gpu.sh installs what is missing
# from it into a temporary folder for its own run (nothing is installed on that machine).  torch, numpy,
# Pillow, safetensors and onnxruntime are expected there; array-api-compat (the search's array namespace)
# is what a PyTorch image usually lacks.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$root/.whl"
"${PYTHON:-python3}" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    -d "$root/.whl" "array-api-compat==1.16.0"
ls -l "$root/.whl"
