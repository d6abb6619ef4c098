"""PaiNN's pair geometry op (mlcalc.kernels.geometry_ops): kernel, formulas, derivatives."""

from __future__ import annotations

import math

import pytest
import torch

from mlcalc import kernels
from mlcalc.atomistic.pairs import PADDING_DISTANCE
from mlcalc.kernels import geometry_ops
from mlcalc.nn.radial import GAUSSIAN_FLOOR, GaussianRBF
from tests.kernels.test_kernels import torch_threads

pytestmark = pytest.mark.skipif(not kernels.active("cpu"),
                                reason="the fused kernels could not be built here")

CUTOFF = 5.0


def pair_vectors(dtype, n=300, seed=0):
    """Random pair vectors plus the edge cases: beyond the cutoff, a padding
    slot, very short, on a Gaussian centre, just inside the cutoff."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(n, 3, generator=g, dtype=torch.float64)
    r = r / torch.linalg.vector_norm(r, dim=1, keepdim=True) * (0.3 + 5.5 * torch.rand(
        n, 1, generator=g, dtype=torch.float64))
    r[0] = torch.tensor([PADDING_DISTANCE, 0.0, 0.0])
    r[1] = torch.tensor([0.0, 0.31, 0.0])
    r[2] = torch.tensor([0.0, 0.0, CUTOFF * 15 / 19])  # on a centre
    r[3] = torch.tensor([CUTOFF - 1e-3, 0.0, 0.0])
    r[4] = torch.tensor([3.0, -4.0, 2.0])  # beyond the cutoff
    return r.to(dtype)


def basis_args(dtype, n_rbf=20):
    rbf = GaussianRBF(n_rbf, CUTOFF).to(dtype)
    return rbf.centers, rbf.coeff


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-14), (torch.float32, 1e-6)])
def test_kernel_is_the_reference(dtype, tol, threads):
    r = pair_vectors(dtype, n=2000)
    centers, coeff = basis_args(dtype)
    with torch_threads(threads):
        u, basis = kernels.load().pair_gaussian_basis_forward(r, centers, coeff, CUTOFF)
    want_u, want_basis = geometry_ops.gaussian_basis_reference(r, centers, coeff, CUTOFF)
    torch.testing.assert_close(u, want_u, atol=tol, rtol=0)
    torch.testing.assert_close(basis, want_basis, atol=tol, rtol=0)
    assert torch.all(basis[0] == 0) and torch.all(basis[4] == 0)  # beyond the cutoff
    assert basis.shape == (2000, 21)


def test_float32_basis_is_as_accurate_as_torchs():
    """The kernel's own float32 exp (a polynomial the compiler vectorises)
    against float64 on the same float32 inputs, where the cutoff function does
    not cancel: no less accurate than torch's float32 ops (both ~1.5e-5
    relative at the floor, where exp amplifies the rounding of an exponent
    of -60)."""
    r = pair_vectors(torch.float64, n=4000)
    r = r[torch.linalg.vector_norm(r, dim=1) < 0.8 * CUTOFF].float()
    centers, coeff = basis_args(torch.float32)
    _, exact = geometry_ops.gaussian_basis_reference(r.double(), centers.double(), coeff.double(),
                                                     CUTOFF)
    _, torch32 = geometry_ops.gaussian_basis_reference(r, centers, coeff, CUTOFF)
    _, got = kernels.load().pair_gaussian_basis_forward(r, centers, coeff, CUTOFF)

    def error(b):
        return ((b.double() - exact).abs() / exact).max().item()

    assert error(got) <= 1.5 * error(torch32) and error(got) < 3e-5, (error(got), error(torch32))
    assert got.min() > 0  # the floor e^-60 times the cutoff, never 0 or subnormal


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_backward_kernel_is_the_autograd_backward_of_the_reference(dtype, tol):
    r = pair_vectors(dtype)
    centers, coeff = basis_args(dtype)
    g = torch.Generator().manual_seed(1)
    g_u = torch.randn(r.shape, generator=g, dtype=torch.float64).to(dtype)
    g_basis = torch.randn(r.shape[0], 21, generator=g, dtype=torch.float64).to(dtype)
    got = kernels.load().pair_gaussian_basis_backward(g_u, g_basis, r, centers, coeff, CUTOFF)
    leaf = r.clone().requires_grad_()
    (want,) = torch.autograd.grad(geometry_ops.gaussian_basis_reference(leaf, centers, coeff,
                                                                        CUTOFF), leaf,
                                  (g_u, g_basis))
    torch.testing.assert_close(got, want, atol=tol * want.abs().max().item(), rtol=0)
    formula = geometry_ops._basis_backward_ref(g_u, g_basis, r, centers, coeff, CUTOFF)
    torch.testing.assert_close(formula, want, atol=tol * want.abs().max().item(), rtol=0)


def test_clamped_gaussians_have_no_gradient():
    """Where the floor holds g_k, dg_k/dd is zero, as autograd has the clamp."""
    centers, coeff = basis_args(torch.float64)
    d = 4.5  # 4.5 Å from the first centre: coeff d² < -60
    assert float(coeff) * d**2 < GAUSSIAN_FLOOR
    r = torch.tensor([[d, 0.0, 0.0]], dtype=torch.float64)
    g_basis = torch.zeros(1, 21, dtype=torch.float64)
    g_basis[0, 0] = 1.0  # only the clamped Gaussian times the cutoff
    got = kernels.load().pair_gaussian_basis_backward(torch.zeros_like(r), g_basis, r, centers,
                                                      coeff, CUTOFF)
    floor = math.exp(GAUSSIAN_FLOOR)
    dfcut = -0.5 * math.pi / CUTOFF * math.sin(math.pi * d / CUTOFF)
    torch.testing.assert_close(got, torch.tensor([[floor * dfcut, 0.0, 0.0]],
                                                 dtype=torch.float64), atol=1e-40, rtol=1e-12)


def test_first_and_second_derivatives_are_exact():
    """First order through the fused backward, second order (a graph of the
    gradient) through the explicit formula: both against finite differences."""
    r = pair_vectors(torch.float64, n=40)[5:].requires_grad_()  # inside and beyond the cutoff
    centers, coeff = basis_args(torch.float64, n_rbf=6)

    def geometry(t):
        return kernels.pair_gaussian_basis(t, centers, coeff, CUTOFF)

    assert torch.autograd.gradcheck(geometry, (r,))
    assert torch.autograd.gradgradcheck(geometry, (r,))


def test_kernels_off_give_the_reference_and_the_same_gradients():
    r = pair_vectors(torch.float64).requires_grad_()
    centers, coeff = basis_args(torch.float64)
    g = torch.Generator().manual_seed(2)
    weights = torch.randn(r.shape[0], 21, generator=g, dtype=torch.float64)

    def energy_and_force():
        u, basis = kernels.pair_gaussian_basis(r, centers, coeff, CUTOFF)
        e = (basis * weights).sum() + u[:, 0].sum()
        return e, torch.autograd.grad(e, r)[0]

    fused = energy_and_force()
    with kernels.disabled():
        eager = energy_and_force()
    for f, e in zip(fused, eager, strict=True):
        torch.testing.assert_close(f, e, atol=1e-12, rtol=0)


def test_bad_shapes_are_refused():
    centers, coeff = basis_args(torch.float64)
    with pytest.raises(RuntimeError, match=r"r must be \(P, 3\)"):
        kernels.load().pair_gaussian_basis_forward(torch.zeros(4, 2, dtype=torch.float64),
                                                   centers, coeff, CUTOFF)
    with pytest.raises(RuntimeError, match="centers must be"):
        kernels.load().pair_gaussian_basis_forward(torch.zeros(4, 3), centers, coeff, CUTOFF)
