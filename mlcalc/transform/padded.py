"""Static-shape Verlet list on the device: pair capacity, skin check and wrap correction as tensors.

The dynamic :class:`~mlcalc.transform.verlet.VerletNeighborList` cuts its
stored pairs to the cutoff at every call (a data-dependent shape) and asks
the host whether to rebuild (a synchronisation). This list keeps the shapes
of a run fixed, so a step can be replayed as a CUDA graph:

- the pairs found within cutoff + skin at a build are stored in buffers of
  a fixed **capacity**; the slots after them are padding (``pair_mask``
  False, atoms 0-0, zero shift) and contribute exactly zero
  (:class:`mlcalc.atomistic.PairVectors`). The capacity starts at
  ``headroom`` times the pairs found and, when a build finds more pairs
  than it holds, grows by ``growth`` (x1.25) until they fit; it never
  shrinks during a run. Pairs between the cutoff and cutoff + skin stay in
  the list: the cutoff function is exactly zero there, which is the cut to
  the cutoff, done on the device without changing a shape.
- :meth:`inputs` measures on the device how far atoms moved since the
  build (minimum image along periodic directions, so an atom wrapped back
  into the cell has not moved), corrects the shifts of wrapped atoms, and
  returns a ``stale`` flag instead of deciding: the caller copies it back
  with the results (one synchronisation per step) and, when it is set,
  rebuilds and evaluates again.

Builds happen on the host's decision (first call, new atom count, numbers,
pbc or cell) and when a step comes back stale; they are the only place that
synchronises. Buffers keep their storage across builds while the capacity
and atom count stay, so a captured graph stays valid.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mlcalc.atomistic.pairs import PADDING_DISTANCE
from mlcalc.transform.neighbors import NeighborList, squared_lengths
from mlcalc.transform.torch_cell_list import complete_cell


class PaddedPairs:
    """The device tensors of one padded list (fixed storage between rebuilds).

    Attributes:
        idx_i, idx_j: (C,) int64 pair atoms; padding slots are 0.
        shifts: (C, 3) float64 integer cell shifts of the build; padding 0.
        mask: (C,) bool, True for the stored pairs.
        ref_positions: (N, 3) float64 positions at the build, Å.
        cell: (3, 3) float64 cell at the build, Å. inverse: (3, 3) its
            inverse (non-periodic rows completed). pbc: (3,) float64 0/1.
    """

    def __init__(self, capacity: int, n_atoms: int, device: torch.device) -> None:
        f64 = dict(dtype=torch.float64, device=device)
        self.capacity = capacity
        self.idx_i = torch.zeros(capacity, dtype=torch.long, device=device)
        self.idx_j = torch.zeros(capacity, dtype=torch.long, device=device)
        self.shifts = torch.zeros(capacity, 3, **f64)
        self.mask = torch.zeros(capacity, dtype=torch.bool, device=device)
        self.ref_positions = torch.zeros(n_atoms, 3, **f64)
        self.cell = torch.zeros(3, 3, **f64)
        self.inverse = torch.zeros(3, 3, **f64)
        self.pbc = torch.zeros(3, **f64)


class PaddedVerletList:
    """Verlet list with a static pair capacity for one evolving structure.

    Args:
        neighbor_list: the model's neighbor list at cutoff + skin (its form,
            half or full, is kept).
        cutoff: model cutoff, Å.
        skin: extra distance, Å (0: every call is stale after a move, so
            every step rebuilds).
        growth: capacity factor when a build finds more pairs than it holds.
        headroom: capacity of the first build relative to the pairs found.

    Attributes:
        n_builds: builds so far. n_grows: capacity growths so far.
        version: changes whenever buffers are replaced (the capacity grew or
            the atom count changed): a captured graph must be recaptured.
    """

    def __init__(self, neighbor_list: NeighborList, cutoff: float, skin: float,
                 growth: float = 1.25, headroom: float = 1.1) -> None:
        if skin < 0:
            raise ValueError(f"skin must be >= 0, got {skin}")
        if growth <= 1 or headroom < 1:
            raise ValueError("growth must be > 1 and headroom >= 1")
        if cutoff + skin >= PADDING_DISTANCE:
            raise ValueError(f"cutoff + skin must stay below {PADDING_DISTANCE} Å")
        self.neighbor_list = neighbor_list
        self.cutoff = float(cutoff)
        self.skin = float(skin)
        self.growth = float(growth)
        self.headroom = float(headroom)
        self.n_builds = 0
        self.n_grows = 0
        self.n_pairs = 0  #: stored pairs of the last build
        self.version = 0
        self.buffers: PaddedPairs | None = None

    @property
    def capacity(self) -> int:
        """Pair slots (0 before the first build)."""
        return 0 if self.buffers is None else self.buffers.capacity

    def _capacity_for(self, n_pairs: int) -> int:
        if self.buffers is None:
            return max(1, math.ceil(self.headroom * n_pairs))
        capacity = self.buffers.capacity
        while capacity < n_pairs:
            capacity = math.ceil(self.growth * capacity)
        return capacity

    def build(self, positions: Tensor, cell: Tensor, pbc: Tensor) -> None:
        """Search the pairs within cutoff + skin and store them (synchronises).

        Args:
            positions: (N, 3) float64 on the device, Å.
            cell: (3, 3) float64 lattice vectors as rows, Å.
            pbc: (3,) bool.
        """
        idx_i, idx_j, shifts = self.neighbor_list.pairs(positions, cell, pbc)
        n_pairs = int(idx_i.shape[0])
        capacity = self._capacity_for(n_pairs)
        buf = self.buffers
        if buf is None or buf.capacity != capacity or buf.ref_positions.shape != positions.shape:
            if buf is not None and capacity > buf.capacity:
                self.n_grows += 1
            buf = self.buffers = PaddedPairs(capacity, positions.shape[0], positions.device)
            self.version += 1
        buf.idx_i.zero_()
        buf.idx_j.zero_()
        buf.shifts.zero_()
        buf.mask.zero_()
        buf.idx_i[:n_pairs] = idx_i
        buf.idx_j[:n_pairs] = idx_j
        buf.shifts[:n_pairs] = shifts.to(torch.float64)
        buf.mask[:n_pairs] = True
        buf.ref_positions.copy_(positions)
        buf.cell.copy_(cell)
        buf.inverse.copy_(torch.linalg.inv(complete_cell(cell, pbc)))
        buf.pbc.copy_(pbc.to(torch.float64))
        self.n_pairs = n_pairs
        self.n_builds += 1

    def inputs(self, positions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The padded pairs for ``positions`` and whether the list is stale; no synchronisation.

        Args:
            positions: (N, 3) float64 on the device, Å (wrapped or not).

        Returns:
            ``idx_i``, ``idx_j`` (C,), ``cell_shifts`` (C, 3) float64 (shifts
            of the build corrected for atoms wrapped since), ``pair_mask``
            (C,) and ``stale`` (0-d bool: some atom moved more than skin/2, the
            pairs may be incomplete and the step must be repeated after a
            build).
        """
        buf = self.buffers
        displacement = positions - buf.ref_positions  # (N, 3)
        # integer lattice jumps along periodic directions (a wrap is no motion)
        jumps = torch.round(displacement @ buf.inverse) * buf.pbc  # (N, 3)
        displacement = displacement - jumps @ buf.cell
        moved2 = squared_lengths(displacement).amax()
        stale = moved2 > (0.5 * self.skin) ** 2
        shifts = (buf.shifts + jumps.index_select(0, buf.idx_i)
                  - jumps.index_select(0, buf.idx_j))
        return buf.idx_i, buf.idx_j, shifts, buf.mask, stale
