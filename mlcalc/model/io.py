"""The model file (``model.pt``): plain data and tensors, rebuilt from code.

A model file is one ``torch.save`` of a dict holding only plain Python data
(str, int, float, bool, None, lists, dicts) and tensors:

==================  ========================================================
key                 content
==================  ========================================================
format              ``"mlcalc-model"``
format_version      integer, :data:`FORMAT_VERSION` for files written now
mlcalc_version      version of mlcalc that wrote the file
torch_version       version of torch that wrote the file
config              architecture (:meth:`NeuralNetworkPotential.get_config`):
                    representation name and hyperparameters (the cutoff in
                    Å among them), output modules, postprocessors (the
                    offsets: ``mean_per_atom`` eV, ``atomrefs`` {Z: eV}),
                    elements, dtype (``float32`` or ``float64``)
neighbor_list       backend per device type and the one used in training
                    (:class:`~mlcalc.transform.neighbors.NeighborListSettings`)
units               units of inputs and outputs (ASE's: eV, Å)
metadata            training metadata (free-form plain data)
state_dict          the weights
==================  ========================================================

Every number is stored once (format 1 also repeated cutoff, elements, offsets
and dtype at the top level; such files are still read). The file is read
with ``torch.load(weights_only=True)``, so loading never runs code, and the
network is rebuilt from ``config`` so the file survives refactors of the
code. Files from a newer format version are refused.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlcalc import __version__
from mlcalc.exceptions import MlcalcError, ModelFileError
from mlcalc.model.potential import DTYPES, NeuralNetworkPotential, dtype_name
from mlcalc.transform.neighbors import NeighborListSettings

FORMAT_NAME = "mlcalc-model"
FORMAT_VERSION = 2
UNITS = {"energy": "eV", "length": "Ang", "forces": "eV/Ang", "stress": "eV/Ang^3"}


def _plain(obj: Any, where: str) -> Any:
    """Return ``obj`` as plain data (numpy converted) or raise TypeError."""
    if obj is None:
        return None
    # exact builtin types: subclasses (np.float64, TorchVersion) would be pickled as objects
    for kind in (bool, int, float, str):
        if isinstance(obj, kind):
            return kind(obj)
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, list | tuple):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str | int):
                raise TypeError(f"{where}: key {k!r} is not a str or int")
            out[k] = _plain(v, f"{where}.{k}")
        return out
    raise TypeError(f"{where}: {type(obj).__name__} is not plain data (str, number, list, "
                    "dict, tensor) and cannot go into a model file")


def save_model(model: NeuralNetworkPotential, path: str | os.PathLike,
               metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to ``path`` in the model-file format.

    The file is written to a temporary name and renamed, so an interrupted
    save never leaves a truncated ``model.pt`` in place of a good one.

    Args:
        model: the potential to save.
        path: destination (conventionally ``model.pt``).
        metadata: training metadata (plain data: numbers, strings, lists,
            dicts); default ``model.metadata``.
    """
    path = Path(path)
    content = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "mlcalc_version": __version__,
        "torch_version": torch.__version__,
        "config": model.get_config(),
        "neighbor_list": model.neighbor_list.to_dict(),
        "units": dict(UNITS),
        "metadata": model.metadata if metadata is None else metadata,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    content = _plain(content, "model")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(content, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_model_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a model file without building the network.

    Raises:
        ModelFileError: missing, unreadable, pickled objects, not an mlcalc
            model, or a newer format version.
    """
    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder, not a model file (a committee folder "
                             "holds a committee.json)")
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"PK\x03\x04":  # torch.save writes a zip archive
        raise ModelFileError(f"{path}: not a model file (not a torch archive: empty, corrupt, "
                             "truncated or another format)")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower() or "weights_only" in str(err).lower():
            raise ModelFileError(
                f"{path}: refusing to load: the file contains pickled Python objects, not only "
                "plain data and tensors (mlcalc model files never do)") from None
        raise ModelFileError(f"{path}: not a readable model file (corrupt or truncated)") from None
    except Exception:  # zip/EOF/format errors of a damaged file
        raise ModelFileError(f"{path}: not a readable model file (corrupt or truncated)") from None
    if not isinstance(content, dict) or content.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path}: not an mlcalc model file")
    version = content.get("format_version")
    if not isinstance(version, int):
        raise ModelFileError(f"{path}: model file has no valid format version")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model format version {version} (written by mlcalc "
            f"{content.get('mlcalc_version', '?')}) is newer than this mlcalc reads "
            f"({FORMAT_VERSION}); upgrade mlcalc")
    if content.get("units", UNITS) != UNITS:
        raise ModelFileError(f"{path}: the model's units {content['units']} are not mlcalc's "
                             f"{UNITS}")
    return content


def summary(content: dict[str, Any]) -> dict[str, Any]:
    """Cutoff (Å), dtype, elements, offsets and neighbor-list settings of a read model file."""
    config = content["config"]
    offsets = next((pp.get("offsets") for pp in config.get("postprocessors", [])
                    if pp.get("name") == "add_offsets"), None)
    return {"cutoff": float(config["representation"]["cutoff"]),
            "dtype": config.get("dtype", "float32"), "elements": config.get("elements"),
            "offsets": offsets or {"mean_per_atom": 0.0, "atomrefs": {}},
            "neighbor_list": NeighborListSettings.from_dict(content.get("neighbor_list"))}


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu",
               dtype: torch.dtype | str | None = None) -> NeuralNetworkPotential:
    """Load a model file and rebuild the potential in evaluation mode.

    Args:
        path: the model file.
        device: where to put the weights.
        dtype: network precision; None keeps the file's (``float32`` or ``float64``).

    Returns:
        The model; the file's training metadata is in ``model.metadata``.
    """
    content = read_model_file(path)
    try:
        model = NeuralNetworkPotential.from_config(
            content["config"], NeighborListSettings.from_dict(content.get("neighbor_list")))
        model.load_state_dict(content["state_dict"])
    except (KeyError, TypeError, RuntimeError, ValueError, MlcalcError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelFileError(f"{path}: model file does not match its architecture: "
                             f"{first}") from None
    if dtype is not None:
        dtype = DTYPES[dtype_name(dtype)]
        model = model.to(dtype)
    model.metadata = dict(content.get("metadata") or {})
    return model.to(device).eval()
