"""The learning loop: iterations, data never rewritten, budget, resume after an interrupt."""

from __future__ import annotations

import csv
import hashlib
import re

import ase.io
import pytest
import yaml
from ase.build import bulk
from click.testing import CliRunner

from mlcalc.cli.main import cli
from mlcalc.data import ASEAtomsData
from mlcalc.learn import learn, load_learn_recipe
from mlcalc.learn import loop as loop_module
from mlcalc.train.recipe import RecipeError
from tests.conftest import assert_one_line_error


def write_learn_recipe(folder, db, **changes):
    start = folder / "start.xyz"
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)
    ase.io.write(start, atoms)
    recipe = {
        "fit": {"data": {"path": str(db), "num_train": 18, "num_val": 6, "batch_size": 6},
                "model": {"representation": "painn", "n_atom_basis": 8, "n_interactions": 1,
                          "cutoff": 4.0, "n_rbf": 6},
                "outputs": {"energy": {"weight": 0.5, "per_atom": True},
                            "forces": {"weight": 0.5}},
                "train": {"max_epochs": 2, "lr": 3e-3, "lr_scheduler": "none"}},
        "committee": 2, "reference": "emt",
        "explore": {"structures": "start.xyz", "temperatures_K": [800], "steps": 20,
                    "record_every": 5, "timestep_fs": 2.0},
        "select": {"threshold": 0.0, "max_per_iteration": 2, "min_separation": 1},
        "iterations": 2, "output_dir": str(folder / "loop"),
    }
    recipe.update(changes)
    path = folder / "learn.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_iterations_add_labelled_frames_to_new_data_sets(tmp_path, emt_db):
    before = digest(emt_db)
    rows = learn(load_learn_recipe(write_learn_recipe(tmp_path, emt_db)), report=lambda _: None)
    out = tmp_path / "loop"
    assert [r["iteration"] for r in rows] == [0, 1]
    assert [r["data_size"] for r in rows] == [30, 32]
    assert [r["labels_added"] for r in rows] == [2, 2]
    assert rows[-1]["status"] == "iterations spent"
    assert digest(emt_db) == before  # the starting data are never rewritten
    assert len(ASEAtomsData(out / "iter_000" / "next.db")) == 32
    assert len(ASEAtomsData(out / "iter_001" / "next.db")) == 34
    labelled = ase.io.read(out / "iter_000" / "labelled.extxyz", ":")
    from ase.calculators.emt import EMT
    for atoms in labelled:  # labelled by the reference
        ref = atoms.copy()
        ref.calc = EMT()
        assert atoms.get_potential_energy() == pytest.approx(ref.get_potential_energy())
    explored = ase.io.read(out / "iter_000" / "explored.extxyz", ":")
    assert [a.info["step"] for a in explored] == [0, 5, 10, 15, 20]
    assert all(a.info["max_force_std"] > 0 for a in explored)
    assert all(r["heldout_force_mae"] > 0 for r in rows)
    with open(out / "learn.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 2
    assert (out / "learn.png").stat().st_size > 0


def test_more_iterations_continue_a_finished_loop(tmp_path, emt_db):
    path = write_learn_recipe(tmp_path, emt_db, iterations=1)
    first = learn(load_learn_recipe(path), report=lambda _: None)
    assert first[-1]["status"] == "iterations spent"
    model = tmp_path / "loop" / "iter_000" / "committee" / "member_0" / "model.pt"
    trained = digest(model)
    rows = learn(load_learn_recipe(write_learn_recipe(tmp_path, emt_db, iterations=2)),
                 report=lambda _: None)
    assert [r["status"] for r in rows] == ["continue", "iterations spent"]
    assert digest(model) == trained  # iteration 0 kept as it was
    with open(tmp_path / "loop" / "learn.csv") as fh:
        assert [r["status"] for r in csv.DictReader(fh)] == ["continue", "iterations spent"]


def test_a_quiet_exploration_stops_the_loop(tmp_path, emt_db):
    recipe = write_learn_recipe(tmp_path, emt_db, iterations=3,
                                select={"threshold": 100.0, "max_per_iteration": 2})
    rows = learn(load_learn_recipe(recipe), report=lambda _: None)
    assert len(rows) == 1 and rows[0]["status"] == "converged"
    assert rows[0]["labels_added"] == 0


def test_the_labelling_budget_stops_the_loop(tmp_path, emt_db):
    recipe = write_learn_recipe(tmp_path, emt_db, iterations=3, max_labels=3)
    rows = learn(load_learn_recipe(recipe), report=lambda _: None)
    assert [r["labels_added"] for r in rows] == [2, 1]
    assert rows[-1]["status"] == "budget spent"


def test_an_interrupted_loop_continues_where_it_stopped(tmp_path, emt_db, monkeypatch):
    recipe = load_learn_recipe(write_learn_recipe(tmp_path, emt_db))
    calls = []
    real_label = loop_module.steps.label

    def interrupted(frames, reference):
        calls.append(len(frames))
        if len(calls) == 2:  # in iteration 1, after its committee and exploration
            raise KeyboardInterrupt
        return real_label(frames, reference)

    monkeypatch.setattr(loop_module.steps, "label", interrupted)
    with pytest.raises(KeyboardInterrupt):
        learn(recipe, report=lambda _: None)
    out = tmp_path / "loop"
    member = out / "iter_001" / "committee" / "member_0" / "model.pt"
    trained = digest(member)
    explored = digest(out / "iter_001" / "explored.extxyz")
    monkeypatch.setattr(loop_module.steps, "label", real_label)
    fits = []
    real_fit = loop_module.__dict__.get("fit_committee")
    assert real_fit is None  # imported inside learn(); spy on the module it comes from
    import mlcalc.train.committee as committee_module
    original = committee_module.fit_committee
    monkeypatch.setattr(committee_module, "fit_committee",
                        lambda *a, **k: fits.append(a) or original(*a, **k))
    rows = learn(recipe, report=lambda _: None)
    assert [r["iteration"] for r in rows] == [0, 1] and not fits  # nothing retrained
    assert digest(member) == trained
    assert digest(out / "iter_001" / "explored.extxyz") == explored


def test_cli_runs_and_bad_recipes_are_one_line(tmp_path, emt_db):
    recipe = write_learn_recipe(tmp_path, emt_db, iterations=1)
    result = CliRunner().invoke(cli, ["learn", str(recipe)])
    assert result.exit_code == 0, result.output
    assert "iterations spent after 1 iteration(s)" in result.output
    bad = write_learn_recipe(tmp_path, emt_db, reference="dft")
    assert_one_line_error(CliRunner().invoke(cli, ["learn", str(bad)]),
                          "reference: must be one of emt, lj, got 'dft'")
    for changes, message in (
            ({"explore": {"structures": "s.xyz", "steps": "fast"}},
             "explore.steps: expected an integer, got str 'fast'"),
            ({"explore": {"structures": "s.xyz", "temperatures_K": "hot"}},
             "explore.temperatures_K: expected a list"),
            ({"explore": {"structures": "s.xyz", "record_every": 0}},
             "explore.record_every: must be positive, got 0"),
            ({"output_dir": 3}, "output_dir: expected a string, got int 3"),
            ({"comittee": 2}, "comittee: unknown key (did you mean 'committee'?)")):
        with pytest.raises(RecipeError, match=re.escape(message)):
            load_learn_recipe(write_learn_recipe(tmp_path, emt_db, **changes))
    with pytest.raises(RecipeError, match="explore: unknown ensemble 'nvt-langevn'"):
        load_learn_recipe(write_learn_recipe(tmp_path, emt_db, explore={
            "structures": "s.xyz", "ensemble": "nvt-langevn"}))
    with pytest.raises(RecipeError, match="explore.step: unknown key"):
        load_learn_recipe(write_learn_recipe(tmp_path, emt_db, explore={"structures": "s.xyz",
                                                                         "step": 3}))


def test_the_shipped_quick_recipe_validates():
    from pathlib import Path

    root = Path(__file__).parents[2]
    recipe = load_learn_recipe(root / "recipes" / "learn-quick.yaml")
    assert recipe.structures_path().resolve() == (root / "examples" / "cu_fcc.xyz").resolve()
    assert recipe.fit.data_path().parent.resolve() == (root / "recipes" / "data").resolve()
    assert recipe.committee >= 2 and recipe.reference == "emt"


def test_learn_help_does_not_import_torch():
    from tests.conftest import help_without_torch

    assert "learn" in help_without_torch() and "RECIPE" in help_without_torch("learn")


def test_npt_exploration_records_every_temperature_and_pressure(tmp_path, emt_db):
    """Any mlcalc md ensemble explores: npt at two pressures changes the cell."""
    recipe = write_learn_recipe(tmp_path, emt_db, iterations=1, explore={
        "structures": "start.xyz", "ensemble": "npt", "temperatures_K": [600],
        "pressures_GPa": [0.0, 5.0], "steps": 10, "record_every": 5, "timestep_fs": 2.0})
    learn(load_learn_recipe(recipe), report=lambda _: None)
    explored = ase.io.read(tmp_path / "loop" / "iter_000" / "explored.extxyz", ":")
    assert [(a.info["trajectory"], a.info["pressure_GPa"]) for a in explored] == [
        (0, 0.0), (0, 0.0), (0, 0.0), (1, 5.0), (1, 5.0), (1, 5.0)]
    assert explored[-1].get_volume() != pytest.approx(explored[0].get_volume(), rel=1e-9)
