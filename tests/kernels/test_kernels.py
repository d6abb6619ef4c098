"""The message ops: one op per message step, dispatched by device, differentiable to any order.

The compiled CPU kernels and the plain torch reference must give the same
numbers and exact gradients (first and second order), and models must give
the same energies, forces, stress, Hessians and training gradients on both.
"""

from __future__ import annotations

import contextlib
import platform

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet

from mlcalc import MLCalculator, kernels
from mlcalc import properties as P
from mlcalc.kernels import ops, update_ops
from mlcalc.model import atoms_to_batch, predict
from mlcalc.testing import TOLERANCES
from mlcalc.transform.neighbors import MatScipyNeighborList, full_pairs, half_pairs
from tests.conftest import tiny_model

pytestmark = pytest.mark.skipif(not kernels.active("cpu"),
                                reason="the fused kernels could not be built here")


def random_graph(n_atoms=7, n_pairs=15, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, n_atoms, (n_pairs,), generator=g)
    b = torch.randint(0, n_atoms, (n_pairs,), generator=g)
    b[0] = a[0]  # an atom paired with its own image
    return a, b, *kernels.half_graph(a, b, n_atoms)


def full_list_painn_message(x, W, u, mu, a, b):
    """Independent reference: both directions of every pair as separate edges."""
    F = mu.shape[2]
    ii, jj = torch.cat([a, b]), torch.cat([b, a])
    m = x[jj] * torch.cat([W, W])
    s, vs, vv = m.split(F, dim=-1)
    dirs = torch.cat([u, -u])
    dq = torch.zeros_like(mu[:, 0]).index_add(0, ii, s)
    messages = vs[:, None] * dirs[..., None] + vv[:, None] * mu[jj]
    dmu = torch.zeros_like(mu).index_add(0, ii, messages)
    return dq, dmu


def painn_inputs(dtype=torch.float64, F=4, requires_grad=False, seed=2):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g, dtype=dtype).requires_grad_(requires_grad)
            for shape in ((7, 3 * F), (15, 3 * F), (15, 3), (7, 3, F))]


def test_half_graph_groups_edges_by_centre():
    a, b, order, rowptr = random_graph()
    centres = torch.cat([a, b])
    for i in range(7):
        group = order[rowptr[i]:rowptr[i + 1]]
        assert torch.all(centres[group] == i)
    assert sorted(order.tolist()) == list(range(2 * len(a)))


@pytest.mark.parametrize("n_atoms,n_pairs", [(7, 15), (50, 400), (5, 0), (1, 3), (30, 4)])
def test_compiled_half_graph_equals_the_stable_argsort(n_atoms, n_pairs):
    g = torch.Generator().manual_seed(n_pairs)
    a = torch.randint(0, n_atoms, (n_pairs,), generator=g)
    b = torch.randint(0, n_atoms, (n_pairs,), generator=g)
    order, rowptr = kernels.half_graph(a, b, n_atoms)  # the compiled counting sort
    with kernels.disabled():
        want_order, want_rowptr = kernels.half_graph(a, b, n_atoms)  # torch's stable argsort
    assert torch.equal(order, want_order) and torch.equal(rowptr, want_rowptr)
    assert order.dtype == rowptr.dtype == torch.int64


def test_compiled_half_graph_refuses_atoms_out_of_range():
    a, b = torch.tensor([0, 1]), torch.tensor([1, 3])
    with pytest.raises(RuntimeError, match="atom index 3 out of range for 3 atoms"):
        kernels.half_graph(a, b, 3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_painn_message_matches_the_full_list_message_on_both_paths(dtype, message_path):
    a, b, order, rowptr = random_graph()
    args = painn_inputs(dtype, F=5)
    got = kernels.painn_message(*args, a, b, order, rowptr)
    want = full_list_painn_message(*args, a, b)
    tol = 1e-5 if dtype == torch.float32 else 1e-13
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=tol, rtol=tol)


