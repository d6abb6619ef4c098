"""Exceptions raised by mlcalc.

Each bad input gets one specific exception carrying one clear line; the
command line prints that line and exits non-zero. All derive from
:class:`MlcalcError` so callers can catch everything mlcalc raises on purpose.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from ase.calculators.calculator import PropertyNotImplementedError


class MlcalcError(Exception):
    """Base class of all errors mlcalc raises on purpose."""


class InvalidStructureError(MlcalcError, ValueError):
    """A structure cannot be evaluated (empty, NaN positions, bad cell, ...)."""


class UnknownNameError(MlcalcError, KeyError):
    """A registry name (representation, neighbor list, ...) is not known."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class MissingPropertyError(MlcalcError, KeyError):
    """A data set lacks a label the caller asked for."""

    def __str__(self) -> str:
        return str(self.args[0])


class UnitError(MlcalcError, ValueError):
    """A unit string cannot be parsed or converted."""


class ModelFileError(MlcalcError, RuntimeError):
    """A model file is missing, corrupt, unsafe or of a newer format."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""``."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> UnknownNameError:
    """Build the error for an unknown registry entry, listing the known names."""
    choices = sorted(choices)
    hint = did_you_mean(name, choices)
    known = ", ".join(choices)
    return UnknownNameError(f"unknown {kind} '{name}'{hint}; known: {known}")


class UnknownElementError(InvalidStructureError):
    """A structure holds an element the model was not trained on."""


class DeviceError(MlcalcError, RuntimeError):
    """The requested device is not available."""


class EnsembleError(MlcalcError, ValueError):
    """Members of a model ensemble are not compatible."""


class StressUndefinedError(MlcalcError, PropertyNotImplementedError):
    """Stress was asked for a structure that is not periodic in all three directions.

    It is ASE's ``PropertyNotImplementedError`` too, so ASE code that probes
    for stress (``try: atoms.get_stress()``) treats it as ASE expects.
    """


class OutputExistsError(MlcalcError, FileExistsError):
    """A run would overwrite files an earlier run wrote (pass ``overwrite``)."""


class OutputLockedError(MlcalcError, RuntimeError):
    """Another run is writing the same output files."""


class NonFiniteResultError(MlcalcError, FloatingPointError):
    """The model produced NaN or inf; nothing is returned."""


class SchNetPackImportError(MlcalcError, ValueError):
    """A SchNetPack model file cannot be imported: unsafe, damaged or unsupported."""


class MlcalcWarning(UserWarning):
    """Base class of the warnings mlcalc issues on purpose (the CLI prints them as one line)."""
