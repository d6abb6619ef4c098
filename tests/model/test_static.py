"""The static-shape, device-resident step equals the dynamic path (mlcalc.model.static).

Everything here runs on CPU; the CUDA cases (marked ``gpu``) run the same
checks with the step on the GPU, replayed as a CUDA graph.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet

from mlcalc import MLCalculator
from mlcalc import properties as P
from mlcalc.exceptions import InvalidStructureError, NonFiniteResultError
from mlcalc.model import atoms_to_batch
from mlcalc.model.static import StaticEvaluator, tf32_matmul
from mlcalc.testing import HostSyncRecorder
from mlcalc.transform.neighbors import TorchNeighborList
from mlcalc.transform.padded import PaddedVerletList
from tests.conftest import tiny_model

#: float64 network: padded and dynamic sums differ only in rounding order.
TOL64 = {"energy": 1e-10, "forces": 1e-10, "stress": 1e-11}


@pytest.fixture(autouse=True)
def path(request, message_path):
    """On the fused kernels and on their torch reference (what runs on CUDA).

    A CUDA-only test (marked ``gpu``) runs the reference only: the ops have no
    CUDA kernels, so its fused case would be the same test again.
    """
    if message_path == "fused" and request.node.get_closest_marker("gpu"):
        pytest.skip("no CUDA kernels: on CUDA the ops run their torch reference (the eager case)")
    return message_path


def hot_cu(seed: int = 0, repeat=(2, 2, 2)) -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * repeat
    atoms.set_cell(atoms.cell.array @ np.array([[1, 0.03, 0], [0, 1, 0.02], [0.01, 0, 1]]),
                   scale_atoms=True)
    atoms.rattle(0.05, seed=seed)
    return atoms


def padded_calc(model, device: str, **kwargs) -> MLCalculator:
    """The padded step (with CUDA graphs on CUDA, the default there)."""
    return MLCalculator(model, device=device, padded=True, **kwargs)


def assert_same(a: dict, b: dict, stress: bool = True) -> None:
    assert abs(a[P.energy] - b[P.energy]) < TOL64["energy"]
    np.testing.assert_allclose(a[P.energies], b[P.energies], atol=TOL64["energy"])
    np.testing.assert_allclose(a[P.forces], b[P.forces], atol=TOL64["forces"])
    if stress:
        np.testing.assert_allclose(a[P.stress], b[P.stress], atol=TOL64["stress"])


def evaluate(calc: MLCalculator, frames: list[Atoms], stress: bool = True) -> list[dict]:
    """``calc``'s results for each frame in turn (one evolving structure)."""
    props = [P.energy, P.forces, P.stress] if stress else [P.energy, P.forces]
    out = []
    for frame in frames:
        calc.calculate(frame, props)
        out.append(dict(calc.results))
    return out


def reference(model_name: str, frames: list[Atoms], stress: bool = True) -> list[dict]:
    """Dynamic path on CPU without skin: a list rebuilt and cut at every frame."""
    calc = MLCalculator(tiny_model(model_name), device="cpu", skin=0.0)
    return evaluate(calc, [frame.copy() for frame in frames], stress)


def test_padding_slots_contribute_exactly_zero(model_name):
    model = tiny_model(model_name)
    atoms = hot_cu()
    props = [P.energy, P.energies, P.forces, P.stress]
    batch = atoms_to_batch([atoms], model, props)
    plain = {k: v.detach().clone() for k, v in model(dict(batch), props).items()}
    n = batch[P.idx_i].shape[0]
    padded = dict(batch)
    pad = 37
    padded[P.idx_i] = torch.cat([batch[P.idx_i], torch.zeros(pad, dtype=torch.long)])
    padded[P.idx_j] = torch.cat([batch[P.idx_j], torch.zeros(pad, dtype=torch.long)])
    padded[P.cell_shifts] = torch.cat([batch[P.cell_shifts], torch.zeros(pad, 3, dtype=torch.long)])
    padded[P.pair_mask] = torch.arange(n + pad) < n
    out = model(padded, props)
    for key in (P.energy, P.energies, P.forces, P.stress):
        torch.testing.assert_close(out[key], plain[key], rtol=0, atol=1e-13)


