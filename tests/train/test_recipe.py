"""Recipe files: every shipped recipe validates; errors are one precise line."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlcalc.train.recipe import RecipeError, load_recipe, parse_recipe

RECIPES = sorted(p for p in (Path(__file__).parents[2] / "recipes").glob("*.yaml")
                 if not p.stem.startswith("learn"))  # learning loops: tests/learn


def test_recipes_exist():
    names = {p.stem for p in RECIPES}
    assert {"quickstart", "painn", "schnet", "alloy", "cluster", "stress"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_shipped_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.data_path().parent == path.parent / "data"
    assert "energy" in recipe.outputs


def base(**sections):
    data = {"data": {"path": "x.db"}}
    data.update(sections)
    return data


@pytest.mark.parametrize("data, message", [
    (base(train={"lr_sheduler": "cosine"}),
     "recipe.yaml: train.lr_sheduler: unknown key (did you mean 'lr_scheduler'?)"),
    (base(train={"lr": "fast"}), "recipe.yaml: train.lr: expected a number, got str 'fast'"),
    (base(train={"max_epochs": 0}), "recipe.yaml: train.max_epochs: must be positive, got 0"),
    (base(train={"ema_decay": 1.5}), "train.ema_decay: must lie between 0 and 1"),
    (base(train={"lr_scheduler": "cosin"}), "must be one of plateau, cosine, none, got 'cosin' "
                                            "(did you mean 'cosine'?)"),
    (base(model={"representation": "schnett"}), "did you mean 'schnet'"),
    (base(model={"representation": "schnet", "n_filter": 8}),
     "model.n_filter: unknown key for schnet (did you mean 'n_filters'?)"),
    (base(model={"n_atom_basis": 1.5}), "model.n_atom_basis: expected an integer"),
    (base(outputs={"force": {}}), "outputs.force: unknown property (did you mean 'forces'?)"),
    (base(outputs={"forces": {}}), "the energy must be trained"),
    (base(outputs={"energy": {"metrics": ["mse"]}}), "unknown metric 'mse'"),
    (base(offsets={"atomrefs": "fitted"}), "offsets.atomrefs: must be one of none, fit, dataset"),
    ({"dat": {}}, "recipe.yaml: dat: unknown key (did you mean 'data'?)"),
    ({"model": {}}, "recipe.yaml: data: missing required section"),
    (base(data={"num_train": 0.8}), "data.path: missing required key"),
    (base(data={"path": "x.db", "num_val": 2.0}), "data.num_val: must be a positive count"),
])
def test_errors_name_the_key(data, message):
    with pytest.raises(RecipeError) as err:
        parse_recipe(data, "recipe.yaml")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_overrides_and_defaults(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("data: {path: d.db}\ntrain: {max_epochs: 50}\n")
    recipe = load_recipe(path, ["train.max_epochs=5", "model.n_atom_basis=16",
                                "train.ema_decay=0.9"])
    assert recipe.train.max_epochs == 5 and recipe.train.ema_decay == 0.9
    assert recipe.model.hyperparameters == {"n_atom_basis": 16}
    assert recipe.data_path() == tmp_path / "d.db"
    assert recipe.to_dict()["model"]["n_atom_basis"] == 16
    with pytest.raises(RecipeError, match="expected KEY=VALUE"):
        load_recipe(path, ["train.max_epochs"])


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(RecipeError, match="recipe not found"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {path: [\n")
    with pytest.raises(RecipeError, match="bad.yaml: not valid YAML"):
        load_recipe(bad)
