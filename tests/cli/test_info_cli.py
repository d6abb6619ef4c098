"""``mlcalc info``: architecture, precision policy and the training metadata."""

from __future__ import annotations

import torch
from click.testing import CliRunner

from mlcalc.cli.main import cli
from mlcalc.model.io import save_model
from tests.conftest import assert_one_line_error, tiny_model

METADATA = {
    "test_metrics": {
        "energy_per_atom": {"unit": "eV/atom", "mae": 0.00123, "rmse": 0.00234},
        "forces": {"unit": "eV/Ang", "mae": 0.0456, "rmse": 0.0789},
    },
    "data_path": "data/cu.db",
    "data_hash": "ab12cd34",
    "n_train": 24, "n_val": 3, "n_test": 3,
    "epochs": 17,
    "best_val_loss": 0.0042,
    "recipe": {"data": {}, "model": {}, "train": {}},
    "note": "hand-made",
}


def run(*args: str):
    return CliRunner().invoke(cli, ["info", *args])


def test_training_metrics_are_shown(tmp_path):
    path = save_model(tiny_model("painn", torch.float32), tmp_path / "model.pt",
                      metadata=METADATA)
    result = run(str(path))
    assert result.exit_code == 0, result.output
    out = result.output
    lines = out.splitlines()
    metric_rows = [line for line in lines if "energy_per_atom" in line or "forces  " in line]
    assert any("eV/atom" in r and "0.00123" in r and "0.00234" in r for r in metric_rows), out
    assert any("eV/Å" in r and "0.0456" in r and "0.0789" in r for r in metric_rows), out
    assert "data/cu.db (sha256 ab12cd34)" in out
    assert "24 train, 3 val, 3 test" in out
    assert "17 epochs" in out and "0.0042" in out
    assert "recipe          stored (sections: data, model, train)" in out
    assert "metadata        note: hand-made" in out  # unknown keys still listed
    assert "precision       network float32; positions, cell and pair vectors float64" in out


def test_model_without_metadata(tmp_path):
    path = save_model(tiny_model("schnet", torch.float64), tmp_path / "model.pt")
    result = run(str(path))
    assert result.exit_code == 0, result.output
    assert "test metrics" not in result.output
    assert "precision       network float64" in result.output


def test_odd_metadata_does_not_crash(tmp_path):
    metadata = {"test_metrics": {"forces": 0.5, "energy": {"mae": "n/a"}}, "epochs": 2}
    path = save_model(tiny_model("schnet"), tmp_path / "model.pt", metadata=metadata)
    result = run(str(path))
    assert result.exit_code == 0, result.output
    assert "0.5" in result.output and "2 epochs" in result.output


def test_bundled_model_by_name():
    result = run("cu-emt")
    assert result.exit_code == 0, result.output
    assert "elements        Cu (29)" in result.output
    assert "cutoff          4.5 Å" in result.output
    assert "neighbor list   matscipy on CPU, torch on GPU" in result.output


def test_bad_files_are_one_line_errors(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00not a zip file at all")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    assert_one_line_error(run(str(tmp_path / "missing.pt")), "model file not found")
    assert_one_line_error(run(str(corrupt)), "corrupt")
    assert_one_line_error(run(str(other)), "not an mlcalc model file")
    assert_one_line_error(run(str(tmp_path)), "is a folder, not a model file")
