#!/usr/bin/env bash
# The GPU check, one command from the repository's root; nothing is installed, nothing downloaded:
#
#     bash benchmarks/bench_gpu.sh PHOTOS_DIR [--limit 500] [--seconds 15] [--json out.json]
#
# Prints one JSON summary (progress goes to stderr): images/s per back-end and batch size, GPU
# utilisation, captions identical to the CPU's, training throughput per stage.  At most 8 minutes
# (the Python part keeps to --budget, 450 s by default; this wrapper stops it at 470 s).  Without a
# GPU it still runs, skipping the GPU parts with a note (benchmarks/bench_gpu.py says what each part is).
#
# It needs torch, numpy, Pillow, safetensors, onnxruntime and array-api-compat.  A package missing here is
# taken from wheels in .whl/ (or $CAPTIONER_WHEELS; `bash benchmarks/gpu_wheels.sh` makes them where PyPI
# answers), unpacked into a temporary folder for this run only and removed afterwards.
set -euo pipefail
if [ $# -lt 1 ] || [ ! -d "$1" ]; then
    echo "usage: bash benchmarks/bench_gpu.sh PHOTOS_DIR [options of benchmarks/bench_gpu.py]" >&2
    exit 2
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-python3}"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
export ORT_DISABLE_TELEMETRY=1
missing="$("$py" -c '
import importlib.util
need = {"torch": "torch", "numpy": "numpy", "PIL": "Pillow", "safetensors": "safetensors",
        "onnxruntime": "onnxruntime", "array_api_compat": "array-api-compat"}
print(" ".join(pkg for mod, pkg in need.items() if importlib.util.find_spec(mod) is None))')"
site=""
if [ -n "$missing" ]; then
    wheels="${CAPTIONER_WHEELS:-$root/.whl}"
    if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
        echo "bench_gpu: this Python ($py) lacks: $missing; put their wheels in $wheels" \
             "(bash benchmarks/gpu_wheels.sh, where PyPI answers) and run this again" >&2
        exit 2
    fi
    site="$(mktemp -d "${TMPDIR:-/tmp}/captioner-gpu-check.XXXXXX")"
    trap 'rm -rf "$site"' EXIT
    "$py" -m pip install --quiet --no-index --no-deps --no-compile --target "$site" "$wheels"/*.whl >&2
    export PYTHONPATH="$PYTHONPATH:$site"   # after this checkout's src
    echo "bench_gpu: $missing from $wheels, for this run only" >&2
fi
timeout -k 20 470 "$py" "$root/benchmarks/bench_gpu.py" "$@"   # SIGTERM: it prints what it has
