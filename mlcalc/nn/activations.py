"""Activation functions addressed by short names."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from mlcalc.exceptions import unknown_name


def shifted_softplus(x: torch.Tensor) -> torch.Tensor:
    """ln(1 + e^x) - ln 2: smooth, zero at the origin (SchNet's activation)."""
    return F.softplus(x) - math.log(2.0)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "ssp": shifted_softplus,
    "shifted_softplus": shifted_softplus,
    "silu": F.silu,
    "tanh": torch.tanh,
}


def get_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Return the activation called ``name`` (``ssp``, ``silu``, ``tanh``)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise unknown_name("activation", name, ACTIVATIONS) from None
