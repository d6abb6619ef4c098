"""The learning-loop recipe: a fit recipe, a committee, a reference, exploration and selection.

::

    fit: {data: {path: data/cu.db, ...}, model: {...}, train: {...}}   # or a fit recipe file
    committee: 3                 # models per iteration (seeds train.seed + k)
    reference: emt               # emt | lj (offline); any ASE calculator from Python
    explore:
      structures: start.xyz      # starting structures (every frame), relative to this file
      ensemble: nvt-langevin     # any mlcalc md ensemble (nve, nvt-bussi, npt, ...)
      temperatures_K: [600, 1200]
      pressures_GPa: [0.0]       # npt only
      steps: 400                 # Langevin MD steps per structure and temperature
      timestep_fs: 2.0
      record_every: 10           # steps between recorded frames
      stop_above: 0.5            # eV/Å: end a trajectory whose spread exceeds it (optional)
    select:
      threshold: 0.05            # eV/Å: frames whose largest per-atom force spread exceeds it
      max_per_iteration: 20
      min_separation: 3          # recorded frames between two selected ones of a trajectory
    iterations: 4
    max_labels: 100              # labelling budget over all iterations (optional)
    output_dir: runs/learn

Keys are strict, as in fit recipes (one line naming the file and the key).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mlcalc.exceptions import MlcalcError
from mlcalc.simulate.md_settings import MDSettings
from mlcalc.train.recipe import Recipe, RecipeChecker, RecipeError, load_recipe, parse_recipe


@dataclass
class ExploreSection:
    """MD with the committee from every starting structure at every temperature (and, for
    ``npt``, every pressure); ``ensemble`` is any of ``mlcalc md``'s."""

    structures: str = ""
    ensemble: str = "nvt-langevin"
    temperatures_K: list[float] = field(default_factory=lambda: [300.0])
    pressures_GPa: list[float] = field(default_factory=lambda: [0.0])
    steps: int = 400
    timestep_fs: float = 2.0
    record_every: int = 10
    friction_per_fs: float = 0.01
    seed: int = 0
    stop_above: float | None = None  #: eV/Å: a trajectory ends once its spread exceeds it


@dataclass
class SelectSection:
    """Which recorded frames are labelled."""

    threshold: float = 0.05
    max_per_iteration: int = 20
    min_separation: int = 3


@dataclass
class _TopLevel:
    """The learning recipe's own top-level keys (checked like every section)."""

    committee: int = 3
    reference: Literal["emt", "lj"] = "emt"
    iterations: int = 4
    max_labels: int | None = None
    output_dir: str = "runs/learn"


@dataclass
class LearnRecipe:
    """A whole learning loop (see the module docstring)."""

    fit: Recipe
    explore: ExploreSection
    select: SelectSection = field(default_factory=SelectSection)
    committee: int = 3
    reference: str = "emt"
    iterations: int = 4
    max_labels: int | None = None
    output_dir: str = "runs/learn"
    folder: str = "."

    def structures_path(self) -> Path:
        """The starting structures, relative paths read from the recipe's folder."""
        path = Path(self.explore.structures).expanduser()
        return path if path.is_absolute() else Path(self.folder) / path


def _positive(checker: RecipeChecker, section: Any, where: str, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(section, name)
        if value is not None and not value > 0:
            checker.fail(f"{where}.{name}", f"must be positive, got {value}")


def parse_learn_recipe(data: Any, source: str = "recipe",
                       folder: str | os.PathLike = ".") -> LearnRecipe:
    """Validate a learning-loop mapping (as loaded from YAML).

    Raises:
        RecipeError: one line naming ``source`` and the dotted key.
    """
    checker = RecipeChecker(source)
    if not isinstance(data, dict):
        checker.fail("(top level)", "expected a mapping of sections")
    for key in ("fit", "explore"):
        if key not in data:
            checker.fail(key, "missing required section")
    fit_spec = data["fit"]
    if isinstance(fit_spec, str):
        fit = load_recipe(Path(folder) / fit_spec)
    else:
        fit = parse_recipe(fit_spec, source=f"{source} (fit)", folder=folder)
    top = {k: v for k, v in data.items() if k not in ("fit", "explore", "select")}
    recipe = checker.section(_TopLevel, top, "")
    explore = checker.section(ExploreSection, data["explore"], "explore")
    select = checker.section(SelectSection, data.get("select"), "select")
    _positive(checker, explore, "explore", ("steps", "timestep_fs", "record_every",
                                            "friction_per_fs", "stop_above"))
    _positive(checker, select, "select", ("max_per_iteration",))
    for where, value in (("select.threshold", select.threshold),
                         ("select.min_separation", select.min_separation),
                         ("max_labels", recipe.max_labels)):
        if value is not None and value < 0:
            checker.fail(where, f"must not be negative, got {value}")
    if recipe.committee < 2:
        checker.fail("committee", f"at least 2 models, got {recipe.committee}")
    if recipe.iterations < 1:
        checker.fail("iterations", f"at least 1, got {recipe.iterations}")
    if not explore.structures:
        checker.fail("explore.structures", "the starting structures are needed")
    try:
        md_settings(explore)  # each condition is checked as mlcalc md checks it
    except MlcalcError as exc:
        checker.fail("explore", str(exc))
    return LearnRecipe(fit=fit, explore=explore, select=select, folder=str(folder),
                       **dataclasses.asdict(recipe))


def md_settings(explore: ExploreSection) -> list[MDSettings]:
    """One MD run's settings per condition: every temperature (x every pressure for npt)."""
    pressures = explore.pressures_GPa if explore.ensemble == "npt" else [0.0]
    return [MDSettings(ensemble=explore.ensemble, steps=explore.steps,
                       timestep_fs=explore.timestep_fs, temperature_K=float(t),
                       pressure_GPa=float(p), friction_per_fs=explore.friction_per_fs,
                       interval=explore.record_every, seed=explore.seed)
            for t in explore.temperatures_K for p in pressures]


def load_learn_recipe(path: str | os.PathLike) -> LearnRecipe:
    """Read and validate a learning-loop recipe file."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        raise RecipeError(f"{path.name}: not valid YAML") from None
    return parse_learn_recipe(data, source=path.name, folder=path.parent)
