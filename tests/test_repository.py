"""The repository around the package: examples run cleanly, default outputs are ignored."""

from __future__ import annotations

import fnmatch
import importlib.util
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_the_md_example_runs_without_warnings(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location("cu_md", ROOT / "examples" / "cu_md.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ASE's FutureWarning for fixcm=True among them
        example.main(steps=2)
    assert "final structure: model" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["md.extxyz", "md.traj", "md.csv", "md_final.extxyz", "md.png",
                                  "relax.extxyz", "relax.traj", "relax.log", "phonopy.yaml",
                                  "band.yaml", "thermal.csv", "dos.csv", "phonons.png",
                                  "eval_metrics.json", "parity_forces.png", ".md.lock",
                                  "md.extxyz.damaged"])
def test_default_outputs_of_a_run_in_the_checkout_are_ignored_by_git(name):
    patterns = [ln.strip() for ln in (ROOT / ".gitignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    assert any(fnmatch.fnmatch(name, p.rstrip("/")) for p in patterns), name
