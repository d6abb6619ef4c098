"""AtomisticModel / NeuralNetworkPotential behaviour."""

from __future__ import annotations

import pytest
import torch
from ase.build import bulk

from mlcalc import properties as P
from mlcalc.exceptions import MlcalcError, StressUndefinedError, UnknownNameError
from mlcalc.model import NeuralNetworkPotential, atoms_to_batch, build_potential, predict
from tests.conftest import tiny_model


def test_required_derivatives_follow_the_properties_of_each_call():
    model = tiny_model("schnet")
    assert model.required_derivatives(["energy"]) == []
    assert model.required_derivatives(["energy", "forces"]) == [P.R]
    assert model.required_derivatives(["energy", "forces", "stress"]) == [P.R, P.strain]


def test_a_call_leaves_no_state_behind():
    """What one call computes does not depend on what an earlier call asked."""
    model = tiny_model("schnet")
    atoms = bulk("Cu", cubic=True)
    before = {k: v for k, v in vars(model).items() if not k.startswith("_")}
    with_stress = model(atoms_to_batch([atoms], model), ["energy", "forces", "stress"])
    plain = model(atoms_to_batch([atoms], model))
    assert P.stress in with_stress and P.stress not in plain and P.forces in plain
    assert {k: v for k, v in vars(model).items() if not k.startswith("_")} == before


def test_energy_only_call_computes_no_derivatives():
    model = tiny_model("painn")
    res = predict(model, bulk("Cu", cubic=True), ["energy"])[0]
    assert set(res) == {"energy"}


def test_request_of_unknown_property_is_an_error():
    model = build_potential("schnet", n_atom_basis=8, n_interactions=1, forces=False)
    batch = atoms_to_batch([bulk("Cu", cubic=True)], model)
    with pytest.raises(MlcalcError, match="cannot compute forces"):
        model(batch, ["energy", "forces"])


def test_postprocessing_on_unless_training_and_switchable_per_call():
    model = build_potential("schnet", n_atom_basis=8, n_interactions=1,
                            offsets={"mean_per_atom": -10.0}, dtype="float64")
    atoms = bulk("Cu", cubic=True)

    def energy(**kwargs) -> float:
        return model(atoms_to_batch([atoms], model), ["energy"], **kwargs)["energy"].item()

    model.eval()
    e_eval = energy()
    model.train()
    e_train = energy()
    assert e_eval - e_train == pytest.approx(-40.0)
    assert energy(postprocess=True) == pytest.approx(e_eval)
    model.eval()
    assert energy(postprocess=False) == pytest.approx(e_train)
    assert energy() == pytest.approx(e_eval)  # the switch was for that call only


def test_training_mode_keeps_graph_for_force_loss(message_path):
    model = tiny_model("painn").train()
    out = model(atoms_to_batch([bulk("Cu", cubic=True)], model), ["energy", "forces"])
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
    with pytest.raises(StressUndefinedError, match="periodic in all three directions"):
        predict(tiny_model("schnet"), molecule, ["stress"])


def test_hessian_is_symmetric_and_matches_force_differences(message_path):
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
