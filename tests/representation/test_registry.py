"""A new representation needs its own class and one registry line, nothing else.

The class below is what a contributor would write in its own file; the test
registers it (the one line in ``mlcalc/representation/__init__.py``) and runs
it through the whole pipeline: build by name, the model's own neighbor list,
forces and stress against finite differences, save and load, the calculator,
the fused kernels and their reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from torch import nn

from mlcalc import MLCalculator, kernels, load_model, save_model
from mlcalc import properties as P
from mlcalc import testing as T
from mlcalc.model import build_potential, predict
from mlcalc.nn import Dense
from mlcalc.representation import REPRESENTATIONS, Representation


class PairSum(Representation):
    """x_i = e(Z_i) + Σ_j W(d_ij) ∘ e(Z_j): one continuous-filter convolution."""

    name = "pairsum"

    def __init__(self, n_atom_basis: int = 8, n_interactions: int = 1, cutoff: float = 4.0,
                 n_rbf: int = 8, radial_basis: str = "gaussian", cutoff_fn: str = "cosine",
                 max_z: int = 100) -> None:
        super().__init__(cutoff, n_rbf, radial_basis, cutoff_fn)
        self._save_hyperparameters(n_atom_basis=n_atom_basis, n_interactions=n_interactions,
                                   cutoff=float(cutoff), n_rbf=n_rbf, radial_basis=radial_basis,
                                   cutoff_fn=cutoff_fn, max_z=max_z)
        self.embedding = nn.Embedding(max_z + 1, n_atom_basis)
        self.filter = Dense(n_rbf, n_atom_basis, activation=torch.tanh)

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        a, b = inputs[P.idx_i], inputs[P.idx_j]
        order, rowptr = kernels.half_graph(a, b, inputs[P.Z].shape[0])
        _, _, rbf, fcut = self.pair_geometry(inputs)
        x = self.embedding(inputs[P.Z])
        w = self.filter(rbf) * fcut[:, None]
        inputs[P.scalar_representation] = x + kernels.cfconv(x, w, a, b, order, rowptr)
        return inputs


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(REPRESENTATIONS, PairSum.name, PairSum)  # the one registry line


def test_a_registered_representation_runs_through_the_whole_pipeline(registered, tmp_path,
                                                                      triclinic_cu,
                                                                      message_path):
    torch.manual_seed(0)
    model = build_potential("pairsum", n_atom_basis=8, cutoff=4.0, dtype="float64")
    assert T.check_forces(model, triclinic_cu) < T.TOLERANCES[torch.float64]["fd_forces"]
    assert T.check_stress(model, triclinic_cu) < T.TOLERANCES[torch.float64]["fd_stress"]
    loaded = load_model(save_model(model, tmp_path / "model.pt"))
    assert isinstance(loaded.representation, PairSum)
    atoms = triclinic_cu.copy()
    atoms.calc = MLCalculator(loaded, threads=1)
    want = predict(model, triclinic_cu, ["energy", "forces"])[0]
    assert abs(atoms.get_potential_energy() - want["energy"]) < 1e-10
    np.testing.assert_allclose(atoms.get_forces(), want["forces"], atol=1e-10)
    energies = [r["energy"] for r in predict(loaded, [triclinic_cu, bulk("Cu")], ["energy"])]
    assert np.isfinite(energies).all()
