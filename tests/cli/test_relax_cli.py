"""``mlcalc relax`` through click's CliRunner: files, output, exit codes, errors."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from click.testing import CliRunner

from mlcalc.cli.main import cli
from mlcalc.model.io import save_model
from tests.conftest import assert_one_line_error, help_without_torch, tiny_model


def run(*args: str):
    return CliRunner().invoke(cli, ["relax", *args])


@pytest.fixture
def model_file(tmp_path):
    return str(save_model(tiny_model("painn", torch.float64, seed=1), tmp_path / "model.pt"))


@pytest.fixture
def rattled(tmp_path):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.05, seed=2)
    path = tmp_path / "cu.xyz"
    ase.io.write(path, atoms)
    return str(path)


def test_relax_converges_and_writes_files(tmp_path, model_file, rattled):
    prefix = tmp_path / "out" / "cu"
    result = run(rattled, "-m", model_file, "--fmax", "0.01", "-o", str(prefix))
    assert result.exit_code == 0, result.output
    for name in ("energy", "fmax", "steps", "converged", "max stress"):
        assert name in result.output
    relaxed = ase.io.read(f"{prefix}.extxyz")
    assert np.linalg.norm(relaxed.get_forces(), axis=1).max() <= 0.01  # results stored
    assert isinstance(relaxed.get_potential_energy(), float)
    steps = len(ase.io.read(f"{prefix}.traj", ":"))
    assert steps >= 2
    assert "BFGS" in open(f"{prefix}.log").read()


def test_cell_relax_lowers_stress(tmp_path, model_file, rattled):
    prefix = tmp_path / "cell"
    result = run(rattled, "-m", model_file, "--cell", "--optimizer", "lbfgs", "--fmax", "0.01",
                 "--steps", "300", "-o", str(prefix))
    assert result.exit_code == 0, result.output
    assert "cell        a b c" in result.output
    start, end = ase.io.read(f"{prefix}.traj", 0), ase.io.read(f"{prefix}.traj", -1)
    assert np.abs(end.get_stress()).max() < np.abs(start.get_stress()).max()


def test_not_converged_exits_1_and_keeps_files(tmp_path, model_file, rattled):
    prefix = tmp_path / "short"
    result = run(rattled, "-m", model_file, "--steps", "1", "-o", str(prefix))
    assert_one_line_error(result, "did not converge in 1 steps (fmax ", "> 0.01)")
    assert result.exit_code == 1
    assert "NOT converged" in result.output
    for ext in ("extxyz", "traj", "log"):
        assert (tmp_path / f"short.{ext}").is_file()
    assert len(ase.io.read(f"{prefix}.traj", ":")) == 2


def test_bad_inputs_are_one_line_errors(tmp_path, model_file, rattled):
    h2o = tmp_path / "h2o.xyz"
    ase.io.write(h2o, molecule("H2O"))
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    out = str(tmp_path / "x")
    cases = [
        ((rattled, "-m", model_file, "--optimizer", "bgfs", "-o", out),
         ("unknown optimizer 'bgfs'", "did you mean 'bfgs'")),
        ((str(tmp_path / "missing.xyz"), "-m", model_file, "-o", out),
         ("structure file not found",)),
        ((str(empty), "-m", model_file, "-o", out), ("empty.xyz",)),
        ((rattled, "-m", str(tmp_path / "missing.pt"), "-o", out), ("model file not found",)),
        ((rattled, "-m", model_file, "--pressure-GPa", "2", "-o", out), ("--cell",)),
        ((str(h2o), "-m", model_file, "--cell", "-o", out), ("periodic",)),
        ((str(h2o), "-m", "cu-emt", "-o", out), ("not in the model",)),
        ((rattled, "-m", model_file, "--fmax", "-1", "-o", out), ("fmax must be > 0",)),
    ]
    for args, fragments in cases:
        assert_one_line_error(run(*args), *fragments)


@pytest.mark.parametrize("command", ["relax", "eval", "check"])
def test_help_does_not_import_torch(command):
    help_text = help_without_torch(command)
    assert "--device" in help_text


def test_coincident_atoms_are_named_in_one_line(tmp_path):
    path = tmp_path / "dup.xyz"
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.positions[3] = atoms.positions[1]
    ase.io.write(path, atoms)
    result = run(str(path), "-m", "cu-emt", "-o", str(tmp_path / "r"))
    assert_one_line_error(result, "atoms 1 and 3 are 0 Å apart", "duplicated atoms")
    assert not (tmp_path / "r.traj").exists() and not (tmp_path / "r.log").exists()
