"""PaiNN's pair geometry as one op: unit vectors and the filter basis of every pair.

``pair_gaussian_basis(r, centers, coeff, cutoff)`` takes the pair vectors
``r`` (P, 3) in the network dtype and returns

- ``u`` (P, 3): ``r / |r|``,
- ``basis`` (P, K + 1): ``[g_k(d) f(d) | f(d)]`` with the Gaussians
  ``g_k(d) = exp(max(coeff (d - c_k)², -60))`` (:func:`mlcalc.nn.radial.gaussian_rbf`)
  and the cosine cutoff ``f`` (:func:`mlcalc.nn.radial.cosine_cutoff`),

the filter basis of :class:`mlcalc.representation.painn.PaiNN` with its default
Gaussian basis and cosine cutoff. In torch that is about fifteen element-wise
ops over (P, K) tensors forward and twenty backward (0.79 ms of a 108-atom
PaiNN MD step, measured on a Xeon); the CPU kernel (``cpu.cpp``) makes both
in one pass over the pairs.

As for the message ops (:mod:`mlcalc.kernels.ops`): a plain torch reference
(:func:`gaussian_basis_reference`, the formulas the modules use), a fake
implementation, a C++ kernel on CPU, and an autograd formula that calls the
fused first-order backward when no graph of the gradient is built and an
explicit differentiable formula when one is (a force loss in training, the
Hessian), so the op differentiates to any order.
"""

from __future__ import annotations

import math
from types import ModuleType

import torch
from torch import Tensor
from torch.library import custom_op

from mlcalc.kernels import dispatch
from mlcalc.nn.radial import GAUSSIAN_FLOOR, cosine_cutoff, gaussian_rbf

# ---- reference implementations (plain torch, any device) --------------------


def gaussian_basis_reference(r: Tensor, centers: Tensor, coeff: Tensor,
                             cutoff: float) -> tuple[Tensor, Tensor]:
    """``u`` (P, 3) and ``basis`` (P, K + 1) in plain torch ops (see the module docstring)."""
    d = torch.linalg.vector_norm(r, dim=1)  # (P,)
    fcut = cosine_cutoff(d, cutoff)[:, None]  # (P, 1)
    basis = torch.cat([gaussian_rbf(d, centers, coeff) * fcut, fcut], dim=1)
    return r / d[:, None], basis


def _basis_backward_ref(g_u: Tensor, g_basis: Tensor, r: Tensor, centers: Tensor, coeff: Tensor,
                        cutoff: float) -> Tensor:
    """The gradient for ``r`` given those of ``u`` and ``basis``, in differentiable ops.

    With x_k = d - c_k: d g_k / dd = 2 coeff x_k g_k where the clamp is not
    active (zero where it is, as autograd has it), f' = -½ π/r_c sin(π d/r_c)
    below the cutoff, and the unit vector's Jacobian (1 - u uᵀ) / d.
    """
    K = centers.shape[0]
    d = torch.linalg.vector_norm(r, dim=1)  # (P,)
    u = r / d[:, None]
    x = d[:, None] - centers  # (P, K)
    e = coeff * x**2
    g = torch.exp(torch.clamp(e, min=GAUSSIAN_FLOOR))
    dg = torch.where(e >= GAUSSIAN_FLOOR, 2 * coeff * x * g, torch.zeros_like(g))
    fcut = cosine_cutoff(d, cutoff)
    dfcut = -0.5 * (math.pi / cutoff) * torch.sin(d * (math.pi / cutoff)) * (d < cutoff).to(d.dtype)
    gb = g_basis[:, :K]
    g_d = ((gb * (dg * fcut[:, None] + g * dfcut[:, None])).sum(1)
           + g_basis[:, K] * dfcut)  # (P,)
    tangential = g_u - (g_u * u).sum(1, keepdim=True) * u
    return g_d[:, None] * u + tangential / d[:, None]


@custom_op("mlcalc::pair_gaussian_basis", mutates_args=())
def pair_gaussian_basis(r: Tensor, centers: Tensor, coeff: Tensor,
                        cutoff: float) -> tuple[Tensor, Tensor]:
    """``u`` (P, 3) and ``basis`` (P, K + 1) of pair vectors ``r`` (P, 3), Å."""
    u, basis = gaussian_basis_reference(r, centers, coeff, cutoff)
    return u, basis


@custom_op("mlcalc::pair_gaussian_basis_backward", mutates_args=())
def pair_gaussian_basis_backward(g_u: Tensor, g_basis: Tensor, r: Tensor, centers: Tensor,
                                 coeff: Tensor, cutoff: float) -> Tensor:
    """Gradient of :func:`pair_gaussian_basis` for ``r`` (P, 3). First order."""
    return _basis_backward_ref(g_u, g_basis, r, centers, coeff, cutoff)


OPS = (pair_gaussian_basis, pair_gaussian_basis_backward)


@pair_gaussian_basis.register_fake
def _(r, centers, coeff, cutoff):
    return torch.empty_like(r), r.new_empty((r.shape[0], centers.shape[0] + 1))


@pair_gaussian_basis_backward.register_fake
def _(g_u, g_basis, r, centers, coeff, cutoff):
    return torch.empty_like(r)


# ---- autograd ------------------------------------------------------------------


def _save_basis(ctx, inputs, output) -> None:
    r, centers, coeff, cutoff = inputs
    ctx.save_for_backward(r, centers, coeff)
    ctx.cutoff = cutoff


def _basis_backward(ctx, g_u, g_basis):
    # with a graph of the gradient being built (a force loss, the Hessian) the
    # explicit formula in torch ops, differentiable again; otherwise one fused call
    r, centers, coeff = ctx.saved_tensors
    if g_u is None:
        g_u = torch.zeros_like(r)
    if g_basis is None:
        g_basis = r.new_zeros((r.shape[0], centers.shape[0] + 1))
    if torch.is_grad_enabled():
        g_r = _basis_backward_ref(g_u, g_basis, r, centers, coeff, ctx.cutoff)
    else:
        g_r = dispatch.call(pair_gaussian_basis_backward, g_u, g_basis, r, centers, coeff,
                            ctx.cutoff)
    return g_r, None, None, None


dispatch.register_autograd(pair_gaussian_basis, _basis_backward, _save_basis)


# ---- device kernels --------------------------------------------------------------


def register_cpu(library: ModuleType) -> None:
    """Register the compiled C++ functions of ``library`` as the ops' CPU kernels."""
    dispatch.register_cpu(pair_gaussian_basis, lambda r, centers, coeff, cutoff:
                          tuple(library.pair_gaussian_basis_forward(r, centers, coeff, cutoff)))
    dispatch.register_cpu(pair_gaussian_basis_backward,
                          lambda g_u, g_basis, r, centers, coeff, cutoff:
                          library.pair_gaussian_basis_backward(g_u, g_basis, r, centers, coeff,
                                                               cutoff))
