"""Train a committee: N models of one recipe with different seeds, one folder.

Member ``k`` trains in ``<dir>/member_k`` with ``train.seed + k`` (its own
initial weights and batch order) on member 0's split, so every member is
tested on the same structures. When all are trained, ``<dir>/committee.json``
names them and the folder loads as one ensemble (see
:mod:`mlcalc.model.committee`). An interrupted committee continues with
``resume=True``: finished members are kept, an unfinished one resumes from its
last checkpoint, missing ones start.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from mlcalc.exceptions import EnsembleError
from mlcalc.files import written_whole
from mlcalc.model.committee import COMMITTEE_FILE, write_committee
from mlcalc.train.fit import FitResult, RunFolderError, fit
from mlcalc.train.recipe import Recipe


def member_recipe(recipe: Recipe, k: int, folder: Path, bootstrap: bool = False) -> Recipe:
    """Member ``k``'s recipe: seed ``train.seed + k``, member 0's split file (with
    ``bootstrap``, its own resample of the committee's split, see :func:`bootstrap_split`)."""
    if bootstrap:
        split = str(bootstrap_split(recipe, k, folder))
    else:
        split = recipe.data.split_file or str(folder / "member_0" / "split.npz")
    return dataclasses.replace(
        recipe, output_dir=str(folder / f"member_{k}"),
        train=dataclasses.replace(recipe.train, seed=recipe.train.seed + k),
        data=dataclasses.replace(recipe.data, split_file=split))


def bootstrap_split(recipe: Recipe, k: int, folder: Path) -> Path:
    """Member ``k``'s split: the committee's validation and test structures, and a training
    set drawn from the committee's training structures with replacement (as many, seed
    ``train.seed + k``). The committee's split is ``folder/split.npz`` (or the recipe's)."""
    import numpy as np

    from mlcalc.data import AtomsDataModule

    path = folder / f"member_{k}" / "split.npz"
    if path.is_file():
        return path
    d = recipe.data
    base = AtomsDataModule(recipe.data_path(), batch_size=d.batch_size, num_train=d.num_train,
                           num_val=d.num_val, num_test=d.num_test,
                           split_file=d.split_file or folder / "split.npz",
                           seed=recipe.train.seed).split_indices()
    train = np.random.default_rng(recipe.train.seed + k).choice(
        base["train"], size=len(base["train"]), replace=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with written_whole(path) as tmp:
        np.savez(tmp, train_idx=np.sort(train), val_idx=base["val"], test_idx=base["test"])
    return path


def fit_committee(recipe: Recipe, n_members: int, output_dir: str | os.PathLike | None = None,
                  resume: bool = False, progress: bool = True,
                  bootstrap: bool = False) -> list[FitResult]:
    """Train ``n_members`` models of ``recipe`` and write the committee folder.

    Args:
        recipe: a validated recipe.
        n_members: committee size (at least 2).
        output_dir: the committee folder (default: ``recipe.output_dir``).
        resume: continue an interrupted committee.
        progress: show Lightning's progress bar.
        bootstrap: every member trains on its own resample of the training split
            (:func:`bootstrap_split`) instead of the split itself.

    Returns:
        Each member's :class:`~mlcalc.train.fit.FitResult`, in order.

    Raises:
        EnsembleError: fewer than 2 members.
        RunFolderError: the folder holds a committee (or a member's run) and
            ``resume`` is False.
    """
    if n_members < 2:
        raise EnsembleError(f"a committee needs at least 2 members, not {n_members}")
    folder = Path(output_dir or recipe.output_dir)
    if (folder / COMMITTEE_FILE).exists() and not resume:
        raise RunFolderError(f"{folder} already holds a committee; continue it with --resume "
                             "or choose another --output-dir")
    results = []
    for k in range(n_members):
        member = member_recipe(recipe, k, folder, bootstrap)
        run_dir = Path(member.output_dir)
        if resume and (run_dir / "model.pt").is_file():
            results.append(_finished(run_dir))
            continue
        again = resume and (run_dir / "checkpoints" / "last.ckpt").is_file()
        results.append(fit(member, run_dir, resume=again, progress=progress))
    if all(r.is_global_zero for r in results):
        write_committee(folder, [r.model_path for r in results],
                        [recipe.train.seed + k for k in range(n_members)])
    return results


def _finished(run_dir: Path) -> FitResult:
    """The result of a member trained before (its model.pt and metrics.json)."""
    from mlcalc.model.io import read_model_file

    metrics_file = run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    metadata = read_model_file(run_dir / "model.pt").get("metadata") or {}
    epochs = int(metadata.get("epochs", 0))
    return FitResult(run_dir, run_dir / "model.pt", metrics, epochs)
