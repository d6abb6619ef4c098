"""Conversion of :class:`ase.Atoms` to mlcalc's input dictionary, with checks.

This is the one place a structure enters mlcalc, so it is also where bad
structures are refused: an empty structure, non-finite positions, or a
periodic direction without a usable lattice vector.
"""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms

from mlcalc import properties as P
from mlcalc.exceptions import InvalidStructureError

_AXES = "abc"
#: Largest atomic number (oganesson).
MAX_Z = 118


def validate_structure(numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray,
                       pbc: np.ndarray) -> None:
    """Raise :class:`InvalidStructureError` if a structure cannot be evaluated.

    Args:
        numbers: (N,) atomic numbers.
        positions: (N, 3) Cartesian positions in Å.
        cell: (3, 3) lattice vectors as rows in Å.
        pbc: (3,) periodic directions.
    """
    n = len(numbers)
    if n == 0:
        raise InvalidStructureError("empty structure: it has no atoms")
    positions = np.asarray(positions)
    if positions.shape != (n, 3):
        raise InvalidStructureError(f"positions have shape {positions.shape}, expected ({n}, 3)")
    bad = ~np.isfinite(positions).all(axis=1)
    if bad.any():
        raise InvalidStructureError(
            f"positions contain NaN or inf (atom {int(np.flatnonzero(bad)[0])})"
        )
    numbers = np.asarray(numbers)
    bad_z = (numbers <= 0) | (numbers > MAX_Z)
    if bad_z.any():
        raise InvalidStructureError(f"atomic number {int(numbers[bad_z][0])} (atom "
                                    f"{int(np.flatnonzero(bad_z)[0])}) is not an element "
                                    f"(1-{MAX_Z})")
    cell = np.asarray(cell, dtype=np.float64)
    if not np.isfinite(cell).all():
        raise InvalidStructureError("cell contains NaN or inf")
    pbc = np.asarray(pbc, dtype=bool)
    if not pbc.any():
        return
    periodic = cell[pbc]
    lengths = np.linalg.norm(periodic, axis=1)
    for axis, length in zip(np.flatnonzero(pbc), lengths, strict=True):
        if length < 1e-8:
            raise InvalidStructureError(
                f"pbc is True along {_AXES[axis]} but cell vector {_AXES[axis]} is zero; "
                "set a cell or pbc=False"
            )
    sv = np.linalg.svd(periodic / lengths[:, None], compute_uv=False)
    if sv[-1] < 1e-6:
        raise InvalidStructureError("the cell is singular: its periodic lattice vectors are "
                                    "linearly dependent")


def atoms_to_inputs(atoms: Atoms, validate: bool = True) -> dict[str, torch.Tensor]:
    """Structure keys of one :class:`ase.Atoms` as float64/int64 tensors.

    Returns:
        ``numbers`` (N,), ``positions`` (N, 3) Å, ``cell`` (1, 3, 3) Å,
        ``pbc`` (1, 3) and ``n_atoms`` (1,). Labels are not included.
    """
    numbers = atoms.get_atomic_numbers()
    positions = atoms.get_positions()
    cell = np.asarray(atoms.get_cell())
    pbc = atoms.get_pbc()
    if validate:
        validate_structure(numbers, positions, cell, pbc)
    return {
        P.Z: torch.as_tensor(numbers, dtype=torch.long),
        P.R: torch.as_tensor(positions, dtype=torch.float64),
        P.cell: torch.as_tensor(cell, dtype=torch.float64).reshape(1, 3, 3),
        P.pbc: torch.as_tensor(pbc, dtype=torch.bool).reshape(1, 3),
        P.n_atoms: torch.tensor([len(numbers)], dtype=torch.long),
    }
