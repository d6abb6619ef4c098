"""AtomisticModel / NeuralNetworkPotential behaviour."""

from __future__ import annotations

import pytest
import torch
from ase.build import bulk

from mlcalc import properties as P
from mlcalc.exceptions import InvalidStructureError, MlcalcError, UnknownNameError
from mlcalc.model import NeuralNetworkPotential, atoms_to_batch, build_potential, predict
from mlcalc.transform.neighbors import MatScipyNeighborList
from tests.conftest import tiny_model


def test_required_derivatives_follow_the_request():
    model = tiny_model("schnet")
    model.request(["energy"])
    assert model.required_derivatives == []
    model.request(["energy", "forces"])
    assert model.required_derivatives == [P.R]
    model.request(["energy", "forces", "stress"])
    assert model.required_derivatives == [P.R, P.strain]


def test_energy_only_call_computes_no_derivatives():
    model = tiny_model("painn")
    res = predict(model, bulk("Cu", cubic=True), ["energy"])[0]
    assert set(res) == {"energy"}


def test_request_of_unknown_property_is_an_error():
    model = build_potential("schnet", n_atom_basis=8, n_interactions=1, forces=False)
    with pytest.raises(MlcalcError, match="cannot compute forces"):
        model.request(["energy", "forces"])


def test_postprocessors_skipped_in_training_and_switchable():
    model = build_potential("schnet", n_atom_basis=8, n_interactions=1,
                            offsets={"mean_per_atom": -10.0}, dtype="float64")
    atoms = bulk("Cu", cubic=True)
    nl = MatScipyNeighborList(model.cutoff)

    def energy() -> float:
        model.request(["energy"])
        return model(atoms_to_batch([atoms], nl))["energy"].item()

    model.eval()
    e_eval = energy()
    model.train()
    e_train = energy()
    assert e_eval - e_train == pytest.approx(-40.0)
    model.eval()
    model.do_postprocessing = False
    assert energy() == pytest.approx(e_train)


def test_training_mode_keeps_graph_for_force_loss():
    model = tiny_model("painn").train()
    batch = atoms_to_batch([bulk("Cu", cubic=True)], MatScipyNeighborList(model.cutoff))
    model.request(["energy", "forces"])
    out = model(batch)
    loss = out["forces"].pow(2).sum()
    loss.backward()
    assert model.representation.embedding.weight.grad is not None


def test_config_round_trip_rebuilds_same_architecture():
    model = tiny_model("painn", shared_filters=True, shared_interactions=True)
    clone = NeuralNetworkPotential.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    assert sum(p.numel() for p in clone.parameters()) == sum(
        p.numel() for p in model.parameters())


def test_unknown_representation_suggests_a_name():
    message = "unknown representation 'pain'.*did you mean 'painn'"
    with pytest.raises(UnknownNameError, match=message):
        build_potential("pain")


def test_stress_of_non_periodic_structure_is_refused(molecule):
    with pytest.raises(InvalidStructureError, match="periodic in all three directions"):
        predict(tiny_model("schnet"), molecule, ["stress"])


def test_hessian_is_symmetric_and_matches_force_differences():
    model = tiny_model("schnet", torch.float64)
    atoms = bulk("Cu", cubic=True)
    atoms.rattle(0.05, seed=0)
    hess = predict(model, atoms, ["hessian"])[0]["hessian"]
    assert hess.shape == (12, 12)
    assert abs(hess - hess.T).max() < 1e-10
    eps = 1e-5
    col = []
    for sign in (1, -1):
        moved = atoms.copy()
        moved.positions[1, 2] += sign * eps
        col.append(predict(model, moved, ["forces"])[0]["forces"].reshape(-1))
    numeric = -(col[0] - col[1]) / (2 * eps)
    assert abs(hess[:, 5] - numeric).max() < 1e-6


def test_model_repr_shows_hyperparameters():
    text = repr(tiny_model("painn"))
    assert "n_atom_basis=16" in text and "cutoff=4.0" in text


def test_predict_refuses_unknown_elements():
    from mlcalc.exceptions import UnknownElementError

    model = build_potential("schnet", n_atom_basis=8, n_interactions=1, elements=[29])
    with pytest.raises(UnknownElementError, match=r"element Ni \(Z=28\) is not in the model"):
        predict(model, bulk("Ni", cubic=True), ["energy"])
