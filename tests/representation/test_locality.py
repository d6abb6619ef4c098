"""The Z-order evaluation of large batches: a permutation of the atoms, undone.

PaiNN evaluates batches of at least ``LOCALITY_MIN_ATOMS`` atoms on CPU with
the atoms sorted along a Z-order curve; energies, per-atom energies, forces
and stress must be those of the input order (float64: to rounding).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

from mlcalc.model import predict
from mlcalc.representation import locality
from tests.conftest import tiny_model


def test_the_order_is_a_permutation_keeping_structures_contiguous():
    g = torch.Generator().manual_seed(0)
    positions = torch.rand(50, 3, generator=g, dtype=torch.float64) * 20
    idx_m = torch.cat([torch.zeros(30, dtype=torch.long), torch.ones(20, dtype=torch.long)])
    perm, inv = locality.locality_order(positions, idx_m, 2.5)
    assert sorted(perm.tolist()) == list(range(50))
    assert torch.equal(perm[inv], torch.arange(50)) and torch.equal(inv[perm], torch.arange(50))
    assert torch.equal(idx_m[perm], idx_m)  # structure 0 first, then structure 1


def test_neighbors_are_closer_in_index_than_in_a_shuffled_order():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (6, 6, 6)
    shuffled = atoms[np.random.default_rng(1).permutation(len(atoms))]
    from ase.neighborlist import neighbor_list
    i, j = neighbor_list("ij", shuffled, 5.0)
    positions = torch.tensor(shuffled.positions)
    _, inv = locality.locality_order(positions, torch.zeros(len(atoms), dtype=torch.long), 2.5)
    inv = inv.numpy()
    assert np.median(np.abs(inv[i] - inv[j])) < 0.25 * np.median(np.abs(i - j))


@pytest.mark.parametrize("name", ["painn"])
def test_z_order_evaluation_gives_the_input_order_numbers(name, monkeypatch, message_path):
    """Two structures in one batch (a bulk cell, a molecule): every result the same
    with the reordering forced on (threshold 0) as with it off."""
    model = tiny_model(name, torch.float64)
    cell = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 1)
    cell.rattle(0.05, seed=3)
    cell = cell[np.random.default_rng(2).permutation(len(cell))]
    mol = molecule("CH4")
    mol.set_atomic_numbers([29] * len(mol))
    mol.positions *= 1.6
    props = ["energy", "energies", "forces"]
    want = predict(model, [cell, mol], props)
    monkeypatch.setattr(locality, "LOCALITY_MIN_ATOMS", 0)
    got = predict(model, [cell, mol], props)
    for w, g in zip(want, got, strict=True):
        assert abs(w["energy"] - g["energy"]) < 1e-10
        np.testing.assert_allclose(g["energies"], w["energies"], atol=1e-10)
        np.testing.assert_allclose(g["forces"], w["forces"], atol=1e-10)
    stress = [predict(model, cell, ["energy", "stress"])[0]["stress"]]
    monkeypatch.setattr(locality, "LOCALITY_MIN_ATOMS", 10**9)
    stress.append(predict(model, cell, ["energy", "stress"])[0]["stress"])
    np.testing.assert_allclose(stress[0], stress[1], atol=1e-12)
    assert np.abs(want[0]["forces"]).max() > 1e-3
