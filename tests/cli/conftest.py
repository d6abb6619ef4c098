"""Fixtures of the command-line tests."""

from __future__ import annotations

import ase.io
import pytest
import torch
from ase.build import bulk

from mlcalc import save_model
from tests.conftest import tiny_model


@pytest.fixture
def setup(tmp_path):
    """A tiny float64 model file and an 8-atom Cu cell file: (model path, structure path)."""
    model = save_model(tiny_model("schnet", torch.float64), tmp_path / "model.pt")
    structure = tmp_path / "cu.xyz"
    ase.io.write(structure, bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1))
    return model, structure


@pytest.fixture(autouse=True)
def _run_in_tmp_path(tmp_path, monkeypatch):
    """Every command runs in the test's own folder: runs that use default output names
    (and their ``.<prefix>.lock``) never write into the checkout."""
    monkeypatch.chdir(tmp_path)
