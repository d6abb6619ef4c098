"""The abstract data set :class:`BaseAtomsData`: labelled structures as input dicts.
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
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from mlcalc import properties as P
from mlcalc.data.atoms import atoms_to_inputs
from mlcalc.exceptions import MissingPropertyError
from mlcalc.transform.base import Transform
from mlcalc.units import conversion_factor, to_internal

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
                if not np.isfinite(value).any():
                    continue  # an undefined label (the stress of a slab): not a result
                results[prop] = float(value) if value.ndim == 0 else value
            elif per_atom:
                atoms.arrays[prop] = value
            else:
                atoms.info[prop] = value
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        return atoms
