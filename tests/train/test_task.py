"""ModelOutput and AtomisticTask pieces: losses, per-atom scaling, schedules."""

from __future__ import annotations

import pytest
import torch

from mlcalc.model import build_potential
from mlcalc.train.task import AtomisticTask, ModelOutput
from tests.conftest import tiny_model


def test_per_atom_output_divides_by_atom_counts():
    out = ModelOutput("energy", per_atom=True)
    pred, target = out.prepare(torch.tensor([4.0, 9.0]),
                               torch.tensor([2.0, 3.0], dtype=torch.float64),
                               torch.tensor([2.0, 3.0]))
    assert torch.allclose(pred, torch.tensor([2.0, 3.0]))
    assert torch.allclose(target, torch.tensor([1.0, 1.0]))


def test_weighted_losses_and_metrics():
    out = ModelOutput("forces", loss_fn="mae", loss_weight=0.5, metrics=("mae", "rmse"))
    pred, target = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[1.0, 0.0, 3.0]])
    assert out.loss(pred, target).item() == pytest.approx(0.5 * 2.0 / 3.0)
    out.update_metrics("val", pred, target)
    metrics = out.split_metrics("val")
    assert metrics["mae"].compute().item() == pytest.approx(2.0 / 3.0)
    assert metrics["rmse"].compute().item() == pytest.approx((4.0 / 3.0) ** 0.5)


def _lrs(task, epochs):
    config = task.configure_optimizers()
    opt, sched = config["optimizer"], config["lr_scheduler"]["scheduler"]
    values = []
    for _ in range(epochs):
        values.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return values


def test_cosine_schedule_warms_up_then_decays_to_min_lr():
    task = AtomisticTask(tiny_model("schnet"), [ModelOutput("energy")], lr=1e-3,
                         lr_scheduler="cosine", warmup_epochs=3, min_lr=1e-5, max_epochs=13)
    lrs = _lrs(task, 14)
    assert lrs[0] == pytest.approx(0.25e-3) and lrs[2] == pytest.approx(0.75e-3)
    assert lrs[3] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:], strict=False))
    assert lrs[13] == pytest.approx(1e-5)


def test_plateau_schedule_monitors_validation_loss():
    task = AtomisticTask(tiny_model("schnet"), [ModelOutput("energy")], lr_scheduler="plateau")
    config = task.configure_optimizers()
    assert config["lr_scheduler"]["monitor"] == "val_loss"
    assert isinstance(config["lr_scheduler"]["scheduler"],
                      torch.optim.lr_scheduler.ReduceLROnPlateau)


def test_task_calls_the_model_without_postprocessing_for_its_outputs():
    from ase.build import bulk

    from mlcalc.model import atoms_to_batch

    model = build_potential("painn", n_atom_basis=8, n_interactions=1, dtype="float64",
                            offsets={"mean_per_atom": -10.0})
    task = AtomisticTask(model, [ModelOutput("energy"), ModelOutput("forces"),
                                 ModelOutput("stress")])
    assert task.properties == {"energy", "forces", "stress"}
    batch = atoms_to_batch([bulk("Cu", cubic=True)], model)
    model.eval()
    out = task(dict(batch))
    assert set(task.properties) <= set(out)
    bare = model(dict(batch), ["energy"], postprocess=False)["energy"]
    assert out["energy"].item() == bare.item()  # no offsets, although in eval mode
    assert model(dict(batch), ["energy"])["energy"].item() == pytest.approx(bare.item() - 40)
    assert isinstance(task.configure_optimizers(), dict)
