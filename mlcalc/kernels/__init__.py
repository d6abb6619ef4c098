"""Fused CPU message kernels for the fast inference path (C++, compiled on first use).

The eager SchNet and PaiNN form (pairs × features) and (pairs × 3 × features)
tensors for every message and again for their gradients; on a CPU that memory
traffic, not arithmetic, sets the speed. The kernels in ``message.cpp`` do a
message step in one pass over the pairs, reading each filter row once, and
its backward in one pass over the pairs (filter gradients) and one over the
atoms (feature gradients), with no per-pair intermediates.

They work on a *half* neighbor list (each unordered pair once; see
:func:`half_graph`): the filter of a pair is computed once and serves both
directions. They are compiled with the machine's C++ compiler by
:func:`torch.utils.cpp_extension.load` the first time they are needed
(about 30 s; cached under ``TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions``). Where that is impossible (no compiler) mlcalc
warns once and uses the eager path; ``MLCALC_KERNELS=0`` turns them off.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import threading
import warnings
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["available", "load", "half_graph", "cfconv", "painn_message", "KernelBuildError"]

_SOURCE = Path(__file__).with_name("message.cpp")
_lock = threading.Lock()
_module: ModuleType | None = None
_failed: str | None = None


class KernelBuildError(RuntimeError):
    """The C++ kernels could not be compiled or loaded."""


def _cpu_tag() -> str:
    """A tag of the CPU's instruction sets: the build uses ``-march=native``."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((ln for ln in fh if ln.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    return hashlib.sha1((platform.machine() + flags).encode()).hexdigest()[:8]


def _extension_name() -> str:
    source = hashlib.sha1(_SOURCE.read_bytes()).hexdigest()[:8]
    torch_tag = torch.__version__.split("+")[0].replace(".", "_")
    return f"mlcalc_kernels_{source}_{_cpu_tag()}_t{torch_tag}"


def _is_built(name: str) -> bool:
    """Whether torch's extension cache already holds this build."""
    from torch.utils import cpp_extension

    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    roots = [Path(root)] if root else list(Path(cpp_extension.get_default_build_root()).glob("*"))
    return any((r / name / f"{name}.so").exists() for r in roots)


def enabled() -> bool:
    """False when ``MLCALC_KERNELS`` is ``0``, ``false``, ``no`` or ``off``."""
    return os.environ.get("MLCALC_KERNELS", "1").strip().lower() not in ("0", "false", "no", "off")


def load(verbose: bool = False) -> ModuleType:
    """Compile (first time) and import the kernels.

    Raises:
        KernelBuildError: no compiler, a failed build, or ``MLCALC_KERNELS=0``.
    """
    global _module, _failed
    if _module is not None:  # called at every message step
        return _module
    with _lock:
        if _module is not None:
            return _module
        if not enabled():
            raise KernelBuildError("the fused kernels are turned off (MLCALC_KERNELS=0)")
        if _failed is not None:
            raise KernelBuildError(_failed)
        from torch.utils import cpp_extension

        flags = ["-O3", "-fopenmp"]
        if platform.machine() in ("x86_64", "AMD64"):
            flags.append("-march=native")
        name = _extension_name()
        if not _is_built(name):
            print("mlcalc: compiling the fused CPU kernels (first use, about 30 s) ...",
                  file=sys.stderr, flush=True)
        try:
            _module = cpp_extension.load(
                name=name, sources=[str(_SOURCE)], extra_cflags=flags,
                extra_ldflags=["-fopenmp"], verbose=verbose)
        except Exception as exc:  # noqa: BLE001 - any build failure means "not available"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            _failed = f"the fused kernels could not be built ({first}); using the eager path"
            raise KernelBuildError(_failed) from exc
        return _module


def available() -> bool:
    """Whether the kernels can be used; warns once (and returns False) if the build fails."""
    if _module is not None:
        return True
    if not enabled():
        return False
    try:
        load()
    except KernelBuildError as exc:
        if not getattr(available, "_warned", False):
            warnings.warn(str(exc), RuntimeWarning, stacklevel=2)
            available._warned = True  # type: ignore[attr-defined]
        return False
    return True


def half_graph(a: torch.Tensor, b: torch.Tensor, n_atoms: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Directed edges of a half list grouped by centre atom.

    Pair ``p`` (``a[p]``, ``b[p]``) stands for edge ``p`` (centre ``a[p]``) and
    edge ``p + P`` (centre ``b[p]``).

    Args:
        a, b: (P,) int64 atoms of every pair.
        n_atoms: N.

    Returns:
        ``order`` (2P,) edge ids sorted by centre atom and ``rowptr`` (N + 1,):
        the edges of atom ``i`` are ``order[rowptr[i]:rowptr[i + 1]]``.
    """
    centres = torch.cat([a, b])
    order = torch.argsort(centres, stable=True)
    counts = torch.bincount(centres, minlength=n_atoms)
    rowptr = torch.zeros(n_atoms + 1, dtype=torch.long, device=a.device)
    torch.cumsum(counts, 0, out=rowptr[1:])
    return order, rowptr


class _CFConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W, a, b, order, rowptr):
        ctx.save_for_backward(x, W, a, b, order, rowptr)
        return _module.cfconv_forward(x, W, a, b, order, rowptr)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, W, a, b, order, rowptr = ctx.saved_tensors
        gx, gW = _module.cfconv_backward(grad, x, W, a, b, order, rowptr)
        return gx, gW, None, None, None, None


class _PaiNNMessage(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W, u, mu, a, b, order, rowptr):
        ctx.save_for_backward(x, W, u, mu, a, b, order, rowptr)
        dq, dmu = _module.painn_message_forward(x, W, u, mu, a, b, order, rowptr)
        return dq, dmu

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gq, gmu):
        x, W, u, mu, a, b, order, rowptr = ctx.saved_tensors
        if gq is None:
            gq = torch.zeros((x.shape[0], mu.shape[2]), dtype=x.dtype, device=x.device)
        if gmu is None:
            gmu = torch.zeros_like(mu)
        gx, gW, gu, gmu_in = _module.painn_message_backward(gq, gmu, x, W, u, mu, a, b, order,
                                                            rowptr)
        return gx, gW, gu, gmu_in, None, None, None, None


def cfconv(x: torch.Tensor, W: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
           order: torch.Tensor, rowptr: torch.Tensor) -> torch.Tensor:
    """SchNet's convolution on a half list: ``out_i = Σ_j W(d_ij) ∘ x_j`` over both directions.

    Args:
        x: (N, F) features of the neighbors.
        W: (P, F) filter of every pair.
        a, b, order, rowptr: the half list and :func:`half_graph`.

    Returns:
        (N, F). Differentiable once (forces, stress; not a Hessian or a
        force-trained loss).
    """
    load()
    return _CFConv.apply(x, W, a, b, order, rowptr)


def painn_message(x: torch.Tensor, W: torch.Tensor, u: torch.Tensor, mu: torch.Tensor,
                  a: torch.Tensor, b: torch.Tensor, order: torch.Tensor,
                  rowptr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PaiNN's message step on a half list.

    Args:
        x: (N, 3F) context ``[φ_s | φ_vs | φ_vv]`` of every atom.
        W: (P, 3F) filters of every pair.
        u: (P, 3) unit vector from ``a`` to ``b`` (the reverse edge uses ``-u``).
        mu: (N, 3, F) vector features.
        a, b, order, rowptr: the half list and :func:`half_graph`.

    Returns:
        Δq (N, F) and Δμ (N, 3, F), summed over both directions of every pair.
    """
    load()
    return _PaiNNMessage.apply(x, W, u, mu, a, b, order, rowptr)
