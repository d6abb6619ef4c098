"""MLCalculator inside the ASE workflows users already have."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.lj import LennardJones
from ase.calculators.mixing import SumCalculator
from ase.eos import EquationOfState
from ase.filters import FrechetCellFilter
from ase.io import read, write
from ase.md.melchionna import MelchionnaNPT
from ase.md.velocitydistribution import thermalize_momenta
from ase.optimize import BFGS, FIRE
from ase.phonons import Phonons
from ase.vibrations import Vibrations

from mlcalc import MLCalculator, save_model
from tests.conftest import tiny_model


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("wf") / "model.pt"
    save_model(tiny_model("painn", torch.float64, cutoff=4.0), path)
    return path


def cu(repeat=(1, 1, 1)) -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * repeat
    atoms.rattle(0.05, seed=0)
    return atoms


@pytest.mark.parametrize("optimizer", [BFGS, FIRE])
def test_optimizers_with_cell_filter_lower_energy(model_path, optimizer, tmp_path):
    atoms = cu()
    atoms.calc = MLCalculator(model_path)
    e0 = atoms.get_potential_energy()
    s0 = np.abs(atoms.get_stress()).max()
    opt = optimizer(FrechetCellFilter(atoms), logfile=str(tmp_path / "opt.log"))
    opt.run(fmax=1e-3, steps=60)
    assert atoms.get_potential_energy() < e0
    assert np.abs(atoms.get_stress()).max() < s0


def test_npt_melchionna_runs_and_changes_cell(model_path):
    atoms = cu((2, 2, 2))
    atoms.calc = MLCalculator(model_path)
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    v0 = atoms.get_volume()
    dyn = MelchionnaNPT(atoms, timestep=2 * units.fs, temperature_K=300, externalstress=0.0,
              ttime=25 * units.fs, pfactor=(75 * units.fs) ** 2 * 100 * units.GPa)
    dyn.run(10)
    assert atoms.get_volume() != pytest.approx(v0, rel=1e-9)
    assert np.isfinite(atoms.get_potential_energy())


def test_vibrations_match_calculator_hessian(model_path, tmp_path):
    atoms = Atoms("Cu3", positions=[[0, 0, 0], [2.4, 0, 0], [1.1, 2.0, 0.3]])
    atoms.calc = MLCalculator(model_path)
    BFGS(atoms, logfile=None).run(fmax=1e-6, steps=200)
    vib = Vibrations(atoms, name=str(tmp_path / "vib"), delta=1e-3, nfree=4)
    vib.run()
    numeric = vib.get_vibrations().get_hessian_2d()
    analytic = atoms.calc.get_property("hessian", atoms)
    np.testing.assert_allclose(numeric, analytic, atol=1e-5)


def test_phonons_acoustic_modes_vanish_at_gamma(model_path, tmp_path):
    atoms = bulk("Cu", "fcc", a=3.6)
    ph = Phonons(atoms, MLCalculator(model_path), supercell=(3, 3, 3), delta=0.01,
                 name=str(tmp_path / "phonon"))
    ph.run()
    ph.read(acoustic=True)
    omega = ph.band_structure([[0, 0, 0], [0.5, 0, 0]])
    assert np.abs(omega[0]).max() < 1e-4  # eV, at Γ
    assert np.abs(omega[1]).max() > 1e-4  # dispersion away from Γ


def test_equation_of_state(model_path):
    volumes, energies = [], []
    calc = MLCalculator(model_path)
    for scale in np.linspace(0.97, 1.03, 7):
        atoms = bulk("Cu", "fcc", a=3.6 * scale, cubic=True)
        atoms.calc = calc
        volumes.append(atoms.get_volume())
        energies.append(atoms.get_potential_energy())
    eos = EquationOfState(volumes, energies)
    v0, e0, bulk_modulus = eos.fit()
    assert np.isfinite([v0, e0, bulk_modulus]).all()


def test_sum_calculator_adds_results(model_path):
    atoms = cu()
    ml = MLCalculator(model_path)
    lj = LennardJones(sigma=2.3, epsilon=0.01, rc=5.0)
    atoms.calc = SumCalculator([ml, lj])
    total = atoms.get_forces()
    parts = []
    for calc in (MLCalculator(model_path), LennardJones(sigma=2.3, epsilon=0.01, rc=5.0)):
        copy = atoms.copy()
        copy.calc = calc
        parts.append(copy.get_forces())
    np.testing.assert_allclose(total, parts[0] + parts[1], atol=1e-10)


def test_atoms_copy_and_file_output_keep_results(model_path, tmp_path):
    atoms = cu()
    atoms.calc = MLCalculator(model_path)
    forces, stress = atoms.get_forces(), atoms.get_stress()
    copy = atoms.copy()
    copy.calc = atoms.calc
    np.testing.assert_array_equal(copy.get_forces(), forces)
    # extxyz stores ~8 significant digits, .traj the exact float64 numbers
    for name, atol in (("out.extxyz", 1e-7), ("out.traj", 0.0)):
        write(tmp_path / name, atoms)
        back = read(tmp_path / name)
        np.testing.assert_allclose(back.get_forces(), forces, atol=atol, rtol=0)
        np.testing.assert_allclose(back.get_stress(), stress, atol=atol, rtol=0)
        assert back.get_potential_energy() == pytest.approx(atoms.get_potential_energy())
