"""The message ops as ``torch.library`` custom ops.

Every op works on a *half* neighbor list: pair ``p`` joins atoms ``a[p]`` and
``b[p]`` and stands for both directed edges (centre ``a`` with source ``b`` and
direction ``+u_p``, centre ``b`` with source ``a`` and direction ``-u_p``); the
filter of a pair serves both. ``order`` and ``rowptr`` group the directed edges
by centre atom (:func:`mlcalc.kernels.half_graph`) for implementations that
gather per atom; the reference implementations do not need them.

Each op has

- a *reference* implementation in plain torch, registered for every device (it
  is what runs where no kernel is registered, and the tests' reference),
- a fake implementation (shapes only), so ``torch.compile`` traces through it,
- a registered autograd formula written with the ops themselves, so every op
  is differentiable to any order (a force loss in training, the Hessian);
- device kernels, registered by :func:`register_cpu` (C++, ``cpu.cpp``). A CUDA
  implementation is one more ``register_kernel("cuda", ...)`` per op here.

The ops:

``cfconv(x, W, ...)``          (N, F): ``out_i = Σ_edges W_p ∘ x_j`` (SchNet)
``cfconv_backward(g, x, W, ...)``  its gradients for x and W, in one call
``pair_product(g, x, ...)``    (P, F): ``g_a ∘ x_b + g_b ∘ x_a`` (its filter gradient)
``painn_message(x, W, u, mu, ...)``  Δq (N, F), Δμ (N, 3, F) (PaiNN's message)
``painn_message_backward(...)``      its vector-Jacobian product
``painn_filter_message(x, basis, Wt, u, mu, ...)``  the message, filters made inside
``painn_filter_message_backward(...)``  its first-order vector-Jacobian product

(the filter message is ``painn_message`` with ``W = basis @ Wt``, PaiNN's form)

PaiNN's update-block ops are in :mod:`mlcalc.kernels.update_ops`.

Since cfconv is linear in ``x`` and in ``W`` and both edges share ``W``, its
gradients are ``cfconv(g, W)`` and ``pair_product(g, x)``, and those of
``pair_product`` are again cfconvs. PaiNN's message is linear in each of ``x``,
``W`` and (term by term) ``u`` and ``mu``, so the derivatives of its backward
are forward and backward calls with one argument replaced by its tangent (see
:func:`_painn_backward_backward`).
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor
from torch.library import custom_op

from mlcalc.kernels import dispatch

# ---- reference implementations (plain torch, any device) --------------------


def _cfconv_ref(x: Tensor, W: Tensor, a: Tensor, b: Tensor) -> Tensor:
    out = torch.zeros_like(x)
    out.index_add_(0, a, W * x.index_select(0, b))
    out.index_add_(0, b, W * x.index_select(0, a))
    return out


def _pair_product_ref(g: Tensor, x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    return g.index_select(0, a) * x.index_select(0, b) + g.index_select(0, b) * x.index_select(
        0, a)


def _painn_ref(x: Tensor, W: Tensor, u: Tensor, mu: Tensor, a: Tensor,
               b: Tensor) -> tuple[Tensor, Tensor]:
    F = mu.shape[2]
    dq = x.new_zeros((x.shape[0], F))
    dmu = torch.zeros_like(mu)
    for i, j, sign in ((a, b, 1.0), (b, a, -1.0)):
        hs, hvs, hvv = (W * x.index_select(0, j)).split(F, dim=1)  # (P, F) each
        dq.index_add_(0, i, hs)
        dmu.index_add_(0, i, hvs[:, None, :] * (sign * u)[:, :, None]
                       + hvv[:, None, :] * mu.index_select(0, j))  # (P, 3, F)
    return dq, dmu


def _painn_backward_ref(gq: Tensor, gmu: Tensor, x: Tensor, W: Tensor, u: Tensor, mu: Tensor,
                        a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    F = mu.shape[2]
    gx, gW, gu, gmu_in = (torch.zeros_like(t) for t in (x, W, u, mu))
    for i, j, sign in ((a, b, 1.0), (b, a, -1.0)):
        g_q, g_m = gq.index_select(0, i), gmu.index_select(0, i)  # (P, F), (P, 3, F)
        xj, mj = x.index_select(0, j), mu.index_select(0, j)  # (P, 3F), (P, 3, F)
        g_vs = (g_m * (sign * u)[:, :, None]).sum(1)  # (P, F)
        g_vv = (g_m * mj).sum(1)  # (P, F)
        g_h = torch.cat([g_q, g_vs, g_vv], dim=1)  # (P, 3F): gradient of W * x_j
        gW += g_h * xj
        gx.index_add_(0, j, g_h * W)
        h = W * xj
        gu += sign * (g_m * h[:, None, F:2 * F]).sum(2)  # (P, 3)
        gmu_in.index_add_(0, j, g_m * h[:, None, 2 * F:])
    return gx, gW, gu, gmu_in


def _mu_or_zeros(x: Tensor, mu: Tensor | None) -> Tensor:
    """``mu``, or the zero vector features (N, 3, F) it stands for when None."""
    return x.new_zeros((x.shape[0], 3, x.shape[1] // 3)) if mu is None else mu


def _painn_filter_backward_ref(gq: Tensor, gmu: Tensor, x: Tensor, basis: Tensor, Wt: Tensor,
                               u: Tensor, mu: Tensor | None, a: Tensor, b: Tensor,
                               want_wt: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    gx, gW, gu, gmu_in = _painn_backward_ref(gq, gmu, x, basis @ Wt, u, _mu_or_zeros(x, mu), a, b)
    gWt = basis.T @ gW if want_wt else torch.zeros_like(Wt)
    if mu is None:
        gmu_in = gmu_in.new_empty((0, 3, gmu_in.shape[2]))
    return gx, gW @ Wt.T, gWt, gu, gmu_in


# ---- the ops (their default implementation is the reference) -----------------


@custom_op("mlcalc::cfconv", mutates_args=())
def cfconv(x: Tensor, W: Tensor, a: Tensor, b: Tensor, order: Tensor, rowptr: Tensor) -> Tensor:
    """SchNet's convolution: x (N, F), W (P, F) -> (N, F)."""
    return _cfconv_ref(x, W, a, b)


