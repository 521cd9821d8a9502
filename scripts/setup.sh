#!/usr/bin/env bash
# Create .venv, install transferlearn with its test and example extras, and seed the
# project-local torch cache (.cache/torch) with the real MobileNetV2 IMAGENET1K_V1 checkpoint.
# Idempotent: a second run only checks what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=".venv/.transferlearn-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    # The torch pair that pip takes from the local disk on these machines (see shared/OFFLINE.md).
    case "$(uname -m)" in
        aarch64|arm64) torch_pair="torch==2.9.1 torchvision==0.24.1" ;;
        *) torch_pair="torch==2.14.1 torchvision==0.29.1" ;;
    esac
    .venv/bin/pip install --quiet --disable-pip-version-check $torch_pair
    .venv/bin/pip install --quiet --disable-pip-version-check -e ".[test,examples]"
    touch "$stamp"
fi
export TORCH_HOME="$PWD/.cache/torch"
.venv/bin/python scripts/seed_weights.py
