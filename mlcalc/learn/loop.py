"""The learning loop: train a committee, explore, select, label, add, repeat.

Iteration ``k`` lives in ``OUTPUT_DIR/iter_k``::

    data.db            the data it trains on (k = 0: the fit recipe's own, read only)
    committee/         the committee trained on it (mlcalc.train.committee)
    explored.extxyz    the recorded MD frames with their force spread
    selected.extxyz    the frames chosen for labelling
    labelled.extxyz    those frames with the reference's energy, forces, stress
    row.json           the iteration's line of the table

and the next iteration's ``data.db`` is this one's plus the labelled frames
(a new file: no data set is ever rewritten). Every file is written whole and
then renamed, so an interrupted loop run again continues at the step it was
in. ``learn.csv`` and ``learn.png`` hold the table over the iterations. The
loop stops when an exploration stays below the threshold, or when the
iterations or the labelling budget are spent.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from ase.calculators.calculator import Calculator

from mlcalc.exceptions import MlcalcError
from mlcalc.files import written_whole
from mlcalc.learn import explore as steps
from mlcalc.learn.recipe import LearnRecipe

COLUMNS = ("iteration", "data_size", "max_force_std", "mean_force_std", "n_above",
           "heldout_force_mae", "labels_added", "status")


def learn(recipe: LearnRecipe, reference: Calculator | None = None,
          report: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run (or continue) the loop of ``recipe``; returns the table's rows.

    Args:
        recipe: a validated :class:`~mlcalc.learn.recipe.LearnRecipe`.
        reference: the labelling calculator (any ASE calculator, e.g. a DFT
            code); default: the recipe's offline ``reference``.
        report: called with one line per finished step.
    """
    import ase.io

    from mlcalc.data import ASEAtomsData
    from mlcalc.model.committee import COMMITTEE_FILE
    from mlcalc.train.committee import fit_committee

    out = Path(recipe.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    reference = reference or steps.reference_calculator(recipe.reference)
    starts = ase.io.read(recipe.structures_path(), ":")
    data = recipe.fit.data_path()
    rows: list[dict[str, Any]] = []
    for k in range(recipe.iterations):
        it = out / f"iter_{k:03d}"
        row_file = it / "row.json"
        if row_file.is_file():  # done in an earlier run; its status under this recipe
            row = json.loads(row_file.read_text())
            row["status"] = _status(recipe, k, row["n_above"], row["labels_added"],
                                    _budget(recipe, rows))
            rows.append(row)
            data = it / "next.db" if (it / "next.db").is_file() else data
            if row["status"] != "continue":
                break
            continue
        it.mkdir(exist_ok=True)
        committee = it / "committee"
        if not (committee / COMMITTEE_FILE).is_file():
            fit = dataclasses.replace(recipe.fit, data=dataclasses.replace(
                recipe.fit.data, path=str(Path(data).resolve()), split_file=None))
            fit_committee(fit, recipe.committee, committee, resume=committee.exists(),
                          progress=False)
            report(f"iteration {k}: trained a committee of {recipe.committee} on {data}")
        explored = _step(it / "explored.extxyz", steps.explore, starts, committee,
                         recipe.explore)
        budget = _budget(recipe, rows)
        selected = _step(it / "selected.extxyz", steps.select, explored, recipe.select, budget)
        labelled = _step(it / "labelled.extxyz", steps.label, selected, reference)
        if not explored:
            raise MlcalcError(f"{it / 'explored.extxyz'}: the exploration recorded no frame "
                              "(non-finite forces from the first step?)")
        spreads = np.array([f.info[steps.SPREAD] for f in explored])
        n_above = int((spreads > recipe.select.threshold).sum())
        size = len(ASEAtomsData(data))
        if labelled:
            nxt = it / "next.db"
            if not nxt.is_file():
                with written_whole(nxt) as tmp:
                    shutil.copyfile(data, tmp)
                    grown = ASEAtomsData(tmp)
                    grown.add_systems(labelled, _labels(labelled, grown))
            data = nxt
        status = _status(recipe, k, n_above, len(labelled), budget)
        row = {"iteration": k, "data_size": size, "max_force_std": float(spreads.max()),
               "mean_force_std": float(spreads.mean()), "n_above": n_above,
               "heldout_force_mae": _heldout_mae(committee, labelled),
               "labels_added": len(labelled), "status": status}
        _write_json(row_file, row)
        rows.append(row)
        _table(out, rows)
        report(f"iteration {k}: {size} structures, force spread max {row['max_force_std']:.3f} "
               f"mean {row['mean_force_std']:.3f} eV/Å, {n_above} frames above "
               f"{recipe.select.threshold:g}, {len(labelled)} labelled ({status})")
        if status != "continue":
            break
    _table(out, rows)
    return rows


def _budget(recipe: LearnRecipe, rows: list[dict[str, Any]]) -> int | None:
    """Labels still allowed before the iteration after ``rows`` (None: no budget)."""
    if recipe.max_labels is None:
        return None
    return recipe.max_labels - sum(r["labels_added"] for r in rows)


def _status(recipe: LearnRecipe, k: int, n_above: int, labelled: int,
            budget: int | None) -> str:
    """Whether the loop goes on after iteration ``k``, and if not, why."""
    if n_above == 0:
        return "converged"
    if budget is not None and budget <= labelled:
        return "budget spent"
    return "iterations spent" if k >= recipe.iterations - 1 else "continue"


def _step(path: Path, make: Callable[..., list], *args: Any) -> list:
    """A step's frames: read if an earlier run wrote them, else ``make(*args)``, written."""
    if path.is_file():
        return steps.read_frames(path)
    frames = make(*args)
    steps.write_frames(path, frames)
    return frames


def _labels(frames, dataset) -> list[dict[str, Any]]:
    """The labels add_systems stores: every declared property, NaN stress where undefined."""
    out = []
    for atoms in frames:
        labels = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        if "stress" in dataset.units:
            labels["stress"] = (atoms.get_stress() if atoms.pbc.all()
                                else np.full(6, np.nan))
        out.append(labels)
    return out


def _heldout_mae(committee: Path, labelled) -> float | None:
    """The committee's force MAE (eV/Å) against the reference on the frames it was uncertain
    about, before they join the data."""
    if not labelled:
        return None
    from mlcalc.calculator import MLCalculator

    calc = MLCalculator(str(committee))
    errors = [np.abs(calc.get_forces(a.copy()) - a.get_forces()).mean() for a in labelled]
    return float(np.mean(errors))


def _write_json(path: Path, value: dict) -> None:
    with written_whole(path) as tmp:
        tmp.write_text(json.dumps(value, indent=2) + "\n")


def _table(out: Path, rows: list[dict[str, Any]]) -> None:
    """learn.csv and learn.png over the iterations so far."""
    with written_whole(out / "learn.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    if rows:
        from mlcalc.plots import learning_loop_plot

        learning_loop_plot(rows, out / "learn.png")
