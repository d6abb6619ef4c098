"""Read a SchNetPack 2 model file without running any of its code.

SchNetPack's training writes ``best_model`` with ``torch.save(model)``: a zip
archive holding a pickle of the whole ``nn.Module`` tree and one raw file per
tensor storage. Unpickling it normally imports schnetpack and calls whatever
the pickle names, which is how a crafted file runs code. This reader is a
:class:`pickle.Unpickler` whose :meth:`~SafeUnpickler.find_class` answers
only a fixed allow-list:

* classes of SchNetPack and torch modules become :class:`Record` subclasses,
  inert placeholders that keep the constructor arguments and the pickled
  state (the module's ``__dict__``: hyperparameters, ``_parameters``,
  ``_buffers``, ``_modules``); no constructor, ``__setstate__`` or other
  code of the real class runs, and neither schnetpack nor its classes are
  imported;
* functions stored as attributes (activations, initialisers) become
  :class:`FunctionRef` names that cannot be called;
* tensors are rebuilt by this module's own functions from the raw storage
  bytes of the archive;
* ``OrderedDict``, ``set`` and torch dtypes are themselves.

A Lightning checkpoint (``.ckpt``) of SchNetPack's ``AtomisticTask`` holds the
same model pickled in its ``hyper_parameters`` beside the task's losses,
metrics and optimizer class; those are read as records too and not used
(:func:`model_of`).

Any other name (``os.system``, ``builtins.eval``, a class of another package)
stops the read at once with :class:`~mlcalc.exceptions.SchNetPackImportError`
naming it, before anything could be called.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from mlcalc.exceptions import SchNetPackImportError

#: SchNetPack classes read (module path of SchNetPack 2.x, class name).
SCHNETPACK_CLASSES: dict[str, tuple[str, ...]] = {
    "schnetpack.model.base": ("NeuralNetworkPotential",),
    "schnetpack.representation.schnet": ("SchNet", "SchNetInteraction"),
    "schnetpack.representation.painn": ("PaiNN", "PaiNNInteraction", "PaiNNMixing"),
    "schnetpack.nn.base": ("Dense",),
    "schnetpack.nn.radial": ("GaussianRBF", "BesselRBF"),
    "schnetpack.nn.cutoff": ("CosineCutoff", "MollifierCutoff"),
    "schnetpack.nn.activations": ("ShiftedSoftplus",),
    "schnetpack.atomistic.atomwise": ("Atomwise",),
    "schnetpack.atomistic.response": ("Forces", "Strain"),
    "schnetpack.atomistic.distances": ("PairwiseDistances",),
    "schnetpack.transform.atomistic": ("AddOffsets",),
    "schnetpack.transform.casting": ("CastTo64", "CastTo32"),
}
#: torch.nn classes that appear inside SchNetPack models.
TORCH_CLASSES: dict[str, tuple[str, ...]] = {
    "torch.nn.modules.container": ("ModuleList", "Sequential"),
    "torch.nn.modules.linear": ("Identity",),
    "torch.nn.modules.sparse": ("Embedding",),
    "torch.nn.modules.activation": ("SiLU", "Tanh"),
}
#: Classes of the training task a Lightning checkpoint also pickles (read, not used).
CHECKPOINT_CLASSES: dict[str, tuple[str, ...]] = {
    "schnetpack.task": ("ModelOutput",),
    "torch.nn.modules.container": ("ModuleDict",),
    "torch.nn.modules.loss": ("MSELoss", "L1Loss", "HuberLoss", "SmoothL1Loss"),
    "torchmetrics.regression.mae": ("MeanAbsoluteError",),
    "torchmetrics.regression.mse": ("MeanSquaredError",),
}
#: Functions stored as attributes (never called): activations and initialisers, and
#: in checkpoints the optimizer and scheduler classes and torchmetrics' reductions.
FUNCTIONS: dict[str, tuple[str, ...]] = {
    "torch.optim.adam": ("Adam",),
    "torch.optim.adamw": ("AdamW",),
    "torch.optim.sgd": ("SGD",),
    "torch.optim.lr_scheduler": ("ReduceLROnPlateau", "CosineAnnealingLR", "StepLR",
                                 "ExponentialLR"),
    "schnetpack.train.lr_scheduler": ("ReduceLROnPlateau",),
    "torchmetrics.metric": ("jit_distributed_available",),
    "torchmetrics.utilities.data": ("dim_zero_sum", "dim_zero_cat", "dim_zero_mean",
                                    "dim_zero_max", "dim_zero_min"),
    "torch.nn.functional": ("silu", "softplus", "tanh"),
    "torch": ("tanh",),
    "torch.nn.init": ("xavier_uniform_", "zeros_", "ones_", "normal_", "uniform_",
                      "kaiming_uniform_", "orthogonal_"),
    "schnetpack.nn.activations": ("shifted_softplus",),
}
_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64, "IntStorage": torch.int32, "ShortStorage": torch.int16,
    "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
_DTYPES = {name: getattr(torch, name) for name in (
    "float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8",
    "bool")}

SUPPORTED = ("representations SchNet and PaiNN; radial bases GaussianRBF and BesselRBF; "
             "cutoffs CosineCutoff and MollifierCutoff; an Atomwise energy head; Forces "
             "(with stress); AddOffsets, CastTo64 and CastTo32 postprocessors")


class Record:
    """An allow-listed object of the pickle, rebuilt as inert data.

    Attributes:
        class_name: ``module.Name`` of the class the pickle named.
        args: constructor arguments stored in the pickle (not used to construct).
        state: the pickled state; for an ``nn.Module`` its ``__dict__``.
    """

    class_name = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> Record:
        obj = object.__new__(cls)
        obj.args = args
        obj.state = {}
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
            state = {**(state[0] or {}), **(state[1] or {})}
        self.state = dict(state) if isinstance(state, dict) else {"_state": state}

    @property
    def name(self) -> str:
        """The class name without its module."""
        return self.class_name.rsplit(".", 1)[-1]

    def get(self, key: str, default: Any = ...) -> Any:
        """A parameter, buffer, submodule or attribute of the pickled module."""
        for table in ("_parameters", "_buffers", "_modules"):
            entries = self.state.get(table) or {}
            if key in entries:
                return entries[key]
        if key in self.state:
            return self.state[key]
        if default is not ...:
            return default
        raise SchNetPackImportError(f"{self.class_name} in the model file has no '{key}' "
                                    "(not a SchNetPack 2.x model?)")

    def children(self) -> list[Any]:
        """Submodules in order (a ModuleList's or Sequential's entries)."""
        return list((self.state.get("_modules") or {}).values())

    def __repr__(self) -> str:
        return f"<{self.class_name} record>"


class FunctionRef:
    """A function named in the pickle (an activation, an initialiser); never called."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __repr__(self) -> str:
        return f"<function {self.module}.{self.name}>"