@custom_op("mlcalc::pair_product", mutates_args=())
def pair_product(g: Tensor, x: Tensor, a: Tensor, b: Tensor, order: Tensor,
                 rowptr: Tensor) -> Tensor:
    """``g_a ∘ x_b + g_b ∘ x_a`` for every pair: g, x (N, F) -> (P, F)."""
    return _pair_product_ref(g, x, a, b)


@custom_op("mlcalc::cfconv_backward", mutates_args=())
def cfconv_backward(grad: Tensor, x: Tensor, W: Tensor, a: Tensor, b: Tensor, order: Tensor,
                    rowptr: Tensor) -> tuple[Tensor, Tensor]:
    """Gradients of :func:`cfconv` for x and W in one call: ``cfconv(grad, W)``,
    ``pair_product(grad, x)``."""
    return _cfconv_ref(grad, W, a, b), _pair_product_ref(grad, x, a, b)


@custom_op("mlcalc::painn_message", mutates_args=())
def painn_message(x: Tensor, W: Tensor, u: Tensor, mu: Tensor, a: Tensor, b: Tensor,
                  order: Tensor, rowptr: Tensor) -> tuple[Tensor, Tensor]:
    """PaiNN's message: x (N, 3F), W (P, 3F), u (P, 3), mu (N, 3, F) -> Δq, Δμ."""
    return _painn_ref(x, W, u, mu, a, b)


