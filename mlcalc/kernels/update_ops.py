"""PaiNN's update block, its element-wise parts, as ``torch.library`` custom ops.

With [V | W] = ``mu_vw`` (N, 3, 2F), the channel mix of the vector features,
and [a_vv | a_sv | a_ss] = ``ctx`` (N, 3F), the output of the update's context
network:

``painn_update_norms(q, mu_vw, eps)``   (N, 2F): ``[q | sqrt(Σ_c V_c² + eps)]``
``painn_update_apply(q, mu, mu_vw, ctx)``  ``q + a_ss + a_sv Σ_c V_c W_c``, ``mu + a_vv W``

(the update block without its matrix products), each with a first-order
backward op. As for the message ops (:mod:`mlcalc.kernels.ops`): a plain torch
reference for every device, a fake implementation, C++ kernels on CPU
(``cpu.cpp``), and an autograd formula that takes the fused backward when no
graph of the gradients is built and the same formula in differentiable torch
ops when one is (a force loss, the Hessian), so the ops differentiate to any
order.
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor
from torch.library import custom_op

from mlcalc.kernels import dispatch

# ---- reference implementations (plain torch, any device) --------------------


def _update_norms_ref(q: Tensor, mu_vw: Tensor, eps: float) -> Tensor:
    V = mu_vw[..., :q.shape[1]]
    return torch.cat([q, torch.sqrt(torch.sum(V * V, dim=1) + eps)], dim=1)


def _update_norms_backward_ref(gh: Tensor, mu_vw: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    F = h.shape[1] // 2
    g_q, g_n = gh[:, :F].clone(), gh[:, F:]  # an op's output may not alias its input
    g_V = (g_n / h[:, F:])[:, None, :] * mu_vw[..., :F]
    return g_q, torch.cat([g_V, torch.zeros_like(g_V)], dim=2)


def _update_apply_ref(q: Tensor, mu: Tensor, mu_vw: Tensor, ctx: Tensor) -> tuple[Tensor, Tensor]:
    F = q.shape[1]
    V, W = mu_vw[..., :F], mu_vw[..., F:]
    a_vv, a_sv, a_ss = ctx.split(F, dim=1)
    return q + (a_ss + a_sv * torch.sum(V * W, dim=1)), mu + a_vv[:, None, :] * W


def _update_apply_backward_ref(gqo: Tensor, gmo: Tensor, mu_vw: Tensor,
                               ctx: Tensor) -> tuple[Tensor, Tensor]:
    F = gqo.shape[1]
    V, W = mu_vw[..., :F], mu_vw[..., F:]
    a_vv, a_sv, _ = ctx.split(F, dim=1)
    gs = (gqo * a_sv)[:, None, :]
    g_mu_vw = torch.cat([gs * W, gs * V + a_vv[:, None, :] * gmo], dim=2)
    g_ctx = torch.cat([torch.sum(gmo * W, dim=1), gqo * torch.sum(V * W, dim=1), gqo], dim=1)
    return g_mu_vw, g_ctx


@custom_op("mlcalc::painn_update_norms", mutates_args=())
def painn_update_norms(q: Tensor, mu_vw: Tensor, eps: float) -> Tensor:
    """``[q | sqrt(Σ_c V_c² + eps)]`` (N, 2F): q (N, F), mu_vw (N, 3, 2F) = [V | W]."""
    return _update_norms_ref(q, mu_vw, eps)


@custom_op("mlcalc::painn_update_norms_backward", mutates_args=())
def painn_update_norms_backward(gh: Tensor, mu_vw: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """Gradients of :func:`painn_update_norms` for q and mu_vw (h: its output). First order."""
    return _update_norms_backward_ref(gh, mu_vw, h)


@custom_op("mlcalc::painn_update_apply", mutates_args=())
def painn_update_apply(q: Tensor, mu: Tensor, mu_vw: Tensor, ctx: Tensor) -> tuple[Tensor, Tensor]:
    """``q + a_ss + a_sv Σ_c V_c W_c`` and ``mu + a_vv W``: ctx (N, 3F) = [a_vv | a_sv | a_ss]."""
    return _update_apply_ref(q, mu, mu_vw, ctx)


@custom_op("mlcalc::painn_update_apply_backward", mutates_args=())
def painn_update_apply_backward(gqo: Tensor, gmo: Tensor, mu_vw: Tensor,
                                ctx: Tensor) -> tuple[Tensor, Tensor]:
    """Gradients of :func:`painn_update_apply` for mu_vw and ctx. First order."""
    return _update_apply_backward_ref(gqo, gmo, mu_vw, ctx)


OPS = (painn_update_norms, painn_update_norms_backward, painn_update_apply,
       painn_update_apply_backward)


@painn_update_norms.register_fake
def _(q, mu_vw, eps):
    return q.new_empty((q.shape[0], 2 * q.shape[1]))


@painn_update_norms_backward.register_fake
def _(gh, mu_vw, h):
    return h.new_empty((h.shape[0], h.shape[1] // 2)), torch.empty_like(mu_vw)


@painn_update_apply.register_fake
def _(q, mu, mu_vw, ctx):
    return torch.empty_like(q), torch.empty_like(mu)


@painn_update_apply_backward.register_fake
def _(gqo, gmo, mu_vw, ctx):
    return torch.empty_like(mu_vw), torch.empty_like(ctx)


# ---- autograd ------------------------------------------------------------------


def _save_update_norms(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[1], output)


def _update_norms_backward(ctx, gh):
    # the norms are read from the op's own output h; with a graph of the
    # gradient being built, h carries this op's node, so the formula stays
    # differentiable to any order
    mu_vw, h = ctx.saved_tensors
    if torch.is_grad_enabled():
        g_q, g_mu_vw = _update_norms_backward_ref(gh, mu_vw, h)
    else:
        g_q, g_mu_vw = dispatch.call(painn_update_norms_backward, gh, mu_vw, h)
    return g_q, g_mu_vw, None


def _save_update_apply(ctx, inputs, output) -> None:
    _, mu, mu_vw, c = inputs
    ctx.save_for_backward(mu_vw, c)
    ctx.shapes = (mu.shape[0], mu.shape[2])


def _update_apply_backward(ctx, gqo, gmo):
    mu_vw, c = ctx.saved_tensors
    N, F = ctx.shapes
    if gqo is None:
        gqo = mu_vw.new_zeros((N, F))
    if gmo is None:
        gmo = mu_vw.new_zeros((N, 3, F))
    if torch.is_grad_enabled():
        g_mu_vw, g_ctx = _update_apply_backward_ref(gqo, gmo, mu_vw, c)
    else:
        g_mu_vw, g_ctx = dispatch.call(painn_update_apply_backward, gqo, gmo, mu_vw, c)
    return gqo, gmo, g_mu_vw, g_ctx


dispatch.register_autograd(painn_update_norms, _update_norms_backward, _save_update_norms)
dispatch.register_autograd(painn_update_apply, _update_apply_backward, _save_update_apply)


# ---- device kernels --------------------------------------------------------------


def register_cpu(library: ModuleType) -> None:
    """Register the compiled C++ functions of ``library`` as the ops' CPU kernels."""
    dispatch.register_cpu(painn_update_norms, lambda q, mu_vw, eps:
                          library.painn_update_norms_forward(q, mu_vw, eps))
    dispatch.register_cpu(painn_update_norms_backward, lambda gh, mu_vw, h:
                          tuple(library.painn_update_norms_backward(gh, mu_vw, h)))
    dispatch.register_cpu(painn_update_apply, lambda q, mu, mu_vw, ctx:
                          tuple(library.painn_update_apply_forward(q, mu, mu_vw, ctx)))
    dispatch.register_cpu(painn_update_apply_backward, lambda gqo, gmo, mu_vw, ctx:
                          tuple(library.painn_update_apply_backward(gqo, gmo, mu_vw, ctx)))
