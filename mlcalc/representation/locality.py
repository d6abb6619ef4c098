"""An atom order in which neighbors are close in memory (a Z-order curve).

The message kernels walk the pairs and read and write the rows of both atoms
of each. With the atoms in the order of a lattice (``bulk(...) * (n, n, n)``)
the neighbors of an atom lie up to two layers of cells away in index, and
from a few thousand atoms those rows no longer stay in cache; with atoms that
have diffused (a liquid after a long run) the order is random. Sorting the
atoms along a Z-order (Morton) curve of spatial bins puts each region's atoms
next to each other, so a run of pairs touches a compact set of rows.

Measured (PaiNN 128×3, MD, 1 thread, Zen 4, fcc Cu; one process, 3 rounds,
medians in atom-steps/s): atoms in a random order 4,579 → 5,499 at 2,048
atoms and 4,057 → 5,697 at 4,000 (1.2× and 1.4×: back to the speed of the
lattice order); in lattice order 5,890 → 5,789 and 5,359 → 5,593 (no change
beyond noise). At 500 atoms the sort cost more than it saved (6,602 →
6,275 in lattice order, 6,825 → 6,445 shuffled), hence
:data:`LOCALITY_MIN_ATOMS`. SchNet (rows of F numbers instead of PaiNN's 4F,
read by per-atom gathers) measured no gain (0.91–1.04× at 2,048 and 4,000
atoms, lattice and random order), so only PaiNN uses it.
"""

from __future__ import annotations

import torch

from mlcalc import properties as P

#: Batches with at least this many atoms (on CPU) are evaluated in Z-order.
LOCALITY_MIN_ATOMS = 1000

_BITS = 16  # bins per axis: 2**16 (164 km at 2.5 Å); 48 bits, the structure index above


def _spread(v: torch.Tensor) -> torch.Tensor:
    """The low 16 bits of ``v`` moved to every third bit (bit k -> bit 3k)."""
    v = v & 0xFFFF
    v = (v | (v << 16)) & 0x0000FF0000FF
    v = (v | (v << 8)) & 0x00F00F00F00F
    v = (v | (v << 4)) & 0x0C30C30C30C3
    v = (v | (v << 2)) & 0x249249249249
    return v


def locality_order(positions: torch.Tensor, idx_m: torch.Tensor,
                   bin_size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A permutation of the atoms along a Z-order curve, structure by structure.

    Args:
        positions: (N, 3) Cartesian positions, Å (only their values are used).
        idx_m: (N,) structure index of every atom (structures stay contiguous).
        bin_size: edge of the spatial bins, Å.

    Returns:
        ``perm`` (N,): the atoms in the new order (new row k holds atom
        ``perm[k]``), and ``inv`` (N,): the new row of every atom.
    """
    r = positions.detach()
    low = r.min(dim=0).values if r.shape[0] else r.new_zeros(3)
    cells = torch.clamp(((r - low) / bin_size).long(), 0, 2**_BITS - 1)
    key = _spread(cells[:, 0]) | (_spread(cells[:, 1]) << 1) | (_spread(cells[:, 2]) << 2)
    key = key | (idx_m.long() << (3 * _BITS))
    perm = torch.argsort(key)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.shape[0], device=perm.device)
    return perm, inv


def local_inputs(inputs: dict[str, torch.Tensor], cutoff: float) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None]:
    """A representation's inputs, in Z-order where it pays (large batches on CPU).

    Args:
        inputs: the batch (``Z``, ``R``, ``idx_m``, the half list ``idx_i``,
            ``idx_j`` and its vectors ``Rij``).
        cutoff: the model's cutoff, Å (bins of half of it).

    Returns:
        ``a``, ``b`` (P,) the pairs' atoms, ``numbers`` (N,), a dict holding
        ``Rij`` (P, 3) for :meth:`~mlcalc.representation.base.Representation.pair_geometry`,
        all in the evaluation order (pairs sorted by their new rows), and ``inv``
        (N,): the row of every input atom, to index the features back with
        (None when the input order is kept).
    """
    a, b, numbers = inputs[P.idx_i], inputs[P.idx_j], inputs[P.Z]
    n_atoms = numbers.shape[0]
    if n_atoms < LOCALITY_MIN_ATOMS or a.device.type != "cpu":
        return a, b, numbers, inputs, None
    perm, inv = locality_order(inputs[P.R], inputs[P.idx_m], cutoff / 2)
    a, b = inv[a], inv[b]
    pair_order = torch.argsort(a * n_atoms + b)
    return a[pair_order], b[pair_order], numbers[perm], {P.Rij: inputs[P.Rij][pair_order]}, inv
