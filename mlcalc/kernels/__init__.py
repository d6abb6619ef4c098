"""Fused message kernels: the message steps of SchNet and PaiNN as custom ops.

The eager SchNet and PaiNN form (pairs × features) and (pairs × 3 × features)
tensors for every message and again for their gradients; on a CPU that memory
traffic, not arithmetic, sets the speed. mlcalc's representations therefore
call a few message ops (:mod:`mlcalc.kernels.ops`) on a *half* neighbor list
(each unordered pair once; the filter of a pair serves both directions):

- :func:`cfconv` — SchNet's continuous-filter convolution,
- :func:`painn_message` — PaiNN's message step,
- :func:`painn_filter_message` — the same step with each pair's filter made
  inside the op from its radial basis (PaiNN's models call this one),
- :func:`painn_update_norms`, :func:`painn_update_apply` — the element-wise
  parts of PaiNN's update block,
- :func:`pair_gaussian_basis` — PaiNN's pair geometry (unit vectors and the
  filter basis of every pair),

plus :func:`half_graph`, the per-atom grouping of the pairs that the kernels
walk. The ops are ``torch.library`` custom ops: torch's dispatcher picks the
implementation by device — the C++ kernels of ``cpu.cpp`` on CPU (one pass
over the pairs forward and backward, no per-pair intermediates), a plain
torch reference elsewhere (and wherever the kernels are off). Autograd is
registered for every op and works to any order, so the same ops serve MD,
the Hessian and training. On CPU the public functions below call the
compiled kernels directly where nothing watches the dispatcher
(:mod:`mlcalc.kernels.dispatch`: the same kernels and autograd formulas
without ``torch.library``'s Python layers). This folder is the only place
that knows which implementation runs; a new device implementation is added
here.

The C++ kernels are compiled on first use (see :mod:`mlcalc.kernels.build`:
cached per environment, ``mlcalc kernels build`` builds ahead of time).
Without a compiler mlcalc warns once and runs the reference implementation.
The one switch: ``MLCALC_KERNELS=0`` turns the kernels off for a process;
:func:`disabled` turns them off for a block of code (tests, benchmarks).
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator
from types import ModuleType

import torch

from mlcalc.kernels import dispatch, geometry_ops, ops, update_ops
from mlcalc.kernels.build import KernelBuildError, load_library

__all__ = ["KernelBuildError", "active", "cfconv", "disabled", "enabled", "half_graph",
           "load", "painn_filter_message", "painn_message", "painn_update_apply",
           "painn_update_norms", "pair_gaussian_basis"]

#: Device types with a compiled implementation of the ops.
KERNEL_DEVICES = ("cpu",)

_lock = threading.Lock()
_library: ModuleType | None = None
_failed: str | None = None
_enabled = os.environ.get("MLCALC_KERNELS", "1").strip().lower() not in ("0", "false", "no", "off")


def enabled() -> bool:
    """The switch: False under ``MLCALC_KERNELS=0`` or inside :func:`disabled`."""
    return _enabled


def load(verbose: bool = False) -> ModuleType:
    """Compile (first time in this environment), load and register the CPU kernels.

    Raises:
        KernelBuildError: no compiler, a failed build, or the kernels are switched off.
    """
    global _library, _failed
    if _library is not None:
        return _library
    with _lock:
        if _library is not None:
            return _library
        if not _enabled:
            raise KernelBuildError("the fused kernels are turned off (MLCALC_KERNELS=0)")
        if _failed is not None:
            raise KernelBuildError(_failed)
        try:
            library = load_library(verbose=verbose)
        except KernelBuildError as exc:
            _failed = f"{exc}; using the reference implementation"
            raise KernelBuildError(_failed) from exc
        ops.register_cpu(library)
        update_ops.register_cpu(library)
        geometry_ops.register_cpu(library)
        _library = library
        return library


def active(device: torch.device | str) -> bool:
    """Whether the compiled kernels run for tensors on ``device`` (builds them if needed).

    False (with one warning per process) when the build fails.
    """
    if torch.device(device).type not in KERNEL_DEVICES or not _enabled:
        return False
    if _library is not None:
        return True
    try:
        load()
    except KernelBuildError as exc:
        if not getattr(active, "_warned", False):
            warnings.warn(str(exc), RuntimeWarning, stacklevel=2)
            active._warned = True  # type: ignore[attr-defined]
        return False
    return True


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Run the reference implementation on every device inside the block."""
    global _enabled
    previous = _enabled
    with contextlib.ExitStack() as stack:
        if _library is not None:  # before loading no kernel is registered, nothing to switch off
            for op in ops.OPS + update_ops.OPS + geometry_ops.OPS:
                for device in KERNEL_DEVICES:
                    stack.enter_context(op.set_kernel_enabled(device, False))
        _enabled = False
        direct = dispatch.set_enabled(False)
        try:
            yield
        finally:
            _enabled = previous
            dispatch.set_enabled(direct)


