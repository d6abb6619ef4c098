"""AtomisticTask (a LightningModule) and ModelOutput: losses and metrics of a fit.

The task ties a :class:`~mlcalc.model.NeuralNetworkPotential` to the
properties it is trained on. Each :class:`ModelOutput` names a property,
its loss, weight and metrics; the task sums the weighted losses, logs
``{split}_loss`` and ``{split}_{property}_{metric}`` per epoch, and keeps
gradients on in validation and test so forces can be evaluated there.

Targets carry their offsets removed (``RemoveOffsets`` in the data
pipeline), so the task calls the model with ``postprocess=False`` in every
split; the model itself is left as it was given. Undefined labels (stored as
NaN: the stress of a slab or a cluster in a data set that also holds bulk
cells) are left out of losses and metrics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torchmetrics
from torch import nn

from mlcalc import properties as P
from mlcalc.exceptions import MlcalcError
from mlcalc.model.potential import NeuralNetworkPotential

LOSSES = {"mse": nn.functional.mse_loss, "mae": nn.functional.l1_loss,
          "huber": nn.functional.huber_loss}
SPLITS = ("train", "val", "test")


class NaNLossError(MlcalcError, FloatingPointError):
    """The training loss became NaN or infinite."""


class ModelOutput(nn.Module):
    """Loss and metrics of one property.

    Args:
        name: property key (``energy``, ``forces``, ``stress``).
        loss_fn: ``mse``, ``mae`` or ``huber``.
        loss_weight: weight of this loss in the total.
        metrics: ``mae`` and/or ``rmse``, accumulated over each epoch.
        per_atom: divide prediction and target by the number of atoms of
            their structure first (energies per atom in eV/atom).
    """

    def __init__(self, name: str, loss_fn: str = "mse", loss_weight: float = 1.0,
                 metrics: Sequence[str] = ("mae", "rmse"), per_atom: bool = False) -> None:
        super().__init__()
        self.name = name
        self.loss_name = loss_fn
        self.loss_fn = LOSSES[loss_fn]
        self.loss_weight = float(loss_weight)
        self.per_atom = per_atom
        factories = {"mae": lambda: torchmetrics.MeanAbsoluteError(),
                     "rmse": lambda: torchmetrics.MeanSquaredError(squared=False)}
        # keyed "<split>_metrics": a bare "train" would shadow nn.Module.train
        self.metrics = nn.ModuleDict({
            f"{split}_metrics": nn.ModuleDict({m: factories[m]() for m in metrics})
            for split in SPLITS})

    def split_metrics(self, split: str) -> nn.ModuleDict:
        """The metric objects of ``split`` (``train``, ``val`` or ``test``)."""
        return self.metrics[f"{split}_metrics"]

    def prepare(self, pred: torch.Tensor, target: torch.Tensor,
                n_atoms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prediction and target in the units the loss compares (float64 target cast)."""
        target = target.to(pred.dtype).reshape(pred.shape)
        if self.per_atom:
            return pred / n_atoms, target / n_atoms
        return pred, target

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss_weight * self.loss_fn(pred, target)

    def update_metrics(self, split: str, pred: torch.Tensor, target: torch.Tensor) -> None:
        for metric in self.split_metrics(split).values():
            metric.update(pred.detach().reshape(-1), target.detach().reshape(-1))


