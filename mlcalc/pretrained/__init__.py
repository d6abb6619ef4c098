"""Models shipped inside the package, addressed by name (``MLCalculator("cu-emt")``).

A bundled model is a model file ``<name>.pt`` in this folder. A model
argument that is neither an existing path nor a bundled name is an error
that lists the bundled names.
"""

from __future__ import annotations

import os
from pathlib import Path

from mlcalc.exceptions import ModelFileError, did_you_mean

_HERE = Path(__file__).resolve().parent


def bundled_models() -> dict[str, Path]:
    """Names and paths of the models shipped with mlcalc."""
    return {p.stem: p for p in sorted(_HERE.glob("*.pt"))}


def resolve_model_path(model: str | os.PathLike) -> Path:
    """Path of ``model``: an existing file (or folder, which the model reader refuses
    naming it, :func:`mlcalc.model.io.read_model_file`), or the name of a bundled model.

    Raises:
        ModelFileError: neither a file, a folder nor a bundled model.
    """
    path = Path(model)
    if path.exists():
        return path
    bundled = bundled_models()
    if str(model) in bundled:
        return bundled[str(model)]
    names = ", ".join(bundled) or "none"
    hint = did_you_mean(str(model), bundled)
    raise ModelFileError(f"model file not found: {model}{hint} (bundled models: {names})")
