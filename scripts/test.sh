#!/usr/bin/env bash
# The README's test command: set up (idempotent), then run the whole suite.
# The full 80-architecture sweep (marked slow) runs too unless TRANSFERLEARN_FAST=1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TORCH_HOME="$PWD/.cache/torch" TRANSFERLEARN_REQUIRE_WEIGHTS=1
marks="not slow"
[ "${TRANSFERLEARN_FAST:-0}" = 1 ] || marks="slow or not slow"
exec .venv/bin/python -m pytest -q -m "$marks" "$@"