def test_painn_backward_kernel_is_the_reference_backward():
    a, b, order, rowptr = random_graph()
    x, W, u, mu = painn_inputs()
    g = torch.Generator().manual_seed(5)
    gq, gmu = torch.randn(7, 4, generator=g, dtype=x.dtype), torch.randn(7, 3, 4, generator=g,
                                                                          dtype=x.dtype)
    got = ops.painn_message_backward(gq, gmu, x, W, u, mu, a, b, order, rowptr)  # the kernel
    want = ops._painn_backward_ref(gq, gmu, x, W, u, mu, a, b)
    leaves = [t.clone().requires_grad_() for t in (x, W, u, mu)]
    autograd = torch.autograd.grad(full_list_painn_message(*leaves, a, b), leaves, (gq, gmu))
    for k, r, ag in zip(got, want, autograd, strict=True):
        torch.testing.assert_close(k, r, atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(r, ag, atol=1e-12, rtol=1e-12)


def test_painn_message_first_and_second_derivatives_are_exact(message_path):
    a, b, order, rowptr = random_graph()
    inputs = painn_inputs(requires_grad=True)

    def message(*t):
        return kernels.painn_message(*t, a, b, order, rowptr)

    assert torch.autograd.gradcheck(message, inputs)
    assert torch.autograd.gradgradcheck(message, inputs)


def filter_inputs(dtype=torch.float64, F=5, K=3, requires_grad=False, seed=4, n_pairs=15):
    """x (7, 3F), basis (P, K), Wt (K, 3F), u (P, 3), mu (7, 3, F) for :func:`random_graph`."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g, dtype=dtype).requires_grad_(requires_grad)
            for shape in ((7, 3 * F), (n_pairs, K), (K, 3 * F), (n_pairs, 3), (7, 3, F))]


@contextlib.contextmanager
def torch_threads(n):
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def small_tiles():
    """Tiles of 16 pairs (the least), so that a test graph spans several tiles
    and two threads each take some (each scattering into its own rows)."""
    library = kernels.load()
    previous = library.set_pair_tile_bytes(1)
    try:
        yield
    finally:
        library.set_pair_tile_bytes(previous)


@pytest.fixture(params=["direct", "mm_out"])
def blas_route(request):
    """The filter kernels' products through the BLAS directly, then through at::mm_out."""
    library = kernels.load()
    previous = library.set_direct_blas(request.param == "direct")
    try:
        yield request.param
    finally:
        library.set_direct_blas(previous)


def test_direct_blas_is_found_where_torch_has_mkl():
    if platform.machine() in ("x86_64", "AMD64") and torch.backends.mkl.is_available():
        assert kernels.load().direct_blas_available()


# The filter message walks the pairs in tiles; with several tiles and 2 threads
# each thread scatters into its own copy of the atom rows. F = 5, 40 and 37 leave
# partial vector blocks; pair 0 joins an atom to its own image.
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("F,K", [(5, 3), (40, 21), (37, 2)])
@pytest.mark.parametrize("tiles", ["one", "several"])
def test_filter_message_is_the_message_of_the_filter_product(threads, dtype, F, K, tiles,
                                                             blas_route):
    a, b, order, rowptr = random_graph(n_pairs=15 if tiles == "one" else 70)
    x, basis, Wt, u, mu = filter_inputs(dtype, F, K, n_pairs=len(a))
    with torch_threads(threads), small_tiles() if tiles == "several" else _nothing():
        got = ops.painn_filter_message(x, basis, Wt, u, mu, a, b, order, rowptr)  # the kernel
    want = full_list_painn_message(x, basis @ Wt, u, mu, a, b)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=tol, rtol=tol)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("want_wt", [True, False])
