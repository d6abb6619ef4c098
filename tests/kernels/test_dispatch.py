"""Direct calls of the compiled CPU functions (mlcalc.kernels.dispatch).

On CPU the public wrappers skip torch.library's Python layers and call the
kernels themselves, through an autograd.Function carrying the op's own
formula; the numbers must be the op's, to any order, and the op itself must
run wherever something watches the dispatcher.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.profiler import ProfilerActivity, profile

from mlcalc import kernels
from mlcalc.kernels import dispatch
from tests.kernels.test_kernels import filter_inputs, random_graph, update_inputs

pytestmark = pytest.mark.skipif(not kernels.active("cpu"),
                                reason="the fused kernels could not be built here")


@contextlib.contextmanager
def through_the_ops():
    old = dispatch.set_enabled(False)
    try:
        yield
    finally:
        dispatch.set_enabled(old)


def run_model_like(dtype=torch.float64):
    """A filter message, the update ops and a cfconv, forward and first-order backward."""
    a, b, order, rowptr = random_graph(n_pairs=40)
    x, basis, Wt, u, mu = (t.requires_grad_() for t in filter_inputs(dtype, n_pairs=40))
    dq, dmu = kernels.painn_filter_message(x, basis, Wt, u, mu, a, b, order, rowptr)
    F = mu.shape[2]
    q = dq + x[:, :F]
    mu_vw = torch.cat([dmu, 2 * dmu], dim=2)
    h = kernels.painn_update_norms(q, mu_vw, 0.5)
    ctx = torch.cat([h, h[:, :F]], dim=1).tanh()
    q2, mu2 = kernels.painn_update_apply(q, mu, mu_vw, ctx)
    conv = kernels.cfconv(q2, basis[:, :1].expand(-1, F).contiguous(), a, b, order, rowptr)
    out = conv.sum() + (mu2 ** 2).sum()
    grads = torch.autograd.grad(out, (x, basis, Wt, u, mu))
    return (dq, dmu, h, q2, mu2, conv, *grads)


def event_names(fn) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.name for e in prof.events()}


def test_direct_calls_give_the_ops_numbers_exactly():
    direct = run_model_like()
    with through_the_ops():
        via_ops = run_model_like()
    for got, want in zip(direct, via_ops, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_cpu_wrappers_skip_the_dispatcher_forward_and_backward():
    names = event_names(run_model_like)
    assert {"painn_filter_message_cpu", "painn_update_norms_cpu", "painn_update_apply_cpu",
            "cfconv_cpu"} <= names
    assert not any(n.startswith("mlcalc::") for n in names), sorted(names)
    with through_the_ops():
        names = event_names(run_model_like)
    assert {"mlcalc::painn_filter_message", "mlcalc::painn_filter_message_backward",
            "mlcalc::cfconv"} <= names


def test_direct_calls_bind_no_signatures(monkeypatch):
    """``autograd.Function.apply`` binds its arguments with ``inspect.signature``
    when a setup_context is defined (35 µs a call, more than a small kernel);
    the direct route applies its Functions without it."""
    import inspect

    def refuse(*args, **kwargs):
        raise AssertionError("inspect.signature called on the direct route")

    want = run_model_like()
    monkeypatch.setattr(inspect, "signature", refuse)
    got = run_model_like()
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_disabled_kernels_turn_the_direct_calls_off():
    with kernels.disabled():
        names = event_names(run_model_like)
    assert "mlcalc::painn_filter_message" in names
    assert not any(n.endswith("_cpu") for n in names)


def test_second_derivatives_through_the_direct_calls():
    """A graph of the gradients (force loss, Hessian): the first backward is
    recorded through the op's formula, so the second one exists and is exact."""
    q, mu, mu_vw, ctx = (t.requires_grad_() for t in update_inputs())
    a, b, order, rowptr = random_graph(n_pairs=40)
    inputs = filter_inputs(requires_grad=True, n_pairs=40)

    def message(*t):
        return kernels.painn_filter_message(*t, a, b, order, rowptr)

    assert torch.autograd.gradgradcheck(message, inputs)
    assert torch.autograd.gradgradcheck(kernels.painn_update_apply, (q, mu, mu_vw, ctx))

    def second_order():
        dq, dmu = message(*inputs)
        g = torch.autograd.grad((dq ** 2).sum() + (dmu ** 3).sum(), inputs, create_graph=True)
        torch.autograd.grad(sum((t ** 2).sum() for t in g), inputs)

    names = event_names(second_order)
    assert "painn_filter_message_cpu" in names  # the direct call, recorded with its formula


def test_fake_tensors_go_through_the_op():
    """Under a dispatch mode (fake tensors, as in torch.compile's tracing) the op
    runs, with its fake implementation; the kernel would read no data."""
    q, mu, mu_vw, ctx = update_inputs(torch.float32)
    with FakeTensorMode() as mode:
        fq, fvw = mode.from_tensor(q), mode.from_tensor(mu_vw)
        h = kernels.painn_update_norms(fq, fvw, 1.0)
    assert h.shape == (q.shape[0], 2 * q.shape[1])
