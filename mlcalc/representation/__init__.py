"""Representations: SchNet and PaiNN, addressed by short registry names."""

from __future__ import annotations

from typing import Any

from mlcalc.exceptions import unknown_name
from mlcalc.representation.base import Representation
from mlcalc.representation.painn import PaiNN
from mlcalc.representation.schnet import SchNet

REPRESENTATIONS: dict[str, type[Representation]] = {"schnet": SchNet, "painn": PaiNN}


def get_representation(name: str, **hyperparameters: Any) -> Representation:
    """Build the representation registered as ``name`` (``schnet`` or ``painn``).

    Raises:
        UnknownNameError: for an unknown name, with a did-you-mean hint.
    """
    key = name.lower()
    if key not in REPRESENTATIONS:
        raise unknown_name("representation", name, REPRESENTATIONS)
    return REPRESENTATIONS[key](**hyperparameters)


__all__ = ["REPRESENTATIONS", "PaiNN", "Representation", "SchNet", "get_representation"]
