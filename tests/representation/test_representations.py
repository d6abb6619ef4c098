"""SchNet and PaiNN: hyperparameters, sharing, shapes, registry."""

from __future__ import annotations

import pytest
import torch
from ase.build import bulk

from mlcalc import properties as P
from mlcalc.atomistic import PairVectors
from mlcalc.model import atoms_to_batch
from mlcalc.representation import REPRESENTATIONS, PaiNN, SchNet, get_representation
from tests.conftest import tiny_model


def _inputs(cutoff=4.0):
    batch = atoms_to_batch([bulk("Cu", cubic=True)], tiny_model("schnet", cutoff=cutoff))
    return PairVectors()(batch)


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_schnetpack_hyperparameter_names():
    rep = get_representation("schnet", n_atom_basis=16, n_interactions=2, cutoff=4.0,
                             n_rbf=10, n_filters=8, shared_interactions=True)
    assert rep.hyperparameters["n_filters"] == 8
    assert len(rep.interactions) == 1
    painn = get_representation("PaiNN", n_atom_basis=16, n_interactions=3, cutoff=4.0,
                               shared_filters=True)
    assert painn.filter_net.out_features == 3 * 16


def test_shared_interactions_reduce_parameters():
    assert count(SchNet(16, 3, shared_interactions=True)) < count(SchNet(16, 3))
    assert count(PaiNN(16, 3, shared_interactions=True)) < count(PaiNN(16, 3))


@pytest.mark.parametrize("name", sorted(REPRESENTATIONS))
def test_output_shapes(name):
    torch.manual_seed(0)
    rep = get_representation(name, n_atom_basis=8, n_interactions=2, cutoff=4.0).double()
    assert rep.pairs in ("half", "full")
    out = rep(_inputs())
    assert out[P.scalar_representation].shape == (4, 8)
    if P.vector_representation in out:  # equivariant representations
        assert out[P.vector_representation].shape == (4, 3, 8)


def test_float32_network_casts_float64_pair_vectors():
    rep = SchNet(8, 1, cutoff=4.0)
    out = rep(_inputs())
    assert out[P.Rij].dtype == torch.float64
    assert out[P.scalar_representation].dtype == torch.float32
