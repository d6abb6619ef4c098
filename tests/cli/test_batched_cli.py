"""Many frames from the command line: ``mlcalc relax`` (batched or one by one) and
``mlcalc md --replicas``."""

from __future__ import annotations

import csv

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from click.testing import CliRunner

from mlcalc.cli.main import cli
from tests.conftest import assert_one_line_error


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def frames(tmp_path):
    structures = [bulk("Cu", cubic=True) * (2, 1, 1), bulk("Cu", cubic=True) * (2, 2, 1),
                  bulk("Cu", cubic=True)]
    for k, atoms in enumerate(structures):
        atoms.rattle(0.05, seed=k)
    path = tmp_path / "many.extxyz"
    ase.io.write(path, structures)
    return path


def read_summary(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("engine", ["--batched", "--no-batched"])
def test_relax_of_many_frames_writes_every_frame_and_a_summary(frames, tmp_path, engine):
    if engine == "--batched":
        pytest.importorskip("torch_sim")
    result = run("relax", frames, "-m", "cu-emt", "-o", tmp_path / "r", engine, "--fmax", 0.01)
    assert result.exit_code == 0, result.output
    assert "3 frames relaxed" in result.output and "3 converged" in result.output
    relaxed = ase.io.read(tmp_path / "r.extxyz", ":")
    assert [len(a) for a in relaxed] == [8, 16, 4]
    for k, atoms in enumerate(relaxed):
        assert atoms.info["frame"] == k and atoms.info["converged"]
        assert np.abs(atoms.get_forces()).max() < 0.01 * 1.01
        assert atoms.get_stress().shape == (6,)
    rows = read_summary(tmp_path / "r.csv")
    assert [int(r["n_atoms"]) for r in rows] == [8, 16, 4]
    assert all(r["converged"] == "1" for r in rows)
    energies = np.array([float(r["energy_per_atom_eV"]) for r in rows])
    assert np.ptp(energies) < 1e-3  # the same crystal, relaxed


def test_batched_and_one_by_one_agree(frames, tmp_path):
    pytest.importorskip("torch_sim")
    for engine in ("--batched", "--no-batched"):
        assert run("relax", frames, "-m", "cu-emt", "-o", tmp_path / engine.strip("-"), engine,
                   "--fmax", 0.005, "--optimizer", "fire").exit_code == 0
    a = [float(r["energy_per_atom_eV"]) for r in read_summary(tmp_path / "batched.csv")]
    b = [float(r["energy_per_atom_eV"]) for r in read_summary(tmp_path / "no-batched.csv")]
    assert np.abs(np.array(a) - b).max() < 1e-4


def test_batches_of_at_most_n_atoms_give_the_one_batch_result(frames, tmp_path):
    """--max-batch-atoms 16: TorchSim's in-flight autobatcher holds at most 16 of the
    28 atoms at a time (the 16-atom frame alone), and swaps frames as they converge."""
    pytest.importorskip("torch_sim")
    for name, extra in (("one", []), ("several", ["--max-batch-atoms", 16])):
        result = run("relax", frames, "-m", "cu-emt", "-o", tmp_path / name, "--batched",
                     "--fmax", 0.005, *extra)
        assert result.exit_code == 0, result.output
    one, several = (read_summary(tmp_path / f"{n}.csv") for n in ("one", "several"))
    assert [int(r["n_atoms"]) for r in several] == [8, 16, 4]  # the input's order
    assert all(r["converged"] == "1" for r in several)
    a = np.array([float(r["energy_per_atom_eV"]) for r in one])
    b = np.array([float(r["energy_per_atom_eV"]) for r in several])
    assert np.abs(a - b).max() < 1e-4


@pytest.mark.parametrize("args, fragment", [
    (["--batched", "--max-batch-atoms", "8"], "cannot hold the largest frame (16 atoms)"),
    (["--no-batched", "--max-batch-atoms", "32"], "--max-batch-atoms sizes TorchSim batches"),
])
def test_max_batch_atoms_bad_uses_are_one_line(frames, tmp_path, args, fragment):
    pytest.importorskip("torch_sim")
    assert_one_line_error(run("relax", frames, "-m", "cu-emt", "-o", tmp_path / "r", *args),
                          fragment)
    assert not (tmp_path / "r.extxyz").exists()


def test_relax_of_many_frames_refuses_to_overwrite(frames, tmp_path):
    assert run("relax", frames, "-m", "cu-emt", "-o", tmp_path / "r", "--no-batched"
               ).exit_code == 0
    before = (tmp_path / "r.extxyz").read_bytes()
    assert_one_line_error(run("relax", frames, "-m", "cu-emt", "-o", tmp_path / "r"),
                          "r.extxyz exists")
    assert (tmp_path / "r.extxyz").read_bytes() == before


def test_md_replicas_each_write_their_own_trajectory(tmp_path):
    pytest.importorskip("torch_sim")
    structure = tmp_path / "cu.xyz"
    ase.io.write(structure, bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1))
    result = run("md", structure, "-m", "cu-emt", "--replicas", 3, "--ensemble", "nve",
                 "--steps", 20, "--interval", 10, "-o", tmp_path / "rep", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "3 replicas x 20 steps" in result.output
    starts = []
    for k in range(3):
        traj = ase.io.read(tmp_path / f"rep_{k:03d}.extxyz", ":")
        assert [f.info["step"] for f in traj] == [0, 10, 20]
        etot = [f.get_total_energy() for f in traj]
        assert np.ptp(etot) / 8 < 1e-3  # NVE: the total energy stays
        starts.append(traj[0].get_momenta())
        assert len(read_summary(tmp_path / f"rep_{k:03d}.csv")) == 3
    assert not np.allclose(starts[0], starts[1])  # independent velocities (seed + k)


@pytest.mark.parametrize("args, fragment", [
    (["--replicas", "2", "--ensemble", "npt"], "batched replicas run nve, nvt-langevin"),
    (["--replicas", "2", "--restart"], "batched replicas start anew"),
    (["--replicas", "0"], "--replicas must be >= 1"),
])
def test_md_replicas_bad_options_are_one_line(tmp_path, args, fragment):
    pytest.importorskip("torch_sim")
    structure = tmp_path / "cu.xyz"
    ase.io.write(structure, bulk("Cu", "fcc", a=3.6, cubic=True))
    assert_one_line_error(run("md", structure, "-m", "cu-emt", "-o", tmp_path / "x", *args),
                          fragment)
