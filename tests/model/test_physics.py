"""The physics suite, run over both representations, both network dtypes and the devices.

On CUDA (marked ``gpu``, skipped without one) every check runs again with the
model on the GPU; the message ops have no CUDA kernels and run their torch
reference there, so the CUDA case is the eager path.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.calculators.emt import EMT

from mlcalc import testing as T
from mlcalc.model import predict
from tests.conftest import DTYPES, tiny_model


@pytest.fixture(params=DTYPES, ids=["fp32", "fp64"])
def dtype(request) -> torch.dtype:
    return request.param


@pytest.fixture(autouse=True)
def path(message_path):
    """Every check runs on the fused kernels and on their torch reference."""
    return message_path


@pytest.mark.parametrize("structure", ["triclinic_cu", "molecule", "slab"])
def test_forces_are_minus_energy_gradient(model_name, structure, request, device):
    atoms = request.getfixturevalue(structure)
    model = tiny_model(model_name, torch.float64, device=device)
    assert T.check_forces(model, atoms) < T.TOLERANCES[torch.float64]["fd_forces"]


def test_stress_matches_finite_strain(model_name, triclinic_cu, device):
    model = tiny_model(model_name, torch.float64, device=device)
    stress = predict(model, triclinic_cu, ["stress"])[0]["stress"]
    assert np.abs(stress).max() > 1e-3  # a non-trivial stress is being compared
    assert T.check_stress(model, triclinic_cu) < T.TOLERANCES[torch.float64]["fd_stress"]


def test_numerical_stress_helper_matches_ase_sign_convention(triclinic_cu):
    # The reference itself is checked against an analytic ASE calculator.
    atoms = triclinic_cu.copy()
    atoms.calc = EMT()
    numeric = T.numerical_stress(lambda a: EMT().get_potential_energy(a), atoms, eps=1e-5)
    np.testing.assert_allclose(numeric, atoms.get_stress(), atol=1e-7)


@pytest.mark.parametrize("structure", ["triclinic_cu", "molecule", "slab"])
def test_invariances(model_name, dtype, structure, request, device):
    atoms = request.getfixturevalue(structure)
    model = tiny_model(model_name, dtype, device=device)
    tol = T.TOLERANCES[dtype]
    for check in (T.check_rotation, T.check_translation, T.check_permutation):
        de, df = check(model, atoms)
        assert de < tol["energy"] and df < tol["forces"], (check.__name__, de, df)
    if atoms.pbc.any():
        de, df = T.check_wrapping(model, atoms)
        assert de < tol["energy"] and df < tol["forces"], ("wrapping", de, df)


def test_rotation_changes_forces_consistently(model_name, triclinic_cu, device):
    # Guard against a vacuous invariance test: forces must be non-zero and
    # rotate with the structure.
    model = tiny_model(model_name, torch.float64, device=device)
    forces = predict(model, triclinic_cu, ["forces"])[0]["forces"]
    assert np.abs(forces).max() > 1e-3


def test_supercell_energy_is_extensive(model_name, dtype, triclinic_cu, device):
    model = tiny_model(model_name, dtype, device=device)
    assert T.check_supercell(model, triclinic_cu) < T.TOLERANCES[dtype]["energy"]


def test_batch_equals_single(model_name, dtype, triclinic_cu, molecule, slab, device):
    model = tiny_model(model_name, dtype, device=device)
    de, df = T.check_batch(model, [triclinic_cu, molecule, slab, triclinic_cu.repeat((1, 2, 1))])
    assert de < T.TOLERANCES[dtype]["energy"] and df < T.TOLERANCES[dtype]["forces"]


def test_batch_stress_equals_single(model_name, device):
    from ase.build import bulk

    model = tiny_model(model_name, torch.float64, device=device)
    a = bulk("Cu", "fcc", a=3.7, cubic=True)
    b = bulk("Ni", "fcc", a=3.4) * (2, 1, 1)
    b.rattle(0.02, seed=1)
    batched = predict(model, [a, b], ["stress"])
    for atoms, res in zip([a, b], batched, strict=True):
        single = predict(model, atoms, ["stress"])[0]["stress"]
        np.testing.assert_allclose(res["stress"], single, atol=1e-12)


def test_save_load_identical(model_name, dtype, triclinic_cu, tmp_path, device):
    model = tiny_model(model_name, dtype, device=device)
    de, df = T.check_save_load(model, triclinic_cu, tmp_path / "model.pt")
    assert de == 0.0 and df == 0.0


def test_energy_and_forces_continuous_at_cutoff(model_name, dtype, device):
    model = tiny_model(model_name, dtype, device=device)
    de, df = T.check_cutoff_continuity(model)
    assert de < 1e-8 and df < 1e-6


def test_assert_physics_passes_and_detects_a_broken_model(triclinic_cu, device):
    model = tiny_model("painn", torch.float64, device=device)
    T.assert_physics(model, triclinic_cu)
    # Break translation invariance: a model that reads absolute positions.
    broken = tiny_model("painn", torch.float64, device=device)
    original = broken.representation.forward

    def absolute(inputs):
        out = original(inputs)
        out["scalar_representation"] = out["scalar_representation"] + inputs["positions"][
            :, :1].to(out["scalar_representation"].dtype)
        return out

    broken.representation.forward = absolute
    with pytest.raises(AssertionError, match="translation"):
        T.assert_physics(broken, triclinic_cu)


def test_energy_is_harmonic_around_a_symmetric_site(model_name, device):
    # Every atom of a perfect fcc crystal is a centre of inversion: vector
    # features vanish there, and the energy must still be smooth (phonons).
    model = tiny_model(model_name, torch.float64, device=device)
    assert T.check_harmonic_at_symmetric_site(model) < T.TOLERANCES[torch.float64]["harmonic"]
