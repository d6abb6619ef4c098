"""Committees: N members of one recipe, one split, loaded together as an ensemble."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk

from mlcalc import MLCalculator
from mlcalc.exceptions import ModelFileError
from mlcalc.model.committee import committee_members
from tests.conftest import assert_one_line_error
from tests.train.test_fit import run, write_recipe


@pytest.fixture
def committee(tmp_path, emt_db):
    recipe = write_recipe(tmp_path, emt_db, train__max_epochs=1)
    result = run("fit", recipe, "--committee", "2", "--no-progress")
    assert result.exit_code == 0, result.output
    return tmp_path / "run", recipe


def test_members_share_the_split_and_differ_in_their_weights(committee):
    folder, _ = committee
    members = committee_members(folder)
    assert [p.parent.name for p in members] == ["member_0", "member_1"]
    index = json.loads((folder / "committee.json").read_text())
    assert index["seeds"] == [0, 1]
    splits = [np.load(folder / "member_0" / "split.npz")]
    assert not (folder / "member_1" / "split.npz").exists()  # member 1 used member 0's split
    assert len(splits[0]["test_idx"]) == 6
    for m in members:
        assert (m.parent / "metrics.json").is_file()
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)
    atoms.rattle(0.05, seed=1)
    energies = [MLCalculator(str(m)).get_potential_energy(atoms) for m in members]
    assert abs(energies[0] - energies[1]) > 1e-6  # different seeds, different models


def test_the_folder_loads_as_one_ensemble(committee):
    folder, _ = committee
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)
    atoms.rattle(0.05, seed=1)
    calc = MLCalculator(str(folder))
    atoms.calc = calc
    e = atoms.get_potential_energy()
    singles = [MLCalculator(str(m)).get_potential_energy(atoms)
               for m in committee_members(folder)]
    assert e == pytest.approx(np.mean(singles), abs=1e-6)
    assert calc.results["energy_std"] == pytest.approx(np.std(singles), abs=1e-6)
    assert calc.results["forces_std"].shape == (len(atoms),)


def test_a_second_run_is_refused_and_resume_completes_a_member(committee):
    folder, recipe = committee
    assert_one_line_error(run("fit", recipe, "--committee", "2"), "already holds a committee")
    before = (folder / "member_0" / "model.pt").read_bytes()
    (folder / "committee.json").unlink()  # an interrupted committee: member 1 lost
    for path in sorted((folder / "member_1").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    result = run("fit", recipe, "--committee", "2", "--resume", "--no-progress")
    assert result.exit_code == 0, result.output
    assert (folder / "member_0" / "model.pt").read_bytes() == before  # kept, not retrained
    assert len(committee_members(folder)) == 2


def test_bad_committees_are_one_line(tmp_path, emt_db):
    recipe = write_recipe(tmp_path, emt_db, train__max_epochs=1)
    assert_one_line_error(run("fit", recipe, "--committee", "1"), "--committee")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "committee.json").write_text(json.dumps({"members": ["member_0/model.pt"]}))
    with pytest.raises(ModelFileError, match="lacks"):
        MLCalculator(str(broken))


def test_bootstrap_members_resample_the_training_split(tmp_path, emt_db):
    recipe = write_recipe(tmp_path, emt_db, train__max_epochs=1)
    result = run("fit", recipe, "--committee", "2", "--bootstrap", "--no-progress")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "run"
    base = np.load(folder / "split.npz")
    members = [np.load(folder / f"member_{k}" / "split.npz") for k in (0, 1)]
    for split in members:
        assert np.array_equal(split["val_idx"], base["val_idx"])
        assert np.array_equal(split["test_idx"], base["test_idx"])
        assert len(split["train_idx"]) == len(base["train_idx"]) == 18
        assert set(split["train_idx"]) <= set(base["train_idx"])
        assert len(set(split["train_idx"])) < 18  # drawn with replacement
    assert not np.array_equal(members[0]["train_idx"], members[1]["train_idx"])
    assert len(committee_members(folder)) == 2
    assert_one_line_error(run("fit", recipe, "--bootstrap"), "add --committee N")
