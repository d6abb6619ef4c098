"""Fine-tuning: a recipe that starts from a trained model (model.init_from)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlcalc.model import load_model, predict
from mlcalc.train.fit import fit
from mlcalc.train.recipe import RecipeError, load_recipe
from tests.conftest import assert_one_line_error
from tests.train.test_fit import run, write_recipe


@pytest.fixture(scope="module")
def surfaces(tmp_path_factory):
    """24 Cu slabs (111)/(100)/(110) labelled by EMT (stress undefined)."""
    from mlcalc.data.generate import generate_emt

    path = tmp_path_factory.mktemp("slabs") / "slabs.db"
    generate_emt(path, ("Cu",), kinds={"surface": 24}, seed=3, supercell=(1, 1, 1))
    return path


@pytest.fixture(scope="module")
def surfaces_and_replay(tmp_path_factory, surfaces, emt_db):
    """The slabs plus 10 of the base model's bulk cells (replay), in one data set."""
    from mlcalc.data import ASEAtomsData

    path = tmp_path_factory.mktemp("mixed") / "mixed.db"
    slabs, cells = ASEAtomsData(surfaces), ASEAtomsData(emt_db)
    mixed = ASEAtomsData.create(path, property_unit_dict={"energy": "eV", "forces": "eV/Ang"})
    mixed.add_systems([slabs.get_atoms(k) for k in range(len(slabs))]
                      + [cells.get_atoms(k) for k in range(REPLAYED)])
    return path


REPLAYED = 10  # bulk cells 0-9 go into the fine-tuning set; 10-29 measure the bulk error


@pytest.fixture(scope="module")
def bulk_model(tmp_path_factory, emt_db):
    """A small PaiNN trained on bulk cells only."""
    folder = tmp_path_factory.mktemp("bulk")
    recipe = write_recipe(folder, emt_db, train__max_epochs=30, train__lr=5e-3)
    fit(load_recipe(recipe), progress=False)
    return folder / "run" / "model.pt"


def energy_mae_per_atom(model_path, db, first: int = 0) -> float:
    from mlcalc.data import ASEAtomsData

    data = ASEAtomsData(db)
    frames = [data.get_atoms(k) for k in range(first, len(data))]
    model = load_model(model_path)
    got = [r["energy"] for r in predict(model, frames, ["energy"])]
    return float(np.mean([abs(g - a.get_potential_energy()) / len(a)
                          for g, a in zip(got, frames, strict=True)]))


def test_fine_tuning_on_surfaces_fixes_them_and_keeps_bulk(tmp_path, bulk_model, surfaces,
                                                           surfaces_and_replay, emt_db):
    """A bulk-only model fine-tuned on 24 slabs + 10 of its own bulk cells: the surface
    energy error falls at least 3x; the bulk error on the 20 other cells stays within
    20 meV/atom of the base model's."""
    recipe = write_recipe(
        tmp_path, surfaces_and_replay,
        data={"path": str(surfaces_and_replay), "num_train": 26, "num_val": 8, "batch_size": 4},
        model={"init_from": str(bulk_model), "freeze_embedding": True,
               "freeze_interactions": 1},
        outputs={"energy": {"weight": 0.5, "per_atom": True}, "forces": {"weight": 0.5}},
        train__max_epochs=30, train__lr=1e-3)
    result = fit(load_recipe(recipe), progress=False)
    before, after = load_model(bulk_model), load_model(result.model_path)
    # frozen: the embedding and the first block are the base model's, bit for bit
    for name in ("embedding", "messages.0", "updates.0"):
        for (k, a), (_, b) in zip(before.representation.get_submodule(name).state_dict().items(),
                                  after.representation.get_submodule(name).state_dict().items(),
                                  strict=True):
            assert torch.equal(a, b), f"{name}.{k} changed"
    assert not torch.equal(before.representation.messages[1].context_net[0].weight,
                           after.representation.messages[1].context_net[0].weight)
    assert after.offsets == before.offsets  # kept (init_offsets: keep)
    surface_before = energy_mae_per_atom(bulk_model, surfaces)
    surface_after = energy_mae_per_atom(result.model_path, surfaces)
    bulk_before = energy_mae_per_atom(bulk_model, emt_db, first=REPLAYED)
    bulk_after = energy_mae_per_atom(result.model_path, emt_db, first=REPLAYED)
    print(f"surface MAE {surface_before:.4f} -> {surface_after:.4f} eV/atom; "
          f"bulk MAE {bulk_before:.4f} -> {bulk_after:.4f} eV/atom")
    assert surface_after < surface_before / 3
    assert bulk_after < bulk_before + 0.02


@pytest.mark.parametrize("model, fragment", [
    ({"n_atom_basis": 64}, "model.n_atom_basis is 64 but 12 in"),
    ({"representation": "schnet"}, "but {} is a painn"),
    ({"freeze_interactions": 5}, "has 2 interaction blocks"),
])
def test_conflicts_are_one_line(tmp_path, bulk_model, emt_db, model, fragment):
    recipe = write_recipe(tmp_path, emt_db, model={"init_from": str(bulk_model), **model})
    assert_one_line_error(run("fit", recipe), fragment.format(bulk_model))


def test_fine_tuning_keys_need_init_from(tmp_path, emt_db):
    recipe = write_recipe(tmp_path, emt_db, model={"representation": "painn",
                                                   "freeze_embedding": True})
    with pytest.raises(RecipeError, match="add init_from"):
        load_recipe(recipe)
