"""``mlcalc phonons`` through click's CliRunner: summary, files, warnings, errors."""

from __future__ import annotations

import warnings

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from click.testing import CliRunner

from mlcalc import save_model
from mlcalc.calculator import MLCalculator
from mlcalc.cli.main import cli
from mlcalc.simulate.phonons import ImaginaryModesWarning, run_phonons
from tests.conftest import assert_one_line_error, help_without_torch, tiny_model

FAST = ["--mesh", "4", "4", "4", "--tmax-K", "400", "--tstep-K", "50", "--device", "cpu"]


def run(*args: str):
    return CliRunner().invoke(cli, ["phonons", *args])


@pytest.fixture
def model_file(tmp_path):
    """A tiny Cu-only PaiNN model file."""
    return str(save_model(tiny_model("painn", seed=1, elements=[29]), tmp_path / "cu.pt"))


@pytest.fixture
def cu_file(tmp_path):
    path = tmp_path / "cu.extxyz"
    ase.io.write(path, bulk("Cu", "fcc", a=3.6))
    return str(path)


def test_help_does_not_import_torch():
    help_text = help_without_torch("phonons")
    assert "--min-length" in help_text and "--relax-first" in help_text


def test_summary_and_files(tmp_path, model_file, cu_file):
    out = tmp_path / "ph"
    result = run(cu_file, "-m", model_file, "--supercell", "3", "3", "3",
                 "--output-dir", str(out), *FAST)
    assert result.exit_code == 0, result.output
    assert "supercell       3 x 3 x 3 (27 atoms), 1 displacement(s) of 0.01 Å" in result.output
    assert "THz" in result.output and "at 300 K" in result.output
    assert "F " in result.output and "Cv " in result.output
    for name in ("phonopy.yaml", "band.yaml", "thermal.csv", "dos.csv", "phonons.png"):
        assert (out / name).is_file()
        assert f"wrote           {out / name}" in result.output
    rows = np.loadtxt(out / "thermal.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(rows[:, 0], np.arange(0.0, 401.0, 50.0))


def test_min_length_picks_the_supercell(tmp_path, model_file, cu_file):
    result = run(cu_file, "-m", model_file, "--min-length", "7", "--output-dir",
                 str(tmp_path), *FAST)
    assert result.exit_code == 0, result.output
    assert "supercell       3 x 3 x 3" in result.output  # 2.55 Å vectors -> 3 x 2.55 >= 7


def unstable_model_file(tmp_path) -> str:
    """A random-weights model that gives fcc Cu imaginary modes (checked by the library).

    Random weights make an arbitrary energy surface around the symmetric
    fcc sites, so about half the seeds are unstable; the search keeps the
    test independent of the exact initialisation.
    """
    atoms = bulk("Cu", "fcc", a=3.6)
    for seed in range(20):
        model = tiny_model("schnet", seed=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ImaginaryModesWarning)
            result = run_phonons(atoms, MLCalculator(model, device="cpu"), supercell=(3, 3, 3),
                                 mesh=(4, 4, 4), output_dir=None)
        if result.min_frequency_off_gamma_THz < -0.5:
            return str(save_model(model, tmp_path / "unstable.pt"))
    pytest.fail("no random-weights model with imaginary modes among 20 seeds")


def test_imaginary_modes_give_a_warning_line(tmp_path, cu_file):
    model = unstable_model_file(tmp_path)
    result = run(cu_file, "-m", model, "--supercell", "3", "3", "3",
                 "--output-dir", str(tmp_path / "ph"), *FAST)
    assert result.exit_code == 0, result.output
    warning_lines = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning_lines) == 1 and "imaginary phonon modes" in warning_lines[0]
    assert "UNSTABLE" in result.stdout


def test_bad_inputs_are_one_line_errors(tmp_path, model_file, cu_file):
    assert_one_line_error(run(str(tmp_path / "none.xyz"), "-m", model_file),
                          "structure file not found")
    garbage = tmp_path / "garbage.xyz"
    garbage.write_text("this is not\na structure\n")
    assert_one_line_error(run(str(garbage), "-m", model_file), "cannot read structures")

    molecule = tmp_path / "molecule.xyz"
    ase.io.write(molecule, Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.4]]))
    assert_one_line_error(run(str(molecule), "-m", model_file), "periodic in all three")
    slab = tmp_path / "slab.extxyz"
    atoms = bulk("Cu", "fcc", a=3.6) * (2, 2, 2)
    atoms.pbc = (True, True, False)
    ase.io.write(slab, atoms)
    assert_one_line_error(run(str(slab), "-m", model_file), "periodic in all three")

    assert_one_line_error(run(cu_file, "-m", str(tmp_path / "missing.pt")), "model file")
    gold = tmp_path / "au.extxyz"
    ase.io.write(gold, bulk("Au", "fcc", a=4.08))
    assert_one_line_error(run(str(gold), "-m", model_file, "--supercell", "2", "2", "2",
                              *FAST), "Au")

    assert_one_line_error(run(cu_file, "-m", model_file, "--supercell", "2", "2", "2",
                              "--min-length", "8"), "either supercell or min_length")
    assert_one_line_error(run(cu_file, "-m", model_file, "--displacement", "0",
                              "--supercell", "2", "2", "2"), "displacement")
    assert_one_line_error(run(cu_file, "-m", model_file, "--tstep-K", "0"), "--tstep-K")
    assert_one_line_error(run(cu_file, "-m", model_file, "--mesh", "0", "4", "4"), "--mesh")
    assert_one_line_error(run(cu_file, "-m", model_file, "--min-length", "-3"), "min_length")
