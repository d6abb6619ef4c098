"""MLCalculator: ASE contract, exactness, Verlet skin, batching, ensembles, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.md.langevin import Langevin
from ase.md.nose_hoover_chain import IsotropicMTKNPT
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet

from mlcalc import MLCalculator, save_model
from mlcalc.exceptions import (
    DeviceError,
    EnsembleError,
    InvalidStructureError,
    ModelFileError,
    NonFiniteResultError,
    UnknownElementError,
    UnknownNameError,
)
from tests.conftest import tiny_model


@pytest.fixture(scope="module")
def model64(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "model64.pt"
    model = tiny_model("painn", torch.float64, cutoff=4.0)
    model.elements = [28, 29]
    save_model(model, path)
    return path


@pytest.fixture(scope="module")
def model32(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "model32.pt"
    model = tiny_model("schnet", torch.float32, cutoff=4.0, seed=1)
    model.elements = [28, 29]
    save_model(model, path)
    return path


def cu_cell(repeat=(2, 2, 2), seed=0) -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * repeat
    atoms.set_cell(atoms.cell.array @ np.array([[1, 0.03, 0], [0, 1, 0.02], [0.01, 0, 1]]),
                   scale_atoms=True)
    atoms.rattle(0.05, seed=seed)
    return atoms


def test_forces_and_stress_equal_ase_numerical_derivatives(model64):
    atoms = cu_cell()
    atoms.calc = MLCalculator(model64)
    forces = atoms.get_forces()
    assert np.abs(forces).max() > 1e-3
    np.testing.assert_allclose(calculate_numerical_forces(atoms, eps=1e-5), forces, atol=1e-7)
    np.testing.assert_allclose(calculate_numerical_stress(atoms, eps=1e-6), atoms.get_stress(),
                               atol=1e-8)


def test_result_types_and_shapes(model32):
    atoms = cu_cell()
    calc = MLCalculator(model32)
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    assert isinstance(energy, float)
    assert atoms.get_potential_energy(force_consistent=True) == energy
    assert atoms.get_forces().dtype == np.float64 and atoms.get_forces().shape == (32, 3)
    assert atoms.get_stress().shape == (6,)
    assert atoms.get_stress(voigt=False).shape == (3, 3)
    assert atoms.get_potential_energies().sum() == pytest.approx(energy, abs=1e-9)


def test_one_model_call_per_geometry_in_any_order(model32):
    atoms = cu_cell()
    atoms.calc = calc = MLCalculator(model32)
    atoms.get_forces()
    atoms.get_potential_energy()
    atoms.get_potential_energies()
    assert calc.n_model_calls == 1
    atoms.get_stress()  # first request of stress: computed now, then kept
    atoms.positions[0, 0] += 0.01
    atoms.get_stress()
    atoms.get_forces()
    atoms.get_potential_energy()
    assert calc.n_model_calls == 3


def test_one_model_call_per_md_step(model32):
    atoms = cu_cell()
    atoms.calc = calc = MLCalculator(model32)
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    VelocityVerlet(atoms, timestep=1.0 * units.fs).run(10)
    assert calc.n_model_calls == 11


def test_stress_of_non_periodic_structure_is_not_implemented(model64):
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [2.3, 0, 0]])
    atoms.calc = MLCalculator(model64)
    atoms.get_forces()
    with pytest.raises(PropertyNotImplementedError, match="periodic in all three"):
        atoms.get_stress()


def test_slab_forces(model64, slab):
    slab.calc = MLCalculator(model64)
    np.testing.assert_allclose(calculate_numerical_forces(slab, eps=1e-5), slab.get_forces(),
                               atol=1e-7)


def test_slab_without_a_vacuum_vector_reuses_its_list(model64, slab):
    """A slab's cell may be zero along its non-periodic direction (a singular
    cell): the Verlet list measures wraps along the periodic vectors only
    (it stopped with a singular-matrix traceback at the second step)."""
    slab.cell[2] = 0.0
    slab.calc = calc = MLCalculator(model64)
    frames = []
    for k in range(4):
        slab.positions[k] += (0.02, -0.01, 0.015)
        if k == 2:
            slab.positions[0] += slab.cell[0]  # a wrap across the periodic boundary
        frames.append(slab.copy())
        frames[-1].calc = None
        assert np.isfinite(slab.get_potential_energy())
    energies = [f.copy() for f in frames]
    assert calc.verlet.n_builds == 1
    np.testing.assert_allclose([calc.get_potential_energy(f) for f in energies],
                               _energies_without_skin(model64, frames), rtol=0, atol=1e-10)


def _energies_without_skin(model, frames):
    calc = MLCalculator(model, skin=0.0)
    out = []
    for frame in frames:
        frame = frame.copy()
        frame.calc = calc
        out.append(frame.get_potential_energy())
    return np.array(out)


def test_skin_matches_no_skin_over_npt_with_changing_cell(model64):
    atoms = cu_cell(seed=1)
    atoms.calc = calc = MLCalculator(model64, skin=1.0)
    thermalize_momenta(atoms, temperature_K=600, rng=np.random.default_rng(1))
    dyn = IsotropicMTKNPT(atoms, timestep=2 * units.fs, temperature_K=600, pressure_au=1.0 *
                          units.GPa, tdamp=20 * units.fs, pdamp=100 * units.fs)
    frames, energies = [], []

    def record():
        frames.append(atoms.copy())
        energies.append(atoms.get_potential_energy())

    dyn.attach(record, interval=1)
    dyn.run(15)
    volumes = [f.get_volume() for f in frames]
    assert max(volumes) - min(volumes) > 1e-3  # the cell really changed
    assert calc.verlet.n_builds >= 15  # a changed cell rebuilds the list
    np.testing.assert_allclose(energies, _energies_without_skin(model64, frames), atol=1e-10)


def test_skin_matches_no_skin_over_nvt_with_wrapping(model64):
    atoms = cu_cell(seed=2)
    atoms.positions += 0.9 * atoms.cell.array.sum(0) / 2  # many atoms near the faces
    atoms.wrap()
    atoms.calc = calc = MLCalculator(model64, skin=1.0)
    thermalize_momenta(atoms, temperature_K=1500, rng=np.random.default_rng(2))
    dyn = Langevin(atoms, timestep=4 * units.fs, temperature_K=1500, friction=0.02, fixcm=False,
                   rng=np.random.default_rng(3))
    frames, energies, n_wrapped = [], [], []

    def wrap_and_record():
        before = atoms.positions.copy()
        atoms.wrap()
        n_wrapped.append(int((np.abs(atoms.positions - before) > 1e-9).any(1).sum()))
        frames.append(atoms.copy())
        energies.append(atoms.get_potential_energy())

    dyn.attach(wrap_and_record, interval=1)
    dyn.run(25)
    assert sum(n_wrapped) > 0  # atoms did cross the cell faces
    assert calc.verlet.n_builds < 25  # wrapping alone did not force rebuilds
    np.testing.assert_allclose(energies, _energies_without_skin(model64, frames), atol=1e-10)


def test_skin_matches_no_skin_for_cell_only_change(model64):
    atoms = cu_cell(seed=3)
    atoms.calc = MLCalculator(model64, skin=1.0)
    frames, energies = [], []
    for k in range(6):
        cell = atoms.cell.array.copy()
        cell[0, 1] += 0.02 * k
        cell[2, 2] *= 1.0 + 0.002 * k
        atoms.set_cell(cell, scale_atoms=True)
        frames.append(atoms.copy())
        energies.append(atoms.get_potential_energy())
    np.testing.assert_allclose(energies, _energies_without_skin(model64, frames), atol=1e-10)


def test_calculate_many_equals_one_by_one(model32, molecule):
    structures = [cu_cell(seed=k) for k in range(3)] + [cu_cell((1, 1, 2), seed=7)]
    calc = MLCalculator(model32)
    batched = calc.calculate_many(structures, ["energy", "forces", "stress"], batch_size=3)
    calls = calc.n_model_calls
    for atoms, res in zip(structures, batched, strict=True):
        single = atoms.copy()
        single.calc = MLCalculator(model32)
        assert res["energy"] == pytest.approx(single.get_potential_energy(), abs=1e-5)
        np.testing.assert_allclose(res["forces"], single.get_forces(), atol=1e-5)
        np.testing.assert_allclose(res["stress"], single.get_stress(), atol=1e-6)
        # results are attached: no new evaluation
        np.testing.assert_array_equal(atoms.get_forces(), res["forces"])
        assert atoms.calc.n_model_calls == calls
    # each structure has its own calculator: only the (read-only) model is shared
    calcs = [a.calc for a in structures]
    assert len({id(c) for c in calcs} | {id(calc)}) == len(structures) + 1
    for other in calcs:
        assert other.model is calc.model
        assert other.verlet is not calc.verlet and other.timings is not calc.timings
    moved = structures[0]
    moved.positions[0, 0] += 0.05
    moved.get_forces()  # a new evaluation on its own calculator
    assert calcs[0].n_model_calls == 1 and calcs[1].n_model_calls == 0
    assert calc.timings["model"] == 0.0 and calc.verlet.n_builds == 0


def test_ensemble_mean_and_std(model64, model32, tmp_path):
    atoms = cu_cell()
    same = MLCalculator([model64, model64])
    atoms.calc = same
    assert atoms.calc.get_property("energy_std", atoms) == 0.0
    assert np.all(atoms.calc.get_property("forces_std", atoms) == 0.0)
    assert atoms.calc.get_property("forces_std", atoms).shape == (32,)
    single = atoms.copy()
    single.calc = MLCalculator(model64)
    assert atoms.get_potential_energy() == pytest.approx(single.get_potential_energy())
    other = tiny_model("painn", torch.float64, cutoff=4.0, seed=9)
    other.elements = [28, 29]
    path = save_model(other, tmp_path / "other.pt")
    mixed = atoms.copy()
    mixed.calc = MLCalculator([model64, path])
    mixed.get_stress()
    assert mixed.calc.results["energy_std"] > 0
    assert mixed.calc.results["stress_std"].shape == (6,)


def test_ensemble_members_must_agree(model64, tmp_path):
    other = tiny_model("painn", torch.float64, cutoff=3.5)
    other.elements = [28, 29]
    path = save_model(other, tmp_path / "short.pt")
    with pytest.raises(EnsembleError, match="disagree on cutoff: 4.0 .* vs 3.5"):
        MLCalculator([model64, path])


def test_unknown_element_is_named(model64):
    atoms = bulk("Fe", "bcc", a=2.87, cubic=True)
    atoms.calc = MLCalculator(model64)
    with pytest.raises(UnknownElementError,
                       match=r"element Fe \(Z=26\) is not in the model; the model knows: Ni, Cu"):
        atoms.get_potential_energy()


@pytest.mark.parametrize("make, message", [
    (lambda: Atoms("Cu2", positions=[[0, 0, 0], [2, 0, 0]], pbc=True), "cell vector a is zero"),
    (lambda: Atoms("Cu2", positions=[[0, 0, 0], [np.nan, 0, 0]]), "NaN or inf"),
    (lambda: Atoms(), "empty structure"),
    (lambda: Atoms([200, 29], positions=[[0, 0, 0], [2, 0, 0]]),
     r"atomic number 200 \(atom 0\) is not an element \(1-118\)"),
    (lambda: Atoms("Cu3", positions=[[0, 0, 0], [2, 0, 0], [0, 0, 0]]),
     r"atoms 0 and 2 are 0 Å apart, closer than 0.1 Å \(duplicated atoms\?\)"),
    (lambda: Atoms("Cu2", positions=[[0, 0, 0], [0.05, 0, 0]]), "atoms 0 and 1 are 0.05 Å"),
])
def test_bad_structures(model64, make, message):
    atoms = make()
    atoms.calc = MLCalculator(model64)
    with pytest.raises(InvalidStructureError, match=message):
        atoms.get_potential_energy()


def test_bad_model_files(tmp_path, model64):
    with pytest.raises(ModelFileError, match="model file not found"):
        MLCalculator(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(model64.read_bytes()[:100])
    with pytest.raises(ModelFileError, match="corrupt or truncated"):
        MLCalculator(bad)
    noise = tmp_path / "noise.pt"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelFileError, match="not a model file"):
        MLCalculator(noise)  # was "contains pickled Python objects": misleading


@pytest.mark.parametrize("kwargs, error, message", [
    ({"dtype": "float16"}, UnknownNameError, "unknown dtype 'float16'"),
    ({"threads": 0}, ValueError, "threads must be an integer >= 1, got 0"),
    ({"skin": -1.0}, ValueError, "skin must be >= 0"),
])
def test_bad_options(model64, kwargs, error, message):
    with pytest.raises(error, match=message):
        MLCalculator(model64, **kwargs)


def test_a_non_finite_result_is_never_returned(model64):
    calc = MLCalculator(model64)
    with torch.no_grad():
        calc.model.output_modules[0].net[-1].bias.fill_(float("nan"))
    atoms = cu_cell()
    atoms.calc = calc
    with pytest.raises(NonFiniteResultError, match="non-finite"):
        atoms.get_potential_energy()
    assert "energy" not in calc.results
    from mlcalc.model import predict

    with pytest.raises(NonFiniteResultError):
        predict(calc.model, cu_cell(), ["energy", "forces"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="machine has CUDA")
def test_cuda_without_cuda(model64):
    with pytest.raises(DeviceError, match="CUDA is not available"):
        MLCalculator(model64, device="cuda")


def test_dtype_switch(model32):
    calc64 = MLCalculator(model32, dtype="float64")
    assert calc64.model.dtype == torch.float64
    atoms = cu_cell()
    atoms.calc = calc64
    e64 = atoms.get_potential_energy()
    atoms32 = atoms.copy()
    atoms32.calc = MLCalculator(model32)
    assert atoms32.get_potential_energy() == pytest.approx(e64, abs=1e-4)


def test_dtype_switch_of_a_loaded_model_leaves_the_callers_model_alone():
    module = tiny_model("schnet", torch.float32)
    calc = MLCalculator(module, dtype="float64")
    assert calc.model.dtype == torch.float64 and module.dtype == torch.float32
    assert MLCalculator(module, dtype=torch.float32).model is module
    with pytest.raises(UnknownNameError, match="float16"):
        MLCalculator(module, dtype="float16")


def _changes(make):
    """(ASE's compare_atoms, MLCalculator.check_state) for the structure ``make`` returns."""
    from ase.calculators.calculator import compare_atoms

    old = cu_cell()
    old.set_momenta(np.ones((len(old), 3)))
    new = make(old.copy())
    calc = MLCalculator.__new__(MLCalculator)  # only the state the comparison reads
    calc.atoms, calc.info_keys, calc.use_cache = old, (), True
    return sorted(compare_atoms(old, new)), sorted(calc.check_state(new))


def _set(atoms, **arrays):
    for key, value in arrays.items():
        atoms.set_array(key, value)
    return atoms


@pytest.mark.parametrize("make", [
    lambda a: a,  # the same structure (the fast, exact comparison says so)
    lambda a: a.set_momenta(2 * a.get_momenta()) or a,  # momenta are not a change in ASE
    lambda a: _set(a, positions=a.positions + 1e-16),  # within ASE's tolerance: no change
    lambda a: _set(a, positions=a.positions + 1e-3),
    lambda a: _set(a, numbers=np.r_[a.numbers[:-1], 28]),
    lambda a: a.set_cell(a.cell.array * 1.001) or a,
    lambda a: a.set_pbc([True, True, False]) or a,
    lambda a: a.set_initial_charges(np.full(len(a), 0.5)) or a,  # an array only one side has
    lambda a: _set(a, positions=np.where(np.arange(len(a))[:, None] == 0, np.nan, a.positions)),
], ids=["same", "momenta", "below-tol", "positions", "numbers", "cell", "pbc", "charges", "nan"])
def test_check_state_equals_ase(make):
    ase_changes, ours = _changes(make)
    assert ours == ase_changes


def test_unchanged_structure_is_recognised_without_ases_comparison(monkeypatch):
    from ase.calculators.calculator import Calculator

    calls = []
    monkeypatch.setattr(Calculator, "check_state",
                        lambda self, atoms, tol=1e-15: calls.append(1) or ["positions"])
    old = cu_cell()
    calc = MLCalculator.__new__(MLCalculator)
    calc.atoms, calc.info_keys = old, ()
    assert calc.check_state(old.copy()) == [] and calls == []
    moved = old.copy()
    moved.positions[0, 0] += 0.1
    assert calc.check_state(moved) == ["positions"] and calls == [1]


def test_info_keys_invalidate_cache(model32):
    atoms = cu_cell()
    atoms.info["charge"] = 0
    atoms.calc = calc = MLCalculator(model32, info_keys=["charge"])
    atoms.get_potential_energy()
    atoms.info["charge"] = 1
    atoms.get_potential_energy()
    assert calc.n_model_calls == 2


def test_threads_respect_omp_num_threads(model32, monkeypatch):
    from mlcalc.calculator import set_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        assert set_threads(None) == 1
        assert MLCalculator(model32, threads=1).threads == 1
    finally:
        torch.set_num_threads(before)


def test_get_hessian_is_the_analytic_hessian_in_ase_layout(model64):
    from ase.vibrations import VibrationsData

    atoms = bulk("Cu", cubic=True)
    atoms.rattle(0.02, seed=0)
    atoms.calc = MLCalculator(model64)
    hess = atoms.calc.get_hessian(atoms)
    assert hess.shape == (12, 12) and hess.dtype == np.float64
    np.testing.assert_array_equal(hess, atoms.calc.get_property("hessian", atoms))
    eps = 1e-5  # column 3a + i is -dF/dR_ai
    moved = [atoms.copy() for _ in range(2)]
    for sign, m in zip((1, -1), moved, strict=True):
        m.positions[2, 1] += sign * eps
        m.calc = MLCalculator(model64)
    numeric = -(moved[0].get_forces() - moved[1].get_forces()).reshape(-1) / (2 * eps)
    assert np.abs(hess[:, 3 * 2 + 1] - numeric).max() < 1e-6
    energies = VibrationsData.from_2d(atoms, hess).get_energies()
    assert len(energies) == 12


def test_hessian_on_request(model64):
    atoms = bulk("Cu", cubic=True)
    atoms.rattle(0.02, seed=0)
    atoms.calc = MLCalculator(model64)
    hess = atoms.calc.get_property("hessian", atoms)
    assert hess.shape == (12, 12)
    assert np.abs(hess - hess.T).max() < 1e-10
