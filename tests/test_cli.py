"""The mlcalc command group: version, help without torch, info."""

from __future__ import annotations

import torch
from click.testing import CliRunner

from mlcalc import __version__, save_model
from mlcalc.cli.main import cli
from tests.conftest import help_without_torch, tiny_model


def test_version_and_help():
    runner = CliRunner()
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0 and "info" in result.output


def test_help_does_not_import_torch():
    help_text = help_without_torch()
    assert "Commands:" in help_text and "fit" in help_text


def test_info_describes_a_model(tmp_path):
    path = save_model(tiny_model("painn", torch.float32), tmp_path / "model.pt")
    result = CliRunner().invoke(cli, ["info", str(path)])
    assert result.exit_code == 0, result.output
    assert "painn" in result.output and "cutoff          4.0" in result.output
    assert "float32" in result.output


def test_info_on_missing_file_is_one_line_error(tmp_path):
    result = CliRunner().invoke(cli, ["info", str(tmp_path / "missing.pt")])
    assert result.exit_code != 0
    assert result.output.strip() == f"Error: model file not found: {tmp_path / 'missing.pt'}"
    assert "Traceback" not in result.output
