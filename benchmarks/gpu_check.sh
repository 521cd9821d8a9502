#!/usr/bin/env bash
# The speed comparison of 'python -m benchmarks.compare' on CUDA: bf16 autocast and channels_last on both
# sides (the chapter's loops and transferlearn), the real MobileNetV2, one short run.
#
#   bash benchmarks/gpu_check.sh                  # CUDA; results in benchmarks/results/compare_loops_cuda.*
#   bash benchmarks/gpu_check.sh --device cpu     # dry run of the same code path on the CPU (tiny)
#
# Any further arguments go to benchmarks.compare (they win over the ones set here). With $OUT
# set (the device machine's output folder), results are written there instead.
# Needs: .venv, the MobileNetV2 IMAGENET1K_V1 checkpoint in $TORCH_HOME (scripts/setup.sh),
# and for part (e) the chess photos in .cache/data (benchmarks/sources.py fetches them; a
# machine without the registry and without the cache skips part e).
set -euo pipefail
cd "$(dirname "$0")/.."
export TORCH_HOME="${TORCH_HOME:-$PWD/.cache/torch}"
PY="${PYTHON:-.venv/bin/python}"
device=cuda
if [ "${1:-}" = "--device" ]; then
    device="${2:?--device needs cuda or cpu}"
    shift 2
fi
case "$device" in
cuda*)
    if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        echo "gpu_check: no CUDA device here; 'bash benchmarks/gpu_check.sh --device cpu' is the dry run" >&2
        exit 2
    fi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
    stem="${OUT:+$OUT/compare_loops_cuda}"
    exec "$PY" -m benchmarks.compare --device "$device" --amp --channels-last --repeats 3 \
        --photo-size 224 --scaling-n 300 ${stem:+--out "$stem"} "$@"
    ;;
cpu)
    stem="${OUT:-${TMPDIR:-/tmp}}/gpu_check_dryrun"
    exec "$PY" -m benchmarks.compare --device cpu --amp --channels-last --quick --repeats 1 \
        --limit 40 --photo-limit 24 --photo-size 64 --scaling-n 8 --out "$stem" "$@"
    ;;
*)
    echo "gpu_check: --device must be cuda or cpu, got '$device'" >&2
    exit 2
    ;;
esac
