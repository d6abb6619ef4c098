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
from ase.calculators.calculator import PropertyNotImplementedError

from mlcalc import properties as P
from mlcalc.data.atoms_data import ASEAtomsData
from mlcalc.exceptions import InvalidStructureError, MissingPropertyError
from mlcalc.units import INTERNAL_UNITS

#: Arrays of ase.Atoms that describe the state, not labels.
_STATE_ARRAYS = {"numbers", "positions", "momenta", "masses", "tags", "initial_magmoms",
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
    if prop in atoms.arrays and prop not in _STATE_ARRAYS:
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

    Raises:
        MissingPropertyError: a label is missing.
        InvalidStructureError: a label contains NaN or inf.
    """
    labels: dict[str, np.ndarray] = {}
    atomwise: set[str] = set()
    n = len(atoms)
    for prop in props:
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
        if key not in found and key not in _STATE_ARRAYS and arr.dtype.kind in "fiu":
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
    import ase.io

    if not os.path.isfile(path_in):
        raise FileNotFoundError(f"input file '{os.fspath(path_in)}' does not exist")
    frames = ase.io.read(path_in, index=index)
    frames = [frames] if isinstance(frames, Atoms) else list(frames)
    if not frames:
        raise ValueError(f"no structures read from '{os.fspath(path_in)}' (index={index!r})")
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
