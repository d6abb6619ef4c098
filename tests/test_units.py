"""Unit strings and conversions."""

from __future__ import annotations

import pytest
from ase import units

from mlcalc.exceptions import UnitError
from mlcalc.units import conversion_factor, to_internal, unit_value


@pytest.mark.parametrize("text, value", [
    ("eV", 1.0),
    ("kcal/mol", units.kcal / units.mol),
    ("kJ/mol", units.kJ / units.mol),
    ("Hartree", units.Hartree),
    ("Ha/Bohr", units.Hartree / units.Bohr),
    ("kcal/mol/Ang", units.kcal / units.mol),
    ("kcal/mol/Å", units.kcal / units.mol),
    ("eV/Ang^3", 1.0),
    ("eV/Å**3", 1.0),
    ("Bohr", units.Bohr),
    ("GPa", units.GPa),
    ("meV", 1e-3),
])
def test_unit_values(text, value):
    assert unit_value(text) == pytest.approx(value, rel=1e-12)


def test_conversions_to_internal_units():
    assert to_internal("energy", "kcal/mol") == pytest.approx(units.kcal / units.mol)
    assert to_internal("forces", "Hartree/Bohr") == pytest.approx(units.Hartree / units.Bohr)
    assert to_internal("stress", "GPa") == pytest.approx(units.GPa)
    assert conversion_factor("eV/Ang^3", "GPa") == pytest.approx(160.21766, rel=1e-6)


@pytest.mark.parametrize("bad, message", [
    ("kcal/mole", "unknown unit 'mole'"),
    ("", "cannot parse unit"),
    ("eV//Ang", "cannot parse unit"),
    ("eV Ang", "expected '\\*' or '/'"),
])
def test_unparsable_units(bad, message):
    with pytest.raises(UnitError, match=message):
        unit_value(bad)


def test_incompatible_dimensions():
    with pytest.raises(UnitError, match="different dimensions"):
        to_internal("forces", "eV")
