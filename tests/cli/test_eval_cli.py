"""``mlcalc eval``: metrics equal those computed by hand, outputs, skips and errors."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.calculators.emt import EMT
from click.testing import CliRunner

from mlcalc.cli.main import cli
from mlcalc.data import ASEAtomsData
from mlcalc.model import predict
from mlcalc.model.io import load_model, save_model
from tests.conftest import assert_one_line_error, tiny_model


def run(*args: str):
    return CliRunner().invoke(cli, ["eval", *args])


@pytest.fixture
def model_file(tmp_path):
    return str(save_model(tiny_model("schnet", torch.float64, seed=2), tmp_path / "model.pt"))


def metrics_by_hand(model_path: str, db_path) -> dict[str, tuple[float, float]]:
    """MAE and RMSE per metric from predict() (not the calculator) and the raw labels."""
    model = load_model(model_path)
    data = ASEAtomsData(db_path)
    errors: dict[str, list[np.ndarray]] = {"energy_per_atom": [], "energy": [], "forces": [],
                                           "stress": []}
    for i in range(len(data)):
        atoms = data.get_atoms(i)
        label = atoms.calc.results
        (pred,) = predict(model, atoms, ["energy", "forces", "stress"])
        n = len(atoms)
        errors["energy_per_atom"].append(np.atleast_1d((pred["energy"] - label["energy"]) / n))
        errors["energy"].append(np.atleast_1d(pred["energy"] - label["energy"]))
        errors["forces"].append((pred["forces"] - label["forces"]).ravel())
        errors["stress"].append((pred["stress"] - label["stress"]).ravel())
    out = {}
    for key, errs in errors.items():
        e = np.concatenate(errs)
        out[key] = (float(np.mean(np.abs(e))), float(np.sqrt(np.mean(e**2))))
    return out


def test_metrics_equal_hand_computed_ones(tmp_path, model_file, emt_db):
    out = tmp_path / "out"
    result = run(model_file, str(emt_db), "--batch-size", "7", "--output-dir", str(out))
    assert result.exit_code == 0, result.output
    written = json.loads((out / "eval_metrics.json").read_text())
    assert written["n_structures"] == 30 and written["n_atoms"] == 240
    expected = metrics_by_hand(model_file, emt_db)
    assert set(written["metrics"]) == set(expected)
    for key, (mae, rmse) in expected.items():
        assert written["metrics"][key]["mae"] == pytest.approx(mae, rel=1e-9), key
        assert written["metrics"][key]["rmse"] == pytest.approx(rmse, rel=1e-9), key
        assert f"{mae:.4g}" in result.output  # the printed table shows the same numbers
    assert written["metrics"]["forces"]["n"] == 240 * 3
    assert written["metrics"]["stress"]["unit"] == "eV/Ang^3"
    for prop in ("energy", "forces", "stress"):
        assert (out / f"parity_{prop}.png").stat().st_size > 1000


def test_extxyz_is_converted_on_the_fly(tmp_path, model_file, emt_db):
    data = ASEAtomsData(emt_db)
    ase.io.write(tmp_path / "cu.extxyz", [data.get_atoms(i) for i in range(len(data))])
    from_db = run(model_file, str(emt_db), "--output-dir", str(tmp_path / "a"))
    from_xyz = run(model_file, str(tmp_path / "cu.extxyz"), "--output-dir", str(tmp_path / "b"))
    assert from_db.exit_code == 0 and from_xyz.exit_code == 0, from_xyz.output
    a = json.loads((tmp_path / "a" / "eval_metrics.json").read_text())["metrics"]
    b = json.loads((tmp_path / "b" / "eval_metrics.json").read_text())["metrics"]
    for key in a:
        assert b[key]["mae"] == pytest.approx(a[key]["mae"], rel=1e-8)


def test_properties_subset(tmp_path, model_file, emt_db):
    out = tmp_path / "out"
    result = run(model_file, str(emt_db), "--properties", "energy", "--output-dir", str(out))
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "eval_metrics.json").read_text())["metrics"]
    assert set(metrics) == {"energy_per_atom", "energy"}
    assert not (out / "parity_forces.png").exists()


def test_missing_labels_are_skipped_or_an_error_when_requested(tmp_path, model_file):
    frames = []
    for seed in range(3):
        atoms = molecule("CH4")
        atoms.numbers[:] = 29  # a Cu5 cluster: EMT knows Cu
        atoms.positions *= 2.2
        atoms.rattle(0.05, seed=seed)
        atoms.calc = EMT()
        atoms.get_forces()
        frames.append(atoms)
    path = tmp_path / "cluster.extxyz"
    ase.io.write(path, frames)
    result = run(model_file, str(path), "--output-dir", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "skipped stress" in result.output
    assert_one_line_error(run(model_file, str(path), "--properties", "forces,stress",
                              "--output-dir", str(tmp_path / "out2")), "cannot evaluate stress")


def test_bad_inputs_are_one_line_errors(tmp_path, model_file, emt_db):
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("not a structure\n")
    unlabelled = tmp_path / "plain.xyz"
    ase.io.write(unlabelled, molecule("H2O"))
    out = ["--output-dir", str(tmp_path / "out")]
    cases = [
        ((model_file, str(emt_db), "--properties", "forcs", *out),
         ("unknown property 'forcs'", "did you mean 'forces'")),
        ((model_file, str(tmp_path / "missing.db"), *out), ("data file not found",)),
        ((model_file, str(garbage), *out), ("cannot read structures",)),
        ((model_file, str(unlabelled), *out), ("nothing to evaluate",)),
        ((str(tmp_path / "missing.pt"), str(emt_db), *out), ("model file not found",)),
        ((model_file, str(emt_db), "--properties", ",", *out), ("--properties is empty",)),
        ((model_file, str(emt_db), "--batch-size", "0", *out), ("batch-size",)),
    ]
    for args, fragments in cases:
        assert_one_line_error(run(*args), *fragments)


def test_the_model_may_be_given_with_m_as_everywhere_else(tmp_path, model_file, emt_db):
    a = run(model_file, str(emt_db), "--output-dir", str(tmp_path / "a"))
    b = run("-m", model_file, str(emt_db), "--output-dir", str(tmp_path / "b"))
    assert a.exit_code == b.exit_code == 0, b.output
    assert (json.loads((tmp_path / "a" / "eval_metrics.json").read_text())["metrics"]
            == json.loads((tmp_path / "b" / "eval_metrics.json").read_text())["metrics"])
    assert_one_line_error(run("-m", model_file), "'-m MODEL DATA'")


def test_stress_is_compared_where_it_is_defined(tmp_path, model_file):
    from mlcalc.data.generate import generate_emt

    db = tmp_path / "mixed.db"
    generate_emt(db, kinds={"bulk": 3, "surface": 2, "cluster": 2}, supercell=(1, 1, 1))
    result = run(model_file, str(db), "--output-dir", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "eval_metrics.json").read_text())["metrics"]
    assert metrics["stress"]["n"] == 3 * 6  # the three bulk cells only
    assert metrics["forces"]["n"] == 3 * (4 * 3) + 3 * sum(
        len(ASEAtomsData(db).get_atoms(i)) for i in range(3, 7))
    assert np.isfinite(metrics["stress"]["mae"])
