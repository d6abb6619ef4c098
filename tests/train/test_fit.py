"""mlcalc fit: a whole training run through the command line, on tiny data."""

from __future__ import annotations

import csv
import json
import signal

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from mlcalc import MLCalculator
from mlcalc.cli.main import cli
from mlcalc.testing import TOLERANCES


def write_recipe(folder, db, **changes) -> str:
    recipe = {
        "data": {"path": str(db), "num_train": 18, "num_val": 6, "batch_size": 6},
        "model": {"representation": "painn", "n_atom_basis": 12, "n_interactions": 2,
                  "cutoff": 4.0, "n_rbf": 8},
        "outputs": {"energy": {"weight": 0.2, "per_atom": True}, "forces": {"weight": 0.8}},
        "train": {"max_epochs": 2, "lr": 3e-3, "log_every_n_steps": 1, "lr_scheduler": "none"},
        "output_dir": str(folder / "run"),
    }
    for key, value in changes.items():
        if "__" not in key:  # a whole section
            recipe[key] = value
            continue
        section, name = key.split("__")
        recipe[section][name] = value
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def run(*args):
    result = CliRunner().invoke(cli, list(args))
    return result


def epoch_losses(run_dir, key):
    values = []
    for path in sorted((run_dir / "logs").glob("version_*/metrics.csv")):
        with open(path) as fh:
            values += [float(r[key]) for r in csv.DictReader(fh) if r.get(key)]
    return values


def test_fit_two_epochs_writes_a_usable_model(tmp_path, emt_db):
    recipe = write_recipe(tmp_path, emt_db, train__max_epochs=3)
    result = run("fit", recipe, "--no-progress")
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "run"
    losses = epoch_losses(run_dir, "train_loss")
    assert len(losses) == 3 and losses[-1] < losses[0]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == {"energy_per_atom", "forces"}
    assert metrics["forces"]["unit"] == "eV/Ang" and metrics["forces"]["mae"] > 0
    for name in ("model.pt", "split.npz", "recipe.yaml", "learning_curve.png",
                 "parity_energy.png", "parity_forces.png", "checkpoints/best.ckpt",
                 "checkpoints/last.ckpt"):
        assert (run_dir / name).exists(), name
    assert list((run_dir / "tensorboard").glob("version_0/events.out.tfevents*"))
    # the model loads into the calculator, which gives the library's numbers
    from mlcalc import load_model
    from mlcalc.data import ASEAtomsData
    from mlcalc.model import predict

    atoms = ASEAtomsData(emt_db).get_atoms(0)
    calc = MLCalculator(run_dir / "model.pt")
    atoms.calc = calc
    expected = predict(load_model(run_dir / "model.pt"), atoms, ["energy", "forces"])[0]
    # float32 network: the calculator's pair order differs from predict's (Verlet list)
    tol = TOLERANCES[torch.float32]
    assert atoms.get_potential_energy() == pytest.approx(expected["energy"], abs=tol["energy"])
    np.testing.assert_allclose(atoms.get_forces(), expected["forces"], atol=tol["forces"])
    info = calc.model.metadata
    assert info["test_metrics"] == metrics and len(info["data_hash"]) == 64
    assert info["recipe"]["model"]["n_atom_basis"] == 12
    assert calc.elements == [29]


def test_offsets_restored_exactly_in_float64(tmp_path, emt_db):
    from mlcalc import load_model
    from mlcalc.model import atoms_to_batch, predict

    recipe = write_recipe(tmp_path, emt_db, train__max_epochs=1)
    assert run("fit", recipe, "--no-progress").exit_code == 0
    model = load_model(tmp_path / "run" / "model.pt")
    assert model.dtype == torch.float32
    from mlcalc.data import ASEAtomsData

    atoms = ASEAtomsData(emt_db).get_atoms(3)
    with_offsets = predict(model, atoms, ["energy"])[0]["energy"]
    batch = atoms_to_batch([atoms], model)
    bare = model(batch, ["energy"], postprocess=False)["energy"].item()
    offset = model.offsets.mean_per_atom * len(atoms)
    assert with_offsets == bare + offset  # float64 addition, bit for bit


