#!/usr/bin/env bash
# The GPU check, one command from the repository's root; nothing is installed, nothing downloaded:
#
#     bash benchmarks/bench_gpu.sh PHOTOS_DIR [--limit 500] [--seconds 15] [--json out.json]
#
# Prints one JSON summary (progress goes to stderr): images/s per back-end and batch size, GPU
# utilisation, captions identical to the CPU's, training throughput per stage.  At most 8 minutes
# (the Python part keeps to --budget, 450 s by default; this wrapper stops it at 470 s).  Without a
# GPU it still runs, skipping the GPU parts with a note (benchmarks/bench_gpu.py says what each part is).
set -euo pipefail
if [ $# -lt 1 ] || [ ! -d "$1" ]; then
    echo "usage: bash benchmarks/bench_gpu.sh PHOTOS_DIR [options of benchmarks/bench_gpu.py]" >&2
    exit 2
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
export ORT_DISABLE_TELEMETRY=1
exec timeout 470 "${PYTHON:-python3}" "$root/benchmarks/bench_gpu.py" "$@"
