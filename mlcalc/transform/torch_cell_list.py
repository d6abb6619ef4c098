"""Pure-torch building blocks of the periodic neighbor search (CPU and CUDA).

The search works in three steps, all vectorised tensor operations:

1. :func:`replicate_images` wraps the atoms into the cell along the periodic
   directions (remembering the integer offsets) and builds every periodic
   image that can lie within the cutoff of the wrapped cell, as many image
   layers per direction as the cutoff needs.
2. :func:`cell_list_search` bins the images into cubic bins of edge
   ``cutoff`` and compares every centre atom with the images of its 27
   neighboring bins, gathered from a dense padded table of bins.
   (``TorchClusterNeighborList`` replaces this step by ``torch_cluster.radius``.)
3. :func:`assemble_pairs` turns (centre, image) matches into the
   ``(idx_i, idx_j, cell_shifts)`` convention for the positions as given.

:func:`complete_cell` and :func:`boxed_cell` also give the numpy backends
(matscipy, ASE) an invertible cell when non-periodic cell vectors are zero.
Lengths are in Å, the cell holds lattice vectors as rows.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from mlcalc.exceptions import InvalidStructureError

#: Slack in fractional coordinates when selecting images, against rounding in the
#: wrapping; keeping a few images too many costs nothing.
_FRAC_SLACK = 1e-9


def complete_cell(cell: Tensor, pbc: Tensor) -> Tensor:
    """Cell whose non-periodic rows are replaced by unit vectors normal to the periodic ones.

    A molecule may come with an all-zero cell and a slab with a zero third
    vector; both make the cell singular. Non-periodic directions are never
    replicated, so any vector independent of the periodic ones will do; a unit
    vector orthogonal to them keeps the periodic fractional coordinates (and
    hence the wrapping and the plane spacings) untouched.

    Args:
        cell: (3, 3) lattice vectors as rows, Å.
        pbc: (3,) bool periodic directions.

    Returns:
        (3, 3) invertible cell with the same periodic rows, Å.

    Raises:
        InvalidStructureError: a periodic vector is zero or they are dependent.
    """
    periodic = [k for k in range(3) if bool(pbc[k])]
    free = [k for k in range(3) if k not in periodic]
    out = cell.clone()
    rows = [cell[k] for k in periodic]
    for k, row in zip(periodic, rows, strict=True):
        if float(torch.linalg.vector_norm(row)) < 1e-8:
            raise InvalidStructureError(f"pbc is True along {'abc'[k]} but cell vector is zero")
    eye = torch.eye(3, dtype=cell.dtype, device=cell.device)
    if len(periodic) == 0:
        return eye
    if len(periodic) == 1:
        a = rows[0] / torch.linalg.vector_norm(rows[0])
        # Start from the Cartesian axis least aligned with a, so the projection is well defined.
        e = eye[int(torch.argmin(a.abs()))]
        u = e - (e @ a) * a
        u = u / torch.linalg.vector_norm(u)
        out[free[0]] = u
        out[free[1]] = torch.linalg.cross(a, u)
    elif len(periodic) == 2:
        n = torch.linalg.cross(rows[0], rows[1])
        norm = torch.linalg.vector_norm(n)
        if float(norm) < 1e-6 * float(torch.linalg.vector_norm(rows[0])
                                      * torch.linalg.vector_norm(rows[1])):
            raise InvalidStructureError("the cell is singular: its periodic lattice vectors "
                                        "are linearly dependent")
        out[free[0]] = n / norm
    else:
        scale = float(torch.linalg.vector_norm(cell, dim=1).prod())
        if abs(float(torch.linalg.det(cell))) < 1e-6 * scale:
            raise InvalidStructureError("the cell is singular: its periodic lattice vectors "
                                        "are linearly dependent")
    return out


def boxed_cell(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """Positions and an invertible cell holding them, for the numpy backends.

    matscipy inverts the cell, so a zero (molecule, slab) cell raises
    LinAlgError; ASE 3.29 accepts one but, when the zero vector is not the
    last, misses pairs and can take minutes. Every non-periodic vector is
    replaced by one orthogonal to the periodic ones, long enough to hold all
    atoms, and the atoms are translated into it along that vector: this
    changes neither the pair vectors nor the periodic shifts.

    Args:
        positions: (N, 3) Å. cell: (3, 3) Å, rows. pbc: (3,) bool. cutoff: Å.

    Returns:
        translated positions (N, 3) and the completed cell (3, 3), Å.
    """
    if pbc.all():  # the common case, in numpy: the cell is already complete
        norms = np.linalg.norm(cell, axis=1)
        if (norms < 1e-8).any():
            k = int(np.argmax(norms < 1e-8))
            raise InvalidStructureError(f"pbc is True along {'abc'[k]} but cell vector is zero")
        if abs(np.linalg.det(cell)) < 1e-6 * norms.prod():
            raise InvalidStructureError("the cell is singular: its periodic lattice vectors "
                                        "are linearly dependent")
        return np.ascontiguousarray(positions), np.array(cell, dtype=float)
    full = complete_cell(torch.from_numpy(cell), torch.from_numpy(pbc)).numpy()
    inv = np.linalg.inv(full)
    for k in np.flatnonzero(~pbc):
        frac = positions @ inv[:, k]  # full[k] is a unit normal, so this is in Å
        positions = positions - frac.min() * full[k]
        full[k] *= frac.max() - frac.min() + cutoff + 1.0
    return np.ascontiguousarray(positions), full


class ImageSet(NamedTuple):
    """Wrapped atoms and their periodic images within the cutoff of the cell.

    ``images[:N]`` are the wrapped atoms themselves (zero shift), in order.
    """

    centres: Tensor  #: (N, 3) wrapped positions, Å
    images: Tensor  #: (M, 3) image positions, Å
    image_atom: Tensor  #: (M,) int64 atom each image copies
    image_shift: Tensor  #: (M, 3) int64 cell shift of each image w.r.t. the wrapped atom
    offsets: Tensor  #: (N, 3) int64 wrapped = given - offsets @ cell


def replicate_images(positions: Tensor, cell: Tensor, pbc: Tensor, cutoff: float) -> ImageSet:
    """Wrap atoms into the cell and replicate the images that may have a neighbor.

    Along periodic direction k, an image whose fractional coordinate is further
    than ``cutoff / h_k`` (``h_k``: spacing of the lattice planes k) outside
    [0, 1] is further than the cutoff from every wrapped atom, so it is dropped.
    That needs ``n_k = ceil(cutoff / h_k)`` image layers on each side.

    Args:
        positions: (N, 3) float positions, Å; may lie outside the cell.
        cell: (3, 3) lattice vectors as rows, Å; non-periodic rows may be zero.
        pbc: (3,) bool periodic directions.
        cutoff: neighbor cutoff, Å.

    Returns:
        the :class:`ImageSet`, on the device of ``positions``.
    """
    device, dtype = positions.device, positions.dtype
    pbc = pbc.to(device=device, dtype=torch.bool)
    full = complete_cell(cell.to(device=device, dtype=dtype), pbc)
    inv = torch.linalg.inv(full)
    frac = positions @ inv
    offsets = torch.where(pbc, torch.floor(frac), torch.zeros_like(frac)).long()
    frac = frac - offsets.to(dtype)
    centres = positions - offsets.to(dtype) @ full
    # Column k of the inverse cell is the normal of planes k scaled by 1/h_k.
    reach = torch.where(pbc, cutoff * torch.linalg.vector_norm(inv, dim=0),
                        torch.zeros(3, dtype=dtype, device=device))
    layers = torch.ceil(reach).long().tolist()
    axes = [torch.arange(-n, n + 1, device=device) for n in layers]
    grid = torch.cartesian_prod(*axes).reshape(-1, 3)
    # Zero shift first, so the first N images are the atoms themselves.
    grid = grid[torch.argsort((grid != 0).any(dim=1).to(torch.int8), stable=True)]
    image_frac = frac.unsqueeze(0) + grid.unsqueeze(1).to(dtype)  # (S, N, 3)
    slack = reach + _FRAC_SLACK * (1.0 + reach)
    inside = (image_frac >= -slack) & (image_frac <= 1.0 + slack)
    keep = (inside | ~pbc).all(dim=-1)
    keep[0] = True
    shift_index, atom = torch.nonzero(keep, as_tuple=True)
    shift = grid[shift_index]
    images = centres[atom] + shift.to(dtype) @ full
    return ImageSet(centres, images, atom, shift, offsets)


def _bin_table(bins: Tensor) -> tuple[Tensor, Tensor]:
    """Dense padded table of occupied bins.

    Args:
        bins: (M,) int64 linear bin id of every image.

    Returns:
        ``ids`` (U,) sorted ids of the occupied bins and ``table`` (U, max
        occupancy) int64 image indices of each bin, padded with -1.
    """
    order = torch.argsort(bins, stable=True)
    ids, counts = torch.unique_consecutive(bins[order], return_counts=True)
    row = torch.repeat_interleave(torch.arange(len(ids), device=bins.device), counts)
    start = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(bins), device=bins.device) - start[row]
    table = torch.full((len(ids), int(counts.max())), -1, dtype=torch.long, device=bins.device)
    table[row, rank] = order
    return ids, table


def cell_list_search(images: Tensor, n_centres: int, cutoff: float,
                     max_candidates: int = 1 << 22) -> tuple[Tensor, Tensor]:
    """All (centre, image) pairs closer than the cutoff, by a cell list.

    The centres are ``images[:n_centres]``. Bins (edge >= cutoff) span the
    bounding box of the images; only occupied bins are stored, so sparse
    structures (a molecule with a far-away atom) cost no memory for empty space.

    Args:
        images: (M, 3) positions, Å.
        n_centres: N, the first N images are the centre atoms.
        cutoff: Å; pairs with squared distance < cutoff² are returned.
        max_candidates: candidate pairs examined at once, to bound memory.

    Returns:
        ``centre`` (E,) and ``image`` (E,) int64 indices, sorted by centre,
        without the self pairs ``image == centre``.
    """
    device = images.device
    lo = images.min(dim=0).values
    n_bins = (torch.floor((images.max(dim=0).values - lo) / cutoff).long() + 1)
    bin3 = torch.minimum(torch.floor((images - lo) / cutoff).long(), n_bins - 1).clamp(min=0)
    stride = torch.stack([torch.ones_like(n_bins[0]), n_bins[0], n_bins[0] * n_bins[1]])
    # Integer matmul is not implemented on CUDA, hence multiply-and-sum.
    ids, table = _bin_table((bin3 * stride).sum(dim=-1))
    steps = torch.cartesian_prod(*[torch.arange(-1, 2, device=device)] * 3)  # (27, 3)
    nbr3 = bin3[:n_centres].unsqueeze(1) + steps  # (N, 27, 3)
    valid = ((nbr3 >= 0) & (nbr3 < n_bins)).all(dim=-1)
    nbr = (nbr3 * stride).sum(dim=-1)
    row = torch.searchsorted(ids, nbr).clamp(max=len(ids) - 1)
    valid &= ids[row] == nbr
    row = torch.where(valid, row, -1)
    radius2 = cutoff**2
    chunk = max(1, max_candidates // (27 * table.shape[1]))
    # Padding row of -1s, selected for missing neighbor bins.
    table = torch.cat([table, torch.full_like(table[:1], -1)])
    centres, found = [], []
    for start in range(0, n_centres, chunk):
        cand = table[row[start:start + chunk]].flatten(1)  # (n, 27 * max occupancy)
        c, k = torch.nonzero(cand >= 0, as_tuple=True)
        m = cand[c, k]
        c = c + start
        d2 = (images[m] - images[c]).square().sum(dim=1)
        keep = (d2 < radius2) & (m != c)
        centres.append(c[keep])
        found.append(m[keep])
    return torch.cat(centres), torch.cat(found)


def assemble_pairs(images: ImageSet, centre: Tensor, image: Tensor
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """Convert (centre, image) matches to pairs of the positions as given.

    With wrapped = given - offsets @ cell, the pair vector of the wrapped
    atoms with image shift S_w equals that of the given atoms with
    S = S_w + offsets[i] - offsets[j].

    Returns:
        ``idx_i`` (E,), ``idx_j`` (E,) int64 and ``cell_shifts`` (E, 3) int64.
    """
    idx_j = images.image_atom[image]
    shifts = images.image_shift[image] + images.offsets[centre] - images.offsets[idx_j]
    return centre, idx_j, shifts