def _prepare(device: torch.device) -> None:
    # the first call on a kernel device compiles/loads the library; later calls return at once
    if _library is None and _enabled and device.type in KERNEL_DEVICES \
            and not torch.compiler.is_compiling():
        active(device)


def half_graph(a: torch.Tensor, b: torch.Tensor, n_atoms: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Directed edges of a half list grouped by centre atom.

    Pair ``p`` (``a[p]``, ``b[p]``) stands for edge ``p`` (centre ``a[p]``) and
    edge ``p + P`` (centre ``b[p]``).

    Args:
        a, b: (P,) int64 atoms of every pair.
        n_atoms: N.

    Returns:
        ``order`` (2P,) edge ids sorted by centre atom (stable: ascending within
        an atom) and ``rowptr`` (N + 1,): the edges of atom ``i`` are
        ``order[rowptr[i]:rowptr[i + 1]]``.

    On CPU with the kernels on, a compiled counting sort (the same numbers;
    0.2 ms -> 0.01 ms at 108 atoms, a 40-pair-per-atom list: argsort was most
    of it); elsewhere, and while torch.compile traces, the torch ops below.
    """
    _prepare(a.device)
    if _library is not None and dispatch.direct((a, b)):
        order, rowptr = _library.half_graph(a, b, n_atoms)
        return order, rowptr
    centres = torch.cat([a, b])
    order = torch.argsort(centres, stable=True)
    # counts by index_add (static shape N, unlike bincount): torch.compile traces it
    counts = torch.zeros(n_atoms + 1, dtype=torch.long, device=a.device)
    counts.index_add_(0, centres + 1, torch.ones_like(centres))
    return order, torch.cumsum(counts, 0)


def cfconv(x: torch.Tensor, W: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
           order: torch.Tensor, rowptr: torch.Tensor) -> torch.Tensor:
    """SchNet's convolution on a half list: ``out_i = Σ_j W(d_ij) ∘ x_j`` over both directions.

    Args:
        x: (N, F) features of the neighbors.
        W: (P, F) filter of every pair.
        a, b, order, rowptr: the half list and :func:`half_graph`.

    Returns:
        (N, F), differentiable to any order.
    """
    _prepare(x.device)
    return dispatch.call(ops.cfconv, x, W, a, b, order, rowptr)


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
        Δq (N, F) and Δμ (N, 3, F), summed over both directions of every pair;
        differentiable to any order.
    """
    _prepare(x.device)
    return dispatch.call(ops.painn_message, x, W, u, mu, a, b, order, rowptr)


def painn_filter_message(x: torch.Tensor, basis: torch.Tensor, Wt: torch.Tensor, u: torch.Tensor,
                         mu: torch.Tensor | None, a: torch.Tensor, b: torch.Tensor,
                         order: torch.Tensor,
                         rowptr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PaiNN's message step with the filters ``W = basis @ Wt`` made inside the op.

    The same function as ``painn_message(x, basis @ Wt, u, mu, ...)``; the
    compiled kernel makes the filters of one cache-sized tile of pairs at a
    time and uses them there, so the (P, 3F) filters and their gradient never
    go to memory (on a CPU their traffic, not the arithmetic, set the
    message's cost).

    Args:
        x: (N, 3F) context ``[φ_s | φ_vs | φ_vv]`` of every atom.
        basis: (P, K) filter basis of every pair (dimensionless; PaiNN's is the
            radial basis times the cutoff function, then the cutoff function).
        Wt: (K, 3F) filter weights.
        u: (P, 3) unit vector from ``a`` to ``b`` (the reverse edge uses ``-u``).
        mu: (N, 3, F) vector features, or None where they are zero (PaiNN's
            first interaction): the same numbers as zeros, and the CPU kernel
            skips the ``W_vv`` terms (a third of the filter products and of
            the pair loop's memory traffic) and has no gradient for ``mu``.
        a, b, order, rowptr: the half list and :func:`half_graph`.

    Returns:
        Δq (N, F) and Δμ (N, 3, F), summed over both directions of every pair;
        differentiable to any order.
    """
    _prepare(x.device)
    return dispatch.call(ops.painn_filter_message, x, basis, Wt, u, mu, a, b, order, rowptr)


def pair_gaussian_basis(r: torch.Tensor, centers: torch.Tensor, coeff: torch.Tensor,
                        cutoff: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit vectors and PaiNN's filter basis of every pair, from the pair vectors.

    Args:
        r: (P, 3) pair vectors, Å, in the network dtype.
        centers: (K,) Gaussian centres, Å; coeff: 0-dim -1/2σ², Å⁻²
            (:class:`mlcalc.nn.radial.GaussianRBF`'s buffers).
        cutoff: Å (:class:`mlcalc.nn.radial.CosineCutoff`).

    Returns:
        ``u`` (P, 3) and ``basis`` (P, K + 1) = ``[g_k(d) f(d) | f(d)]``
        (:mod:`mlcalc.kernels.geometry_ops`), differentiable to any order. On
        CPU with the kernels on, one compiled pass over the pairs (float32
        Gaussians within ~1 ulp of torch's exp); elsewhere the torch ops of
        the radial modules themselves.
    """
    _prepare(r.device)
    if _library is not None and dispatch.direct((r, centers, coeff)):
        return dispatch.call(geometry_ops.pair_gaussian_basis, r, centers, coeff, float(cutoff))
    return geometry_ops.gaussian_basis_reference(r, centers, coeff, float(cutoff))


def painn_update_norms(q: torch.Tensor, mu_vw: torch.Tensor, eps: float) -> torch.Tensor:
    """The input of PaiNN's update context network: ``[q | sqrt(Σ_c V_c² + eps)]``.

    Args:
        q: (N, F) scalar features.
        mu_vw: (N, 3, 2F) channel mix ``[V | W]`` of the vector features.
        eps: keeps the norm smooth where V = 0 (see :class:`mlcalc.representation.painn.PaiNN`).

    Returns:
        (N, 2F), differentiable to any order.
    """
    _prepare(q.device)
    return dispatch.call(update_ops.painn_update_norms, q, mu_vw, float(eps))


def painn_update_apply(q: torch.Tensor, mu: torch.Tensor, mu_vw: torch.Tensor,
                       ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PaiNN's update: ``q + a_ss + a_sv Σ_c V_c W_c`` and ``mu + a_vv W``.

    Args:
        q: (N, F) scalar features; mu: (N, 3, F) vector features.
        mu_vw: (N, 3, 2F) channel mix ``[V | W]`` of mu.
        ctx: (N, 3F) output ``[a_vv | a_sv | a_ss]`` of the update's context network.

    Returns:
        The updated q (N, F) and mu (N, 3, F), differentiable to any order.
    """
    _prepare(q.device)
    return dispatch.call(update_ops.painn_update_apply, q, mu, mu_vw, ctx)
