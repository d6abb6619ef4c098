"""``python -m mlcalc.kernels``: build (or find) the CPU kernels and say where they are."""

from __future__ import annotations

import sys

from mlcalc.kernels import KernelBuildError, load
from mlcalc.kernels.build import build_dir


def main() -> int:
    try:
        load(verbose="-v" in sys.argv[1:])
    except KernelBuildError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    print(f"mlcalc kernels ready in {build_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
