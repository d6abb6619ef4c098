"""Neural-network building blocks: radial bases, cutoffs, activations, MLPs, scatter."""

from mlcalc.nn.activations import ACTIVATIONS, get_activation, shifted_softplus
from mlcalc.nn.blocks import Dense, build_mlp
from mlcalc.nn.radial import (
    CUTOFF_FUNCTIONS,
    RADIAL_BASES,
    BesselRBF,
    CosineCutoff,
    GaussianRBF,
    MollifierCutoff,
    PolynomialCutoff,
    get_cutoff_fn,
    get_radial_basis,
)
from mlcalc.nn.scatter import scatter_add

__all__ = [
    "ACTIVATIONS", "CUTOFF_FUNCTIONS", "RADIAL_BASES", "BesselRBF", "CosineCutoff", "Dense",
    "GaussianRBF", "MollifierCutoff", "PolynomialCutoff", "build_mlp", "get_activation",
    "get_cutoff_fn", "get_radial_basis", "scatter_add", "shifted_softplus",
]
