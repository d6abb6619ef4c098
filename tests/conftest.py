"""Shared fixtures: small structures and tiny models, one torch thread."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111

from mlcalc import kernels
from mlcalc.model import NeuralNetworkPotential, build_potential
from mlcalc.representation import REPRESENTATIONS

# Deliberate: on a loaded 2-core machine two torch threads can be many times
# slower than one.
torch.set_num_threads(1)

#: Every registered representation: the contract and physics tests run over all.
MODELS = tuple(REPRESENTATIONS)
DTYPES = (torch.float32, torch.float64)
#: Devices a device-parametrized test runs on: CUDA only where there is one
#: (the ``gpu`` marker; see examples/gpu_check.sh).
DEVICES = ("cpu", pytest.param("cuda", marks=pytest.mark.gpu))


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


def assert_one_line_error(result, *fragments: str) -> None:
    """A CLI result failed with exactly one ``Error:`` line holding ``fragments``."""
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def help_without_torch(*args: str) -> str:
    """``mlcalc ARGS --help`` in a fresh interpreter; asserts torch stayed unimported.

    Returns the help text, for the caller's own checks of its content.
    """
    import subprocess
    import sys

    code = ("import sys; from mlcalc.cli.main import cli\n"
            f"try:\n    cli({[*args, '--help']!r})\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def tiny_model(name: str, dtype: torch.dtype = torch.float64, cutoff: float = 4.0,
               seed: int = 0, device: str = "cpu", **kwargs) -> torch.nn.Module:
    """A tiny randomly initialised potential (deterministic by seed), on ``device``."""
    torch.manual_seed(seed)
    hp = dict(n_atom_basis=16, n_interactions=2, n_rbf=12, cutoff=cutoff)
    hp.update(kwargs)
    return build_potential(name, dtype=dtype, **hp).to(device).eval()


@pytest.fixture(params=MODELS)
def model_name(request) -> str:
    return request.param


def _counted(function, calls: dict):
    def counting(*args):
        calls["kernel"] += 1
        return function(*args)

    return counting


@pytest.fixture(params=["fused", "eager"])
def message_path(request, monkeypatch):
    """Run the test on the compiled kernels and on their plain torch reference.

    Afterwards checks that the path the test was meant to take is the one
    taken: if the model ran, the compiled functions ran too (fused) or never
    (eager).
    """
    if request.param == "fused" and not kernels.active("cpu"):
        pytest.skip("the fused kernels could not be built here")
    calls = {"model": 0, "kernel": 0}
    forward = NeuralNetworkPotential.forward

    def counting_forward(self, *args, **kwargs):
        calls["model"] += 1
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(NeuralNetworkPotential, "forward", counting_forward)
    if kernels.active("cpu"):
        library = kernels.load()
        for name in ("cfconv_forward", "painn_message_forward", "painn_filter_message_forward"):
            monkeypatch.setattr(library, name, _counted(getattr(library, name), calls))
    with kernels.disabled() if request.param == "eager" else contextlib.nullcontext():
        yield request.param
    if calls["model"]:
        assert (calls["kernel"] > 0) == (request.param == "fused"), calls


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """The device a test's model runs on; CUDA cases are marked ``gpu``.

    With :func:`message_path`, the fused-on-CUDA case is skipped: the ops have
    no CUDA kernels and run their torch reference there, which is the eager case.
    """
    if (request.param == "cuda" and "message_path" in request.fixturenames
            and request.getfixturevalue("message_path") == "fused"):
        pytest.skip("no CUDA kernels: on CUDA the ops run their torch reference (the eager case)")
    return request.param


@pytest.fixture
def triclinic_cu() -> Atoms:
    """A rattled, sheared 8-atom Cu cell (periodic, triclinic)."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)
    shear = np.array([[1.0, 0.04, 0.0], [0.0, 1.0, 0.03], [0.05, 0.0, 1.0]])
    atoms.set_cell(atoms.cell.array @ shear, scale_atoms=True)
    atoms.rattle(0.05, seed=3)
    return atoms


@pytest.fixture
def molecule() -> Atoms:
    """A small non-periodic cluster with two elements and a zero cell."""
    rng = np.random.default_rng(4)
    pos = rng.uniform(0.0, 4.0, size=(6, 3))
    return Atoms([29, 29, 28, 29, 28, 29], positions=pos)


@pytest.fixture
def slab() -> Atoms:
    """A Cu(111) slab: periodic in-plane, not along z."""
    atoms = fcc111("Cu", size=(2, 2, 2), vacuum=5.0)
    atoms.pbc = (True, True, False)
    atoms.rattle(0.03, seed=5)
    return atoms


@pytest.fixture(scope="session")
def emt_db(tmp_path_factory):
    """A tiny labelled data set: 30 strained, rattled 8-atom Cu cells (EMT)."""
    from ase.calculators.emt import EMT

    from mlcalc.data import ASEAtomsData

    path = tmp_path_factory.mktemp("data") / "cu.db"
    rng = np.random.default_rng(0)
    data = ASEAtomsData.create(path, property_unit_dict={
        "energy": "eV", "forces": "eV/Ang", "stress": "eV/Ang^3"})
    structures = []
    for k in range(30):
        atoms = bulk("Cu", "fcc", a=3.6 * (1 + rng.uniform(-0.03, 0.03)), cubic=True) * (2, 1, 1)
        atoms.rattle(0.08, seed=k)
        atoms.calc = EMT()
        structures.append(atoms)
    data.add_systems(structures)
    return path
