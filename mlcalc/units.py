"""Units: mlcalc works in ASE's units (eV, Å, amu, ASE time) everywhere.

Data sets may declare other units in their metadata (``"kcal/mol"``,
``"Hartree/Bohr"``, ``"eV/Ang^3"``, ...); they are converted on load with the
helpers here. A unit string is a product/quotient of the names eV, meV,
Hartree, Ry, J, kJ, cal, kcal, mol, Ang, nm, Bohr, m, Pa, GPa, bar, kbar
(values from :mod:`ase.units`; aliases such as ``Å``, ``Angstrom``, ``Ha``,
any case), each with an optional power written ``^n`` or ``**n``. Division binds to the
single term on its right, so ``kcal/mol/Ang`` is kcal per mol per Å.
"""

from __future__ import annotations

import re

from ase import units as _ase

from mlcalc import properties
from mlcalc.exceptions import UnitError

# name -> (value in ASE units, (energy power, length power))
_E, _L, _ONE = (1, 0), (0, 1), (0, 0)
_BASE: dict[str, tuple[float, tuple[int, int]]] = {
    "eV": (_ase.eV, _E),
    "meV": (1e-3 * _ase.eV, _E),
    "Hartree": (_ase.Hartree, _E),
    "Ry": (_ase.Rydberg, _E),
    "J": (_ase.J, _E),
    "kJ": (_ase.kJ, _E),
    "cal": (_ase.kcal / 1000.0, _E),
    "kcal": (_ase.kcal, _E),
    "mol": (_ase.mol, _ONE),
    "Ang": (_ase.Ang, _L),
    "nm": (_ase.nm, _L),
    "Bohr": (_ase.Bohr, _L),
    "m": (_ase.m, _L),
    "Pa": (_ase.Pascal, (1, -3)),
    "GPa": (_ase.GPa, (1, -3)),
    "bar": (_ase.bar, (1, -3)),
    "kbar": (1000.0 * _ase.bar, (1, -3)),
}
_ALIASES = {
    "ev": "eV",
    "mev": "meV",
    "ha": "Hartree",
    "hartree": "Hartree",
    "ry": "Ry",
    "rydberg": "Ry",
    "j": "J",
    "kj": "kJ",
    "cal": "cal",
    "kcal": "kcal",
    "mol": "mol",
    "ang": "Ang",
    "angstrom": "Ang",
    "a": "Ang",
    "å": "Ang",
    "nm": "nm",
    "bohr": "Bohr",
    "au": "Bohr",
    "m": "m",
    "pa": "Pa",
    "gpa": "GPa",
    "bar": "bar",
    "kbar": "kbar",
}

#: Internal (ASE) unit of each property; data are converted to these on load.
INTERNAL_UNITS: dict[str, str] = {
    properties.R: "Ang",
    properties.cell: "Ang",
    properties.energy: "eV",
    properties.energies: "eV",
    properties.forces: "eV/Ang",
    properties.stress: "eV/Ang^3",
    properties.hessian: "eV/Ang^2",
}

_TOKEN = re.compile(r"\s*([*/])?\s*([A-Za-zÅ.]+)\s*(?:(?:\^|\*\*)\s*(-?\d+))?\s*")


def _parse(unit: str) -> tuple[float, tuple[int, int]]:
    if not isinstance(unit, str) or not unit.strip():
        raise UnitError(f"cannot parse unit {unit!r}: expected a string such as 'kcal/mol'")
    value, dims = 1.0, [0, 0]
    pos, first = 0, True
    text = unit.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise UnitError(f"cannot parse unit {unit!r} at {text[pos:]!r}")
        op, name, power = m.group(1), m.group(2), int(m.group(3) or 1)
        if (op is None) != first:
            raise UnitError(f"cannot parse unit {unit!r}: expected '*' or '/' before {name!r}")
        key = name if name in _BASE else _ALIASES.get(name.lower().replace(".", ""))
        if key is None:
            raise UnitError(f"cannot parse unit {unit!r}: unknown unit {name!r}")
        factor, (e, length) = _BASE[key]
        sign = -1 if op == "/" else 1
        value *= factor ** (sign * power)
        dims[0] += sign * power * e
        dims[1] += sign * power * length
        pos, first = m.end(), False
    return value, (dims[0], dims[1])


def unit_value(unit: str) -> float:
    """Value of one ``unit`` in ASE units, e.g. ``unit_value("kcal/mol")`` ≈ 0.0434."""
    return _parse(unit)[0]


def conversion_factor(from_unit: str, to_unit: str) -> float:
    """Factor that converts a number in ``from_unit`` to ``to_unit``.

    Raises:
        UnitError: a unit cannot be parsed or the two have different dimensions
            (say, an energy and a length).
    """
    v1, d1 = _parse(from_unit)
    v2, d2 = _parse(to_unit)
    if d1 != d2:
        raise UnitError(f"cannot convert {from_unit!r} to {to_unit!r}: different dimensions")
    return v1 / v2


def to_internal(prop: str, unit: str) -> float:
    """Factor converting ``prop`` given in ``unit`` into mlcalc's internal unit.

    Properties without an internal unit (custom labels) are not converted:
    the factor is 1 whatever ``unit`` says.
    """
    target = INTERNAL_UNITS.get(prop)
    if target is None:
        return 1.0
    return conversion_factor(unit, target)
