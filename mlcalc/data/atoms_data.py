"""Data sets of labelled structures: the abstract :class:`BaseAtomsData` and
:class:`ASEAtomsData` over an ASE (SQLite) database.

A data set stores labels as they were given, in the units declared in its
metadata; everything it hands out is converted to mlcalc's internal units
(eV, Å, see :mod:`mlcalc.units`) on load.

Shapes of one structure (``N`` atoms), as returned by ``get_properties``:
structure keys as made by :func:`mlcalc.data.atoms.atoms_to_inputs`
(``numbers`` (N,) int64, ``positions`` (N, 3) float64 Å, ``cell`` (1, 3, 3),
``pbc`` (1, 3), ``n_atoms`` (1,)), ``idx`` (1,) int64, per-structure labels
(1, ...) float64 (``energy`` (1,) eV, ``stress`` (1, 6) eV/Å³ Voigt in ASE
order xx, yy, zz, yz, xz, xy) and per-atom labels (N, ...) float64
(``forces`` (N, 3) eV/Å, ``energies`` (N,) eV).
"""

from __future__ import annotations

import abc
import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import ase.db
import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.db.core import Database

from mlcalc import properties as P
from mlcalc.data.atoms import atoms_to_inputs, validate_structure
from mlcalc.exceptions import InvalidStructureError, MissingPropertyError, UnitError
from mlcalc.transform.base import Transform
from mlcalc.units import INTERNAL_UNITS, conversion_factor, to_internal

#: Length of an atomref table: indexed by atomic number 0..118.
N_ELEMENTS = 119
#: Labels ASE's SinglePointCalculator understands (get_atoms attaches them).
_ASE_RESULTS = (P.energy, P.free_energy, P.energies, P.forces, P.stress)


