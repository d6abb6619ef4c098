"""Converters into an :class:`~mlcalc.data.ASEAtomsData` database: labels of
one :class:`ase.Atoms`, any file ``ase.io.read`` reads, and MD17-style npz.

Labels are stored as given, in the declared units; the data set converts
them to internal units on load.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from ase import Atoms

from mlcalc import properties as P
from mlcalc.data.atoms_data import ASEAtomsData
from mlcalc.data.labels import STATE_ARRAYS
from mlcalc.exceptions import InvalidStructureError, MissingPropertyError
from mlcalc.units import INTERNAL_UNITS


def detect_properties(atoms: Atoms) -> dict[str, str]:
    """Labels present on ``atoms`` -> internal unit ('' for custom labels).

    Looks at the calculator's results (energy, energies, forces, stress),
    numeric ``atoms.info`` values and non-state ``atoms.arrays``.
    """
    found: dict[str, str] = {}
    results = atoms.calc.results if atoms.calc is not None else {}
    for prop in P.PREDICTABLE:
        if prop in results:
            found[prop] = INTERNAL_UNITS[prop]
    for key, value in atoms.info.items():
        arr = np.asarray(value)
        if key not in found and arr.dtype.kind in "fiu" and not isinstance(value, bool):
            found[key] = INTERNAL_UNITS.get(key, "")
    for key, arr in atoms.arrays.items():
        if key not in found and key not in STATE_ARRAYS and arr.dtype.kind in "fiu":
            found[key] = INTERNAL_UNITS.get(key, "")
    return found


def _create_and_fill(db_path: str | os.PathLike, frames: Sequence[Atoms],
                     property_unit_dict: Mapping[str, str], distance_unit: str,
                     property_list: Sequence[Mapping[str, Any]] | None = None,
                     **metadata: Any) -> ASEAtomsData:
    data = ASEAtomsData.create(db_path, distance_unit=distance_unit,
                               property_unit_dict=property_unit_dict, **metadata)
    try:
        data.add_systems(frames, property_list)
    except BaseException:
        # The file is new and empty: remove it so that a corrected rerun does
        # not hit "already exists".
        os.remove(os.fspath(db_path))
        raise
    return data


def read_frames(path: str | os.PathLike, index: str | int = ":") -> list[Atoms]:
    """The structures of any file ``ase.io.read`` reads, or one clear error.

    Raises:
        FileNotFoundError: no such file.
        InvalidStructureError: the file cannot be read or holds no structure.
    """
    import ase.io

    if not os.path.isfile(path):
        raise FileNotFoundError(f"input file '{os.fspath(path)}' does not exist")
    try:
        frames = ase.io.read(path, index=index)
    except Exception as err:  # noqa: BLE001 - ase.io raises many kinds for unreadable files
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise InvalidStructureError(f"{os.fspath(path)}: cannot read structures "
                                    f"({type(err).__name__}{': ' + first if first else ''})"
                                    ) from None
    frames = [frames] if isinstance(frames, Atoms) else list(frames)
    if not frames:
        raise InvalidStructureError(f"{os.fspath(path)}: the file holds no structure "
                                    f"(index={index!r})")
    return frames


def from_ase_file(path_in: str | os.PathLike, db_path: str | os.PathLike,
                  property_unit_dict: Mapping[str, str] | None = None,
                  distance_unit: str = "Ang", index: str | int = ":") -> ASEAtomsData:
    """Convert a file ``ase.io.read`` reads (extxyz, traj, ...) into a database.

    Args:
        path_in: input file.
        db_path: new database file (never overwritten).
        property_unit_dict: labels to store and their units; None: those of the
            first frame (see :func:`detect_properties`), in ASE units.
        distance_unit: unit of the positions in the file.
        index: frames to read, in ``ase.io.read`` syntax.
    """
    frames = read_frames(path_in, index)
    if property_unit_dict is None:
        property_unit_dict = detect_properties(frames[0])
    return _create_and_fill(db_path, frames, property_unit_dict, distance_unit,
                            source=os.path.basename(os.fspath(path_in)))


def _key(data: Mapping[str, np.ndarray], names: Sequence[str], path: str,
         required: bool = True) -> np.ndarray | None:
    for name in names:
        if name in data:
            return np.asarray(data[name])
    if required:
        raise MissingPropertyError(f"npz file '{path}' has no key {' or '.join(map(repr, names))}"
                                   f" (keys: {', '.join(sorted(data))})")
    return None


def from_npz(path_in: str | os.PathLike, db_path: str | os.PathLike, energy_unit: str = "eV",
             distance_unit: str = "Ang", forces_unit: str | None = None) -> ASEAtomsData:
    """Convert an MD17-style npz file (one molecule, many frames, no cell).

    Keys: ``z`` or ``nuclear_charges`` (N,), ``R`` or ``coords`` (F, N, 3),
    ``E`` or ``energies`` (F,) or (F, 1), optional ``F`` or ``forces`` (F, N, 3).

    Args:
        energy_unit: unit of E, e.g. ``"kcal/mol"``.
        distance_unit: unit of R.
        forces_unit: unit of F; default ``energy_unit/distance_unit``.
    """
    path = os.fspath(path_in)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"input file '{path}' does not exist")
    with np.load(path) as npz:
        data = {k: npz[k] for k in npz.files}
    z = _key(data, ("z", "nuclear_charges"), path).astype(np.int64).reshape(-1)
    R = _key(data, ("R", "coords"), path).astype(np.float64)
    E = _key(data, ("E", "energies"), path).astype(np.float64)
    F = _key(data, ("F", "forces"), path, required=False)
    n_frames, n = len(R), len(z)
    if R.shape != (n_frames, n, 3):
        raise ValueError(f"npz file '{path}': R has shape {R.shape}, expected ({n_frames}, {n}, 3)")
    if E.size != n_frames:
        raise ValueError(f"npz file '{path}': E has {E.size} values for {n_frames} frames")
    if F is not None and F.shape != R.shape:
        raise ValueError(f"npz file '{path}': F has shape {F.shape}, expected {R.shape}")
    units = {P.energy: energy_unit}
    if F is not None:
        units[P.forces] = forces_unit or f"{energy_unit}/{distance_unit}"
    E = E.reshape(n_frames)
    frames = [Atoms(numbers=z, positions=R[k], pbc=False) for k in range(n_frames)]
    props = [{P.energy: E[k], **({P.forces: F[k]} if F is not None else {})}
             for k in range(n_frames)]
    return _create_and_fill(db_path, frames, units, distance_unit, props,
                            source=os.path.basename(path))
