"""TorchSimModel: mlcalc models in TorchSim's batched engine, same numbers as the calculator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.optimize import FIRE

from mlcalc import MLCalculator
from mlcalc.exceptions import StressUndefinedError, UnknownElementError
from tests.conftest import tiny_model

ts = pytest.importorskip("torch_sim", reason="TorchSim is the optional 'batch' extra")
from mlcalc.integrations.torchsim import TorchSimModel  # noqa: E402


def mixed_batch() -> list[Atoms]:
    """Different sizes, a triclinic cell, a molecule in a vacuum box (TorchSim's pbc is
    one flag for the batch), two elements."""
    tri = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)
    tri.set_cell(tri.cell.array @ [[1, 0.05, 0], [0, 1, 0.04], [0.03, 0, 1]], scale_atoms=True)
    alloy = bulk("Cu", "fcc", a=3.6) * (2, 2, 3)
    alloy.numbers[::3] = 28
    box = Atoms([29, 28, 29, 29], positions=[[0, 0, 0], [2.4, 0, 0], [0, 2.5, 0], [1.2, 1.2, 2]],
                cell=[14.0, 15.0, 16.0], pbc=True)
    box.positions += 5.0
    structures = [tri, alloy, box, bulk("Ni", "fcc", a=3.5)]
    for k, atoms in enumerate(structures):
        atoms.rattle(0.05, seed=k)
    return structures


@pytest.fixture
def model64():
    return tiny_model("painn", torch.float64)


def test_same_numbers_as_the_calculator_one_structure_at_a_time(model64, message_path):
    structures = mixed_batch()
    engine = TorchSimModel(model64, device="cpu")
    out = engine(ts.initialize_state(structures, engine.device, engine.dtype))
    start = 0
    for k, atoms in enumerate(structures):
        atoms.calc = MLCalculator(model64, device="cpu")
        n = len(atoms)
        assert abs(out["energy"][k].item() - atoms.get_potential_energy()) < 1e-10
        np.testing.assert_allclose(out["forces"][start:start + n].numpy(), atoms.get_forces(),
                                   atol=1e-10)
        np.testing.assert_allclose(out["stress"][k].numpy(),
                                   atoms.get_stress(voigt=False), atol=1e-10)
        start += n
    assert out["energy"].dtype == torch.float64 and out["stress"].shape == (4, 3, 3)
    assert np.abs(out["stress"].numpy()).max() > 1e-4  # stress worth comparing


def test_a_non_periodic_batch_of_molecules(model64):
    structures = [molecule("CH4"), molecule("H2O"), molecule("C6H6")]
    engine = TorchSimModel(model64, device="cpu", compute_stress=False)
    out = engine(ts.initialize_state(structures, engine.device, engine.dtype))
    for k, atoms in enumerate(structures):
        atoms.calc = MLCalculator(model64, device="cpu")
        assert abs(out["energy"][k].item() - atoms.get_potential_energy()) < 1e-10
    with pytest.raises(StressUndefinedError, match="periodic in all three"):
        TorchSimModel(model64, device="cpu")(ts.initialize_state(structures, "cpu",
                                                                  torch.float64))


def test_an_ensemble_gives_the_mean_and_the_spread(model64):
    members = [model64, tiny_model("painn", torch.float64, seed=1)]
    structures = mixed_batch()[:2]
    engine = TorchSimModel(members, device="cpu")
    out = engine(ts.initialize_state(structures, engine.device, engine.dtype))
    atoms = structures[0]
    atoms.calc = MLCalculator(members, device="cpu")
    assert abs(out["energy"][0].item() - atoms.get_potential_energy()) < 1e-10
    assert abs(out["energy_std"][0].item() - atoms.calc.get_property("energy_std")) < 1e-10
    np.testing.assert_allclose(out["forces_std"][:len(atoms)].numpy(),
                               atoms.calc.get_property("forces_std"), atol=1e-10)
    assert out["stress_std"].shape == (2, 3, 3)


def test_torchsims_own_contract(model64):
    from torch_sim.models.interface import validate_model_outputs

    validate_model_outputs(TorchSimModel(model64, device="cpu"), torch.device("cpu"),
                           torch.float64)


def test_elements_outside_the_model_are_named():
    engine = TorchSimModel("cu-emt", device="cpu")
    with pytest.raises(UnknownElementError, match="Ni"):
        engine(ts.initialize_state([bulk("Ni", "fcc", a=3.5)], engine.device, engine.dtype))


def test_batched_fire_relaxes_to_the_energies_of_ase_fire():
    """Same fmax, same model: the relaxed energies agree within 1e-4 eV/atom."""
    structures = [bulk("Cu", "fcc", a=3.6, cubic=True) * s for s in ((2, 1, 1), (2, 2, 1),
                                                                      (1, 1, 1))]
    for k, atoms in enumerate(structures):
        atoms.rattle(0.08, seed=k)
    engine = TorchSimModel("cu-emt", device="cpu", compute_stress=False)
    fmax = 0.005
    relaxed = ts.optimize(ts.initialize_state(structures, engine.device, engine.dtype),
                          engine, optimizer=ts.optimizers.fire,
                          convergence_fn=ts.generate_force_convergence_fn(
                              fmax, include_cell_forces=False),
                          max_steps=2000)
    energies = engine(relaxed)["energy"].numpy()
    for k, atoms in enumerate(structures):
        atoms.calc = MLCalculator("cu-emt", device="cpu")
        FIRE(atoms, logfile=None).run(fmax=fmax, steps=2000)
        assert abs(energies[k] - atoms.get_potential_energy()) / len(atoms) < 1e-4


def test_max_batch_atoms_keeps_every_model_call_within_the_limit(monkeypatch):
    """TorchSim's in-flight autobatcher with max_batch_atoms=16: no model call sees more
    than 16 atoms (28 in all), the frames come back in input order, converged."""
    from mlcalc.integrations.torchsim_runs import relax_many

    structures = [bulk("Cu", cubic=True) * s for s in ((2, 1, 1), (2, 2, 1), (1, 1, 1))]
    for k, atoms in enumerate(structures):
        atoms.rattle(0.05, seed=k)
    seen = []
    forward = TorchSimModel.forward

    def counting(self, state, **kwargs):
        seen.append(int(state.n_atoms))
        return forward(self, state, **kwargs)

    whole = relax_many(structures, "cu-emt", fmax=0.005, device="cpu")
    monkeypatch.setattr(TorchSimModel, "forward", counting)
    limited = relax_many(structures, "cu-emt", fmax=0.005, device="cpu", max_batch_atoms=16)
    assert seen and max(seen) <= 16 and len(set(seen)) > 1
    assert [len(r.atoms) for r in limited] == [8, 16, 4]
    assert all(r.converged for r in limited)
    for a, b in zip(whole, limited, strict=True):
        assert abs(a.atoms.get_potential_energy() - b.atoms.get_potential_energy()) \
            < 1e-4 * len(a.atoms)
