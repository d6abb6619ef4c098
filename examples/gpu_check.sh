#!/usr/bin/env bash
# The GPU check in one command, from a source checkout: the GPU tests
# (pytest -m gpu), then the GPU benchmark table against the targets, then a
# PASS/FAIL summary; exit status 0 only if everything passed. Without CUDA it
# prints one line and exits non-zero. See docs/performance.rst ("GPU").
#
# mlcalc need not be installed: the checkout is put on PYTHONPATH, so a
# machine with torch (CUDA), ase, matscipy, phonopy, click, pyyaml,
# pytorch-lightning and pytest is enough. PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" -c "from mlcalc.cli.main import cli; cli()" bench --gpu-check "$@"