class _Storage:
    """A storage type named in a persistent id (``torch.FloatStorage``...)."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple, stride: tuple,
                    *_: Any) -> torch.Tensor:
    return torch.as_strided(storage, tuple(size), tuple(stride), int(offset)).clone()


def _rebuild_parameter(data: torch.Tensor, *_: Any) -> torch.Tensor:
    return data


def _device(*args: Any) -> str:
    """torch.device("cuda", 0) of a checkpoint, kept as its name "cuda:0"."""
    return ":".join(str(a) for a in args)


def _record_class(module: str, name: str) -> type[Record]:
    return type(name, (Record,), {"class_name": f"{module}.{name}"})


def _refusal(module: str, name: str) -> SchNetPackImportError:
    if module.startswith("schnetpack"):
        return SchNetPackImportError(
            f"SchNetPack class {name} ({module}) is not supported; mlcalc imports {SUPPORTED}")
    return SchNetPackImportError(
        f"refusing to read the file: it references {module}.{name}, which is not part of a "
        "SchNetPack model (unpickling it could run code)")


class SafeUnpickler(pickle._Unpickler):
    """Unpickler of ``data.pkl`` that resolves only the allow-list (see module doc).

    It is the pure-Python unpickler (model pickles are small) so that one more
    opcode can be checked: BUILD, which calls an object's ``__setstate__``,
    is accepted on :class:`Record` objects and on a state dict's ``_metadata``
    only (a SchNetPack model pickle never sets the state of anything else; a
    tensor's ``__setstate__`` is torch code a crafted file could otherwise reach).

    Args:
        file: the pickle stream.
        storages: raw bytes of each storage, by the key the pickle uses.
    """

    def __init__(self, file: io.BufferedIOBase, storages: dict[str, bytes]) -> None:
        super().__init__(file)
        self._storages = storages
        self._classes: dict[tuple[str, str], type[Record]] = {}

    def find_class(self, module: str, name: str) -> Any:
        module = {"__builtin__": "builtins"}.get(module, module)
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) in (("builtins", "set"), ("builtins", "frozenset")):
            return set if name == "set" else frozenset
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name in ("_rebuild_parameter",
                                                 "_rebuild_parameter_with_state"):
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _Storage(_STORAGE_DTYPES[name])
        if module == "torch" and name in _DTYPES:
            return _DTYPES[name]
        if (module, name) == ("torch", "device"):
            return _device
        if name in FUNCTIONS.get(module, ()):
            return FunctionRef(module, name)
        if any(name in table.get(module, ()) for table in (SCHNETPACK_CLASSES, TORCH_CLASSES,
                                                            CHECKPOINT_CLASSES)):
            key = (module, name)
            if key not in self._classes:
                self._classes[key] = _record_class(module, name)
            return self._classes[key]
        raise _refusal(module, name)

    dispatch = dict(pickle._Unpickler.dispatch)

    def load_build(self) -> None:
        target, state = self.stack[-2], self.stack[-1]
        # a state_dict (OrderedDict) carries its ``_metadata`` as plain instance data
        plain = (type(target) is collections.OrderedDict and isinstance(state, dict)
                 and set(state) <= {"_metadata"})
        if not (isinstance(target, Record) or plain):
            raise SchNetPackImportError(
                f"refusing to read the file: it sets the state of a {type(target).__name__}, "
                "which a SchNetPack model pickle never does")
        pickle._Unpickler.load_build(self)

    dispatch[pickle.BUILD[0]] = load_build

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _Storage)):
            raise SchNetPackImportError(f"refusing to read the file: unknown persistent id "
                                        f"{str(pid)[:60]}")
        dtype, key, numel = pid[1].dtype, str(pid[2]), int(pid[4])
        raw = self._storages.get(key)
        itemsize = torch.empty((), dtype=dtype).element_size()
        if raw is None or len(raw) < numel * itemsize:
            raise SchNetPackImportError(f"the model file is damaged: tensor data {key} is "
                                        "missing or truncated")
        if numel == 0:
            return torch.empty(0, dtype=dtype)
        return torch.frombuffer(bytearray(raw[:numel * itemsize]), dtype=dtype)


def _overlay(model: Record, state_dict: dict[str, Any], prefix: str) -> None:
    """Put a checkpoint's ``state_dict`` tensors (keys ``prefix`` + path) into ``model``."""
    for key, tensor in state_dict.items():
        if not key.startswith(prefix):
            continue
        *path, name = key[len(prefix):].split(".")
        node = model
        for part in path:
            node = node.get(part) if isinstance(node, Record) else None
        tables = [node.state.get(t) or {} for t in ("_parameters", "_buffers")] \
            if isinstance(node, Record) else []
        table = next((t for t in tables if name in t), None)
        if table is None or not isinstance(tensor, torch.Tensor):
            raise SchNetPackImportError(f"the checkpoint's weight {key} has no place in its "
                                        "pickled model")
        table[name] = tensor


def model_of(root: Any) -> Any:
    """The model of a read file: the root of a ``best_model``; in a Lightning
    checkpoint, the task's pickled ``hyper_parameters["model"]`` with the
    checkpoint's ``state_dict`` weights put into it."""
    if not (isinstance(root, dict) and "state_dict" in root):
        return root
    model = (root.get("hyper_parameters") or {}).get("model")
    if not isinstance(model, Record):
        raise SchNetPackImportError(
            "the checkpoint holds no pickled model in its hyper_parameters (not written by "
            "SchNetPack's AtomisticTask); import the best_model file instead")
    _overlay(model, root["state_dict"], "model.")
    return model


def read_pickled_model(path: str | os.PathLike) -> Any:
    """The object tree of a ``torch.save`` archive, rebuilt from the allow-list.

    Args:
        path: a SchNetPack ``best_model`` (or another ``torch.save`` zip archive).

    Returns:
        The unpickled root: :class:`Record` objects, tensors and plain data
        (see :func:`model_of` for the model in it).

    Raises:
        SchNetPackImportError: missing or not a torch archive, or a name
            outside the allow-list (with the name).
    """
    path = Path(path)
    if not path.is_file():
        raise SchNetPackImportError(f"SchNetPack model file not found: {path}")
    if not zipfile.is_zipfile(path):
        raise SchNetPackImportError(
            f"{path}: not a torch archive (SchNetPack 2 writes best_model with torch.save; "
            "files of torch < 1.6 must be re-saved with a newer torch)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(pickles) != 1:
                raise SchNetPackImportError(f"{path}: not a torch.save archive (no data.pkl)")
            prefix = pickles[0][: -len("data.pkl")]
            order = [n for n in names if n == f"{prefix}byteorder"]
            if order and archive.read(order[0]).strip() not in (b"little", b""):
                raise SchNetPackImportError(f"{path}: big-endian archives are not supported")
            storages = {n[len(prefix) + 5:]: archive.read(n) for n in names
                        if n.startswith(f"{prefix}data/")}
            stream = io.BytesIO(archive.read(pickles[0]))
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise SchNetPackImportError(f"{path}: damaged archive ({err})") from None
    try:
        return SafeUnpickler(stream, storages).load()
    except SchNetPackImportError:
        raise
    except Exception as err:  # malformed pickle data
        raise SchNetPackImportError(f"{path}: damaged model pickle "
                                    f"({type(err).__name__}: {err})") from None
