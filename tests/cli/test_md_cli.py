"""``mlcalc md`` through click's CliRunner: a run, restart, ensembles, bad input."""

from __future__ import annotations

import csv

import ase.io
import pytest
import torch
from ase.build import molecule
from click.testing import CliRunner

from mlcalc import save_model
from mlcalc.cli.main import cli
from tests.conftest import assert_one_line_error, tiny_model


def run(*args: str):
    return CliRunner().invoke(cli, ["md", *map(str, args)])


def steps_in_log(path) -> list[int]:
    with open(path, newline="") as fh:
        return [int(row["step"]) for row in csv.DictReader(fh)]


def test_md_runs_and_restarts(setup, tmp_path):
    model, structure = setup
    prefix = tmp_path / "run"
    result = run(structure, "-m", model, "--ensemble", "nve", "--steps", 20, "--interval", 5,
                 "-o", prefix, "--threads", 1)
    assert result.exit_code == 0, result.output
    assert "20 steps" in result.output and "ns/day" in result.output
    for name in ("run.extxyz", "run.csv", "run_final.extxyz", "run.png"):
        assert (tmp_path / name).is_file(), name
    result = run(structure, "-m", model, "--ensemble", "nve", "--steps", 10, "--interval", 5,
                 "-o", prefix, "--restart", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "to step 30" in result.output
    assert steps_in_log(tmp_path / "run.csv") == [0, 5, 10, 15, 20, 25, 30]
    assert len(ase.io.read(tmp_path / "run.extxyz", ":")) == 7


def test_md_traj_format_and_npt(setup, tmp_path):
    model, structure = setup
    result = run(structure, "-m", model, "--ensemble", "npt", "--pressure-GPa", 1.0,
                 "--steps", 4, "--interval", 2, "--format", "traj", "-o", tmp_path / "npt",
                 "--no-progress")
    assert result.exit_code == 0, result.output
    assert len(ase.io.read(tmp_path / "npt.traj", ":")) == 3


def test_md_ensemble_uncertainty_stop_exit_code(setup, tmp_path):
    model, structure = setup
    other = save_model(tiny_model("schnet", torch.float64, seed=1), tmp_path / "other.pt")
    result = run(structure, "-m", model, "-m", other, "--steps", 20, "--interval", 5,
                 "--uncertainty-threshold", 1e-6, "-o", tmp_path / "ens", "--no-progress")
    assert result.exit_code == 3, result.output
    assert "forces_std above" in result.output and "ens.extxyz" in result.output
    result = run(structure, "-m", model, "-m", other, "--steps", 5, "--interval", 5,
                 "--uncertainty-threshold", 1e-6, "--on-uncertainty", "record",
                 "-o", tmp_path / "rec", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "max forces_std" in result.output


def test_md_interrupted_exit_code(setup, tmp_path, monkeypatch):
    model, structure = setup
    import mlcalc.simulate.md as md_module

    real = md_module.run_md

    def interrupted(*args, **kwargs):
        def progress(done, total, ns_per_day, eta_s):
            if done == 10:
                raise KeyboardInterrupt
        kwargs["progress"] = progress
        return real(*args, **kwargs)

    monkeypatch.setattr(md_module, "run_md", interrupted)
    result = run(structure, "-m", model, "--steps", 50, "--interval", 5, "-o", tmp_path / "i")
    assert result.exit_code == 130, result.output
    assert "interrupted at step 10" in result.output and "i.extxyz" in result.output
    assert steps_in_log(tmp_path / "i.csv")[-1] == 10


def test_missing_structure_file(setup, tmp_path):
    model, _ = setup
    assert_one_line_error(run(tmp_path / "nope.xyz", "-m", model), "structure file not found")


def test_unknown_ensemble_did_you_mean(setup):
    model, structure = setup
    assert_one_line_error(run(structure, "-m", model, "--ensemble", "nvt-langevn"),
                          "unknown ensemble 'nvt-langevn'", "did you mean 'nvt-langevin'")


def test_npt_on_a_molecule(setup, tmp_path):
    model, _ = setup
    path = tmp_path / "mol.xyz"
    ase.io.write(path, molecule("CH4"))
    assert_one_line_error(run(path, "-m", model, "--ensemble", "npt"), "npt needs",
                          "periodic")


def test_missing_model(setup, tmp_path):
    _, structure = setup
    assert_one_line_error(run(structure, "-m", tmp_path / "missing.pt"), "model file not found")


def test_restart_without_trajectory(setup, tmp_path):
    model, structure = setup
    assert_one_line_error(run(structure, "-m", model, "--restart", "-o", tmp_path / "x"),
                          "cannot restart")


def test_uncertainty_threshold_with_one_model(setup, tmp_path):
    model, structure = setup
    assert_one_line_error(run(structure, "-m", model, "--uncertainty-threshold", 0.1,
                              "-o", tmp_path / "u"), "ensemble of models")


@pytest.mark.parametrize("args, fragment", [
    (["--steps", "-1"], "steps >= 0"),
    (["--timestep-fs", "0"], "timestep_fs must be > 0"),
    (["--ensemble", "nvt-busi"], "did you mean 'nvt-bussi'"),
    (["--uncertainty-threshold", "0.1"], "needs an ensemble of models"),
])
def test_options_are_checked_before_the_structure_and_the_model(tmp_path, args, fragment):
    """A bad option is named even though neither the structure nor the model exists:
    nothing was read or loaded first."""
    result = CliRunner().invoke(cli, ["md", str(tmp_path / "missing.xyz"), "-m",
                                      str(tmp_path / "missing.pt"), *args])
    assert_one_line_error(result, fragment)