def test_resume_after_interrupt_ends_at_same_epoch_with_same_split(tmp_path, emt_db,
                                                                   monkeypatch):
    import pytorch_lightning as pl

    import mlcalc.train.fit as fitmod

    class Interrupt(pl.Callback):
        def on_train_epoch_start(self, trainer, module):
            if trainer.current_epoch == 2:
                raise KeyboardInterrupt

    original = fitmod._callbacks
    monkeypatch.setattr(fitmod, "_callbacks",
                        lambda *a: [*original(*a), Interrupt()])
    recipe = write_recipe(tmp_path, emt_db, train__max_epochs=4)
    try:
        result = run("fit", recipe, "--no-progress")
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert result.exit_code == 1
    assert "training interrupted at epoch 2" in result.output
    assert "continue with --resume" in result.output
    assert "Traceback" not in result.output
    run_dir = tmp_path / "run"
    split_before = dict(np.load(run_dir / "split.npz"))
    assert not (run_dir / "model.pt").exists()
    monkeypatch.setattr(fitmod, "_callbacks", original)
    result = run("fit", recipe, "--no-progress", "--resume")
    assert result.exit_code == 0, result.output
    assert "after 4 epochs" in result.output
    split_after = dict(np.load(run_dir / "split.npz"))
    for key in split_before:
        np.testing.assert_array_equal(split_before[key], split_after[key])
    assert len(epoch_losses(run_dir, "val_loss")) == 4


def test_nan_loss_stops_with_message_and_keeps_checkpoint(tmp_path, emt_db, monkeypatch):
    import pytorch_lightning as pl

    import mlcalc.train.fit as fitmod

    class Poison(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.current_epoch == 1:
                with torch.no_grad():
                    next(module.parameters()).fill_(float("nan"))

    original = fitmod._callbacks
    monkeypatch.setattr(fitmod, "_callbacks", lambda *a: [*original(*a), Poison()])
    recipe = write_recipe(tmp_path, emt_db, train__max_epochs=3)
    result = run("fit", recipe, "--no-progress")
    assert result.exit_code == 1
    assert "the training loss became nan at epoch 1" in result.output
    assert "the last good checkpoint is" in result.output
    assert "Traceback" not in result.output
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values()
               if v.is_floating_point())


def test_missing_property_fails_before_training(tmp_path, emt_db):
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from mlcalc.data import ASEAtomsData

    db = tmp_path / "energy_only.db"
    data = ASEAtomsData.create(db, property_unit_dict={"energy": "eV"})
    atoms = bulk("Cu", cubic=True)
    atoms.calc = EMT()
    data.add_systems([atoms] * 4)
    recipe = write_recipe(tmp_path, db)
    result = run("fit", recipe, "--no-progress")
    assert result.exit_code == 1
    assert "has no property 'forces'" in result.output
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_existing_run_is_not_overwritten(tmp_path, emt_db):
    recipe = write_recipe(tmp_path, emt_db, train__max_epochs=1)
    assert run("fit", recipe, "--no-progress").exit_code == 0
    before = (tmp_path / "run" / "model.pt").read_bytes()
    result = run("fit", recipe, "--no-progress")
    assert result.exit_code == 1 and "already holds a run" in result.output
    assert (tmp_path / "run" / "model.pt").read_bytes() == before


@pytest.mark.parametrize("override, message", [
    ("train.lr_sheduler=cosine", "train.lr_sheduler: unknown key (did you mean 'lr_scheduler'?)"),
    ("train.lr=-1", "train.lr: must be positive"),
    ("model.representation=pain", "did you mean 'painn'"),
])
def test_recipe_errors_are_one_line(tmp_path, emt_db, override, message):
    recipe = write_recipe(tmp_path, emt_db)
    result = run("fit", recipe, "--set", override)
    assert result.exit_code == 1
    assert message in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


def _cu_cells(n: int, seed: int = 0):
    from ase.build import bulk
    from ase.calculators.emt import EMT

    cells = []
    for k in range(n):
        atoms = bulk("Cu", cubic=True) * (2, 1, 1)
        atoms.rattle(0.05, seed=seed + k)
        atoms.calc = EMT()
        cells.append(atoms)
    return cells


def test_empty_data_set_is_one_line(tmp_path):
    from mlcalc.data import ASEAtomsData

    db = tmp_path / "empty.db"
    ASEAtomsData.create(db, property_unit_dict={"energy": "eV", "forces": "eV/Ang"})
    result = run("fit", write_recipe(tmp_path, db), "--no-progress")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip() == f"Error: data set '{db}' holds no structures"


