"""Verlet-skin neighbor list: build at cutoff + skin, reuse while atoms move little.

Between rebuilds the stored pairs stay valid because no atom has moved more
than skin/2 from where the list was built, so no pair can have come from
beyond cutoff + skin into the cutoff. Displacements are measured as the
minimum image along periodic directions: an atom wrapped back into the cell
(its position jumped by a lattice vector) has not moved, and the integer
shifts of its pairs are corrected for the jump instead of forcing a rebuild.
The pairs are cut to the model cutoff at every step, so results with and
without skin agree to rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mlcalc.transform.neighbors import NeighborList, check_min_distance, squared_lengths
from mlcalc.transform.torch_cell_list import complete_cell

Pairs = tuple[Tensor, Tensor, Tensor]


class VerletNeighborList:
    """Stateful pair list for one evolving structure (MD, relaxation).

    Args:
        neighbor_list: the model's neighbor list at the model cutoff + skin;
            its form (half or full list) is the form returned.
        cutoff: model cutoff in Å.
        skin: extra distance in Å (0: rebuild at every call).
        cell_tol: largest change of any cell element (Å) that is not a change.

    Attributes:
        n_builds: number of full builds so far (for tests and benchmarks).
    """

    def __init__(self, neighbor_list: NeighborList, cutoff: float, skin: float,
                 cell_tol: float = 1e-12) -> None:
        if skin < 0:
            raise ValueError(f"skin must be >= 0, got {skin}")
        if abs(neighbor_list.cutoff - (cutoff + skin)) > 1e-12:
            raise ValueError("the neighbor list must be built at cutoff + skin")
        self.neighbor_list = neighbor_list
        self.cutoff = float(cutoff)
        self.skin = float(skin)
        self.cell_tol = cell_tol
        self.n_builds = 0
        self._ref: tuple[Tensor, Tensor, Tensor, Tensor] | None = None
        self._pairs: Pairs | None = None
        self._offsets: Tensor | None = None  # (E, 3) shifts @ cell of the stored pairs
        self._to_frac: Tensor | None = None  # (3, 3) Cartesian -> periodic fractional

    def reset(self) -> None:
        """Forget the stored list (the next call rebuilds)."""
        self._ref = None
        self._pairs = None
        self._offsets = None
        self._to_frac = None

    def _image_offsets(self, positions: Tensor, cell: Tensor) -> tuple[bool, Tensor | None]:
        """Whether a rebuild is due, and the lattice jumps (N, 3) since the build (float).

        The jumps are None without periodic directions (there are none).
        """
        displacement = positions - self._ref[0]  # (N, 3)
        jumps = None
        if self._to_frac is not None:  # fractional along the periodic vectors, whole ones removed
            jumps = torch.round(displacement @ self._to_frac)
            displacement = displacement - jumps @ cell
        return bool(squared_lengths(displacement).max() > (0.5 * self.skin) ** 2), jumps

    def _same_system(self, positions: Tensor, cell: Tensor, pbc: Tensor,
                     numbers: Tensor) -> bool:
        ref_pos, ref_cell, ref_pbc, ref_numbers = self._ref
        return (positions.shape == ref_pos.shape and torch.equal(pbc, ref_pbc)
                and torch.equal(numbers, ref_numbers)
                and bool((cell - ref_cell).abs().max() <= self.cell_tol))

    def _build(self, positions: Tensor, cell: Tensor, pbc: Tensor, numbers: Tensor) -> None:
        self._pairs = self.neighbor_list.pairs(positions, cell, pbc)
        self._ref = (positions.clone(), cell.clone(), pbc.clone(), numbers.clone())
        self.n_builds += 1
        # the cell is fixed until the next build: Cartesian image offsets once, and
        # the map to fractional coordinates along the periodic vectors (the
        # non-periodic rows completed to an invertible cell: a slab's or a
        # molecule's cell may have zero vectors there), zero columns elsewhere
        self._offsets = self._pairs[2].to(cell.dtype) @ cell
        self._to_frac = None
        if bool(pbc.any()):
            self._to_frac = torch.linalg.inv(complete_cell(cell, pbc)) * pbc.to(cell.dtype)

    def __call__(self, positions: Tensor, cell: Tensor, pbc: Tensor, numbers: Tensor) -> Pairs:
        """Pairs within the cutoff for the current geometry.

        Args:
            positions: (N, 3) float64 positions, Å (wrapped or not).
            cell: (3, 3) float64 lattice vectors as rows, Å.
            pbc: (3,) bool.
            numbers: (N,) int64 atomic numbers.

        Returns:
            ``idx_i`` (E,), ``idx_j`` (E,), ``cell_shifts`` (E, 3) int64, in
            the neighbor list's form.
        """
        if self.skin == 0:
            self.n_builds += 1
            return self.neighbor_list.pairs(positions, cell, pbc)
        stale, jumps = True, None
        if self._ref is not None and self._same_system(positions, cell, pbc, numbers):
            stale, jumps = self._image_offsets(positions, cell)
        if stale:
            self._build(positions, cell, pbc, numbers)
            jumps = None
        return self._cut(positions, cell, jumps)

    def _cut(self, positions: Tensor, cell: Tensor, jumps: Tensor | None) -> Pairs:
        """The stored pairs shorter than the cutoff, shifts corrected for wrapped atoms."""
        idx_i, idx_j, shifts = self._pairs
        offsets = self._offsets
        if jumps is not None and bool(jumps.any()):
            # the continuation of atom k is positions[k] - jumps[k] @ cell
            steps = jumps.long()
            shifts = shifts + steps[idx_i] - steps[idx_j]
            offsets = shifts.to(cell.dtype) @ cell
        rij = positions.index_select(0, idx_j) - positions.index_select(0, idx_i) + offsets
        d2 = squared_lengths(rij)
        check_min_distance(d2, idx_i, idx_j)
        keep = torch.nonzero(d2 < self.cutoff**2).squeeze(1)
        return idx_i.index_select(0, keep), idx_j.index_select(0, keep), shifts.index_select(
            0, keep)
