"""Data: structures and labels in, input dicts out (see DESIGN.md, "Data flow").

:class:`ASEAtomsData` stores labelled structures with their units,
:class:`AtomsDataModule` splits them for training, :func:`collate_atoms`
batches them, and the converters build databases from files.

``AtomsDataModule`` is a Lightning data module; it is imported on first use so
that inference (the calculator, ``mlcalc md``) never imports the training stack.
"""

from typing import Any

from mlcalc.data.atoms import atoms_to_inputs, validate_structure
from mlcalc.data.atoms_data import ASEAtomsData
from mlcalc.data.base import BaseAtomsData
from mlcalc.data.collate import collate_atoms
from mlcalc.data.convert import from_ase_file, from_npz

__all__ = [
    "ASEAtomsData",
    "AtomsDataModule",
    "BaseAtomsData",
    "atoms_to_inputs",
    "collate_atoms",
    "from_ase_file",
    "from_npz",
    "validate_structure",
]


def __getattr__(name: str) -> Any:
    if name == "AtomsDataModule":
        from mlcalc.data.datamodule import AtomsDataModule

        return AtomsDataModule
    raise AttributeError(f"module 'mlcalc.data' has no attribute {name!r}")
