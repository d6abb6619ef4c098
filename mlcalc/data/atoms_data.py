"""Data sets over an ASE (SQLite) database: :class:`ASEAtomsData`.

Labels are stored as given, in the units declared in the database metadata,
and converted to mlcalc's internal units on load (see :mod:`mlcalc.data.base`).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import ase.db
import numpy as np
import torch
from ase import Atoms
from ase.db.core import Database

from mlcalc import properties as P
from mlcalc.data.atoms import validate_structure
from mlcalc.data.base import N_ELEMENTS, BaseAtomsData
from mlcalc.data.labels import gather_labels
from mlcalc.exceptions import InvalidStructureError, MissingPropertyError, UnitError
from mlcalc.transform.base import Transform
from mlcalc.units import INTERNAL_UNITS, conversion_factor, to_internal


def check_units(property_unit_dict: Mapping[str, str], distance_unit: str) -> None:
    """Raise :class:`UnitError` for a unit that cannot be parsed or has the wrong
    dimension. Labels without an internal unit (custom labels) are not
    converted, so their unit strings are stored but not checked."""
    conversion_factor(distance_unit, "Ang")
    for prop, unit in property_unit_dict.items():
        if prop in INTERNAL_UNITS:
            to_internal(prop, unit)
        elif not isinstance(unit, str):
            raise UnitError(f"unit of '{prop}' must be a string, got {unit!r}")


#: Results ASE's database keeps in columns of its own when a structure is
#: written with a calculator attached (how DFT workflows store their results).
ROW_RESULTS = (P.energy, P.free_energy, P.forces, P.stress, P.energies)


class ASEAtomsData(BaseAtomsData):
    """Labelled structures in an ASE SQLite database (``ase.db``).

    Labels live in each row's ``data`` in the declared units; units, atomrefs
    and user metadata live in ``db.metadata``. Create one with
    :meth:`create`, fill it with :meth:`add_systems`.

    A plain ASE database (not written by mlcalc) is read too: its labels are
    the calculator results ASE stored with each structure (energy, forces,
    stress, ...) and whatever its rows' ``data`` hold, in ASE's units (eV, Å).

    Args:
        datapath: path of an existing database.
        load_properties: labels to load (None: all).
        transforms: applied in order by ``__getitem__``.
    """

    def __init__(self, datapath: str | os.PathLike, load_properties: Sequence[str] | None = None,
                 transforms: Sequence[Transform] | None = None) -> None:
        self.datapath = os.fspath(datapath)
        if not os.path.isfile(self.datapath):
            raise FileNotFoundError(f"data set '{self.datapath}' does not exist; create it with "
                                    "ASEAtomsData.create or mlcalc.data.from_ase_file")
        self._db: Database | None = None
        try:
            self._refresh()
        except sqlite3.DatabaseError as err:
            raise ValueError(f"'{self.datapath}' is not an ASE SQLite database ({err})") from None
        super().__init__(load_properties, transforms)

    def _refresh(self) -> None:
        # Row ids are looked up once, so that a data set with deleted rows
        # (ids with gaps) still maps 0..len-1 onto its rows.
        self._meta = self.db.metadata
        self._ids = [row.id for row in self.db.select(columns=["id"], include_data=False)]
        self._row_results: set[str] = set()
        if "property_unit_dict" not in self._meta and self._ids:
            # A database not written by mlcalc: the calculator results ASE stored in
            # its columns and the rows' data, assumed in ASE units.
            first = self.db.get(id=self._ids[0])
            keys = list(first.data)
            self._row_results = {k for k in ROW_RESULTS
                                 if k not in keys and first.get(k) is not None}
            keys += sorted(self._row_results)
            self._meta = {"property_unit_dict": {k: INTERNAL_UNITS.get(k, "") for k in keys}}

    @property
    def db(self) -> Database:
        """The ASE database, connected lazily (so that data loader workers
        each open their own SQLite connection after pickling)."""
        if self._db is None:
            self._db = ase.db.connect(self.datapath, type="db")
        return self._db

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_db"] = None
        return state

    @classmethod
    def create(cls, datapath: str | os.PathLike, distance_unit: str = "Ang",
               property_unit_dict: Mapping[str, str] | None = None,
               atomrefs: Mapping[str, Sequence[float]] | None = None,
               **metadata: Any) -> ASEAtomsData:
        """Create an empty database that declares its units.

        Args:
            datapath: new file (an existing one is never overwritten).
            distance_unit: unit of positions and cell as stored.
            property_unit_dict: label -> unit of the stored numbers, e.g.
                ``{"energy": "kcal/mol", "forces": "kcal/mol/Ang"}``.
            atomrefs: label -> per-element references (declared units),
                indexed by atomic number, at most 119 long (padded with 0).
            **metadata: plain JSON values kept in ``metadata``.
        """
        datapath = os.fspath(datapath)
        if os.path.exists(datapath):
            raise FileExistsError(f"data set '{datapath}' already exists; refusing to overwrite "
                                  "it (remove it or choose another path)")
        units = dict(property_unit_dict or {})
        check_units(units, distance_unit)
        refs: dict[str, list[float]] = {}
        for prop, ref in (atomrefs or {}).items():
            if prop not in units:
                raise MissingPropertyError(f"atomrefs given for '{prop}', which is not in "
                                           f"property_unit_dict ({', '.join(units) or 'none'})")
            values = np.asarray(ref, dtype=np.float64).reshape(-1)
            if len(values) > N_ELEMENTS:
                raise ValueError(f"atomrefs of '{prop}' have {len(values)} entries; at most "
                                 f"{N_ELEMENTS} (atomic numbers 0..118)")
            refs[prop] = np.pad(values, (0, N_ELEMENTS - len(values))).tolist()
        os.makedirs(os.path.dirname(os.path.abspath(datapath)), exist_ok=True)
        db = ase.db.connect(datapath, type="db")
        db.metadata = {"format": "mlcalc.ASEAtomsData", "version": 1,
                       "distance_unit": distance_unit, "property_unit_dict": units,
                       "atomrefs": refs, "per_atom_properties": [], "metadata": metadata}
        return cls(datapath)

    # --- metadata ----------------------------------------------------------
    @property
    def name(self) -> str:
        return os.path.basename(self.datapath)

    @property
    def units(self) -> dict[str, str]:
        return dict(self._meta.get("property_unit_dict", {}))

    @property
    def distance_unit(self) -> str:
        return self._meta.get("distance_unit", "Ang")

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._meta.get("metadata", {}))

    @property
    def per_atom_properties(self) -> set[str]:
        return set(P.PER_ATOM) | set(self._meta.get("per_atom_properties", []))

    @property
    def _raw_atomrefs(self) -> dict[str, Sequence[float]]:
        return dict(self._meta.get("atomrefs", {}))

    # --- reading -----------------------------------------------------------
    def __len__(self) -> int:
        return len(self._ids)

    def _read(self, idx: int, props: Sequence[str]) -> tuple[Atoms, dict[str, np.ndarray]]:
        row = self.db.get(id=self._ids[idx])
        atoms = Atoms(numbers=row.numbers, positions=row.positions, cell=row.cell, pbc=row.pbc)
        labels = {}
        for p in props:
            value = self.row_label(row, p)
            if value is None:
                raise MissingPropertyError(f"structure {idx} of '{self.name}' has no '{p}'")
            labels[p] = value
        return atoms, labels

    def row_label(self, row, prop: str):
        """Label ``prop`` of a database row as stored (its ``data``, or ASE's result
        columns for a plain ASE database); None when the row lacks it."""
        if prop in row.data:
            return row.data[prop]
        return row.get(prop) if prop in self._row_results else None

    def numbers_and_labels(self, indices: Iterable[int],
                           prop: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        # One SQLite connection for the whole pass instead of one per row.
        with self.db:
            return super().numbers_and_labels(indices, prop)

    # --- writing -----------------------------------------------------------
    def add_systems(self, atoms_list: Sequence[Atoms],
                    property_list: Sequence[Mapping[str, Any]] | None = None) -> None:
        """Append structures with their labels, all or none.

        Labels (every property declared in ``units``) are taken from
        ``property_list[i]`` when given, else from the attached calculator,
        then ``atoms.info`` (per structure) and ``atoms.arrays`` (per atom).
        They are stored as given, in the declared units; a 3x3 stress is
        stored as Voigt-6.

        Raises:
            MissingPropertyError: a declared label is missing for a structure.
            InvalidStructureError: a structure is empty, has NaN positions, ...
        """
        if property_list is not None and len(property_list) != len(atoms_list):
            raise ValueError(f"{len(atoms_list)} structures but {len(property_list)} "
                             "property dicts")
        units = self.units
        per_atom = set(self._meta.get("per_atom_properties", []))
        rows = []
        for i, atoms in enumerate(atoms_list):
            try:
                validate_structure(atoms.numbers, atoms.positions, np.asarray(atoms.cell),
                                   atoms.pbc)
            except InvalidStructureError as err:
                raise InvalidStructureError(f"structure {i}: {err}") from None
            given = None if property_list is None else property_list[i]
            labels, atomwise = gather_labels(atoms, list(units), given, index=i)
            per_atom |= atomwise - set(P.PER_ATOM)
            plain = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell,
                          pbc=atoms.pbc)
            rows.append((plain, labels))
        # One transaction: an error in the middle leaves the file as it was.
        try:
            with self.db as db:
                if per_atom != set(self._meta.get("per_atom_properties", [])):
                    db.metadata = {**self._meta, "per_atom_properties": sorted(per_atom)}
                for plain, labels in rows:
                    db.write(plain, data=labels)
        except BaseException:
            self._db = None  # drop ASE's cached metadata of the rolled-back transaction
            raise
        self._refresh()