@pytest.mark.parametrize("tiles", ["one", "several"])
def test_filter_backward_kernel_is_the_autograd_backward(threads, want_wt, tiles, blas_route):
    a, b, order, rowptr = random_graph(n_pairs=15 if tiles == "one" else 70)
    x, basis, Wt, u, mu = filter_inputs(F=6, K=4, n_pairs=len(a))
    g = torch.Generator().manual_seed(5)
    gq, gmu = (torch.randn(7, 6, generator=g, dtype=x.dtype),
               torch.randn(7, 3, 6, generator=g, dtype=x.dtype))
    with torch_threads(threads), small_tiles() if tiles == "several" else _nothing():
        got = ops.painn_filter_message_backward(gq, gmu, x, basis, Wt, u, mu, a, b, order,
                                                rowptr, want_wt)
    leaves = [t.clone().requires_grad_() for t in (x, basis, Wt, u, mu)]
    x_, basis_, Wt_, u_, mu_ = leaves
    want = torch.autograd.grad(full_list_painn_message(x_, basis_ @ Wt_, u_, mu_, a, b), leaves,
                               (gq, gmu))
    for k, (got_k, want_k) in enumerate(zip(got, want, strict=True)):
        if k == 2 and not want_wt:
            assert torch.all(got_k == 0)  # not asked for: not computed
            continue
        torch.testing.assert_close(got_k, want_k, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("threads", [1, 2])
def test_filter_message_first_and_second_derivatives_are_exact(message_path, threads):
    """First order runs the fused backward; second order (a graph is built) the
    decomposed, differentiable route: both checked against finite differences."""
    a, b, order, rowptr = random_graph(n_pairs=40)
    inputs = filter_inputs(requires_grad=True, n_pairs=40)

    def message(*t):
        return kernels.painn_filter_message(*t, a, b, order, rowptr)

    with torch_threads(threads), small_tiles() if message_path == "fused" else _nothing():
        assert torch.autograd.gradcheck(message, inputs)
        assert torch.autograd.gradgradcheck(message, inputs)


# mu=None: zero vector features (PaiNN's first interaction); the kernel skips
# the W_vv columns of the filters and the mu rows.
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("F,K", [(5, 3), (37, 21)])
@pytest.mark.parametrize("tiles", ["one", "several"])
def test_filter_message_without_mu_is_the_message_with_zero_mu(threads, dtype, F, K, tiles):
    a, b, order, rowptr = random_graph(n_pairs=15 if tiles == "one" else 70)
    x, basis, Wt, u, mu = filter_inputs(dtype, F, K, n_pairs=len(a))
    zeros = torch.zeros_like(mu)
    with torch_threads(threads), small_tiles() if tiles == "several" else _nothing():
        got = ops.painn_filter_message(x, basis, Wt, u, None, a, b, order, rowptr)  # the kernel
        with_zeros = ops.painn_filter_message(x, basis, Wt, u, zeros, a, b, order, rowptr)
    want = full_list_painn_message(x, basis @ Wt, u, zeros, a, b)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for g, z, w in zip(got, with_zeros, want, strict=True):
        torch.testing.assert_close(g, w, atol=tol, rtol=tol)
        torch.testing.assert_close(g, z, atol=tol, rtol=tol)  # (rounding: fused multiply-adds)
    with kernels.disabled():  # the reference implementation takes None too
        ref = ops.painn_filter_message(x, basis, Wt, u, None, a, b, order, rowptr)
    for r, w in zip(ref, want, strict=True):
        torch.testing.assert_close(r, w, atol=tol, rtol=tol)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("want_wt", [True, False])
@pytest.mark.parametrize("tiles", ["one", "several"])
@pytest.mark.parametrize("path", ["kernel", "reference"])
def test_filter_backward_without_mu_is_the_autograd_backward(threads, want_wt, tiles, path):
    a, b, order, rowptr = random_graph(n_pairs=15 if tiles == "one" else 70)
    x, basis, Wt, u, mu = filter_inputs(F=6, K=4, n_pairs=len(a))
    g = torch.Generator().manual_seed(5)
    gq, gmu = (torch.randn(7, 6, generator=g, dtype=x.dtype),
               torch.randn(7, 3, 6, generator=g, dtype=x.dtype))
    with (torch_threads(threads), small_tiles() if tiles == "several" else _nothing(),
          kernels.disabled() if path == "reference" else _nothing()):
        got = ops.painn_filter_message_backward(gq, gmu, x, basis, Wt, u, None, a, b, order,
                                                rowptr, want_wt)
    leaves = [t.clone().requires_grad_() for t in (x, basis, Wt, u)]
    x_, basis_, Wt_, u_ = leaves
    want = torch.autograd.grad(
        full_list_painn_message(x_, basis_ @ Wt_, u_, torch.zeros_like(mu), a, b), leaves,
        (gq, gmu))
    for k, (got_k, want_k) in enumerate(zip(got[:4], want, strict=True)):
        if k == 2 and not want_wt:
            assert torch.all(got_k == 0)  # not asked for: not computed
            continue
        torch.testing.assert_close(got_k, want_k, atol=1e-12, rtol=1e-12)
    if want_wt:  # the W_vv columns meet only mu: no gradient
        assert torch.all(got[2][:, 12:] == 0)
    assert got[4].shape == (0, 3, 6)  # no mu, no gradient for it


@pytest.mark.parametrize("threads", [1, 2])
def test_filter_message_without_mu_first_and_second_derivatives_are_exact(message_path,
                                                                           threads):
    a, b, order, rowptr = random_graph(n_pairs=40)
    inputs = filter_inputs(requires_grad=True, n_pairs=40)[:4]

    def message(*t):
        return kernels.painn_filter_message(*t, None, a, b, order, rowptr)

    with torch_threads(threads), small_tiles() if message_path == "fused" else _nothing():
        assert torch.autograd.gradcheck(message, inputs)
        assert torch.autograd.gradgradcheck(message, inputs)


def update_inputs(dtype=torch.float64, N=9, F=5, seed=6):
    """q (N, F), mu (N, 3, F), mu_vw (N, 3, 2F), ctx (N, 3F)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g, dtype=dtype)
            for shape in ((N, F), (N, 3, F), (N, 3, 2 * F), (N, 3 * F))]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_update_kernels_are_the_update_block_formulas(threads, dtype):
    """Forward and first-order backward of the fused update ops against autograd
    of the written-out formulas (PaiNN's update block before the fusion)."""
    q, mu, mu_vw, ctx = update_inputs(dtype, N=20)
    leaves = [t.clone().requires_grad_() for t in (q, mu, mu_vw, ctx)]
    lq, lmu, lvw, lctx = leaves
    F = q.shape[1]
    V, W = lvw[..., :F], lvw[..., F:]
    norm = torch.sqrt(torch.sum(V**2, dim=1) + 0.7)
    a_vv, a_sv, a_ss = lctx.split(F, dim=1)
    want_h = torch.cat([lq, norm], dim=1)
    want_q, want_mu = lq + (a_ss + a_sv * torch.sum(V * W, dim=1)), lmu + a_vv[:, None] * W
    g = torch.Generator().manual_seed(8)
    gh, gq, gmu = (torch.randn(t.shape, generator=g, dtype=dtype)
                   for t in (want_h, want_q, want_mu))
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-12)
    with torch_threads(threads):
        h = update_ops.painn_update_norms(q, mu_vw, 0.7)
        q2, mu2 = update_ops.painn_update_apply(q, mu, mu_vw, ctx)
        g_q, g_vw_norms = update_ops.painn_update_norms_backward(gh, mu_vw, h)
        g_vw_apply, g_ctx = update_ops.painn_update_apply_backward(gq, gmu, mu_vw, ctx)
    torch.testing.assert_close(h, want_h.detach(), **tol)
    torch.testing.assert_close(q2, want_q.detach(), **tol)
    torch.testing.assert_close(mu2, want_mu.detach(), **tol)
    want = torch.autograd.grad(want_h, (lq, lvw), gh)
    torch.testing.assert_close(g_q, want[0], **tol)
    torch.testing.assert_close(g_vw_norms, want[1], **tol)
    want = torch.autograd.grad((want_q, want_mu), (lvw, lctx), (gq, gmu))
    torch.testing.assert_close(g_vw_apply, want[0], **tol)
    torch.testing.assert_close(g_ctx, want[1], **tol)


def test_update_ops_first_and_second_derivatives_are_exact(message_path):
    q, mu, mu_vw, ctx = (t.requires_grad_() for t in update_inputs())

    def norms(q, mu_vw):
        return kernels.painn_update_norms(q, mu_vw, 0.7)

    assert torch.autograd.gradcheck(norms, (q, mu_vw))
    assert torch.autograd.gradgradcheck(norms, (q, mu_vw))
    assert torch.autograd.gradcheck(kernels.painn_update_apply, (q, mu, mu_vw, ctx))
    assert torch.autograd.gradgradcheck(kernels.painn_update_apply, (q, mu, mu_vw, ctx))


def test_the_calculator_runs_the_fused_filter_backward_without_weight_gradients(
        monkeypatch, tmp_path, triclinic_cu):
    """Forces in MD take the fused backward, and, for the model the calculator
    loaded (frozen), skip the filter-weight gradient; a module passed in keeps
    its requires_grad."""
    from mlcalc.model import save_model

    library = kernels.load()
    seen = []
    backward = library.painn_filter_message_backward

    def spy(*args):
        seen.append(args[-1])
        return backward(*args)

    monkeypatch.setattr(library, "painn_filter_message_backward", spy)
    model = tiny_model("painn", torch.float64)
    save_model(model, tmp_path / "model.pt")
    loaded = MLCalculator(str(tmp_path / "model.pt"), threads=1)
    assert not any(p.requires_grad for p in loaded.model.parameters())
    passed = MLCalculator(model, threads=1)
    assert all(p.requires_grad for p in model.parameters())
    results = []
    for calc in (loaded, passed):
        atoms = triclinic_cu.copy()
        atoms.calc = calc
        results.append(atoms.get_forces())
    assert seen == [False] * model.representation.n_interactions \
        + [True] * model.representation.n_interactions
    np.testing.assert_allclose(results[0], results[1], atol=1e-12)


def test_cfconv_matches_full_list_and_derivatives_are_exact(message_path):
    a, b, order, rowptr = random_graph()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, 6, generator=g, dtype=torch.float64).requires_grad_()
    W = torch.randn(15, 6, generator=g, dtype=torch.float64).requires_grad_()
    ii, jj = torch.cat([a, b]), torch.cat([b, a])
    ref = torch.zeros_like(x).index_add(0, ii, x[jj] * torch.cat([W, W]))
    torch.testing.assert_close(kernels.cfconv(x, W, a, b, order, rowptr), ref)

    def conv(*t):
        return kernels.cfconv(*t, a, b, order, rowptr)

    assert torch.autograd.gradcheck(conv, (x, W))
    assert torch.autograd.gradgradcheck(conv, (x, W))


