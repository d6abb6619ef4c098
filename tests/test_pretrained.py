"""The bundled cu-emt model: reachable by name, close to the EMT it learned."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.eos import EquationOfState

from mlcalc import MLCalculator
from mlcalc.exceptions import ModelFileError
from mlcalc.pretrained import bundled_models, resolve_model_path


def test_bundled_model_is_listed_and_resolves():
    assert "cu-emt" in bundled_models()
    assert resolve_model_path("cu-emt").is_file()


def test_unknown_name_lists_bundled_models():
    with pytest.raises(ModelFileError, match=r"did you mean 'cu-emt'.*bundled models: cu-emt"):
        resolve_model_path("cu-emp")


def lattice_constant(calc) -> float:
    volumes, energies = [], []
    for a in np.linspace(3.5, 3.7, 9):
        atoms = bulk("Cu", "fcc", a=a, cubic=True)
        atoms.calc = calc
        volumes.append(atoms.get_volume())
        energies.append(atoms.get_potential_energy())
    v0, _, _ = EquationOfState(volumes, energies).fit()
    return v0 ** (1 / 3)


def test_reproduces_emt_lattice_constant_and_forces():
    model = MLCalculator("cu-emt")
    assert model.elements == [29]
    assert lattice_constant(model) == pytest.approx(lattice_constant(EMT()), rel=5e-3)
    atoms = bulk("Cu", "fcc", a=3.59, cubic=True) * (2, 2, 2)
    atoms.rattle(0.05, seed=11)
    reference = atoms.copy()
    reference.calc = EMT()
    atoms.calc = model
    f_ref, f_ml = reference.get_forces(), atoms.get_forces()
    assert np.abs(f_ml - f_ref).mean() < 0.05 * np.abs(f_ref).mean() + 0.02
    assert abs(atoms.get_potential_energy() - reference.get_potential_energy()) / 32 < 0.01


@pytest.mark.slow
def test_the_bundled_model_meets_its_fidelity_targets_against_emt():
    """docs/fitting.rst's table, recomputed: every property within its target."""
    from ase.calculators.emt import EMT

    from mlcalc.simulate.fidelity import fidelity, format_rows

    rows = fidelity(lambda: MLCalculator("cu-emt", threads=1), EMT, "Cu", nve_steps=500)
    assert all(row.met for row in rows), format_rows(rows)