@pytest.mark.parametrize("kind", ["nve_wrapping", "langevin_wrapping"])
def test_padded_md_equals_dynamic(model_name, device, kind):
    atoms = hot_cu(seed=2)
    atoms.positions += 0.9 * atoms.cell.array.sum(0) / 2  # atoms near the faces
    atoms.wrap()
    atoms.calc = calc = padded_calc(tiny_model(model_name, device=device), device)
    thermalize_momenta(atoms, temperature_K=1500, rng=np.random.default_rng(2))
    dyn = (VelocityVerlet(atoms, 4 * units.fs) if kind == "nve_wrapping" else
           Langevin(atoms, timestep=4 * units.fs, temperature_K=1500, friction=0.02,
                    fixcm=False, rng=np.random.default_rng(3)))
    frames, results, n_wrapped = [], [], []

    def record():
        before = atoms.positions.copy()
        atoms.wrap()
        n_wrapped.append(int((np.abs(atoms.positions - before) > 1e-9).any(1).sum()))
        atoms.get_stress()
        frames.append(atoms.copy())
        results.append(dict(calc.results))

    dyn.attach(record, interval=1)
    dyn.run(25)
    assert sum(n_wrapped) > 0  # atoms crossed the faces: shifts were corrected on the device
    assert calc.static.n_repeats >= 1  # some step went stale and was evaluated again
    assert calc.static.verlet.n_builds < 25  # ... but not every step
    for got, want in zip(results, reference(model_name, frames), strict=True):
        assert_same(got, want)


def test_padded_npt_with_changing_cell_equals_dynamic(model_name, device):
    from ase.md.nose_hoover_chain import IsotropicMTKNPT

    atoms = hot_cu(seed=1)
    atoms.calc = calc = padded_calc(tiny_model(model_name, device=device), device)
    thermalize_momenta(atoms, temperature_K=600, rng=np.random.default_rng(1))
    dyn = IsotropicMTKNPT(atoms, timestep=2 * units.fs, temperature_K=600,
                          pressure_au=1.0 * units.GPa, tdamp=20 * units.fs,
                          pdamp=100 * units.fs)
    frames, results = [], []

    def record():
        atoms.get_stress()
        frames.append(atoms.copy())
        results.append(dict(calc.results))

    dyn.attach(record, interval=1)
    dyn.run(12)
    assert max(f.get_volume() for f in frames) - min(f.get_volume() for f in frames) > 1e-3
    assert calc.static.verlet.n_builds >= 12  # a changed cell rebuilds
    for got, want in zip(results, reference(model_name, frames), strict=True):
        assert_same(got, want)


def test_capacity_grows_mid_run_and_results_stay_equal(model_name, device):
    # A cluster contracting: every few steps more pairs than the capacity holds.
    rng = np.random.default_rng(5)
    atoms = Atoms("Cu12", positions=rng.uniform(0, 7.0, size=(12, 3)))
    calc = padded_calc(tiny_model(model_name, device=device), device)
    frames, results, capacities = [], [], []
    for k in range(12):
        frame = atoms.copy()
        frame.positions = atoms.positions * (1.0 - 0.035 * k)
        calc.calculate(frame, [P.energy, P.forces])
        frames.append(frame)
        results.append(dict(calc.results))
        capacities.append(calc.static.verlet.capacity)
    verlet = calc.static.verlet
    assert verlet.n_grows >= 2 and capacities == sorted(capacities)  # grew, never shrank
    assert capacities[-1] >= verlet.n_pairs
    for got, want in zip(results, reference(model_name, frames, stress=False), strict=True):
        assert_same(got, want, stress=False)


def test_growth_is_geometric():
    verlet = PaddedVerletList(TorchNeighborList(4.5, half=True), 4.0, 0.5)
    atoms = hot_cu()
    pos = torch.from_numpy(atoms.positions)
    cell, pbc = torch.from_numpy(atoms.cell.array), torch.from_numpy(atoms.pbc)
    verlet.build(pos, cell, pbc)
    first = verlet.capacity
    assert first == int(np.ceil(1.1 * verlet.n_pairs))
    verlet.build(pos * 0.85, cell * 0.85, pbc)  # denser: more pairs
    assert verlet.n_grows == 1 and verlet.version == 2
    c = first
    while c < verlet.n_pairs:
        c = int(np.ceil(1.25 * c))
    assert verlet.capacity == c
    verlet.build(pos, cell, pbc)  # sparser again: the capacity stays
    assert verlet.capacity == c and verlet.version == 2


@pytest.mark.parametrize("structure", ["molecule", "slab", "triclinic_cu"])
def test_non_periodic_and_zero_cells(model_name, device, structure, request):
    atoms = request.getfixturevalue(structure)
    calc = padded_calc(tiny_model(model_name, device=device), device)
    frames, results = [], []
    for k in range(4):
        frame = atoms.copy()
        frame.rattle(0.2, seed=k)
        calc.calculate(frame, [P.energy, P.forces])
        frames.append(frame)
        results.append(dict(calc.results))
    for got, want in zip(results, reference(model_name, frames, stress=False), strict=True):
        assert_same(got, want, stress=False)


