"""The fidelity table: ASE's own methods, each property checked as physics."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from mlcalc.simulate import fidelity as F


def test_elastic_constants_from_strain_agree_with_the_equation_of_state():
    """For a cubic crystal B = (C11 + 2 C12) / 3: two independent routes."""
    a0, b, _ = F.equation_of_state("Cu", EMT(), 3.6)
    c11, c12, c44 = F.elastic_constants("Cu", EMT(), a0)
    assert abs((c11 + 2 * c12) / 3 - b) / b < 0.01
    assert c11 > c12 > 0 and c44 > 0  # mechanically stable fcc
    assert abs(a0 - 3.5898) < 1e-3  # EMT's own minimum (emt_lattice_constant)


def test_surface_and_vacancy_energies_are_positive_and_ordered():
    a0, _, e0 = F.equation_of_state("Cu", EMT(), 3.6)
    s111 = F.surface_energy("Cu", EMT(), a0, e0, "111")
    s100 = F.surface_energy("Cu", EMT(), a0, e0, "100")
    assert 0 < s111 < s100  # the close-packed facet is the cheapest
    perfect, initial, final = F._vacancy_cells("Cu", a0)
    assert len(initial) == len(perfect) - 1 == len(final)
    hop = np.linalg.norm(final.positions - initial.positions, axis=1).max()
    assert hop == pytest.approx(a0 / np.sqrt(2))  # a nearest-neighbor jump


@pytest.mark.slow
def test_a_calculator_against_itself_meets_every_target():
    rows = F.fidelity(EMT, EMT, "Cu", nve_steps=200)
    assert [r.name for r in rows] == list(F.TARGETS)
    for row in rows:
        if row.name != "NVE drift":
            assert row.deviation == pytest.approx(0.0, abs=1e-9), row.name
            assert row.reference is not None and np.isfinite(row.reference)
    assert all(row.met for row in rows)
    table = F.format_rows(rows)
    assert table.count("\n") == len(rows) + 1 and "| yes |" in table


def test_rows_say_when_a_target_is_missed():
    row = F.Row("bulk modulus", "GPa", 134.0, 124.0, -10 / 134, 0.03, "rel")
    assert not row.met and row.cells()[-1] == "NO" and "-7.46 %" in row.cells()[4]
    drift = F.Row("NVE drift", "meV/atom/ps", None, 0.05, 0.05, 0.1, "abs")
    assert drift.met and drift.cells()[2] == "-"


def test_phonons_at_x_and_l_of_emt():
    a0, _, _ = F.equation_of_state("Cu", EMT(), 3.6)
    x, l_ = F.phonons_x_l("Cu", EMT(), a0)
    assert x.shape == l_.shape == (3,) and (x > 0).all()
    assert x[0] == pytest.approx(x[1], rel=1e-6)  # the two transverse modes at X
    assert bulk("Cu", "fcc", a=a0).get_volume() > 0