def test_a_split_without_validation_structures_is_refused_before_training(tmp_path):
    from mlcalc.data import ASEAtomsData

    db = tmp_path / "three.db"
    ASEAtomsData.create(db, property_unit_dict={"energy": "eV", "forces": "eV/Ang"}
                        ).add_systems(_cu_cells(3))
    recipe = write_recipe(tmp_path, db, data__num_train=0.7, data__num_val=0.2)
    result = run("fit", recipe, "--no-progress")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "leaves 2 for training and 0 for validation" in result.output
    assert not (tmp_path / "run" / "split.npz").exists()  # the corrected recipe splits anew
    assert not (tmp_path / "run" / "checkpoints").exists()
    fixed = write_recipe(tmp_path, db, data__num_train=2, data__num_val=1,
                         train__max_epochs=1)
    assert run("fit", fixed, "--no-progress").exit_code == 0


def test_resume_with_another_model_is_refused_naming_the_key(tmp_path, emt_db):
    recipe = write_recipe(tmp_path, emt_db, train__max_epochs=1)
    assert run("fit", recipe, "--no-progress").exit_code == 0
    before = (tmp_path / "run" / "checkpoints" / "last.ckpt").read_bytes()
    result = run("fit", recipe, "--no-progress", "--resume", "--set", "model.n_atom_basis=16")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "cannot resume: model.n_atom_basis is 12" in result.output and "16" in result.output
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").read_bytes() == before


def test_a_plain_ase_database_with_calculator_results_trains(tmp_path):
    """How DFT workflows store results: db.write(atoms) with a calculator attached."""
    import ase.db

    db_path = tmp_path / "plain.db"
    with ase.db.connect(db_path) as db:
        for atoms in _cu_cells(12):
            atoms.get_stress()
            db.write(atoms)
    recipe = write_recipe(tmp_path, db_path, data__num_train=8, data__num_val=2,
                          train__max_epochs=1)
    result = run("fit", recipe, "--no-progress")
    assert result.exit_code == 0, result.output
    from mlcalc.data import ASEAtomsData

    data = ASEAtomsData(db_path)
    assert {"energy", "forces", "stress"} <= set(data.available_properties)
    atoms = data.get_atoms(3)
    reference = _cu_cells(12)[3]
    assert atoms.calc.results["energy"] == pytest.approx(reference.get_potential_energy())
    np.testing.assert_allclose(atoms.calc.results["forces"], reference.get_forces())


def test_bulk_slabs_and_clusters_train_together_with_stress_where_defined(tmp_path):
    """Stress is undefined (NaN) for slabs and clusters: left out of the loss, the
    metrics and the parity plot; the gradients stay finite."""
    from mlcalc.data.generate import generate_emt

    db = tmp_path / "mixed.db"
    generate_emt(db, kinds={"bulk": 8, "surface": 6, "cluster": 6}, supercell=(1, 1, 1),
                 seed=1)
    recipe = write_recipe(tmp_path, db, data__num_train=12, data__num_val=4,
                          train__max_epochs=2, outputs={
                              "energy": {"weight": 0.2, "per_atom": True},
                              "forces": {"weight": 0.7}, "stress": {"weight": 0.1}})
    result = run("fit", recipe, "--no-progress")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics) == {"energy_per_atom", "forces", "stress"}
    assert all(np.isfinite(v) for m in metrics.values() for k, v in m.items() if k != "unit")
    losses = epoch_losses(tmp_path / "run", "train_loss")
    assert len(losses) == 2 and np.isfinite(losses).all()
    assert (tmp_path / "run" / "parity_stress.png").is_file()


def test_a_training_step_on_a_mixed_batch_has_finite_gradients(message_path):
    from ase.build import bulk, fcc111

    from mlcalc.model import atoms_to_batch
    from mlcalc.train.task import AtomisticTask, ModelOutput
    from tests.conftest import tiny_model

    cluster = bulk("Cu", cubic=True)
    cluster.pbc, cluster.cell = False, None
    structures = [bulk("Cu", cubic=True), fcc111("Cu", (2, 2, 3), vacuum=4.0), cluster]
    for atoms in structures:
        atoms.rattle(0.05, seed=1)
    model = tiny_model("painn", torch.float64).train()
    task = AtomisticTask(model, [ModelOutput("energy"), ModelOutput("stress")])
    batch = atoms_to_batch(structures, model)
    batch["energy"] = torch.zeros(3, dtype=torch.float64)
    batch["stress"] = torch.tensor([[0.01] * 6, [float("nan")] * 6, [float("nan")] * 6],
                                   dtype=torch.float64)
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")
        loss = task.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    out = model(atoms_to_batch(structures, model), ["energy", "stress"])
    assert torch.isfinite(out["stress"][0]).all() and torch.isnan(out["stress"][1:]).all()
