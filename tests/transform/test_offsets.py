"""Offsets: fitting, removal from labels and float64 restoration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk

from mlcalc import properties as P
from mlcalc.data.atoms import atoms_to_inputs
from mlcalc.model import build_potential, predict
from mlcalc.transform.offsets import AddOffsets, Offsets, RemoveOffsets, fit_offsets
from tests.conftest import tiny_model


def test_fit_atomrefs_recovers_per_element_energies():
    rng = np.random.default_rng(0)
    true = {1: -13.6, 8: -432.1, 29: -1200.5}
    numbers, energies = [], []
    for _ in range(30):
        z = rng.choice([1, 8, 29], size=rng.integers(2, 9))
        numbers.append(z)
        energies.append(sum(true[int(k)] for k in z) + rng.normal(scale=1e-3))
    off = fit_offsets(numbers, energies, mean=False, atomrefs=True)
    for z, value in true.items():
        assert off.atomrefs[z] == pytest.approx(value, abs=1e-2)
    assert off.mean_per_atom == 0.0


def test_fit_mean_per_atom():
    numbers = [np.array([29] * 4), np.array([29] * 8)]
    off = fit_offsets(numbers, [-8.0, -16.0], mean=True)
    assert off.mean_per_atom == pytest.approx(-2.0)


def test_remove_then_add_offsets_round_trip():
    atoms = bulk("CuNi", "rocksalt", a=3.6) * (2, 1, 1)
    inputs = atoms_to_inputs(atoms)
    inputs[P.energy] = torch.tensor([-1234.5678901234], dtype=torch.float64)
    offsets = Offsets(-3.25, {28: -100.125, 29: -200.0625})
    removed = RemoveOffsets(offsets=offsets)(inputs)
    expected = -1234.5678901234 - (4 * -3.25 + 2 * -100.125 + 2 * -200.0625)
    assert removed[P.energy].item() == pytest.approx(expected, abs=1e-12)
    batch = dict(removed, **{P.idx_m: torch.zeros(4, dtype=torch.long)})
    restored = AddOffsets(offsets)(batch)
    assert restored[P.energy].item() == pytest.approx(-1234.5678901234, abs=1e-10)


def test_add_offsets_table_stays_float64_after_model_float():
    model = build_potential("schnet", n_atom_basis=8, n_interactions=1,
                            offsets={"mean_per_atom": -1e5}).float()
    assert model.postprocessors[0]._table.dtype == torch.float64


@pytest.mark.parametrize("name", ["schnet", "painn"])
def test_float32_network_gives_exact_total_energy_with_large_offset(name):
    """A mean offset of -1e5 eV per structure is restored to 1e-6 eV (float32 network)."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)  # 4 atoms: -25000 eV/atom = -1e5 eV
    atoms.rattle(0.02, seed=0)
    offsets = {"mean_per_atom": -25000.0}
    ref = tiny_model(name, torch.float64)
    ref.postprocessors.append(AddOffsets(offsets))
    fp32 = tiny_model(name, torch.float64)
    fp32.load_state_dict(ref.state_dict())
    fp32.postprocessors.append(AddOffsets(offsets))
    fp32 = fp32.float()
    e64 = predict(ref, atoms, ["energy"])[0]["energy"]
    e32 = predict(fp32, atoms, ["energy"])[0]["energy"]
    assert abs(e64 - -1e5) > 1e-3  # the network contributes a non-trivial part
    assert abs(e32 - e64) < 1e-6
    # The same sum done in float32 would be off by ~ulp(1e5) = 8e-3 eV.
    assert abs(float(np.float32(e64)) - e64) > 1e-6


def test_remove_offsets_without_fit_is_an_error():
    atoms = bulk("Cu")
    inputs = atoms_to_inputs(atoms)
    inputs[P.energy] = torch.tensor([-1.0], dtype=torch.float64)
    with pytest.raises(RuntimeError, match="no offsets"):
        RemoveOffsets()(inputs)


def test_remove_offsets_fitted_on_training_split_through_datamodule(tmp_path):
    from ase.calculators.emt import EMT

    from mlcalc.data import ASEAtomsData, AtomsDataModule

    data = ASEAtomsData.create(tmp_path / "d.db", property_unit_dict={"energy": "eV"})
    structures = []
    for k in range(12):
        atoms = bulk("Cu", "fcc", a=3.55 + 0.01 * k, cubic=True) * (1, 1, 1 + k % 2)
        atoms.calc = EMT()
        structures.append(atoms)
    data.add_systems(structures)
    remove = RemoveOffsets(remove_mean=True)
    dm = AtomsDataModule(tmp_path / "d.db", batch_size=4, num_train=8, num_val=2,
                         transforms=[remove], split_file=tmp_path / "split.npz")
    dm.setup("fit")
    pairs = data.numbers_and_labels(dm.train_idx, "energy")
    mean = np.mean([e.item() / len(z) for z, e in pairs])
    assert remove.offsets.mean_per_atom == pytest.approx(mean, abs=1e-12)
    batch = next(iter(dm.train_dataloader()))
    for k in range(len(batch["n_atoms"])):
        idx = int(batch["idx"][k])
        raw = data.get_properties(idx)["energy"].item()
        assert batch["energy"][k].item() == pytest.approx(raw - mean * int(batch["n_atoms"][k]))