@custom_op("mlcalc::painn_message_backward", mutates_args=())
def painn_message_backward(gq: Tensor, gmu: Tensor, x: Tensor, W: Tensor, u: Tensor, mu: Tensor,
                           a: Tensor, b: Tensor, order: Tensor,
                           rowptr: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradients of :func:`painn_message` for x, W, u and mu given those of Δq, Δμ."""
    return _painn_backward_ref(gq, gmu, x, W, u, mu, a, b)


@custom_op("mlcalc::painn_filter_message", mutates_args=())
def painn_filter_message(x: Tensor, basis: Tensor, Wt: Tensor, u: Tensor, mu: Tensor | None,
                         a: Tensor, b: Tensor, order: Tensor,
                         rowptr: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`painn_message` with the filters ``W = basis @ Wt``: basis (P, K), Wt (K, 3F).

    ``mu`` None stands for zero vector features (PaiNN's first interaction):
    the ``W_vv`` terms vanish, and the CPU kernel skips them.
    """
    return _painn_ref(x, basis @ Wt, u, _mu_or_zeros(x, mu), a, b)


@custom_op("mlcalc::painn_filter_message_backward", mutates_args=())
def painn_filter_message_backward(gq: Tensor, gmu: Tensor, x: Tensor, basis: Tensor, Wt: Tensor,
                                  u: Tensor, mu: Tensor | None, a: Tensor, b: Tensor,
                                  order: Tensor, rowptr: Tensor,
                                  want_wt: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients of :func:`painn_filter_message` for x, basis, Wt, u and mu.

    The one for Wt is zeros unless ``want_wt``; the one for mu is an empty
    (0, 3, F) tensor when ``mu`` is None. First order only: the op has no
    autograd formula (the message's backward takes the differentiable route
    when a graph is being built, see :func:`_painn_filter_backward`).
    """
    return _painn_filter_backward_ref(gq, gmu, x, basis, Wt, u, mu, a, b, want_wt)


OPS = (cfconv, pair_product, cfconv_backward, painn_message, painn_message_backward,
       painn_filter_message, painn_filter_message_backward)


@cfconv.register_fake
def _(x, W, a, b, order, rowptr):
    return torch.empty_like(x)


@pair_product.register_fake
def _(g, x, a, b, order, rowptr):
    return x.new_empty((a.shape[0], x.shape[1]))


@cfconv_backward.register_fake
def _(grad, x, W, a, b, order, rowptr):
    return torch.empty_like(x), torch.empty_like(W)


@painn_message.register_fake
def _(x, W, u, mu, a, b, order, rowptr):
    return x.new_empty((x.shape[0], mu.shape[2])), torch.empty_like(mu)


@painn_message_backward.register_fake
def _(gq, gmu, x, W, u, mu, a, b, order, rowptr):
    return torch.empty_like(x), torch.empty_like(W), torch.empty_like(u), torch.empty_like(mu)


@painn_filter_message.register_fake
def _(x, basis, Wt, u, mu, a, b, order, rowptr):
    F = x.shape[1] // 3
    return x.new_empty((x.shape[0], F)), x.new_empty((x.shape[0], 3, F))


@painn_filter_message_backward.register_fake
def _(gq, gmu, x, basis, Wt, u, mu, a, b, order, rowptr, want_wt):
    return (torch.empty_like(x), torch.empty_like(basis), torch.empty_like(Wt),
            torch.empty_like(u),
            gmu.new_empty((0, 3, gmu.shape[2])) if mu is None else torch.empty_like(mu))


# ---- autograd ------------------------------------------------------------------


def _save_all(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _cfconv_backward(ctx, grad):
    x, W, a, b, order, rowptr = ctx.saved_tensors
    gx, gW = dispatch.call(cfconv_backward, grad, x, W, a, b, order, rowptr)
    return gx, gW, None, None, None, None


def _cfconv_backward_backward(ctx, vx, vW):
    """Derivatives of s = <vx, cfconv(g, W)> + <vW, pair_product(g, x)>."""
    grad, x, W, a, b, order, rowptr = ctx.saved_tensors
    graph = (a, b, order, rowptr)
    d_g, d_x, d_W = torch.zeros_like(grad), torch.zeros_like(x), torch.zeros_like(W)
    if vx is not None:
        d_g = d_g + cfconv(vx, W, *graph)
        d_W = d_W + pair_product(vx, grad, *graph)
    if vW is not None:
        d_g = d_g + cfconv(x, vW, *graph)
        d_x = d_x + cfconv(grad, vW, *graph)
    return d_g, d_x, d_W, None, None, None, None


def _pair_product_backward(ctx, grad):
    g, x, a, b, order, rowptr = ctx.saved_tensors
    gg = cfconv(x, grad, a, b, order, rowptr) if ctx.needs_input_grad[0] else None
    gx = cfconv(g, grad, a, b, order, rowptr) if ctx.needs_input_grad[1] else None
    return gg, gx, None, None, None, None


def _painn_backward(ctx, gq, gmu):
    x, W, u, mu, a, b, order, rowptr = ctx.saved_tensors
    if gq is None:
        gq = x.new_zeros((x.shape[0], mu.shape[2]))
    if gmu is None:
        gmu = torch.zeros_like(mu)
    gx, gW, gu, gmu_in = dispatch.call(painn_message_backward, gq, gmu, x, W, u, mu, a, b, order,
                                       rowptr)
    return gx, gW, gu, gmu_in, None, None, None, None


def _painn_backward_backward(ctx, vx, vW, vu, vmu):
    """Derivatives of s = <v, B(g; x, W, u, mu)>, B the message's backward.

    With f the message and J its Jacobian, ∂s/∂g = J v, the directional
    derivative of f; f is linear in x, in W, and in (u, mu) term by term, so
    J v = f(vx, W, u, mu) + f(x, vW, u, mu) + f(x₀, W, vu, vmu) with x₀ = x
    whose scalar part is zeroed (it feeds neither the u nor the mu term). The
    derivatives of s for x, W, u, mu are backward calls on those same terms,
    each giving the slots that its tangent did not replace.
    """
    gq, gmu, x, W, u, mu, a, b, order, rowptr = ctx.saved_tensors
    F = mu.shape[2]
    graph = (a, b, order, rowptr)
    d_gq, d_gmu = torch.zeros_like(gq), torch.zeros_like(gmu)
    d_x, d_W, d_u, d_mu = (torch.zeros_like(t) for t in (x, W, u, mu))
    if vx is not None:
        jq, jm = painn_message(vx, W, u, mu, *graph)
        _, bW, bu, bmu = painn_message_backward(gq, gmu, vx, W, u, mu, *graph)
        d_gq, d_gmu, d_W, d_u, d_mu = d_gq + jq, d_gmu + jm, d_W + bW, d_u + bu, d_mu + bmu
    if vW is not None:
        jq, jm = painn_message(x, vW, u, mu, *graph)
        bx, _, bu, bmu = painn_message_backward(gq, gmu, x, vW, u, mu, *graph)
        d_gq, d_gmu, d_x, d_u, d_mu = d_gq + jq, d_gmu + jm, d_x + bx, d_u + bu, d_mu + bmu
    if vu is not None or vmu is not None:
        vu = torch.zeros_like(u) if vu is None else vu
        vmu = torch.zeros_like(mu) if vmu is None else vmu
        x0 = torch.cat([torch.zeros_like(x[:, :F]), x[:, F:]], dim=1)
        _, jm = painn_message(x0, W, vu, vmu, *graph)
        bx, bW, _, _ = painn_message_backward(gq, gmu, x0, W, vu, vmu, *graph)
        bx = torch.cat([torch.zeros_like(bx[:, :F]), bx[:, F:]], dim=1)
        d_gmu, d_x, d_W = d_gmu + jm, d_x + bx, d_W + bW
    return d_gq, d_gmu, d_x, d_W, d_u, d_mu, None, None, None, None


def _painn_filter_backward(ctx, gq, gmu):
    """Gradients of the filter message.

    Without a graph (forces in MD, a gradient check) one fused call, which
    never forms the (P, 3F) filters or their gradient. When autograd records
    the backward (a force loss, a Hessian), the same numbers from the filter
    product and the differentiable :func:`painn_message_backward`, so the
    derivatives of the gradients exist to any order.
    """
    x, basis, Wt, u, mu, a, b, order, rowptr = ctx.saved_tensors
    F = x.shape[1] // 3
    if gq is None:
        gq = x.new_zeros((x.shape[0], F))
    if gmu is None:
        gmu = x.new_zeros((x.shape[0], 3, F))
    if torch.is_grad_enabled():
        W = basis @ Wt
        gx, gW, gu, gmu_in = painn_message_backward(gq, gmu, x, W, u, _mu_or_zeros(x, mu), a, b,
                                                    order, rowptr)
        g_basis = gW @ Wt.T if ctx.needs_input_grad[1] else None
        gWt = basis.T @ gW if ctx.needs_input_grad[2] else None
    else:
        gx, g_basis, gWt, gu, gmu_in = dispatch.call(
            painn_filter_message_backward, gq, gmu, x, basis, Wt, u, mu, a, b, order, rowptr,
            ctx.needs_input_grad[2])
        gWt = gWt if ctx.needs_input_grad[2] else None
    return gx, g_basis, gWt, gu, None if mu is None else gmu_in, None, None, None, None


for _op, _formula in ((cfconv, _cfconv_backward), (cfconv_backward, _cfconv_backward_backward),
                      (pair_product, _pair_product_backward), (painn_message, _painn_backward),
                      (painn_message_backward, _painn_backward_backward),
                      (painn_filter_message, _painn_filter_backward)):
    dispatch.register_autograd(_op, _formula, _save_all)


# ---- device kernels --------------------------------------------------------------


def register_cpu(library: ModuleType) -> None:
    """Register the compiled C++ functions of ``library`` as the ops' CPU kernels."""
    dispatch.register_cpu(cfconv, lambda x, W, a, b, order, rowptr:
                          library.cfconv_forward(x, W, a, b, order, rowptr))
    dispatch.register_cpu(pair_product, lambda g, x, a, b, order, rowptr:
                          library.pair_product(g, x, a, b))
    dispatch.register_cpu(cfconv_backward, lambda grad, x, W, a, b, order, rowptr:
                          tuple(library.cfconv_backward(grad, x, W, a, b, order, rowptr)))
    dispatch.register_cpu(painn_message, lambda x, W, u, mu, a, b, order, rowptr:
                          tuple(library.painn_message_forward(x, W, u, mu, a, b, order, rowptr)))
    dispatch.register_cpu(
        painn_message_backward, lambda gq, gmu, x, W, u, mu, a, b, order, rowptr:
        tuple(library.painn_message_backward(gq, gmu, x, W, u, mu, a, b, order, rowptr)))
    dispatch.register_cpu(
        painn_filter_message, lambda x, basis, Wt, u, mu, a, b, order, rowptr:
        tuple(library.painn_filter_message_forward(x, basis, Wt, u, mu, a, b, order, rowptr)))
    dispatch.register_cpu(
        painn_filter_message_backward,
        lambda gq, gmu, x, basis, Wt, u, mu, a, b, order, rowptr, want_wt:
        tuple(library.painn_filter_message_backward(gq, gmu, x, basis, Wt, u, mu, a, b, order,
                                                    rowptr, want_wt)))
