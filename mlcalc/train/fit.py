"""Run a training recipe: data module, potential, AtomisticTask, Lightning trainer.

A run folder holds::

    recipe.yaml          the validated recipe (with overrides applied)
    split.npz            train/val/test indices (reused on --resume)
    checkpoints/         best.ckpt and last.ckpt (Lightning)
    logs/version_N/metrics.csv  CSV log of each session (a resume adds a version,
                         so nothing logged before is overwritten); tensorboard/ likewise
    model.pt             best weights + offsets + metadata (test metrics, data hash, recipe)
    metrics.json         test MAE / RMSE per property
    learning_curve.png, parity_<property>.png
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from mlcalc.exceptions import MlcalcError
from mlcalc.train.recipe import Recipe

UNITS = {"energy": "eV", "energy_per_atom": "eV/atom", "forces": "eV/Ang", "stress": "eV/Ang^3"}


class RunFolderError(MlcalcError, FileExistsError):
    """The run folder holds a run that would be overwritten."""


class FitDataError(MlcalcError, ValueError):
    """The data set cannot make a training run (empty, or no validation structure left)."""


class FitInterrupted(MlcalcError, RuntimeError):
    """Training was stopped by Ctrl-C or SIGTERM; the last checkpoint is kept."""


@dataclass
class FitResult:
    """What a finished fit produced."""

    run_dir: Path
    model_path: Path
    metrics: dict[str, dict[str, float]]
    epochs: int
    #: False in the other processes of a distributed run: only global rank 0 writes
    #: model.pt, metrics.json and the plots (and reports them).
    is_global_zero: bool = True


def file_hash(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (identifies the data a model was trained on)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _prepare_run_dir(recipe: Recipe, run_dir: Path, resume: bool) -> Path | None:
    last = run_dir / "checkpoints" / "last.ckpt"
    if resume:
        if not last.is_file():
            raise RunFolderError(f"cannot resume: {last} does not exist")
        _check_same_model(recipe, run_dir / "recipe.yaml")
        return last
    if last.exists() or (run_dir / "model.pt").exists():
        raise RunFolderError(f"{run_dir} already holds a run; continue it with --resume or "
                             "choose another --output-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    return None


def _check_same_model(recipe: Recipe, saved_path: Path) -> None:
    """A resumed run must build the same network: compare with the run's own recipe."""
    if not saved_path.is_file():
        return
    saved, now = yaml.safe_load(saved_path.read_text()) or {}, recipe.to_dict()
    for section in ("model", "offsets", "outputs"):
        old, new = saved.get(section) or {}, now.get(section) or {}
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                raise RunFolderError(
                    f"cannot resume: {section}.{key} is {old.get(key)!r} in {saved_path} but "
                    f"{new.get(key)!r} in this recipe; resume with the run's own recipe, or "
                    "start a new run in another --output-dir")


def _check_split(dm, split_file: Path, split_existed: bool) -> None:
    """At least one training and one validation structure, before Lightning starts."""
    n_train, n_val = len(dm.train_idx), len(dm.val_idx)
    if n_train and n_val:
        return
    if not split_existed:
        split_file.unlink(missing_ok=True)  # ours and useless: a corrected recipe splits anew
    raise FitDataError(
        f"the split of {len(dm.dataset)} structures leaves {n_train} for training and {n_val} "
        "for validation; training needs at least one of each (give data.num_train and "
        "data.num_val as counts, e.g. num_val: 1)")


def _build_model(recipe: Recipe) -> torch.nn.Module:
    """The untrained potential; elements from the data set, offsets set after the split."""
    from mlcalc.data import ASEAtomsData
    from mlcalc.model import build_potential
    from mlcalc.transform.neighbors import NeighborListSettings

    dataset = ASEAtomsData(recipe.data_path())
    if len(dataset) == 0:
        raise FitDataError(f"data set '{recipe.data.path}' holds no structures")
    dataset.require(list(recipe.outputs))  # fails before training, naming the missing label
    numbers = dataset.numbers_and_labels(range(len(dataset)), "energy")
    elements = sorted({int(z) for zs, _ in numbers for z in zs.tolist()})
    needs_forces = any(p in recipe.outputs for p in ("forces", "stress"))
    if recipe.model.init_from is not None:
        from mlcalc.train.finetune import base_model

        return base_model(recipe, elements, needs_forces)
    return build_potential(recipe.model.representation, **recipe.model.hyperparameters,
                           forces=needs_forces, elements=elements, dtype=recipe.model.dtype,
                           neighbor_list=NeighborListSettings(
                               training=recipe.model.neighbor_list))


