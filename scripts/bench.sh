#!/usr/bin/env bash
# The speed benchmark of docs/performance.md in one command from a fresh clone: set up
# (idempotent, as the demo does), then run 'python -m benchmarks.compare'. With no arguments it
# runs the table of docs/performance.md; any arguments replace those (e.g. --quick).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TORCH_HOME="$PWD/.cache/torch"
if [ $# -eq 0 ]; then
    set -- --threads 1 --limit 600 --scaling-n 150
fi
exec .venv/bin/python -m benchmarks.compare "$@"
