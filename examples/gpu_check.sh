#!/usr/bin/env bash
# The GPU check in one command, from a source checkout with mlcalc installed:
# the GPU tests (pytest -m gpu), then the GPU benchmark table against the
# targets, then a PASS/FAIL summary; exit status 0 only if everything passed.
# Without CUDA it prints one line and exits non-zero. See docs/performance.rst.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -c "from mlcalc.cli.main import cli; cli()" bench --gpu-check "$@"
