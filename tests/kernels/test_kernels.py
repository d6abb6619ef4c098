"""The fused kernels: exact gradients, half lists, and the same numbers as the eager path."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet

from mlcalc import MLCalculator, kernels
from mlcalc import properties as P
from mlcalc.model import predict
from mlcalc.testing import TOLERANCES
from mlcalc.transform.neighbors import MatScipyNeighborList, full_pairs, half_pairs
from tests.conftest import tiny_model

pytestmark = pytest.mark.skipif(not kernels.available(),
                                reason="the fused kernels could not be built here")


def random_graph(n_atoms=7, n_pairs=15, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, n_atoms, (n_pairs,), generator=g)
    b = torch.randint(0, n_atoms, (n_pairs,), generator=g)
    b[0] = a[0]  # an atom paired with its own image
    return a, b, *kernels.half_graph(a, b, n_atoms)


def eager_painn_message(x, W, u, mu, a, b):
    """Reference: both directions of every pair as separate edges."""
    F = mu.shape[2]
    ii, jj = torch.cat([a, b]), torch.cat([b, a])
    m = x[jj] * torch.cat([W, W])
    s, vs, vv = m.split(F, dim=-1)
    dirs = torch.cat([u, -u])
    dq = torch.zeros_like(mu[:, 0]).index_add(0, ii, s)
    messages = vs[:, None] * dirs[..., None] + vv[:, None] * mu[jj]
    dmu = torch.zeros_like(mu).index_add(0, ii, messages)
    return dq, dmu


def test_half_graph_groups_edges_by_centre():
    a, b, order, rowptr = random_graph()
    centres = torch.cat([a, b])
    for i in range(7):
        group = order[rowptr[i]:rowptr[i + 1]]
        assert torch.all(centres[group] == i)
    assert sorted(order.tolist()) == list(range(2 * len(a)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_painn_message_forward_matches_eager(dtype):
    a, b, order, rowptr = random_graph()
    g = torch.Generator().manual_seed(1)
    F = 5
    x, W = torch.randn(7, 3 * F, generator=g), torch.randn(15, 3 * F, generator=g)
    u, mu = torch.randn(15, 3, generator=g), torch.randn(7, 3, F, generator=g)
    args = [t.to(dtype) for t in (x, W, u, mu)]
    fused = kernels.painn_message(*args, a, b, order, rowptr)
    ref = eager_painn_message(*args, a, b)
    tol = 1e-5 if dtype == torch.float32 else 1e-13
    for got, want in zip(fused, ref, strict=True):
        torch.testing.assert_close(got, want, atol=tol, rtol=tol)


def test_painn_message_gradients_are_exact():
    a, b, order, rowptr = random_graph()
    g = torch.Generator().manual_seed(2)
    F = 4
    inputs = [torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()
              for shape in ((7, 3 * F), (15, 3 * F), (15, 3), (7, 3, F))]
    assert torch.autograd.gradcheck(
        lambda *t: kernels.painn_message(*t, a, b, order, rowptr), inputs)


def test_cfconv_matches_eager_and_gradients_are_exact():
    a, b, order, rowptr = random_graph()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, 6, generator=g, dtype=torch.float64).requires_grad_()
    W = torch.randn(15, 6, generator=g, dtype=torch.float64).requires_grad_()
    ii, jj = torch.cat([a, b]), torch.cat([b, a])
    ref = torch.zeros_like(x).index_add(0, ii, x[jj] * torch.cat([W, W]))
    torch.testing.assert_close(kernels.cfconv(x, W, a, b, order, rowptr), ref)
    assert torch.autograd.gradcheck(lambda *t: kernels.cfconv(*t, a, b, order, rowptr), (x, W))


@pytest.mark.parametrize("structure", ["triclinic_cu", "molecule", "slab", "tiny_cell"])
def test_half_list_holds_every_pair_once(structure, request):
    if structure == "tiny_cell":  # cutoff ~3x the cell: many images of each atom
        atoms = bulk("Cu", "fcc", a=3.6)
    else:
        atoms = request.getfixturevalue(structure)
    from mlcalc.data.atoms import atoms_to_inputs

    full = MatScipyNeighborList(5.0)(atoms_to_inputs(atoms))
    pairs = full[P.idx_i], full[P.idx_j], full[P.cell_shifts]
    half = half_pairs(*pairs)
    assert 2 * len(half[0]) == len(pairs[0])

    def as_set(i, j, s):
        return {(int(a), int(b), *map(int, c)) for a, b, c in zip(i, j, s, strict=True)}

    assert as_set(*full_pairs(*half)) == as_set(*pairs)


@pytest.mark.parametrize("name", ["schnet", "painn"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_calculator_gives_the_eager_numbers(name, dtype, triclinic_cu):
    model = tiny_model(name, dtype)
    results = []
    for fused in (True, False):
        atoms = triclinic_cu.copy()
        atoms.calc = MLCalculator(model, fused=fused, threads=1)
        assert atoms.calc.fused is fused
        results.append((atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()))
    tol = TOLERANCES[dtype]
    (e1, f1, s1), (e0, f0, s0) = results
    assert abs(e1 - e0) < tol["energy"]
    assert np.abs(f1 - f0).max() < tol["forces"]
    assert np.abs(s1 - s0).max() < tol["stress"]
    assert np.abs(f0).max() > 1e-3  # forces worth comparing


@pytest.mark.parametrize("name", ["schnet", "painn"])
def test_fused_float32_is_the_float64_eager_function(name):
    """The acceptance bound for the fast path: a 128x3 float32 model on the fused
    kernels against the same weights in float64 on the eager path: energies
    within 1e-5 relative, forces within 1e-4 eV/Å."""
    from mlcalc.bench import _potential, cu_supercell

    atoms = cu_supercell(32)
    atoms.rattle(0.1, seed=4)
    fast = MLCalculator(_potential(name, 128, 3, 5.0), threads=1)
    reference = MLCalculator(_potential(name, 128, 3, 5.0), dtype="float64", fused=False,
                             threads=1)
    assert fast.fused and not reference.fused and reference.model.dtype == torch.float64
    a, b = atoms.copy(), atoms.copy()
    a.calc, b.calc = fast, reference
    e_ref, f_ref = b.get_potential_energy(), b.get_forces()
    assert abs(a.get_potential_energy() - e_ref) <= 1e-5 * abs(e_ref)
    assert np.abs(a.get_forces() - f_ref).max() <= 1e-4
    assert np.abs(f_ref).max() > 1e-2  # forces worth comparing


@pytest.mark.parametrize("name", ["schnet", "painn"])
def test_threads_split_the_atoms_without_changing_the_numbers(name):
    """The kernels run over chunks of 8 atoms in parallel: 2 threads, same numbers."""
    model = tiny_model(name, torch.float64)
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (3, 3, 2)
    atoms.rattle(0.05, seed=1)
    results = []
    try:
        for threads in (1, 2):
            a = atoms.copy()
            a.calc = MLCalculator(model, threads=threads)
            results.append((a.get_potential_energy(), a.get_forces(), a.get_stress()))
    finally:
        torch.set_num_threads(1)
    (e1, f1, s1), (e2, f2, s2) = results
    assert abs(e1 - e2) < 1e-10 and np.abs(f1 - f2).max() < 1e-12
    assert np.abs(s1 - s2).max() < 1e-13


@pytest.mark.parametrize("name", ["schnet", "painn"])
def test_fused_md_follows_the_eager_trajectory(name):
    """30 steps at 1500 K (atoms cross cell faces, the half Verlet list is cut and rebuilt)."""
    model = tiny_model(name, torch.float64)
    start = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    thermalize_momenta(start, temperature_K=1500, rng=np.random.default_rng(0))
    finals = []
    for fused in (True, False):
        atoms = start.copy()
        atoms.calc = MLCalculator(model, fused=fused, threads=1, skin=0.3)
        dyn = VelocityVerlet(atoms, timestep=2.0 * units.fs)
        dyn.attach(atoms.wrap, interval=1)
        dyn.run(30)
        finals.append((atoms.get_positions(), atoms.get_forces(), atoms.calc.verlet.n_builds))
    (p1, f1, builds), (p0, f0, _) = finals
    assert builds > 1
    assert np.abs(p1 - p0).max() < 1e-9 and np.abs(f1 - f0).max() < 1e-8


def test_hessian_and_training_take_the_eager_path(triclinic_cu):
    model = tiny_model("painn", torch.float64)
    reference = tiny_model("painn", torch.float64)
    reference.fused = False
    got = predict(model, triclinic_cu, ["energy", "forces", "hessian"])[0]
    want = predict(reference, triclinic_cu, ["energy", "forces", "hessian"])[0]
    np.testing.assert_allclose(got["hessian"], want["hessian"], atol=1e-9)
    # a model in training mode differentiates the forces again: it must not take the kernels
    model.train()
    from mlcalc.model.predict import atoms_to_batch

    batch = atoms_to_batch([triclinic_cu], MatScipyNeighborList(model.cutoff), half=True)
    model.request(["energy", "forces"])
    out = model(batch)
    assert out[P.idx_i].shape[0] == 2 * atoms_to_batch(
        [triclinic_cu], MatScipyNeighborList(model.cutoff), half=True)[P.idx_i].shape[0]
    out[P.forces].square().sum().backward()  # second derivative works on the eager path


def test_turned_off_by_environment(monkeypatch, triclinic_cu):
    monkeypatch.setenv("MLCALC_KERNELS", "0")
    monkeypatch.setattr(kernels, "_module", None)
    assert not kernels.available()
    calc = MLCalculator(tiny_model("schnet"), threads=1)
    assert calc.fused is False and calc.verlet.half is False
    with pytest.raises(kernels.KernelBuildError, match="MLCALC_KERNELS=0"):
        kernels.load()


def test_a_failed_build_warns_once_and_falls_back(monkeypatch, triclinic_cu):
    monkeypatch.setattr(kernels, "_module", None)
    monkeypatch.setattr(kernels, "_failed", "the fused kernels could not be built (no c++)")
    monkeypatch.delattr(kernels.available, "_warned", raising=False)
    with pytest.warns(RuntimeWarning, match="could not be built"):
        assert not kernels.available()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not kernels.available()  # once
    atoms = triclinic_cu.copy()
    atoms.calc = MLCalculator(tiny_model("painn"), threads=1)
    assert atoms.calc.fused is False
    assert np.isfinite(atoms.get_forces()).all()
