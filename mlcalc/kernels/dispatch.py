"""Calling the ops' compiled CPU functions without torch.library's Python layers.

A ``torch.library`` custom op reaches its kernel through the dispatcher and a
Python autograd wrapper. For the small tensors of a 32-108 atom MD step that
costs more than the kernel: about 0.1 ms per op forward and 0.15 ms more in
its backward, against 0.03-0.05 ms of work for PaiNN's update ops (measured:
the forward and backward of ``painn_update_norms`` at 108 atoms, 0.35 ms
through the op, 0.20 ms through an ``autograd.Function`` calling the kernel,
0.07 ms of kernel; a whole PaiNN 128x3 step 3-6 % faster at 32-108 atoms,
docs/performance.rst).

:func:`call` therefore runs an op's compiled CPU function itself when that is
the same computation the dispatcher would pick: the kernels are on, every
tensor is on the CPU, and nothing is watching the dispatcher (no
``torch.compile`` tracing, no functorch transform, no dispatch mode such as
fake tensors). When autograd must record the op, the call goes through an
``autograd.Function`` with the op's *own* registered formula
(:func:`register_autograd` registers it for both). Anywhere else the op
itself runs, so the custom ops stay the single definition: schema, fake and
reference implementations, and every other device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

#: the compiled CPU function of each op (filled by the modules' register_cpu)
_cpu: dict[Any, Callable[..., Any]] = {}
#: per differentiable op, the C-level ``apply`` of an autograd.Function with the op's own formula
_functions: dict[Any, Callable[..., Any]] = {}
_enabled = True


def set_enabled(flag: bool) -> bool:
    """Allow or forbid direct calls (``kernels.disabled`` forbids them); returns the old setting."""
    global _enabled
    old, _enabled = _enabled, flag
    return old


def register_cpu(op: Any, function: Callable[..., Any]) -> None:
    """Register ``function`` as the CPU kernel of ``op``, for the dispatcher and :func:`call`."""
    op.register_kernel("cpu", function)
    _cpu[op] = function


def register_autograd(op: Any, backward: Callable[..., Any],
                      setup_context: Callable[..., None]) -> None:
    """``op.register_autograd(backward, setup_context=...)``; the same formula for :func:`call`."""
    op.register_autograd(backward, setup_context=setup_context)
    name = op._qualname.split("::")[-1]

    def forward(ctx: Any, *args: Any) -> Any:
        output = _cpu[op](*args)
        setup_context(ctx, args, output)
        return output

    # The forward takes ctx and calls setup_context itself (the classic form),
    # and the Function is applied through the C-level apply it inherits:
    # ``Function.apply`` would bind the arguments with ``inspect.signature`` on
    # every call when a setup_context is defined (35 µs per call, 9 calls per
    # PaiNN step) and unwrap functorch wrappers, which never reach here
    # (:func:`direct` refuses functorch transforms).
    function = type(f"{name}_cpu", (torch.autograd.Function,), {
        "forward": staticmethod(forward),
        "backward": staticmethod(backward),
    })
    _functions[op] = super(torch.autograd.Function, function).apply


def direct(args: tuple[Any, ...]) -> bool:
    """Whether a compiled CPU function may run for ``args`` in place of the op (see above)."""
    if not _enabled or torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None \
            or torch._C._are_functorch_transforms_active():
        return False
    for a in args:
        if isinstance(a, torch.Tensor) and not a.is_cpu:
            return False
    return True


def call(op: Any, *args: Any) -> Any:
    """``op(*args)``, with the compiled CPU function called directly where that is the same.

    Differentiable like the op: when autograd records the call (grad mode on
    and an input requiring grad) it goes through the op's formula.
    """
    function = _cpu.get(op)
    if function is None or not direct(args):
        return op(*args)
    if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad
                                       for a in args):
        apply = _functions.get(op)
        return op(*args) if apply is None else apply(*args)
    return function(*args)