@pytest.mark.slow
def test_ops_trace_under_torch_compile(model_name):
    """Fake implementations let torch.compile trace the ops without a graph break."""
    model = tiny_model(model_name, torch.float64)
    atoms = bulk("Cu", cubic=True) * (2, 1, 1)
    atoms.rattle(0.05, seed=1)
    batch = atoms_to_batch([atoms], model)
    want = model(dict(batch), ["energy", "forces"])
    model.representation = torch.compile(model.representation, backend="aot_eager",
                                         fullgraph=True)
    got = model(dict(batch), ["energy", "forces"])
    assert abs(got[P.energy] - want[P.energy]).max() < 1e-12
    assert abs(got[P.forces] - want[P.forces]).max() < 1e-12


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
    for eager in (False, True):
        atoms = triclinic_cu.copy()
        atoms.calc = MLCalculator(model, threads=1)
        with kernels.disabled() if eager else _nothing():
            results.append((atoms.get_potential_energy(), atoms.get_forces(),
                            atoms.get_stress()))
    tol = TOLERANCES[dtype]
    (e1, f1, s1), (e0, f0, s0) = results
    assert abs(e1 - e0) < tol["energy"]
    assert np.abs(f1 - f0).max() < tol["forces"]
    assert np.abs(s1 - s0).max() < tol["stress"]
    assert np.abs(f0).max() > 1e-3  # forces worth comparing
    if dtype == torch.float64:  # the bound for the two paths
        assert abs(e1 - e0) < 1e-12 and np.abs(f1 - f0).max() < 1e-12


