"""Converters: extxyz / traj files and MD17-style npz into ASEAtomsData."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones

from mlcalc import properties as P
from mlcalc.data import ASEAtomsData, from_ase_file, from_npz
from mlcalc.exceptions import MissingPropertyError


def emt_frames(n: int) -> list[Atoms]:
    frames = []
    for k in range(n):
        atoms = bulk("Cu", cubic=True)
        atoms.rattle(0.05, seed=k)
        atoms.calc = EMT()
        atoms.get_potential_energy()
        atoms.get_stress()
        frames.append(atoms)
    return frames


@pytest.mark.parametrize("ext", ["extxyz", "traj"])
def test_from_ase_file(tmp_path, ext):
    frames = emt_frames(3)
    path = tmp_path / f"in.{ext}"
    ase.io.write(path, frames)
    data = from_ase_file(path, tmp_path / "out.db")
    assert {"energy", "forces", "stress"} <= set(data.available_properties)
    assert data.units["forces"] == "eV/Ang"
    data = ASEAtomsData(tmp_path / "out.db")
    reread = ase.io.read(path, ":")
    for k, atoms in enumerate(reread):
        out = data[k]
        assert out[P.energy].item() == atoms.get_potential_energy()
        assert np.array_equal(out[P.forces].numpy(), atoms.get_forces())
        assert np.array_equal(out[P.stress][0].numpy(), atoms.get_stress())
        # the text format rounds, but only at the last digits
        assert np.allclose(out[P.forces].numpy(), frames[k].get_forces(), atol=1e-8)


def test_from_ase_file_missing_label_leaves_no_file(tmp_path):
    frames = emt_frames(2)
    frames[1].calc = None
    ase.io.write(tmp_path / "in.extxyz", frames)
    with pytest.raises(MissingPropertyError, match="structure 1"):
        from_ase_file(tmp_path / "in.extxyz", tmp_path / "out.db")
    assert not (tmp_path / "out.db").exists()
    data = from_ase_file(tmp_path / "in.extxyz", tmp_path / "out.db", index="0:1")
    assert len(data) == 1


def make_md17(path, n_frames: int = 4, forces_key: str = "F") -> tuple[np.ndarray, ...]:
    """A tiny MD17-style file: an LJ trimer, energies in kcal/mol."""
    rng = np.random.default_rng(0)
    base = np.array([[0.0, 0.0, 0.0], [3.8, 0.0, 0.0], [1.9, 3.2, 0.0]])
    kcal = units.kcal / units.mol
    R, E, F = [], [], []
    for _ in range(n_frames):
        atoms = Atoms("Ar3", positions=base + rng.normal(scale=0.1, size=(3, 3)))
        atoms.calc = LennardJones(sigma=3.4, epsilon=0.0104, rc=10.0)
        R.append(atoms.positions)
        E.append([atoms.get_potential_energy() / kcal])
        F.append(atoms.get_forces() / kcal)
    R, E, F = np.array(R), np.array(E), np.array(F)
    np.savez(path, z=np.full(3, 18), R=R, E=E, **{forces_key: F})
    return R, E, F


def test_from_npz_kcal(tmp_path):
    R, E, F = make_md17(tmp_path / "md17.npz")
    data = from_npz(tmp_path / "md17.npz", tmp_path / "md17.db", energy_unit="kcal/mol")
    assert data.units == {"energy": "kcal/mol", "forces": "kcal/mol/Ang"}
    kcal = units.kcal / units.mol
    assert len(data) == 4
    for k in range(4):
        out = data[k]
        assert out[P.Z].tolist() == [18, 18, 18]
        assert not out[P.pbc].any()
        assert np.allclose(out[P.R].numpy(), R[k], rtol=0, atol=0)
        assert np.isclose(out[P.energy].item(), E[k, 0] * kcal, rtol=1e-13)
        assert np.allclose(out[P.forces].numpy(), F[k] * kcal, rtol=1e-13)


def test_from_npz_errors(tmp_path):
    np.savez(tmp_path / "bad.npz", z=np.ones(2), E=np.zeros(3))
    with pytest.raises(MissingPropertyError, match="no key 'R' or 'coords'"):
        from_npz(tmp_path / "bad.npz", tmp_path / "bad.db")
    np.savez(tmp_path / "shape.npz", z=np.ones(2), R=np.zeros((3, 4, 3)), E=np.zeros(3))
    with pytest.raises(ValueError, match="R has shape"):
        from_npz(tmp_path / "shape.npz", tmp_path / "shape.db")
    with pytest.raises(FileNotFoundError):
        from_npz(tmp_path / "none.npz", tmp_path / "none.db")
    assert not (tmp_path / "bad.db").exists() and not (tmp_path / "shape.db").exists()