class BaseAtomsData(torch.utils.data.Dataset, abc.ABC):
    """A data set of labelled structures, indexed 0..len-1.

    Subclasses implement :meth:`__len__`, :meth:`_read` (raw arrays of one
    structure in the declared units) and the metadata properties; this class
    does unit conversion, property selection and transforms.

    For fitting offsets (RemoveOffsets.datamodule_setup) call
    :meth:`numbers_and_labels` with the training indices: it reads
    (numbers, label) pairs without building the input dict or running any
    transform, and subclasses may read them in one pass.
    """

    def __init__(self, load_properties: Sequence[str] | None = None,
                 transforms: Sequence[Transform] | None = None) -> None:
        self._load_properties: list[str] | None = None
        self.load_properties = load_properties
        self.transforms = transforms

    # --- to implement ----------------------------------------------------
    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def _read(self, idx: int, props: Sequence[str]) -> tuple[Atoms, dict[str, np.ndarray]]:
        """Structure ``idx`` (positions in ``distance_unit``) and the raw
        labels ``props`` (declared units, natural shapes, e.g. energy ())."""

    @property
    @abc.abstractmethod
    def units(self) -> dict[str, str]:
        """Declared unit of every available property, e.g. ``{"energy": "kcal/mol"}``."""

    @property
    @abc.abstractmethod
    def distance_unit(self) -> str:
        """Declared unit of positions and cell, e.g. ``"Ang"`` or ``"Bohr"``."""

    @property
    @abc.abstractmethod
    def metadata(self) -> dict[str, Any]:
        """User metadata stored with the data set (plain JSON values)."""

    @property
    def per_atom_properties(self) -> set[str]:
        """Labels with one row per atom (concatenated along atoms when batching)."""
        return set(P.PER_ATOM)

    @property
    def _raw_atomrefs(self) -> dict[str, Sequence[float]]:
        """Per-element references in declared units (empty if none)."""
        return {}

    # --- metadata ----------------------------------------------------------
    @property
    def name(self) -> str:
        """Name used in error messages."""
        return type(self).__name__

    @property
    def available_properties(self) -> list[str]:
        """Labels the data set has."""
        return list(self.units)

    @property
    def atomrefs(self) -> dict[str, torch.Tensor]:
        """Per-element references: property -> (119,) float64 tensor indexed by
        atomic number, in internal units."""
        return {
            prop: torch.tensor(ref, dtype=torch.float64) * to_internal(prop, self.units[prop])
            for prop, ref in self._raw_atomrefs.items()
        }

    # --- property selection -----------------------------------------------
    def require(self, props: Iterable[str]) -> None:
        """Raise :class:`MissingPropertyError` unless every label in ``props`` exists."""
        available = self.available_properties
        for prop in props:
            if prop not in available:
                raise MissingPropertyError(
                    f"data set '{self.name}' has no property '{prop}' "
                    f"(available: {', '.join(available) or 'none'})"
                )

    @property
    def load_properties(self) -> list[str]:
        """Labels returned by :meth:`get_properties` (all available if never set)."""
        if self._load_properties is None:
            return self.available_properties
        return list(self._load_properties)

    @load_properties.setter
    def load_properties(self, props: Sequence[str] | None) -> None:
        if props is not None:
            props = list(props)
            self.require(props)
        self._load_properties = props

    @property
    def transforms(self) -> list[Transform]:
        """Transforms applied, in order, by ``__getitem__``."""
        return self._transforms

    @transforms.setter
    def transforms(self, transforms: Sequence[Transform] | None) -> None:
        self._transforms = list(transforms or [])

    # --- access ------------------------------------------------------------
    def _index(self, idx: int) -> int:
        n = len(self)
        i = int(idx)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for data set '{self.name}' of size {n}")
        return i % n

    def _to_tensor(self, prop: str, value: np.ndarray) -> torch.Tensor:
        """Declared units -> internal float64 tensor; per-structure labels get
        a leading axis of length 1 so that collate can concatenate them."""
        factor = to_internal(prop, self.units[prop])
        t = torch.as_tensor(np.asarray(value, dtype=np.float64) * factor)
        return t if prop in self.per_atom_properties else t.reshape(1, *t.shape)

    def get_properties(self, idx: int) -> dict[str, torch.Tensor]:
        """Input dict of structure ``idx`` with its labels, no transforms applied."""
        i = self._index(idx)
        props = self.load_properties
        atoms, labels = self._read(i, props)
        f = conversion_factor(self.distance_unit, "Ang")
        if f != 1.0:
            atoms.set_cell(atoms.get_cell() * f, scale_atoms=False)
            atoms.set_positions(atoms.get_positions() * f)
        inputs = atoms_to_inputs(atoms)
        inputs[P.idx] = torch.tensor([i], dtype=torch.long)
        for prop in props:
            inputs[prop] = self._to_tensor(prop, labels[prop])
        return inputs

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        inputs = self.get_properties(idx)
        for transform in self._transforms:
            inputs = transform(inputs)
        return inputs

    def numbers_and_label(self, idx: int, prop: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Atomic numbers (N,) int64 and label ``prop`` (internal units, shape as
        in :meth:`get_properties`) of one structure, without transforms."""
        self.require([prop])
        atoms, labels = self._read(self._index(idx), [prop])
        numbers = torch.as_tensor(atoms.get_atomic_numbers(), dtype=torch.long)
        return numbers, self._to_tensor(prop, labels[prop])

    def numbers_and_labels(self, indices: Iterable[int],
                           prop: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """:meth:`numbers_and_label` for many structures (what offset fitting calls)."""
        return [self.numbers_and_label(i, prop) for i in indices]

    def get_atoms(self, idx: int) -> Atoms:
        """Structure ``idx`` as :class:`ase.Atoms` in Å; energy, forces, stress
        and energies are attached as a SinglePointCalculator (internal units),
        other labels go to ``info`` / ``arrays``."""
        inputs = self.get_properties(idx)
        atoms = Atoms(numbers=inputs[P.Z].numpy(), positions=inputs[P.R].numpy(),
                      cell=inputs[P.cell][0].numpy(), pbc=inputs[P.pbc][0].numpy())
        results = {}
        for prop in self.load_properties:
            value = inputs[prop].numpy()
            per_atom = prop in self.per_atom_properties
            if not per_atom:
                value = value[0]
            if prop in _ASE_RESULTS:
                results[prop] = float(value) if value.ndim == 0 else value
            elif per_atom:
                atoms.arrays[prop] = value
            else:
                atoms.info[prop] = value
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        return atoms


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


class ASEAtomsData(BaseAtomsData):
    """Labelled structures in an ASE SQLite database (``ase.db``).

    Labels live in each row's ``data`` in the declared units; units, atomrefs
    and user metadata live in ``db.metadata``. Create one with
    :meth:`create`, fill it with :meth:`add_systems`.

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
        if "property_unit_dict" not in self._meta and self._ids:
            # A database not written by mlcalc: labels in data, assumed in ASE units.
            keys = list(self.db.get(id=self._ids[0]).data)
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
        return atoms, {p: row.data[p] for p in props}

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
        # convert.py holds the atoms -> labels logic and imports this module.
        from mlcalc.data.convert import gather_labels

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
