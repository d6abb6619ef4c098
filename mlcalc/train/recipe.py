"""The training recipe: one YAML file validated into dataclasses.

A recipe has five sections and an output folder::

    data:      {path: cu.db, num_train: 0.8, num_val: 0.1, batch_size: 16}
    model:     {representation: painn, n_atom_basis: 64, cutoff: 5.0}
    outputs:   {energy: {weight: 0.05}, forces: {weight: 0.95}}
    offsets:   {mean: true, atomrefs: none}
    train:     {max_epochs: 100, lr: 5.0e-4, lr_scheduler: plateau}
    output_dir: runs/cu

Keys are strict: an unknown key, a wrong type or an out-of-range value is
reported as one line naming the file and the dotted key, with a did-you-mean
hint (``recipe.yaml: train.lr_sheduler: unknown key (did you mean
'lr_scheduler'?)``). ``model`` takes the representation's own
hyperparameter names (``n_atom_basis``, ``n_interactions``, ``n_rbf``,
``n_filters``, ``shared_interactions``, ...). Relative ``data`` paths are
read from the recipe's folder; ``output_dir`` is relative to the current
directory.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from mlcalc.exceptions import MlcalcError, did_you_mean


class RecipeError(MlcalcError, ValueError):
    """A recipe file or override is invalid."""


@dataclass
class DataSection:
    """Where the data is and how it is split and batched.

    ``num_train``/``num_val``/``num_test`` are counts (int) or fractions
    (float in (0, 1]); ``num_test`` None means the rest.
    """

    path: str
    num_train: int | float = 0.8
    num_val: int | float = 0.1
    num_test: int | float | None = None
    split_file: str | None = None
    batch_size: int = 16
    val_batch_size: int | None = None
    num_workers: int = 0
    cache: bool = True


@dataclass
class OutputSpec:
    """Loss and metrics of one trained property."""

    weight: float = 1.0
    loss: Literal["mse", "mae", "huber"] = "mse"
    metrics: list[str] = field(default_factory=lambda: ["mae", "rmse"])
    per_atom: bool = False


@dataclass
class OffsetsSection:
    """Energy offsets removed from targets (restored in float64 by the model).

    ``atomrefs``: ``none``, ``fit`` (least squares on the training split) or
    ``dataset`` (the data set's metadata).
    """

    mean: bool = True
    atomrefs: Literal["none", "fit", "dataset"] = "none"


@dataclass
class TrainSection:
    """Optimizer, schedule and the Lightning trainer settings."""

    max_epochs: int = 100
    optimizer: Literal["adam", "adamw"] = "adamw"
    lr: float = 5e-4
    weight_decay: float = 0.0
    lr_scheduler: Literal["plateau", "cosine", "none"] = "plateau"
    lr_factor: float = 0.5
    lr_patience: int = 10
    warmup_epochs: int = 0
    min_lr: float = 1e-6
    ema_decay: float | None = None
    early_stopping_patience: int | None = 30
    gradient_clip: float | None = 10.0
    seed: int = 0
    accelerator: str = "auto"
    devices: int | str | list = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: int | str = 32
    log_every_n_steps: int = 10
    threads: int | None = None


@dataclass
class ModelSection:
    """Representation by short name, its hyperparameters, network dtype; ``init_from``
    and the keys after it fine-tune a trained model (:mod:`mlcalc.train.finetune`)."""

    representation: str = "painn"
    dtype: Literal["float32", "float64"] = "float32"
    neighbor_list: str = "matscipy"
    init_from: str | None = None
    init_offsets: Literal["keep", "refit"] = "keep"
    freeze_embedding: bool = False
    freeze_interactions: int = 0
    hyperparameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class Recipe:
    """A whole training recipe (see the module docstring)."""

    data: DataSection
    model: ModelSection = field(default_factory=ModelSection)
    outputs: dict[str, OutputSpec] = field(
        default_factory=lambda: {"energy": OutputSpec(0.05, per_atom=True),
                                 "forces": OutputSpec(0.95)})
    offsets: OffsetsSection = field(default_factory=OffsetsSection)
    train: TrainSection = field(default_factory=TrainSection)
    output_dir: str = "runs/mlcalc"
    source: str = field(default="recipe", repr=False)
    folder: str = field(default=".", repr=False)

    def data_path(self) -> Path:
        """The data file, relative paths read from the recipe's folder."""
        path = Path(self.data.path).expanduser()
        return path if path.is_absolute() else Path(self.folder) / path

    def to_dict(self) -> dict[str, Any]:
        """Plain data (as written to the run folder and the model file)."""
        d = dataclasses.asdict(self)
        d.pop("source")
        d.pop("folder")
        hp = d["model"].pop("hyperparameters")
        d["model"].update(hp)
        return d


TRAINABLE = ("energy", "forces", "stress")
_POSITIVE = {"lr", "batch_size", "max_epochs", "num_nodes", "log_every_n_steps", "cutoff",
             "n_atom_basis", "n_interactions", "n_rbf", "val_batch_size", "threads"}
_NON_NEGATIVE = {"weight", "weight_decay", "warmup_epochs", "num_workers", "lr_patience",
                 "min_lr", "gradient_clip", "early_stopping_patience"}
_FRACTION = {"lr_factor", "ema_decay"}


class RecipeChecker:
    """Strict reading of recipe sections: unknown keys, types and ranges fail in one line
    naming ``source`` and the dotted key (shared by fit and learning-loop recipes)."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, message: str) -> typing.NoReturn:
        raise RecipeError(f"{self.source}: {key}: {message}")

    def section(self, cls: type, data: Any, where: str) -> Any:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.fail(where, f"expected a mapping of keys, got {_kind(data)}")
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls) if f.name not in ("source", "folder")]
        def dotted(key: str) -> str:  # where "" is the top level
            return f"{where}.{key}" if where else key

        for key in data:
            if key not in names:
                self.fail(dotted(key), f"unknown key{did_you_mean(str(key), names)}")
        values = {}
        for f in dataclasses.fields(cls):
            if f.name in data:
                values[f.name] = self.value(hints[f.name], data[f.name], dotted(f.name))
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                self.fail(dotted(f.name), "missing required key")
        return cls(**values)

    def value(self, hint: Any, value: Any, key: str) -> Any:
        name = key.rsplit(".", 1)[-1]
        value = self._typed(hint, value, key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            if name in _POSITIVE and not value > 0:
                self.fail(key, f"must be positive, got {value}")
            if name in _NON_NEGATIVE and value < 0:
                self.fail(key, f"must not be negative, got {value}")
            if name in _FRACTION and not 0 < value < 1:
                self.fail(key, f"must lie between 0 and 1, got {value}")
            if name in ("num_train", "num_val", "num_test") and (
                    value <= 0 or (isinstance(value, float) and value > 1)):
                self.fail(key, f"must be a positive count or a fraction in (0, 1], got {value}")
        return value

    def _typed(self, hint: Any, value: Any, key: str) -> Any:
        origin = typing.get_origin(hint)
        if origin in (Union, types.UnionType):
            options = typing.get_args(hint)
            if value is None and type(None) in options:
                return None
            errors = []
            for option in options:
                if option is type(None):
                    continue
                try:
                    return self._typed(option, value, key)
                except RecipeError as err:
                    errors.append(err)
            self.fail(key, f"expected {_describe(hint)}, got {_kind(value)}")
        if origin is Literal:
            choices = typing.get_args(hint)
            if value not in choices:
                hint_text = did_you_mean(str(value), [str(c) for c in choices])
                self.fail(key, f"must be one of {', '.join(map(str, choices))}, got "
                               f"{value!r}{hint_text}")
            return value
        if origin is list:
            if not isinstance(value, list):
                self.fail(key, f"expected a list, got {_kind(value)}")
            (item,) = typing.get_args(hint) or (Any,)
            return [self._typed(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
        if hint is list:
            if not isinstance(value, list):
                self.fail(key, f"expected a list, got {_kind(value)}")
            return value
        if hint is Any:
            return value
        if hint is bool:
            if not isinstance(value, bool):
                self.fail(key, f"expected true or false, got {_kind(value)}")
            return value
        if hint is int:
            if isinstance(value, bool) or not isinstance(value, int):
                self.fail(key, f"expected an integer, got {_kind(value)}")
            return value
        if hint is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                self.fail(key, f"expected a number, got {_kind(value)}")
            return float(value)
        if hint is str:
            if not isinstance(value, str):
                self.fail(key, f"expected a string, got {_kind(value)}")
            return value
        raise TypeError(f"unsupported recipe type {hint!r}")  # a bug in this module


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {value!r}"


def _describe(hint: Any) -> str:
    words = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             list: "a list", type(None): "null"}
    args = typing.get_args(hint)
    return " or ".join(words.get(a, str(a)) for a in args)


def _model_section(checker: RecipeChecker, data: Any) -> ModelSection:
    from mlcalc.representation import REPRESENTATIONS

    data = dict(data or {}) if isinstance(data, dict) or data is None else data
    if not isinstance(data, dict):
        checker.fail("model", f"expected a mapping of keys, got {_kind(data)}")
    own = {k: data.pop(k) for k in ("representation", "dtype", "neighbor_list", "init_from",
                                    "init_offsets", "freeze_embedding", "freeze_interactions")
           if k in data}
    section = checker.section(ModelSection, own, "model")
    if section.freeze_interactions < 0:
        checker.fail("model.freeze_interactions", "must be >= 0")
    if section.init_from is None and (section.freeze_embedding or section.freeze_interactions
                                      or "init_offsets" in own):
        checker.fail("model", "freeze_embedding, freeze_interactions and init_offsets "
                     "fine-tune a trained model: add init_from")
    if section.init_from is not None and not own.get("representation"):
        section.representation = ""  # taken from the init_from file (mlcalc.train.finetune)
        section.hyperparameters = data
        return section
    name = section.representation.lower()
    if name not in REPRESENTATIONS:
        checker.fail("model.representation", f"unknown representation '{section.representation}'"
                     f"{did_you_mean(section.representation, REPRESENTATIONS)}; known: "
                     + ", ".join(sorted(REPRESENTATIONS)))
    from mlcalc.transform.neighbors import NEIGHBOR_LISTS

    if section.neighbor_list not in NEIGHBOR_LISTS:
        checker.fail("model.neighbor_list", f"unknown neighbor list '{section.neighbor_list}'"
                     f"{did_you_mean(section.neighbor_list, NEIGHBOR_LISTS)}")
    params = inspect.signature(REPRESENTATIONS[name].__init__).parameters
    hints = typing.get_type_hints(REPRESENTATIONS[name].__init__)
    allowed = [p for p in params if p != "self"]
    for key, value in data.items():
        if key not in allowed:
            names = allowed + [f.name for f in dataclasses.fields(ModelSection)
                               if f.name != "hyperparameters"]
            checker.fail(f"model.{key}", f"unknown key for {name}{did_you_mean(key, names)}")
        data[key] = checker.value(hints.get(key, Any), value, f"model.{key}")
    section.representation = name
    section.hyperparameters = data
    return section


def parse_recipe(data: Any, source: str = "recipe", folder: str | os.PathLike = ".") -> Recipe:
    """Validate a recipe mapping (as loaded from YAML) into a :class:`Recipe`.

    Raises:
        RecipeError: one line naming ``source`` and the dotted key.
    """
    checker = RecipeChecker(source)
    if not isinstance(data, dict):
        checker.fail("(top level)", f"expected a mapping of sections, got {_kind(data)}")
    sections = ["data", "model", "outputs", "offsets", "train", "output_dir"]
    for key in data:
        if key not in sections:
            checker.fail(str(key), f"unknown key{did_you_mean(str(key), sections)}")
    if "data" not in data:
        checker.fail("data", "missing required section")
    outputs_raw = data.get("outputs", None)
    outputs = None
    if outputs_raw is not None:
        if not isinstance(outputs_raw, dict) or not outputs_raw:
            checker.fail("outputs", "expected a mapping of properties to train on")
        outputs = {}
        for prop, spec in outputs_raw.items():
            if prop not in TRAINABLE:
                checker.fail(f"outputs.{prop}", f"unknown property{did_you_mean(prop, TRAINABLE)}"
                             f"; trainable: {', '.join(TRAINABLE)}")
            outputs[prop] = checker.section(OutputSpec, spec, f"outputs.{prop}")
            for metric in outputs[prop].metrics:
                if metric not in ("mae", "rmse"):
                    checker.fail(f"outputs.{prop}.metrics", f"unknown metric '{metric}'"
                                 f"{did_you_mean(metric, ['mae', 'rmse'])}; known: mae, rmse")
        if "energy" not in outputs:
            checker.fail("outputs", "the energy must be trained (forces and stress derive from it)")
    recipe = Recipe(
        data=checker.section(DataSection, data["data"], "data"),
        model=_model_section(checker, data.get("model")),
        offsets=checker.section(OffsetsSection, data.get("offsets"), "offsets"),
        train=checker.section(TrainSection, data.get("train"), "train"),
        source=source, folder=str(folder),
    )
    if outputs is not None:
        recipe.outputs = outputs
    if "output_dir" in data:
        recipe.output_dir = checker.value(str, data["output_dir"], "output_dir")
    return recipe


def apply_overrides(data: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    """Apply dotted ``key=value`` overrides (values parsed as YAML) to a recipe mapping."""
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"--set {item}: expected KEY=VALUE, e.g. train.max_epochs=5")
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise RecipeError(f"{source}: --set {key}: '{part}' is not a section")
            node = child
        node[parts[-1]] = value
    return data


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe file.

    Raises:
        RecipeError: missing file, YAML syntax error, or invalid content.
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise RecipeError(f"{path.name}: not valid YAML{where}") from None
    data = apply_overrides(data if isinstance(data, dict) else {}, overrides or [], path.name) \
        if overrides else data
    return parse_recipe(data, source=path.name, folder=path.parent)
