"""SchNetPack 2 models in mlcalc: a safe import of ``best_model`` files.

``load_schnetpack(path)`` reads a model file written by SchNetPack 2.x
training (``torch.save`` of its ``NeuralNetworkPotential``) with a
restricted unpickler (:mod:`.reader`: no code of the file runs and
schnetpack need not be installed) and maps it onto mlcalc's potential
(:mod:`.mapping`). ``import_schnetpack`` writes the result as a ``model.pt``;
``mlcalc import-schnetpack`` is the command line of it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from mlcalc.integrations.schnetpack.mapping import ElementsGuessedWarning, convert
from mlcalc.integrations.schnetpack.reader import SUPPORTED, model_of, read_pickled_model
from mlcalc.model.potential import DTYPES, NeuralNetworkPotential, dtype_name
from mlcalc.units import conversion_factor


def load_schnetpack(path: str | os.PathLike, energy_unit: str = "eV",
                    length_unit: str = "Ang",
                    elements: list[int] | None = None,
                    dtype: torch.dtype | str | None = None) -> NeuralNetworkPotential:
    """Read a SchNetPack 2 ``best_model`` as an mlcalc potential (eV, Å).

    Args:
        path: the model file: SchNetPack's ``best_model`` (a pickled
            ``NeuralNetworkPotential``) or a Lightning checkpoint of its
            ``AtomisticTask`` (``.ckpt``).
        energy_unit: energy unit the model was trained in (``eV``,
            ``kcal/mol``, ``Hartree``, ...).
        length_unit: length unit of its positions (``Ang``, ``Bohr``, ...).
        elements: atomic numbers it was trained on; None guesses them (from
            nonzero atom references, else every Z of the embedding) and warns
            with :class:`ElementsGuessedWarning`.
        dtype: ``float32`` or ``float64``; None keeps the file's precision
            (float32 for SchNetPack's training). ``float64`` reproduces
            SchNetPack's float64 numbers to round-off (see
            :func:`~mlcalc.integrations.schnetpack.mapping.convert`).

    Returns:
        The potential in evaluation mode; its
        ``metadata`` records the source and the units converted.

    Raises:
        SchNetPackImportError: unsafe, damaged or unsupported file (one line
            naming the class or setting).
        UnitError: a unit that cannot be parsed or is not an energy / a length.
    """
    energy = conversion_factor(energy_unit, "eV")
    length = conversion_factor(length_unit, "Ang")
    if dtype is not None:
        dtype = DTYPES[dtype_name(dtype)]
    model = convert(model_of(read_pickled_model(path)), energy, length, elements, source=str(path),
                    dtype=dtype)
    model.metadata = {"imported_from": "schnetpack", "source": Path(path).name,
                      "energy_unit": energy_unit, "length_unit": length_unit,
                      "elements_given": elements is not None}
    return model


def import_schnetpack(path: str | os.PathLike, output: str | os.PathLike,
                      **kwargs: Any) -> NeuralNetworkPotential:
    """:func:`load_schnetpack` and save the result as an mlcalc model file ``output``."""
    from mlcalc.model.io import save_model

    model = load_schnetpack(path, **kwargs)
    save_model(model, output)
    return model


__all__ = ["SUPPORTED", "ElementsGuessedWarning", "import_schnetpack", "load_schnetpack",
           "read_pickled_model"]
