"""The device-resident, static-shape MD step: positions in, one packed result out.

:class:`StaticEvaluator` serves :class:`mlcalc.MLCalculator` on CUDA (and on
CPU when asked, which is how it is tested). Per steady-state step it

1. copies the positions to the device once (a pinned staging buffer on
   CUDA, so the copy is asynchronous),
2. runs the padded step: the wrap correction and the skin check of
   :class:`~mlcalc.transform.padded.PaddedVerletList`, the model's forward
   and backward on fixed shapes, and the checks for atoms too close, all on
   the device; on CUDA the step is replayed as a CUDA graph,
3. copies one float64 vector back (energy, per-atom energies, forces,
   stress, the stale and too-close flags), the step's one synchronisation.

A stale step (an atom moved more than skin/2 since the build) is evaluated
again after a build; so is the first step of a structure, a new atom count,
new numbers, pbc or cell (the host sees those in ``atoms`` without asking
the device). Capture failures fall back to eager execution with one warning.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable

import numpy as np
import torch
from ase import Atoms
from torch import Tensor

from mlcalc import properties as P
from mlcalc.exceptions import InvalidStructureError
from mlcalc.model.predict import non_finite_result
from mlcalc.transform.neighbors import (
    MIN_DISTANCE,
    NeighborList,
    check_min_distance,
    squared_lengths,
)
from mlcalc.transform.padded import PaddedVerletList

#: Properties the static step computes; anything else (Hessian, ensemble
#: spreads) goes through the dynamic path.
STATIC_PROPERTIES = frozenset({P.energy, P.energies, P.forces, P.stress})

#: Warm-up evaluations on a side stream before a capture (CUDA's requirement:
#: lazy initialisation and autotuning must not happen during capture).
_WARMUP = 3


@contextlib.contextmanager
def tf32_matmul(enabled: bool):
    """Allow (or forbid) TF32 float32 matrix products on CUDA for a block, then restore.

    Uses ``torch.backends.cuda.matmul.fp32_precision`` where torch has it
    (reading the legacy ``allow_tf32`` raises there once the new setting was
    used, and writing it loses ``set_float32_matmul_precision``), else the
    legacy ``allow_tf32``.
    """
    matmul = torch.backends.cuda.matmul
    name, value = (("fp32_precision", "tf32" if enabled else "ieee")
                   if hasattr(matmul, "fp32_precision") else ("allow_tf32", enabled))
    before = getattr(matmul, name)
    setattr(matmul, name, value)
    try:
        yield
    finally:
        setattr(matmul, name, before)


class StaticEvaluator:
    """Evaluate one evolving structure with static shapes on ``device``.

    Args:
        model: a :class:`~mlcalc.model.NeuralNetworkPotential` on ``device``,
            in evaluation mode.
        neighbor_list: the model's neighbor list at cutoff + skin.
        skin: Verlet skin, Å.
        cuda_graphs: capture and replay the step as a CUDA graph (CUDA only).
        tf32: allow TF32 matrix products on CUDA during the step.
        compile: run the step through ``torch.compile`` (static shapes; the
            first call compiles, for 10-40 s). Measured on CPU it does not pay
            (docs/performance.rst); it exists so that the GPU check measures it.
        cell_tol: largest change of a cell element (Å) that is not a change.

    Attributes:
        verlet: the :class:`PaddedVerletList`.
        n_steps: evaluations returned; n_repeats: steps evaluated again
            because the list had gone stale; n_captures: graphs captured.
        graph_error: why capture failed (None: it did not).
    """

    def __init__(self, model, neighbor_list: NeighborList, skin: float,
                 cuda_graphs: bool = False, tf32: bool = False, compile: bool = False,
                 cell_tol: float = 1e-12) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        if cuda_graphs and self.device.type != "cuda":
            raise ValueError(f"cuda_graphs needs a CUDA device, not {self.device}")
        self.verlet = PaddedVerletList(neighbor_list, model.cutoff, skin)
        self.cuda_graphs = cuda_graphs
        self.tf32 = tf32
        self.compile = compile
        if compile:
            self._step = torch.compile(self._step, dynamic=False)
        self.cell_tol = cell_tol
        self.n_steps = self.n_repeats = self.n_captures = 0
        self.graph_error: str | None = None
        self._host: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # numbers, cell, pbc
        self._inputs: dict[str, Tensor] = {}
        self._staging: Tensor | None = None  # pinned host copy of the positions (CUDA)
        self._results: Tensor | None = None  # pinned host copy of the results (CUDA)
        self._done: torch.cuda.Event | None = None  # marks that copy's completion
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, Tensor]] = {}

    # ---- structure (host decisions) -------------------------------------------
    def _same_structure(self, atoms: Atoms) -> bool:
        if self._host is None:
            return False
        numbers, cell, pbc = self._host
        return (len(atoms) == len(numbers) and np.array_equal(atoms.numbers, numbers)
                and np.array_equal(atoms.pbc, pbc)
                and float(np.abs(atoms.cell.array - cell).max()) <= self.cell_tol)

    def _set_structure(self, atoms: Atoms) -> None:
        """Static input buffers for ``atoms``; storage kept while the atom count is."""
        n, dev = len(atoms), self.device
        self._host = None  # until a build for this structure has succeeded
        inp = self._inputs
        if P.R not in inp or inp[P.R].shape[0] != n:
            inp.clear()
            inp[P.R] = torch.zeros(n, 3, dtype=torch.float64, device=dev)
            inp[P.Z] = torch.zeros(n, dtype=torch.long, device=dev)
            inp[P.cell] = torch.zeros(1, 3, 3, dtype=torch.float64, device=dev)
            inp[P.pbc] = torch.zeros(1, 3, dtype=torch.bool, device=dev)
            inp[P.n_atoms] = torch.full((1,), n, dtype=torch.long, device=dev)
            inp[P.idx_m] = torch.zeros(n, dtype=torch.long, device=dev)
            if dev.type == "cuda":
                self._staging = torch.zeros(n, 3, dtype=torch.float64).pin_memory()
        inp[P.Z].copy_(torch.from_numpy(np.asarray(atoms.numbers, dtype=np.int64)))
        inp[P.cell][0].copy_(torch.from_numpy(np.array(atoms.cell.array, dtype=np.float64)))
        inp[P.pbc][0].copy_(torch.from_numpy(np.array(atoms.pbc, dtype=bool)))

    def _upload(self, positions: np.ndarray) -> None:
        src = torch.from_numpy(np.ascontiguousarray(positions, dtype=np.float64))
        if self._staging is not None:
            self._staging.copy_(src)
            self._inputs[P.R].copy_(self._staging, non_blocking=True)
        else:
            self._inputs[P.R].copy_(src)

    def _build(self, atoms: Atoms) -> None:
        """Build the list for the uploaded positions; remember the structure only if it worked.

        A failed build (out of memory, an interrupt) may leave buffers half
        written or reallocated, so the next call must start from scratch.
        """
        inp = self._inputs
        self._host = None
        self.verlet.build(inp[P.R], inp[P.cell][0], inp[P.pbc][0])
        self._host = (atoms.numbers.copy(), atoms.cell.array.copy(), atoms.pbc.copy())

    # ---- the step ---------------------------------------------------------------
    def _step(self, properties: tuple[str, ...]) -> Tensor:
        """The padded step on the static buffers: (1 + N + 3N [+ 6] + 2,) float64."""
        idx_i, idx_j, shifts, mask, stale = self.verlet.inputs(self._inputs[P.R])
        batch = dict(self._inputs)
        batch.update({P.idx_i: idx_i, P.idx_j: idx_j, P.cell_shifts: shifts, P.pair_mask: mask})
        with torch.set_grad_enabled(bool(self.model.required_derivatives(properties))):
            out = self.model(batch, properties)
        d2 = squared_lengths(out[P.Rij].detach())
        close = ((d2 < MIN_DISTANCE**2) & mask).any()
        parts = [out[P.energy].reshape(1), out[P.energies].reshape(-1),
                 out[P.forces].reshape(-1)]
        if P.stress in properties:
            parts.append(out[P.stress].reshape(-1))
        parts += [stale.reshape(1), close.reshape(1)]
        return torch.cat([p.detach().to(torch.float64) for p in parts])

    def _capture(self, properties: tuple[str, ...]) -> tuple[torch.cuda.CUDAGraph, Tensor]:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(_WARMUP):
                self._step(properties)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # captured on the warm-up stream: its cuBLAS workspace exists before the capture
        with torch.cuda.graph(graph, stream=side):
            packed = self._step(properties)
        self.n_captures += 1
        return graph, packed

    def _run(self, properties: tuple[str, ...]) -> Tensor:
        if not self.cuda_graphs:
            return self._step(properties)
        key = (properties, self.verlet.version)
        if key not in self._graphs:
            self._graphs = {k: v for k, v in self._graphs.items() if k[1] == self.verlet.version}
            stream = torch.cuda.current_stream() if self.device.type == "cuda" else None
            try:
                self._graphs[key] = self._capture(properties)
            except Exception as err:  # noqa: BLE001 - any capture failure means eager
                if stream is not None:  # a failed capture can leave its stream current
                    torch.cuda.set_stream(stream)
                while err.__context__ is not None:  # capture_end's error hides the cause
                    err = err.__context__
                self.cuda_graphs = False
                self.graph_error = f"{type(err).__name__}: {err}".splitlines()[0]
                warnings.warn(f"CUDA graph capture failed ({self.graph_error}); "
                              "running the step eagerly", RuntimeWarning, stacklevel=4)
                return self._step(properties)
        graph, packed = self._graphs[key]
        graph.replay()
        return packed

    def _fetch(self, packed: Tensor) -> np.ndarray:
        """The one device-to-host copy of the step (its only synchronisation)."""
        if packed.device.type != "cuda":
            return packed.numpy().copy()
        host = self._results
        if host is None or host.shape != packed.shape:
            host = self._results = torch.empty(packed.shape, dtype=packed.dtype,
                                               pin_memory=True)
        host.copy_(packed, non_blocking=True)
        if self._done is None:
            self._done = torch.cuda.Event()
        self._done.record()
        self._done.synchronize()
        return host.numpy().copy()

    def __call__(self, atoms: Atoms, properties: Iterable[str]) -> dict[str, float | np.ndarray]:
        """Energy (eV), energies (N,), forces (N, 3) eV/Å [, stress (6,) eV/Å³] of ``atoms``.

        Raises:
            InvalidStructureError: atoms closer than the minimum distance.
            NonFiniteResultError: a NaN or inf in a result.
        """
        props = tuple(sorted(set(properties) | {P.energy, P.energies, P.forces}))
        unknown = set(props) - STATIC_PROPERTIES
        if unknown:
            raise ValueError(f"the static step does not compute {', '.join(sorted(unknown))}")
        new = not self._same_structure(atoms)
        if new:
            self._set_structure(atoms)
        self._upload(atoms.positions)
        if new or self.verlet.skin == 0:
            self._build(atoms)
        with tf32_matmul(self.tf32) if self.device.type == "cuda" else contextlib.nullcontext():
            values = self._fetch(self._run(props))
            if values[-2]:  # stale: an atom left its skin; build and evaluate again
                self.n_repeats += 1
                self._build(atoms)
                values = self._fetch(self._run(props))
        if values[-1]:
            self._raise_too_close()
        self.n_steps += 1
        return self._unpack(values, len(atoms), P.stress in props)

    def _raise_too_close(self) -> None:
        idx_i, idx_j, shifts, mask, _ = self.verlet.inputs(self._inputs[P.R])
        pos, cell = self._inputs[P.R], self._inputs[P.cell][0]
        rij = pos[idx_j] - pos[idx_i] + shifts @ cell
        d2 = torch.where(mask, rij.square().sum(dim=1), torch.inf)
        check_min_distance(d2, idx_i, idx_j)
        raise InvalidStructureError(f"atoms are closer than {MIN_DISTANCE} Å")  # not reached

    @staticmethod
    def _unpack(values: np.ndarray, n: int, stress: bool) -> dict[str, float | np.ndarray]:
        """Views into ``values`` (a fresh array each step) under the ASE names."""
        results: dict[str, float | np.ndarray] = {
            P.energy: values[0:1],
            P.energies: values[1:1 + n],
            P.forces: values[1 + n:1 + 4 * n].reshape(n, 3),
        }
        if stress:
            results[P.stress] = values[1 + 4 * n:7 + 4 * n]
        for key, value in results.items():
            if not np.isfinite(value).all():
                raise non_finite_result(key)
        results[P.energy] = float(values[0])
        return results


__all__ = ["STATIC_PROPERTIES", "StaticEvaluator", "tf32_matmul"]