def _data_module(recipe: Recipe, split_file: Path, model: torch.nn.Module):
    """Data module whose transforms remove the offsets and build the model's own pairs."""
    from mlcalc.data import AtomsDataModule
    from mlcalc.model import model_neighbor_list
    from mlcalc.transform.offsets import RemoveOffsets

    transforms: list[torch.nn.Module] = []
    remove = None
    if recipe.model.init_from is not None and recipe.model.init_offsets == "keep":
        remove = RemoveOffsets(offsets=model.offsets)  # the fine-tuned model's own
        transforms.append(remove)
    elif recipe.offsets.mean or recipe.offsets.atomrefs != "none":
        remove = RemoveOffsets(remove_mean=recipe.offsets.mean,
                               remove_atomrefs=recipe.offsets.atomrefs == "fit",
                               use_dataset_atomrefs=recipe.offsets.atomrefs == "dataset")
        transforms.append(remove)
    # the data loader builds pairs on CPU, with the backend the recipe names
    transforms.append(model_neighbor_list(model, "cpu", backend=model.neighbor_list.training))
    dm = AtomsDataModule(
        recipe.data_path(), batch_size=recipe.data.batch_size, num_train=recipe.data.num_train,
        num_val=recipe.data.num_val, num_test=recipe.data.num_test, split_file=split_file,
        load_properties=list(recipe.outputs), transforms=transforms,
        val_batch_size=recipe.data.val_batch_size, test_batch_size=recipe.data.val_batch_size,
        num_workers=recipe.data.num_workers, seed=recipe.train.seed, cache=recipe.data.cache)
    dm.setup("fit")
    return dm, remove


def _callbacks(recipe: Recipe, run_dir: Path, progress: bool) -> list[Any]:
    from pytorch_lightning import callbacks as cb

    t = recipe.train
    out: list[Any] = [
        cb.ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val_loss",
                           mode="min", save_top_k=1, save_last=True),
        cb.LearningRateMonitor(logging_interval="epoch"),
    ]
    if t.early_stopping_patience is not None:
        out.append(cb.EarlyStopping(monitor="val_loss", patience=t.early_stopping_patience,
                                    check_finite=True))
    if t.ema_decay is not None:
        out.append(cb.EMAWeightAveraging(decay=t.ema_decay))
    if progress:
        out.append(cb.TQDMProgressBar())
    return out


