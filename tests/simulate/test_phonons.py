"""run_phonons: the phonopy glue against ASE's own phonons, files, warnings.

Tolerances (measured on this machine, EMT, fcc Cu a = 3.6 Å, 4x4x4 supercell
of the primitive cell, 0.01 Å displacements):

* Γ acoustic modes: |ω| ≈ 1e-7 THz after phonopy's symmetrization; bound 1e-4 THz.
* phonopy (one + displacement, symmetry) vs ase.phonons (± along x, y, z):
  differ by ≤ 5e-4 THz at X and L (both commensurate with the supercell, so
  both are exact up to the finite difference); bound 2e-3 THz.
"""

from __future__ import annotations

import csv
import warnings

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from mlcalc.calculator import MLCalculator
from mlcalc.exceptions import InvalidStructureError
from mlcalc.simulate.phonons import (
    DEFAULT_MIN_LENGTH,
    ImaginaryModesWarning,
    auto_supercell,
    run_phonons,
)
from tests.conftest import tiny_model

X, L, GAMMA = [0.5, 0.0, 0.5], [0.5, 0.5, 0.5], [0.0, 0.0, 0.0]
GAMMA_BOUND_THZ = 1e-4
ASE_AGREEMENT_THZ = 2e-3
SMALL = dict(mesh=(6, 6, 6), temperatures_K=np.arange(0.0, 1001.0, 50.0))


def ase_frequencies(atoms, supercell, qpoints, workdir) -> np.ndarray:
    """(n_q, 3 n_atoms) sorted frequencies in THz from ase.phonons.Phonons."""
    from ase.phonons import Phonons
    from ase.units import _e, _hplanck

    ph = Phonons(atoms, EMT(), supercell=supercell, delta=0.01, name=str(workdir / "ase-ph"))
    ph.run()
    ph.read(acoustic=True)
    return np.sort(ph.band_structure(qpoints), axis=1) * _e / _hplanck / 1e12  # eV -> THz


def test_emt_agrees_with_ase_phonons(tmp_path):
    atoms = bulk("Cu", "fcc", a=3.6)
    result = run_phonons(atoms, EMT(), supercell=(4, 4, 4), output_dir=None, **SMALL)
    ours = np.sort(result.frequencies_at([X, L]), axis=1)
    reference = ase_frequencies(atoms, (4, 4, 4), [X, L], tmp_path)
    np.testing.assert_allclose(ours, reference, atol=ASE_AGREEMENT_THZ)
    assert np.abs(result.frequencies_at([GAMMA])).max() < GAMMA_BOUND_THZ
    assert not result.has_imaginary_modes
    # fcc: one symmetry-independent displacement, 64-atom supercell.
    assert result.n_displacements == 1 and len(result.phonopy.supercell) == 64


def test_conventional_cell_gives_primitive_bands(tmp_path):
    """A 4-atom cubic cell is reduced to the primitive one: same path, same ω at X and L."""
    prim = run_phonons(bulk("Cu", "fcc", a=3.6), EMT(), supercell=(4, 4, 4),
                       output_dir=None, **SMALL)
    conv = run_phonons(bulk("Cu", "fcc", a=3.6, cubic=True), EMT(), supercell=(2, 2, 2),
                       output_dir=None, **SMALL)
    assert [t for _, t in conv.band_ticks] == [t for _, t in prim.band_ticks]
    assert [t for _, t in prim.band_ticks][:4] == ["Γ", "X", "W", "K"]
    assert conv.frequencies_at([X, L]).shape == (2, 3)  # primitive: 3 branches
    np.testing.assert_allclose(conv.frequencies_at([X, L]), prim.frequencies_at([X, L]),
                               atol=ASE_AGREEMENT_THZ)


def test_outputs_reload_and_batched_forces(tmp_path, monkeypatch):
    import phonopy

    calc = MLCalculator(tiny_model("schnet", seed=2), device="cpu")
    calls = []
    original = calc.calculate_many
    monkeypatch.setattr(calc, "calculate_many",
                        lambda atoms, props, batch_size: calls.append(len(atoms))
                        or original(atoms, props, batch_size=batch_size))
    atoms = bulk("NaCl", "rocksalt", a=4.6)  # one displacement per element
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImaginaryModesWarning)  # random weights
        result = run_phonons(atoms, calc, supercell=(2, 2, 2), output_dir=tmp_path / "out",
                             batch_size=64, **SMALL)
    assert calls == [result.n_displacements]  # every supercell in one batched call
    assert result.n_displacements >= 2
    assert sorted(p.name for p in result.files.values()) == sorted(
        ["phonopy.yaml", "band.yaml", "thermal.csv", "dos.csv", "phonons.png"])
    assert all(p.is_file() and p.stat().st_size > 0 for p in result.files.values())

    # phonopy alone (no calculator) reproduces the frequencies from phonopy.yaml
    reloaded = phonopy.load(tmp_path / "out" / "phonopy.yaml")
    q = [X, L, [0.1, 0.2, 0.3]]
    np.testing.assert_allclose(reloaded.run_qpoints(q).frequencies,
                               result.frequencies_at(q), atol=1e-8)

    with open(tmp_path / "out" / "dos.csv") as fh:
        assert fh.readline().strip() == "frequency_THz,dos_per_THz"
    band = (tmp_path / "out" / "band.yaml").read_text(encoding="utf-8")
    assert "labels:" in band and "distance:" in band and "frequency:" in band


