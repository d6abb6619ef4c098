"""mlcalc.simulate.relax: the glue to ASE's optimizers, filters and constraints.

ASE's EMT calculator validates the glue against known numbers (EMT's fcc Cu
lattice constant); a tiny float64 model checks it with an MLCalculator.
"""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import spglib
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.units import GPa

from mlcalc.calculator import MLCalculator
from mlcalc.exceptions import InvalidStructureError, UnknownNameError
from mlcalc.simulate.relax import relax
from tests.conftest import tiny_model

#: EMT's fcc Cu minimum: a = 3.5898 Å (ASE's EMT parameters, measured by a
#: cell relaxation to fmax 1e-5 with FrechetCellFilter; matches an E(V) fit).
EMT_CU_A = 3.590


def test_cell_relax_finds_emt_lattice_constant_and_lowers_stress(tmp_path):
    atoms = bulk("Cu", "fcc", a=3.50)  # compressed primitive cell
    atoms.calc = EMT()
    stress0 = np.abs(atoms.get_stress()).max()
    result = relax(atoms, EMT(), cell=True, fmax=1e-4, trajectory=tmp_path / "r.traj",
                   log=tmp_path / "r.log")
    assert result.converged and result.fmax <= 1e-4
    a = (4 * result.atoms.get_volume()) ** (1 / 3)  # 4 atoms per conventional cell
    assert a == pytest.approx(EMT_CU_A, abs=1e-3)
    assert result.max_stress < 1e-3 * stress0
    assert len(ase.io.read(tmp_path / "r.traj", ":")) == result.steps + 1
    assert "BFGS" in (tmp_path / "r.log").read_text()
    assert atoms.cell.cellpar()[0] == pytest.approx(3.50 / np.sqrt(2))  # input untouched


@pytest.mark.parametrize("optimizer", ["bfgs", "lbfgs", "FIRE"])
def test_position_relax_reaches_fmax(optimizer):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)
    atoms.rattle(0.05, seed=1)
    atoms.calc = EMT()
    e0 = atoms.get_potential_energy()
    result = relax(atoms, EMT(), optimizer=optimizer, fmax=0.005, trajectory=None, log=None)
    assert result.converged
    assert np.linalg.norm(result.atoms.get_forces(), axis=1).max() <= 0.005
    assert result.energy < e0
    assert result.atoms.cell == pytest.approx(atoms.cell.array)  # cell kept


def test_pressure_shrinks_the_cell_and_balances_the_stress():
    atoms = bulk("Cu", "fcc", a=3.6)
    free = relax(atoms, EMT(), cell=True, fmax=1e-4, trajectory=None, log=None)
    pressed = relax(atoms, EMT(), cell=True, pressure_GPa=5.0, fmax=1e-4, trajectory=None,
                    log=None)
    assert pressed.converged
    assert pressed.atoms.get_volume() < free.atoms.get_volume()
    # the stress left relative to the target pressure is small; the stress is -p
    assert pressed.max_stress < 1e-4
    assert pressed.atoms.get_stress()[:3] == pytest.approx(-5.0 * GPa, abs=1e-4)


def test_fix_symmetry_keeps_the_space_group():
    atoms = bulk("Cu", "fcc", a=3.5, cubic=True)
    atoms.positions[0] += [0.001, 0.0, 0.0]  # below symprec: still Fm-3m
    result = relax(atoms, EMT(), cell=True, fix_symmetry=True, fmax=1e-4, trajectory=None,
                   log=None)
    cell = (result.atoms.cell.array, result.atoms.get_scaled_positions(), result.atoms.numbers)
    assert spglib.get_symmetry_dataset(cell, symprec=1e-4).number == 225
    assert result.atoms.constraints == []  # FixSymmetry is not left on the result


def test_tiny_float64_model_relaxes_to_fmax():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.05, seed=2)
    calc = MLCalculator(tiny_model("painn", seed=1), device="cpu")
    result = relax(atoms, calc, fmax=0.01, steps=300, trajectory=None, log=None)
    assert result.converged, result
    assert np.linalg.norm(result.atoms.get_forces(), axis=1).max() <= 0.01


def test_not_converged_is_a_result_not_an_error(tmp_path):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.1, seed=3)
    result = relax(atoms, EMT(), steps=2, trajectory=tmp_path / "r.traj", log=None)
    assert not result.converged and result.steps == 2 and result.fmax > 0.01
    assert len(ase.io.read(tmp_path / "r.traj", ":")) == 3


def test_bad_arguments_raise_specific_errors():
    atoms = bulk("Cu", "fcc", a=3.6)
    with pytest.raises(UnknownNameError, match="did you mean 'bfgs'"):
        relax(atoms, EMT(), optimizer="bgfs")
    with pytest.raises(ValueError, match="cell"):
        relax(atoms, EMT(), pressure_GPa=1.0)
    with pytest.raises(ValueError, match="fmax"):
        relax(atoms, EMT(), fmax=0.0)
    with pytest.raises(InvalidStructureError, match="periodic"):
        relax(molecule("H2O"), EMT(), cell=True)