def test_skin_zero_builds_every_step(model_name):
    calc = padded_calc(tiny_model(model_name), "cpu", skin=0.0)
    frames = [hot_cu(seed=k) for k in range(3)]
    results = evaluate(calc, frames)
    assert calc.static.verlet.n_builds == 3 and calc.static.n_repeats == 0
    for got, want in zip(results, reference(model_name, frames), strict=True):
        assert_same(got, want)


def test_steady_state_step_has_no_host_synchronisation(model_name):
    atoms = hot_cu()
    atoms.calc = calc = padded_calc(tiny_model(model_name), "cpu")
    atoms.get_stress()
    atoms.positions += 0.01  # within the skin: a steady-state step
    with HostSyncRecorder() as rec:
        atoms.get_forces()
    assert rec.ops == []
    assert calc.static.verlet.n_builds == 1
    # the recorder does see the syncs of the dynamic path (cut to the cutoff, skin check)
    other = atoms.copy()
    other.calc = MLCalculator(tiny_model(model_name), device="cpu")
    other.get_forces()
    other.positions += 0.01
    with HostSyncRecorder() as rec:
        other.get_forces()
    assert "aten.nonzero.default" in rec.ops


def test_atoms_too_close_are_refused_with_the_dynamic_message(model_name):
    atoms = hot_cu()
    atoms.calc = padded_calc(tiny_model(model_name), "cpu")
    atoms.get_forces()
    atoms.positions[3] = atoms.positions[5] + [0.03, 0.0, 0.0]
    with pytest.raises(InvalidStructureError, match="atoms 3 and 5 are 0.03 Å apart"):
        atoms.get_forces()


def test_a_non_finite_result_is_never_returned(model_name):
    model = tiny_model(model_name)
    atoms = hot_cu()
    atoms.calc = calc = padded_calc(model, "cpu")
    atoms.get_forces()
    with torch.no_grad():
        model.output_modules[0].net[-1].bias.fill_(float("nan"))
    atoms.positions += 0.01
    with pytest.raises(NonFiniteResultError,
                       match="non-finite energy .NaN or inf. for this structure"):
        atoms.get_forces()
    assert calc.results == {} or not np.isnan(calc.results.get(P.energy, 0.0))


def test_hessian_and_ensembles_take_the_dynamic_path(model_name):
    model = tiny_model(model_name)
    atoms = hot_cu()
    atoms.calc = calc = padded_calc(model, "cpu")
    hessian = calc.get_hessian(atoms)
    assert hessian.shape == (3 * len(atoms),) * 2 and calc.static.n_steps == 0
    with pytest.raises(ValueError, match="one model, not an ensemble"):
        MLCalculator([model, model], device="cpu", padded=True)
    assert MLCalculator([model, model], device="cpu").static is None


def test_default_is_dynamic_on_cpu_and_graph_options_need_cuda(model_name):
    model = tiny_model(model_name)
    assert MLCalculator(model, device="cpu").static is None
    with pytest.raises(ValueError, match="cuda_graphs needs a CUDA device"):
        MLCalculator(model, device="cpu", padded=True, cuda_graphs=True)
    sibling = padded_calc(model, "cpu").sibling()
    assert sibling.static is not None and not sibling.static.cuda_graphs


def test_failed_capture_falls_back_to_eager_with_one_warning(model_name, monkeypatch):
    model = tiny_model(model_name)
    calc = padded_calc(model, "cpu")
    calc.static.cuda_graphs = True  # as on CUDA; the capture below fails

    def broken_capture(self, properties):
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    monkeypatch.setattr(StaticEvaluator, "_capture", broken_capture)
    frames = [hot_cu(seed=k) for k in range(3)]
    with pytest.warns(RuntimeWarning, match="CUDA graph capture failed .RuntimeError: "
                                            "operation not permitted") as record:
        results = []
        for frame in frames:
            calc.calculate(frame, [P.energy, P.forces, P.stress])
            results.append(dict(calc.results))
    assert len([w for w in record if "capture" in str(w.message)]) == 1
    assert calc.static.graph_error.startswith("RuntimeError") and not calc.static.cuda_graphs
    for got, want in zip(results, reference(model_name, frames), strict=True):
        assert_same(got, want)


@pytest.mark.parametrize("setting", [None, "high", "medium", "new-api"])
def test_tf32_switch_is_restored_whatever_was_set_before(setting):
    # The process may have chosen a precision with either of torch's APIs; the
    # switch must neither fail on it nor lose it.
    matmul = torch.backends.cuda.matmul

    def state():
        try:
            legacy = torch.get_float32_matmul_precision()
        except RuntimeError:  # torch refuses to read it after the new API was used
            legacy = "mixed"
        return getattr(matmul, "fp32_precision", None), legacy

    saved = torch.get_float32_matmul_precision()
    try:
        if setting == "new-api" and hasattr(matmul, "fp32_precision"):
            matmul.fp32_precision = "tf32"
        elif setting in ("high", "medium"):
            torch.set_float32_matmul_precision(setting)
        before = state()
        for enabled in (True, False):
            with tf32_matmul(enabled):
                pass
            assert state() == before
    finally:
        if hasattr(matmul, "fp32_precision"):
            matmul.fp32_precision = "none"
        torch.set_float32_matmul_precision(saved)


