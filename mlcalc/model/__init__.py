"""Models: AtomisticModel base, NeuralNetworkPotential, and evaluation on ase.Atoms."""

from mlcalc.model.base import AtomisticModel
from mlcalc.model.potential import (
    DTYPES,
    INPUT_MODULES,
    OUTPUT_MODULES,
    POSTPROCESSORS,
    NeuralNetworkPotential,
    build_potential,
)
from mlcalc.model.predict import atoms_to_batch, predict, split_results

__all__ = [
    "DTYPES", "INPUT_MODULES", "OUTPUT_MODULES", "POSTPROCESSORS", "AtomisticModel",
    "NeuralNetworkPotential", "atoms_to_batch", "build_potential", "predict", "split_results",
]