@pytest.mark.parametrize("name", ["schnet", "painn"])
def test_fused_float32_is_the_float64_eager_function(name):
    """The acceptance bound for the fast path: a 128x3 float32 model on the fused
    kernels against the same weights in float64 on the eager path: energies
    within 1e-5 relative, forces within 1e-4 eV/Å."""
    from mlcalc.bench import _potential, cu_supercell

    atoms = cu_supercell(32)
    atoms.rattle(0.1, seed=4)
    fast = MLCalculator(_potential(name, 128, 3, 5.0), threads=1)
    reference = MLCalculator(_potential(name, 128, 3, 5.0), dtype="float64", threads=1)
    assert reference.model.dtype == torch.float64
    a, b = atoms.copy(), atoms.copy()
    a.calc, b.calc = fast, reference
    with kernels.disabled():
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
    for eager in (False, True):
        atoms = start.copy()
        atoms.calc = MLCalculator(model, threads=1, skin=0.3)
        dyn = VelocityVerlet(atoms, timestep=2.0 * units.fs)
        dyn.attach(atoms.wrap, interval=1)
        with kernels.disabled() if eager else _nothing():
            dyn.run(30)
        finals.append((atoms.get_positions(), atoms.get_forces(), atoms.calc.verlet.n_builds))
    (p1, f1, builds), (p0, f0, _) = finals
    assert builds > 1
    assert np.abs(p1 - p0).max() < 1e-9 and np.abs(f1 - f0).max() < 1e-8