def fit(recipe: Recipe, output_dir: str | os.PathLike | None = None, resume: bool = False,
        progress: bool = True, callbacks: Sequence[Any] = ()) -> FitResult:
    """Train the recipe's potential and write the run folder (see module docstring).

    Under a distributed strategy (``train.strategy: ddp``) every process runs
    this function; Lightning gives each a disjoint share of the training split
    (its ``DistributedSampler``), the logged losses are averaged over the
    processes, and after training only global rank 0 evaluates the test split
    (in one process, so no structure is counted twice) and writes the outputs.

    Args:
        recipe: a validated recipe.
        output_dir: run folder (default: ``recipe.output_dir``).
        resume: continue from ``checkpoints/last.ckpt`` with the same split.
        progress: show Lightning's progress bar.
        callbacks: extra Lightning callbacks, added after mlcalc's own.

    Raises:
        RunFolderError: the folder holds a run and ``resume`` is False.
        MissingPropertyError: the data lack a trained property.
        NaNLossError: the loss became NaN (``last.ckpt`` keeps the last good epoch).
    """
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from mlcalc.allocator import keep_freed_memory
    from mlcalc.model import save_model
    from mlcalc.train.task import AtomisticTask, ModelOutput, NaNLossError

    keep_freed_memory()  # training steps allocate the same large tensors every batch
    run_dir = Path(output_dir or recipe.output_dir)
    ckpt = _prepare_run_dir(recipe, run_dir, resume)
    t = recipe.train
    if t.threads is not None:
        torch.set_num_threads(t.threads)
    pl.seed_everything(t.seed, workers=True, verbose=False)

    model = _build_model(recipe)
    split_file = Path(recipe.data.split_file) if recipe.data.split_file else run_dir / "split.npz"
    split_existed = split_file.exists()
    dm, remove = _data_module(recipe, split_file, model)
    _check_split(dm, split_file, split_existed)
    if remove is not None:
        model.set_offsets(remove.offsets)  # fitted on the training split by dm.setup
    outputs = [ModelOutput(name, spec.loss, spec.weight, spec.metrics, spec.per_atom)
               for name, spec in recipe.outputs.items()]
    task = AtomisticTask(model, outputs, optimizer=t.optimizer, lr=t.lr,
                         weight_decay=t.weight_decay, lr_scheduler=t.lr_scheduler,
                         lr_factor=t.lr_factor, lr_patience=t.lr_patience,
                         warmup_epochs=t.warmup_epochs, min_lr=t.min_lr,
                         max_epochs=t.max_epochs)
    own = _callbacks(recipe, run_dir, progress)
    trainer = pl.Trainer(
        max_epochs=t.max_epochs, accelerator=t.accelerator, devices=t.devices,
        strategy=t.strategy, num_nodes=t.num_nodes, precision=t.precision,
        gradient_clip_val=t.gradient_clip, callbacks=[*own, *callbacks],
        logger=[CSVLogger(run_dir, name="logs"), TensorBoardLogger(run_dir, name="tensorboard")],
        log_every_n_steps=t.log_every_n_steps, inference_mode=False,
        enable_progress_bar=progress, enable_model_summary=False, default_root_dir=run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    try:
        trainer.fit(task, datamodule=dm, ckpt_path=ckpt)
    except NaNLossError as err:
        kept = f"; the last good checkpoint is {last}" if last.exists() else ""
        raise NaNLossError(f"{err}{kept}") from None
    except (SystemExit, SIGTERMException):
        # Lightning answers Ctrl-C with sys.exit(1) and leaves SIGINT ignored
        signal.signal(signal.SIGINT, signal.default_int_handler)
        kept = (f"; {last} is kept: continue with --resume" if last.exists()
                else "; no epoch had finished, nothing to resume")
        raise FitInterrupted(f"training interrupted at epoch {trainer.current_epoch}"
                             f"{kept}") from None

    checkpoint = own[0]
    best = checkpoint.best_model_path or str(run_dir / "checkpoints" / "last.ckpt")
    tester = _leave_distributed(trainer, recipe)
    if tester is None:  # another process of a distributed run: rank 0 writes the outputs
        return FitResult(run_dir, run_dir / "model.pt", {}, int(trainer.current_epoch), False)
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    task.load_state_dict(state)
    metrics = _test_metrics(tester, task, dm) if len(dm.test_idx) else {}
    model.eval()
    data_path = recipe.data_path()
    metadata = {
        "recipe": recipe.to_dict(),
        "test_metrics": metrics,
        "data_path": recipe.data.path,  # as written in the recipe: no local paths
        "data_hash": file_hash(data_path),
        "n_train": len(dm.train_idx), "n_val": len(dm.val_idx), "n_test": len(dm.test_idx),
        "epochs": int(trainer.current_epoch),
        "best_val_loss": float(checkpoint.best_model_score)
        if checkpoint.best_model_score is not None else None,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    model_path = save_model(model, run_dir / "model.pt", metadata=metadata)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    _plots(run_dir, model, dm, list(recipe.outputs))
    return FitResult(run_dir, model_path, metrics, int(trainer.current_epoch))


def _leave_distributed(trainer, recipe: Recipe):
    """The trainer that evaluates the test split, or None in a process that stops here.

    One process: the training's own trainer. Several: each waits for the others
    and leaves the process group; rank 0 gets a single-device trainer (a test
    under DDP would pad the split with repeated structures, and torchmetrics
    would wait for processes that have gone), the others get None.
    """
    if trainer.world_size == 1:
        return trainer
    import pytorch_lightning as pl
    import torch.distributed as dist

    zero = trainer.is_global_zero
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    if not zero:
        return None
    return pl.Trainer(accelerator=recipe.train.accelerator, devices=1, num_nodes=1,
                      logger=False, enable_progress_bar=False, enable_model_summary=False,
                      inference_mode=False, default_root_dir=trainer.default_root_dir)


def _test_metrics(trainer, task, dm) -> dict[str, dict[str, float]]:
    """Test-split MAE/RMSE per property, with units."""
    (logged,) = trainer.test(task, datamodule=dm, verbose=False)
    metrics: dict[str, dict[str, float]] = {}
    for out in task.outputs:
        unit = UNITS["energy_per_atom"] if out.per_atom else UNITS[out.name]
        entry: dict[str, Any] = {"unit": unit}
        for name in out.split_metrics("test"):
            key = f"test_{out.name}_{name}"
            if key in logged:  # absent: no test structure has the label (stress of slabs)
                entry[name] = float(logged[key])
        if len(entry) > 1:
            metrics[out.name + ("_per_atom" if out.per_atom else "")] = entry
    return metrics


def _plots(run_dir: Path, model, dm, props: list[str]) -> None:
    from mlcalc.model import predict_defined
    from mlcalc.plots import learning_curve, parity_plot

    logs = sorted((run_dir / "logs").glob("version_*/metrics.csv"),
                  key=lambda p: int(p.parent.name.split("_")[1]))
    if logs:
        learning_curve(logs, run_dir / "learning_curve.png")
    idx = dm.test_idx if len(dm.test_idx) else dm.val_idx
    atoms_list = [dm.dataset.get_atoms(int(i)) for i in idx[:500]]
    if not atoms_list:
        return
    preds = predict_defined(model, atoms_list, props)
    for prop in props:
        ref, pred = [], []
        for atoms, res in zip(atoms_list, preds, strict=True):
            if prop not in res or prop not in atoms.calc.results:
                continue  # undefined here (the stress of a slab)
            label = atoms.calc.results[prop]
            scale = len(atoms) if prop == "energy" else 1
            ref.append(np.ravel(label) / scale)
            pred.append(np.ravel(res[prop]) / scale)
        unit = UNITS["energy_per_atom"] if prop == "energy" else UNITS[prop]
        if ref:
            parity_plot(np.concatenate(ref), np.concatenate(pred), prop, unit,
                        run_dir / f"parity_{prop}.png")