class AtomisticTask(pl.LightningModule):
    """Training of a potential on energies, forces and stress.

    Args:
        model: the potential (called without postprocessing: targets carry
            no offsets).
        outputs: one :class:`ModelOutput` per trained property.
        optimizer: ``adam`` or ``adamw``.
        lr: learning rate.
        weight_decay: decoupled weight decay (``adamw``) or L2 (``adam``).
        lr_scheduler: ``plateau`` (on ``val_loss``), ``cosine`` (with linear
            warm-up over ``warmup_epochs``) or ``none``.
        lr_factor, lr_patience: ReduceLROnPlateau settings.
        warmup_epochs: linear warm-up epochs of the cosine schedule.
        min_lr: lowest learning rate of either schedule.
        max_epochs: length of the cosine schedule.
    """

    def __init__(self, model: NeuralNetworkPotential, outputs: Sequence[ModelOutput],
                 optimizer: str = "adamw", lr: float = 5e-4, weight_decay: float = 0.0,
                 lr_scheduler: str = "plateau", lr_factor: float = 0.5, lr_patience: int = 10,
                 warmup_epochs: int = 0, min_lr: float = 1e-6, max_epochs: int = 100) -> None:
        super().__init__()
        self.model = model
        self.outputs = nn.ModuleList(outputs)
        self.properties = model.check_properties(o.name for o in outputs)
        self.optimizer_name = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.scheduler_name = lr_scheduler
        self.lr_factor = lr_factor
        self.lr_patience = lr_patience
        self.warmup_epochs = warmup_epochs
        self.min_lr = min_lr
        self.max_epochs = max_epochs

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The model's predictions of the trained properties (offsets not restored)."""
        return self.model(batch, self.properties, postprocess=False)

    def _step(self, batch: dict[str, torch.Tensor], split: str) -> torch.Tensor:
        # the model writes predictions under the label keys: keep the targets
        targets = {o.name: batch[o.name] for o in self.outputs}
        with torch.enable_grad():  # forces are derivatives, also in validation
            pred = self(dict(batch))
        n_atoms = batch[P.n_atoms]
        per_atom_counts = n_atoms.to(torch.float64)
        total = torch.zeros((), dtype=torch.float64, device=n_atoms.device)
        present = []  # the outputs this batch has labels of
        for out in self.outputs:
            count = per_atom_counts if pred[out.name].dim() == 1 else per_atom_counts[:, None]
            p, t = out.prepare(pred[out.name], targets[out.name], count)
            defined = torch.isfinite(t)  # NaN: an undefined label (the stress of a slab)
            if not bool(defined.all()):
                p, t = p[defined], t[defined]
            if t.numel() == 0:
                continue  # nothing of this property in the batch (only slabs and clusters)
            loss = out.loss(p.double(), t.double())
            total = total + loss
            out.update_metrics(split, p, t)
            present.append(out)
            self.log(f"{split}_{out.name}_loss", loss, batch_size=len(n_atoms),
                     on_step=False, on_epoch=True, sync_dist=True)
        if split == "train" and not torch.isfinite(total):
            raise NaNLossError(
                f"the training loss became {total.item()} at epoch {self.current_epoch}, "
                f"step {self.global_step}")
        # sync_dist: under DDP the epoch losses are averaged over the processes (so
        # every process checkpoints and stops early on the same number); free otherwise
        self.log(f"{split}_loss", total, batch_size=len(n_atoms), on_step=False, on_epoch=True,
                 prog_bar=split != "test", sync_dist=True)
        for out in present:  # a metric with no data would log NaN
            for name, metric in out.split_metrics(split).items():
                self.log(f"{split}_{out.name}_{name}", metric, on_step=False, on_epoch=True,
                         batch_size=len(n_atoms))
        return total

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "test")

    def configure_optimizers(self) -> Any:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.optimizer_name == "adamw":
            opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        else:
            opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.scheduler_name == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, factor=self.lr_factor, patience=self.lr_patience, min_lr=self.min_lr)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched,
                                                       "monitor": "val_loss", "interval": "epoch"}}
        if self.scheduler_name == "cosine":
            warm = self.warmup_epochs
            span = max(1, self.max_epochs - warm)
            floor = self.min_lr / self.lr

            def factor(epoch: int) -> float:
                if epoch < warm:
                    return (epoch + 1) / (warm + 1)
                progress = min(1.0, (epoch - warm) / span)
                return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

            sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        return opt