def test_thermal_csv_columns_and_physics(tmp_path):
    result = run_phonons(bulk("Cu", "fcc", a=3.6), EMT(), supercell=(3, 3, 3),
                         output_dir=tmp_path, **SMALL)
    with open(result.files["thermal.csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["T_K", "F_kJ_per_mol", "S_J_per_K_mol", "Cv_J_per_K_mol"]
    t = np.array([float(r["T_K"]) for r in rows])
    s = np.array([float(r["S_J_per_K_mol"]) for r in rows])
    cv = np.array([float(r["Cv_J_per_K_mol"]) for r in rows])
    np.testing.assert_allclose(t, SMALL["temperatures_K"])
    assert s[0] == pytest.approx(0.0, abs=1e-9) and np.all(np.diff(s) > 0)
    assert np.all(np.diff(cv) > 0)
    # Dulong-Petit: 3R per mole of (one-atom) primitive cells at 1000 K. Measured
    # -1.0 %: -0.5 % quantum correction (hν/kT ≈ 0.4) and -0.5 % from leaving out the
    # Γ acoustic modes, 1/216 of the 6x6x6 mesh.
    assert cv[-1] == pytest.approx(3 * 8.314462618, rel=0.015)
    assert result.thermal_at(1000.0)[2] == pytest.approx(cv[-1])


def test_automatic_supercell_from_min_length():
    cubic = bulk("Cu", "fcc", a=3.6, cubic=True)
    assert np.diag(auto_supercell(cubic, 10.0)).tolist() == [3, 3, 3]
    assert np.diag(auto_supercell(cubic, 7.2)).tolist() == [2, 2, 2]  # exactly 2a: no extra
    prim = bulk("Cu", "fcc", a=3.6)  # vectors of 2.55 Å
    assert np.diag(auto_supercell(prim, 10.0)).tolist() == [4, 4, 4]
    result = run_phonons(cubic, EMT(), min_length=7.0, output_dir=None, **SMALL)
    assert np.diag(result.supercell_matrix).tolist() == [2, 2, 2]
    default = run_phonons(prim, EMT(), output_dir=None, **SMALL)
    lengths = default.phonopy.supercell.cell  # (3, 3) rows in Å
    assert np.all(np.linalg.norm(lengths, axis=1) >= DEFAULT_MIN_LENGTH)
    with pytest.raises(ValueError, match="either supercell or min_length"):
        run_phonons(cubic, EMT(), supercell=(2, 2, 2), min_length=7.0, output_dir=None)


def test_unstable_bcc_cu_warns():
    """bcc Cu is dynamically unstable (also with EMT): imaginary modes away from Γ."""
    with pytest.warns(ImaginaryModesWarning, match="lowest frequency -"):
        result = run_phonons(bulk("Cu", "bcc", a=2.87), EMT(), supercell=(3, 3, 3),
                             output_dir=None, **SMALL)
    assert result.has_imaginary_modes
    assert result.min_frequency_off_gamma_THz < -0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImaginaryModesWarning)
        stable = run_phonons(bulk("Cu", "fcc", a=3.6), EMT(), supercell=(3, 3, 3),
                             output_dir=None, **SMALL)
    assert not stable.has_imaginary_modes and stable.min_frequency_off_gamma_THz > 0


def test_relax_first_reaches_the_emt_lattice_constant():
    strained = bulk("Cu", "fcc", a=3.75)
    result = run_phonons(strained, EMT(), relax_first=True, supercell=(3, 3, 3),
                         output_dir=None, **SMALL)
    a_relaxed = result.atoms.cell.lengths()[0] * np.sqrt(2)
    assert a_relaxed == pytest.approx(3.59, abs=0.01)  # EMT's Cu
    assert strained.cell.lengths()[0] * np.sqrt(2) == pytest.approx(3.75)  # input untouched
    assert not result.has_imaginary_modes


def test_bad_inputs(molecule, slab):
    for atoms in (molecule, slab):
        with pytest.raises(InvalidStructureError, match="periodic in all three"):
            run_phonons(atoms, EMT(), output_dir=None)
    cu = bulk("Cu", "fcc", a=3.6)
    with pytest.raises(ValueError, match="unknown special point 'Q'"):
        run_phonons(cu, EMT(), supercell=(2, 2, 2), band_path="GQX", output_dir=None, **SMALL)
    with pytest.raises(ValueError, match="displacement"):
        run_phonons(cu, EMT(), displacement=0.0, output_dir=None)
    with pytest.raises(ValueError, match="singular"):
        run_phonons(cu, EMT(), supercell=[[1, 0, 0], [1, 0, 0], [0, 0, 1]], output_dir=None)
