"""mlcalc: machine-learned interatomic potentials behind an ASE calculator.

The top-level names are imported lazily so that ``import mlcalc`` (and the
``mlcalc --help`` command line) stays fast and does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "MLCalculator": "mlcalc.calculator",
    "save_model": "mlcalc.model",
    "load_model": "mlcalc.model",
    "AtomisticModel": "mlcalc.model",
    "NeuralNetworkPotential": "mlcalc.model",
    "build_potential": "mlcalc.model",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mlcalc' has no attribute {name!r}")
