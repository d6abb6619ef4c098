"""ASEAtomsData: create, add, reload, unit conversion, metadata and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.emt import EMT

from mlcalc import properties as P
from mlcalc.data import ASEAtomsData, atoms_to_inputs
from mlcalc.exceptions import InvalidStructureError, MissingPropertyError, UnitError

EV_UNITS = {"energy": "eV", "forces": "eV/Ang", "stress": "eV/Ang^3", "energies": "eV"}


def emt_structures(n: int, seed: int = 0) -> list[Atoms]:
    """Rattled cubic Cu cells labelled by EMT (energy, energies, forces, stress)."""
    frames = []
    for k in range(n):
        atoms = bulk("Cu", cubic=True)
        atoms.rattle(0.05, seed=seed + k)
        atoms.calc = EMT()
        atoms.get_potential_energy()
        atoms.get_stress()
        frames.append(atoms)
    return frames


def test_roundtrip_labels_and_units(tmp_path):
    frames = emt_structures(3)
    data = ASEAtomsData.create(tmp_path / "cu.db", property_unit_dict=EV_UNITS, source="test")
    data.add_systems(frames)
    data = ASEAtomsData(tmp_path / "cu.db")
    assert len(data) == 3
    assert data.units == EV_UNITS and data.distance_unit == "Ang"
    assert data.metadata == {"source": "test"}
    assert sorted(data.available_properties) == sorted(EV_UNITS)
    for k, atoms in enumerate(frames):
        inputs = data[k]
        assert inputs[P.idx].tolist() == [k]
        assert inputs[P.energy].shape == (1,) and inputs[P.energy].dtype == torch.float64
        assert inputs[P.energy].item() == atoms.get_potential_energy()
        assert inputs[P.forces].shape == (4, 3)
        assert np.array_equal(inputs[P.forces].numpy(), atoms.get_forces())
        assert inputs[P.stress].shape == (1, 6)
        assert np.array_equal(inputs[P.stress][0].numpy(), atoms.get_stress())
        assert inputs[P.energies].shape == (4,)
        assert np.array_equal(inputs[P.energies].numpy(), atoms.get_potential_energies())
        structure = atoms_to_inputs(atoms)
        for key in P.STRUCTURE_KEYS:
            assert torch.equal(inputs[key], structure[key])
    back = data.get_atoms(1)
    assert back.get_potential_energy() == frames[1].get_potential_energy()
    assert np.array_equal(back.get_stress(), frames[1].get_stress())


def test_stress_3x3_and_info_arrays_labels(tmp_path):
    atoms = emt_structures(1)[0]
    e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(voigt=False)
    atoms.calc = None
    atoms.info["energy"], atoms.info["stress"] = e, s
    atoms.arrays["forces"] = f
    atoms.arrays["charges_x"] = np.arange(4.0)
    data = ASEAtomsData.create(tmp_path / "a.db", property_unit_dict={
        "energy": "eV", "forces": "eV/Ang", "stress": "eV/Ang^3", "charges_x": "e"})
    data.add_systems([atoms])
    out = data[0]
    assert np.allclose(out[P.stress][0].numpy(), s[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]])
    assert out["charges_x"].shape == (4,)  # per-atom: came from atoms.arrays
    assert ASEAtomsData(tmp_path / "a.db")[0]["charges_x"].shape == (4,)


def test_units_converted_on_load(tmp_path):
    atoms = Atoms("H2O", positions=[[0, 0, 0], [1.8, 0, 0], [0, 1.8, 0]])
    forces = np.arange(9.0).reshape(3, 3)
    data = ASEAtomsData.create(tmp_path / "k.db", distance_unit="Bohr", property_unit_dict={
        "energy": "kcal/mol", "forces": "kcal/mol/Ang"})
    data.add_systems([atoms], [{"energy": -10.0, "forces": forces}])
    out = data[0]
    kcal = units.kcal / units.mol
    assert np.isclose(out[P.energy].item(), -10.0 * kcal, rtol=1e-14)
    assert np.allclose(out[P.forces].numpy(), forces * kcal, rtol=1e-14)
    assert np.allclose(out[P.R].numpy(), atoms.positions * units.Bohr, rtol=1e-14)
    numbers, energy = data.numbers_and_labels([0], "energy")[0]
    assert numbers.tolist() == [1, 1, 8] and torch.equal(energy, out[P.energy])


def test_atomrefs_roundtrip(tmp_path):
    refs = np.zeros(119)
    refs[1], refs[8] = -0.5, -75.0
    data = ASEAtomsData.create(tmp_path / "r.db", property_unit_dict={"energy": "Hartree"},
                               atomrefs={"energy": refs[:10].tolist()})
    loaded = ASEAtomsData(tmp_path / "r.db").atomrefs["energy"]
    assert loaded.shape == (119,) and loaded.dtype == torch.float64
    assert torch.allclose(loaded, torch.tensor(refs) * units.Hartree, rtol=1e-14)
    assert data.atomrefs.keys() == {"energy"}


def test_missing_property_errors(tmp_path):
    data = ASEAtomsData.create(tmp_path / "x.db", property_unit_dict={
        "energy": "eV", "forces": "eV/Ang"})
    data.add_systems(emt_structures(1))
    with pytest.raises(MissingPropertyError) as err:
        ASEAtomsData(tmp_path / "x.db", load_properties=["energy", "stress"])
    assert str(err.value) == "data set 'x.db' has no property 'stress' (available: energy, forces)"
    with pytest.raises(MissingPropertyError, match="no property 'stress'"):
        data.require(["stress"])
    data.load_properties = ["energy"]
    assert P.forces not in data[0]
    bare = Atoms("Cu", cell=[3, 3, 3], pbc=True)
    with pytest.raises(MissingPropertyError, match="structure 1 has no property 'energy'"):
        data.add_systems([emt_structures(1)[0], bare])
    assert len(ASEAtomsData(tmp_path / "x.db")) == 1  # nothing of the failed batch written


def test_create_and_open_errors(tmp_path):
    with pytest.raises(UnitError):
        ASEAtomsData.create(tmp_path / "u.db", property_unit_dict={"energy": "kcal/mool"})
    with pytest.raises(UnitError):
        ASEAtomsData.create(tmp_path / "u.db", property_unit_dict={"forces": "eV"})
    with pytest.raises(UnitError):
        ASEAtomsData.create(tmp_path / "u.db", distance_unit="eV")
    assert not (tmp_path / "u.db").exists()
    ASEAtomsData.create(tmp_path / "e.db", property_unit_dict={"energy": "eV"})
    with pytest.raises(FileExistsError, match="already exists"):
        ASEAtomsData.create(tmp_path / "e.db")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ASEAtomsData(tmp_path / "missing.db")


def test_invalid_structures_refused(tmp_path):
    with pytest.raises(InvalidStructureError, match="empty"):
        atoms_to_inputs(Atoms())
    nan = Atoms("H2", positions=[[0, 0, 0], [np.nan, 0, 0]])
    with pytest.raises(InvalidStructureError, match="NaN"):
        atoms_to_inputs(nan)
    with pytest.raises(InvalidStructureError, match="cell vector"):
        atoms_to_inputs(Atoms("H", pbc=True))
    singular = Atoms("H", cell=[[1, 0, 0], [2, 0, 0], [0, 0, 1]], pbc=True)
    with pytest.raises(InvalidStructureError, match="singular"):
        atoms_to_inputs(singular)
    data = ASEAtomsData.create(tmp_path / "n.db", property_unit_dict={"energy": "eV"})
    with pytest.raises(InvalidStructureError, match="structure 0"):
        data.add_systems([nan], [{"energy": 0.0}])
    with pytest.raises(InvalidStructureError, match="label 'energy'"):
        data.add_systems([Atoms("H")], [{"energy": np.nan}])
    assert len(data) == 0


def test_not_a_database(tmp_path):
    (tmp_path / "text.db").write_text("not a database\n")
    with pytest.raises(ValueError, match="not an ASE SQLite database"):
        ASEAtomsData(tmp_path / "text.db")