@pytest.mark.parametrize("name", ["schnet", "painn"])
def test_hessian_on_the_kernels_is_the_eager_hessian(name, triclinic_cu):
    model = tiny_model(name, torch.float64)
    got = predict(model, triclinic_cu, ["energy", "forces", "hessian"])[0]["hessian"]
    with kernels.disabled():
        want = predict(model, triclinic_cu, ["energy", "forces", "hessian"])[0]["hessian"]
    np.testing.assert_allclose(got, want, atol=1e-10)


@pytest.mark.parametrize("name", ["schnet", "painn"])
def test_a_force_trained_step_on_the_kernels_equals_the_eager_step(name, triclinic_cu):
    """Loss and every parameter gradient of an energy + forces + stress loss, float64."""
    grads = []
    for eager in (False, True):
        model = tiny_model(name, torch.float64).train()
        batch = atoms_to_batch([triclinic_cu, bulk("Cu", cubic=True)], model)
        with kernels.disabled() if eager else _nothing():
            out = model(batch, ["energy", "forces", "stress"], postprocess=False)
            loss = (out[P.energy].square().sum() + 10 * out[P.forces].square().sum()
                    + 100 * out[P.stress].square().sum())
            loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in model.parameters()]))
    (l1, g1), (l0, g0) = grads
    assert abs(l1 - l0) < 1e-10 * abs(l0)
    assert max((a - b).abs().max().item() for a, b in zip(g1, g0, strict=True)) < 1e-10
    assert max(g.abs().max().item() for g in g0) > 1e-6  # gradients worth comparing


def _nothing():
    import contextlib

    return contextlib.nullcontext()


@pytest.mark.parametrize("threads", [1, 2])
def test_an_energy_trained_step_on_the_kernels_equals_the_eager_step(threads, triclinic_cu):
    """An energy-only loss needs no graph of the gradients: its backward is the
    fused one, weight gradients included (PaiNN's filter weights through the
    per-tile products on one thread), and must equal eager to 1e-10 (float64)."""
    grads = []
    for eager in (False, True):
        model = tiny_model("painn", torch.float64).train()
        batch = atoms_to_batch([triclinic_cu, bulk("Cu", cubic=True)], model)
        with kernels.disabled() if eager else _nothing(), torch_threads(threads):
            out = model(batch, ["energy"], postprocess=False)
            loss = out[P.energy].square().sum()
            loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in model.parameters()]))
    (l1, g1), (l0, g0) = grads
    assert abs(l1 - l0) < 1e-10 * abs(l0)
    assert max((a - b).abs().max().item() for a, b in zip(g1, g0, strict=True)) < 1e-10
    assert model.representation.filter_net.weight.grad.abs().max() > 1e-6


@pytest.mark.parametrize("threads", [1, 2])
def test_filter_message_of_a_structure_without_pairs(threads):
    """No pair within the cutoff (a lone atom, a dilute gas): zero messages,
    zero gradients, empty basis gradient."""
    a = b = torch.zeros(0, dtype=torch.long)
    order, rowptr = kernels.half_graph(a, b, 3)
    F, K = 4, 3
    g = torch.Generator().manual_seed(9)
    x, mu = torch.randn(3, 3 * F, generator=g), torch.randn(3, 3, F, generator=g)
    basis, u, Wt = torch.zeros(0, K), torch.zeros(0, 3), torch.randn(K, 3 * F, generator=g)
    with torch_threads(threads):
        dq, dmu = ops.painn_filter_message(x, basis, Wt, u, mu, a, b, order, rowptr)
        grads = ops.painn_filter_message_backward(torch.ones(3, F), torch.ones(3, 3, F), x, basis,
                                                  Wt, u, mu, a, b, order, rowptr, True)
    assert torch.all(dq == 0) and torch.all(dmu == 0)
    assert all(torch.all(t == 0) for t in grads) and grads[1].shape == (0, K)
