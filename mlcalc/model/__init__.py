"""Models: AtomisticModel, NeuralNetworkPotential, ensembles, the model file, and the
one route from ase.Atoms to a model's inputs and back."""

from mlcalc.model.base import AtomisticModel
from mlcalc.model.batch import (
    atoms_to_batch,
    check_elements,
    check_stress_defined,
    inputs_to_batch,
    model_neighbor_list,
    structure_inputs,
)
from mlcalc.model.ensemble import EnsemblePotential
from mlcalc.model.io import load_model, read_model_file, save_model
from mlcalc.model.potential import (
    DTYPES,
    INPUT_MODULES,
    OUTPUT_MODULES,
    POSTPROCESSORS,
    NeuralNetworkPotential,
    build_potential,
    dtype_name,
)
from mlcalc.model.predict import predict, predict_defined, split_results

__all__ = [
    "DTYPES", "INPUT_MODULES", "OUTPUT_MODULES", "POSTPROCESSORS", "AtomisticModel",
    "EnsemblePotential", "NeuralNetworkPotential", "atoms_to_batch", "build_potential",
    "check_elements", "check_stress_defined", "dtype_name", "inputs_to_batch", "load_model",
    "model_neighbor_list", "predict", "predict_defined", "read_model_file", "save_model",
    "split_results", "structure_inputs",
]