def test_a_failed_build_forgets_the_structure(model_name, monkeypatch):
    # After a build that raised (out of memory, an interrupt), the next call
    # starts from scratch instead of reusing half-written buffers.
    calc = padded_calc(tiny_model(model_name), "cpu")
    frames = [hot_cu(seed=0), hot_cu(seed=1, repeat=(2, 2, 1)), hot_cu(seed=1, repeat=(2, 2, 1))]
    evaluate(calc, frames[:1])
    build = PaddedVerletList.build

    def failing(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(PaddedVerletList, "build", failing)
    with pytest.raises(KeyboardInterrupt):
        calc.calculate(frames[1], [P.energy, P.forces])  # a new atom count: buffers replaced
    monkeypatch.setattr(PaddedVerletList, "build", build)
    results = evaluate(calc, frames[2:])  # the structure whose build failed, again
    for got, want in zip(results, reference(model_name, frames[2:]), strict=True):
        assert_same(got, want)


# ---- CUDA only -------------------------------------------------------------------------------
@pytest.mark.gpu
def test_cuda_graph_is_captured_once_and_replayed(model_name):
    atoms = hot_cu(repeat=(3, 3, 3))
    atoms.calc = calc = MLCalculator(tiny_model(model_name, device="cuda"), device="cuda")
    assert calc.static is not None and calc.static.cuda_graphs  # the CUDA defaults
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(atoms, 2 * units.fs)
    frames, results = [], []
    dyn.attach(lambda: (frames.append(atoms.copy()), results.append(dict(calc.results))))
    dyn.run(20)
    assert calc.static.graph_error is None
    assert calc.static.n_captures == calc.static.verlet.version  # one capture per shape
    for got, want in zip(results, reference(model_name, frames, stress=False), strict=True):
        assert_same(got, want, stress=False)


@pytest.mark.gpu
def test_steady_state_cuda_steps_do_not_synchronise(model_name):
    atoms = hot_cu(repeat=(3, 3, 3))
    atoms.calc = calc = MLCalculator(tiny_model(model_name, device="cuda"), device="cuda")
    thermalize_momenta(atoms, temperature_K=100, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(atoms, 1 * units.fs)
    dyn.run(3)  # build and capture
    builds = calc.static.verlet.n_builds
    torch.cuda.set_sync_debug_mode("error")
    try:
        dyn.run(10)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert calc.static.verlet.n_builds == builds  # the steps checked were steady-state ones


@pytest.mark.gpu
def test_failed_cuda_capture_warns_once_and_runs_eagerly(model_name, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("capture refused for the test")

    monkeypatch.setattr(torch.cuda, "graph", refuse)
    atoms = hot_cu()
    atoms.calc = calc = MLCalculator(tiny_model(model_name, device="cuda"), device="cuda")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        energies = [atoms.get_potential_energy()]
        atoms.positions += 0.01
        energies.append(atoms.get_potential_energy())
    assert sum("capture refused" in str(w.message) for w in record) == 1
    assert not calc.static.cuda_graphs and np.isfinite(energies).all()


@pytest.mark.gpu
def test_tf32_error_is_bounded_and_off_by_default(model_name):
    atoms = hot_cu(repeat=(3, 3, 3))
    model = tiny_model(model_name, torch.float32, device="cuda")
    exact = MLCalculator(model, device="cuda")
    fast = MLCalculator(model, device="cuda", tf32=True)
    f_exact = exact.get_forces(atoms.copy())
    f_fast = fast.get_forces(atoms.copy())
    assert torch.backends.cuda.matmul.allow_tf32 is False  # restored after each step
    scale = np.abs(f_exact).max()
    assert np.abs(f_fast - f_exact).max() < 1e-2 * scale


@pytest.mark.parametrize("backend", ["torch", "torch_cluster"])
def test_padded_step_on_each_device_backend(model_name, backend):
    # The device-side searches (the torch cell list, torch-cluster's radius)
    # fill the padded list; results equal the dynamic path's.
    if backend == "torch_cluster":
        pytest.importorskip("torch_cluster")
    calc = padded_calc(tiny_model(model_name), "cpu", neighbor_list=backend)
    frames = [hot_cu(seed=k) for k in range(3)]
    results = evaluate(calc, frames)
    assert type(calc.static.verlet.neighbor_list).__name__.lower().startswith(
        backend.replace("_", ""))
    for got, want in zip(results, reference(model_name, frames), strict=True):
        assert_same(got, want)
