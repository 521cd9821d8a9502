#!/usr/bin/env bash
# The README's main-job command: set up (idempotent), then run the demo offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TORCH_HOME="$PWD/.cache/torch"
cd examples
exec ../.venv/bin/python demo.py --out ../runs/demo "$@"
