"""``mlcalc md/relax/phonons/bench --device cuda`` end to end (marked ``gpu``: CUDA only).

Each command runs on the GPU (padded step replayed as a CUDA graph) and its
result is compared with the same command on CPU.
"""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk
from click.testing import CliRunner

from mlcalc import save_model
from mlcalc.cli.main import cli
from tests.conftest import tiny_model

pytestmark = pytest.mark.gpu


def run(*args) -> object:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def files(tmp_path):
    model = save_model(tiny_model("painn", torch.float64, seed=1, elements=[29]),
                       tmp_path / "cu.pt")
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    atoms.rattle(0.05, seed=2)
    structure = tmp_path / "cu.xyz"
    ase.io.write(structure, atoms)
    return model, structure


def test_md_on_cuda_matches_cpu(files, tmp_path):
    model, structure = files
    for device in ("cpu", "cuda"):
        run("md", structure, "-m", model, "--ensemble", "nve", "--steps", 20, "--interval", 10,
            "-o", tmp_path / device, "--device", device, "--no-progress")
    cpu, gpu = (ase.io.read(tmp_path / f"{d}_final.extxyz") for d in ("cpu", "cuda"))
    np.testing.assert_allclose(gpu.positions, cpu.positions, atol=1e-8)


def test_relax_with_cell_on_cuda_matches_cpu(files, tmp_path):
    model, structure = files
    for device in ("cpu", "cuda"):
        run("relax", structure, "-m", model, "--cell", "--fmax", "0.01", "-o",
            tmp_path / device / "cu", "--device", device)
    cpu, gpu = (ase.io.read(tmp_path / d / "cu.extxyz") for d in ("cpu", "cuda"))
    assert abs(gpu.get_potential_energy() - cpu.get_potential_energy()) < 1e-6


def test_phonons_on_cuda_match_cpu(files, tmp_path):
    model, _ = files
    primitive = tmp_path / "prim.extxyz"
    ase.io.write(primitive, bulk("Cu", "fcc", a=3.6))
    for device in ("cpu", "cuda"):
        run("phonons", primitive, "-m", model, "--supercell", 3, 3, 3, "--output-dir",
            tmp_path / f"ph_{device}", "--device", device, "--mesh", 4, 4, 4, "--tmax-K", 400,
            "--tstep-K", 50)
    cpu, gpu = (np.loadtxt(tmp_path / f"ph_{d}" / "thermal.csv", delimiter=",", skiprows=1)
                for d in ("cpu", "cuda"))
    np.testing.assert_allclose(gpu, cpu, rtol=1e-6, atol=1e-8)


def test_bench_prints_the_gpu_table():
    result = run("bench", "--device", "cuda", "--models", "schnet", "--sizes", 108,
                 "--step", "dynamic,padded,graph", "--no-training", "--repeats", 1,
                 "--features", 16)
    assert "| schnet | eager | graph | 108 |" in result.output
    assert "NVIDIA" in result.output or "cuda" in result.output
