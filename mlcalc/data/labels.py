"""Labels of one :class:`ase.Atoms`: from its calculator, ``info`` or ``arrays``.

Shared by :meth:`ASEAtomsData.add_systems` and the file converters of
:mod:`mlcalc.data.convert`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError

from mlcalc import properties as P
from mlcalc.exceptions import InvalidStructureError, MissingPropertyError

#: The stress label of a structure that is not periodic in 3D: undefined.
UNDEFINED_STRESS = np.full(6, np.nan)

#: Arrays of ase.Atoms that describe the state, not labels.
STATE_ARRAYS = {"numbers", "positions", "momenta", "masses", "tags", "initial_magmoms",
                 "initial_charges", "spacegroup_kinds"}


def voigt6(stress: Any) -> np.ndarray:
    """(3, 3) or (6,) stress -> (6,) Voigt in ASE order xx, yy, zz, yz, xz, xy."""
    stress = np.asarray(stress, dtype=np.float64)
    if stress.shape == (3, 3):
        return stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
    if stress.size != 6:
        raise ValueError(f"stress has shape {stress.shape}, expected (6,) or (3, 3)")
    return stress.reshape(6)


def _lookup(atoms: Atoms, prop: str, atomwise: set[str]) -> Any:
    """Label ``prop`` from the calculator (which may compute it), then
    ``atoms.info``, then ``atoms.arrays``; None if absent."""
    if atoms.calc is not None:
        try:
            value = atoms.calc.get_property(prop, atoms)
        except PropertyNotImplementedError:  # not computed, or stale results
            value = None
        if value is not None:
            return value
    if prop in atoms.info:
        return atoms.info[prop]
    if prop in atoms.arrays and prop not in STATE_ARRAYS:
        atomwise.add(prop)
        return atoms.arrays[prop]
    return None


def gather_labels(atoms: Atoms, props: Sequence[str], given: Mapping[str, Any] | None = None,
                  index: int = 0) -> tuple[dict[str, np.ndarray], set[str]]:
    """Labels ``props`` of one structure as float64 arrays in the units given,
    natural shapes: energy (), stress (6,) Voigt, forces (N, 3), energies (N,).

    Args:
        atoms: the structure.
        props: labels to collect.
        given: if not None, the labels are taken from this dict only.
        index: structure index, for error messages.

    Returns:
        The labels, and the names that came from ``atoms.arrays`` (per-atom).
        The stress of a structure not periodic in all three directions is
        undefined and stored as :data:`UNDEFINED_STRESS` (six NaN), so that
        bulk cells, slabs and clusters can share one data set; training and
        evaluation leave it out (see :mod:`mlcalc.train.task`).

    Raises:
        MissingPropertyError: a label is missing.
        InvalidStructureError: a label contains NaN or inf.
    """
    labels: dict[str, np.ndarray] = {}
    atomwise: set[str] = set()
    n = len(atoms)
    for prop in props:
        if prop == P.stress and not np.asarray(atoms.pbc).all():
            labels[prop] = UNDEFINED_STRESS.copy()  # whatever a calculator may have said
            continue
        value = given.get(prop) if given is not None else _lookup(atoms, prop, atomwise)
        if value is None:
            raise MissingPropertyError(
                f"structure {index} has no property '{prop}' (declared by the data set; "
                "give it through a calculator, atoms.info or atoms.arrays)")
        arr = voigt6(value) if prop == P.stress else np.asarray(value, dtype=np.float64)
        if prop in (P.energy, P.free_energy):
            if arr.size != 1:
                raise ValueError(f"structure {index}: '{prop}' has shape {arr.shape}, "
                                 "expected a scalar")
            arr = arr.reshape(())
        elif prop in P.PER_ATOM and (arr.ndim == 0 or arr.shape[0] != n):
            raise ValueError(f"structure {index}: '{prop}' has shape {arr.shape}, expected "
                             f"{n} rows (one per atom)")
        if not np.isfinite(arr).all():
            raise InvalidStructureError(f"structure {index}: label '{prop}' contains NaN or inf")
        labels[prop] = arr
    return labels, atomwise
