"""Atomistic modules: pair-vector input, Atomwise output, Forces/stress derivatives."""

from mlcalc.atomistic.atomwise import Atomwise
from mlcalc.atomistic.forces import Forces, full_to_voigt
from mlcalc.atomistic.pairs import PairVectors

__all__ = ["Atomwise", "Forces", "PairVectors", "full_to_voigt"]
