"""Neighbor lists: transforms adding the pairs within a cutoff to an input dict.

Convention shared by every backend: the search gives a FULL list (both i->j and j->i),
the pair vector is ``R[j] - R[i] + cell_shifts @ cell`` for the positions as
given (they need not lie inside the cell), pairs with ``|Rij| < cutoff``
(strict) are kept, the self pair (i == j, zero shift) is left out but an atom's
own periodic images are included. Non-periodic directions are never
replicated and their cell vectors may be zero. All backends return the same
set of (i, j, shift) triples; only their order differs. With ``half=True`` a
neighbor list returns each unordered pair once (:func:`half_pairs`), the form
mlcalc's representations read.

Which backend makes a model's pairs on which device is part of the model
(:class:`NeighborListSettings`, saved in the model file).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mlcalc import properties as P
from mlcalc.exceptions import InvalidStructureError, unknown_name
from mlcalc.transform.base import Transform
from mlcalc.transform.torch_cell_list import (
    assemble_pairs,
    boxed_cell,
    cell_list_search,
    replicate_images,
)

Pairs = tuple[Tensor, Tensor, Tensor]


def _empty_pairs(device: torch.device) -> Pairs:
    """No pairs: (0,), (0,) and (0, 3) int64 tensors."""
    empty = torch.zeros(0, dtype=torch.long, device=device)
    return empty, empty.clone(), torch.zeros(0, 3, dtype=torch.long, device=device)


#: Atoms closer than this (Å) are refused: no structure has them (the
#: shortest bond, H2, is 0.74 Å), they come from duplicated atoms, and at zero
#: distance the pair direction is undefined (NaN energies and forces).
MIN_DISTANCE = 0.1


def squared_lengths(v: Tensor) -> Tensor:
    """(E, 3) vectors -> (E,) squared lengths.

    A product with a ones vector: torch's ``square().sum(1)`` reduces the
    short last dimension 8x slower on CPU (65 vs 8 µs for 3,500 float64
    pair vectors, measured), and the Verlet list does this every MD step.
    """
    return v.square() @ v.new_ones(3)


def check_min_distance(d2: Tensor, idx_i: Tensor, idx_j: Tensor) -> None:
    """Raise :class:`InvalidStructureError` if a squared pair distance is below MIN_DISTANCE².

    Args:
        d2: (E,) squared pair distances, Å².
        idx_i, idx_j: (E,) the pairs' atoms.
    """
    close = d2 < MIN_DISTANCE**2
    if bool(close.any()):
        k = int(torch.nonzero(close)[0, 0])
        i, j = int(idx_i[k]), int(idx_j[k])
        which = f"atoms {min(i, j)} and {max(i, j)} are" if i != j else \
            f"atom {i} and its periodic image are"
        raise InvalidStructureError(
            f"{which} {float(d2[k]) ** 0.5:.3g} Å apart, closer than {MIN_DISTANCE} Å "
            "(duplicated atoms?)")


def filter_pairs(idx_i: Tensor, idx_j: Tensor, cell_shifts: Tensor, positions: Tensor,
                 cell: Tensor, cutoff: float) -> Pairs:
    """Keep the pairs shorter than ``cutoff``.

    Used to cut a list built at ``cutoff + skin`` down to the model cutoff.
    Refuses atoms closer than :data:`MIN_DISTANCE` (see :func:`check_min_distance`).

    Args:
        idx_i, idx_j: (E,) int64 pair atoms.
        cell_shifts: (E, 3) integer cell shifts.
        positions: (N, 3) positions, Å.
        cell: (3, 3) lattice vectors as rows, Å.
        cutoff: Å; pairs with ``|R[j] - R[i] + shift @ cell| < cutoff`` are kept.

    Returns:
        the kept ``idx_i`` (E',), ``idx_j`` (E',), ``cell_shifts`` (E', 3).
    """
    rij = positions[idx_j] - positions[idx_i] + cell_shifts.to(positions.dtype) @ cell
    d2 = squared_lengths(rij)
    check_min_distance(d2, idx_i, idx_j)
    keep = d2 < cutoff**2
    return idx_i[keep], idx_j[keep], cell_shifts[keep]


def half_pairs(idx_i: Tensor, idx_j: Tensor, cell_shifts: Tensor) -> Pairs:
    """Each unordered pair of a full list once.

    A full list holds every pair twice, as (i, j, S) and (j, i, -S). The one
    kept has i < j, or, for an atom and its own periodic image (i = j), the
    shift S whose first non-zero component is positive.

    Args:
        idx_i, idx_j: (E,) int64 pair atoms of a full (symmetric) list.
        cell_shifts: (E, 3) integer cell shifts.

    Returns:
        ``idx_i`` (E/2,), ``idx_j`` (E/2,), ``cell_shifts`` (E/2, 3).
    """
    s = cell_shifts
    positive = (s[:, 0] > 0) | ((s[:, 0] == 0) & ((s[:, 1] > 0) | ((s[:, 1] == 0) & (s[:, 2] > 0))))
    keep = torch.nonzero((idx_i < idx_j) | ((idx_i == idx_j) & positive)).squeeze(1)
    return idx_i.index_select(0, keep), idx_j.index_select(0, keep), s.index_select(0, keep)


def full_pairs(idx_i: Tensor, idx_j: Tensor, cell_shifts: Tensor) -> Pairs:
    """Both directions of every pair of a half list: (i, j, S) and then (j, i, -S)."""
    return (torch.cat([idx_i, idx_j]), torch.cat([idx_j, idx_i]),
            torch.cat([cell_shifts, -cell_shifts]))


#: Every backend searches at a cutoff widened by this factor and then applies the
#: exact cut of :func:`_exact_cut`: a pair whose length lies within rounding of the
#: cutoff is then kept or dropped alike by all backends (matscipy, which wraps the
#: atoms first, otherwise keeps pairs one ulp longer than the cutoff).
_WIDEN = 1.0 + 1e-9


def _exact_cut(pairs: Pairs, positions: Tensor, cell: Tensor, cutoff: float) -> Pairs:
    """:func:`filter_pairs` on the positions as given, in the model's own arithmetic."""
    return filter_pairs(*pairs, positions, cell.to(positions), cutoff)


class NeighborList(Transform):
    """Base class: adds ``idx_i``, ``idx_j`` and ``cell_shifts`` of ONE structure.

    Args:
        cutoff: pairs strictly shorter than this are listed, Å.
        half: list each unordered pair once (:func:`half_pairs`) instead of
            both directions.
    """

    def __init__(self, cutoff: float, half: bool = False) -> None:
        super().__init__()
        if not cutoff > 0:
            raise ValueError(f"the neighbor-list cutoff must be positive, got {cutoff}")
        self.cutoff = float(cutoff)
        self.half = bool(half)

    def neighbor_pairs(self, positions: Tensor, cell: Tensor, pbc: Tensor) -> Pairs:
        """The full list of one structure (the backend's search).

        Args:
            positions: (N, 3) float64 positions, Å.
            cell: (3, 3) float64 lattice vectors as rows, Å.
            pbc: (3,) bool periodic directions.

        Returns:
            ``idx_i`` (E,), ``idx_j`` (E,) and ``cell_shifts`` (E, 3), int64,
            on the device of ``positions``.
        """
        raise NotImplementedError

    def pairs(self, positions: Tensor, cell: Tensor, pbc: Tensor) -> Pairs:
        """Pairs of one structure in this list's form (half or full); see :meth:`neighbor_pairs`."""
        pairs = self.neighbor_pairs(positions, cell, pbc)
        return half_pairs(*pairs) if self.half else pairs

    def forward(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """Return a shallow copy of ``inputs`` with the pair keys added.

        Reads ``positions`` (N, 3), ``cell`` (1, 3, 3) and ``pbc`` (1, 3).
        """
        positions = inputs[P.R]
        cell = inputs[P.cell].reshape(3, 3)
        pbc = inputs[P.pbc].reshape(3)
        idx_i, idx_j, shifts = self.pairs(positions, cell, pbc)
        out = dict(inputs)
        out[P.idx_i] = idx_i.long()
        out[P.idx_j] = idx_j.long()
        out[P.cell_shifts] = shifts.long()
        return out

    def extra_repr(self) -> str:
        return f"cutoff={self.cutoff}, half={self.half}"


def _to_numpy(positions: Tensor, cell: Tensor, pbc: Tensor
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CPU float64 / bool arrays for the numpy-based backends."""
    return (positions.detach().cpu().double().numpy(), cell.detach().cpu().double().numpy(),
            pbc.detach().cpu().numpy().astype(bool))


def _from_numpy(i: np.ndarray, j: np.ndarray, s: np.ndarray, device: torch.device) -> Pairs:
    return (torch.as_tensor(i.astype(np.int64), device=device),
            torch.as_tensor(j.astype(np.int64), device=device),
            torch.as_tensor(s.astype(np.int64).reshape(-1, 3), device=device))


class ASENeighborList(NeighborList):
    """``ase.neighborlist.primitive_neighbor_list``: slow, the reference in tests.

    It gets the same completed cell as matscipy (see
    :func:`mlcalc.transform.torch_cell_list.boxed_cell`).
    """

    def neighbor_pairs(self, positions: Tensor, cell: Tensor, pbc: Tensor) -> Pairs:
        from ase.neighborlist import primitive_neighbor_list

        if len(positions) == 0:
            return _empty_pairs(positions.device)
        pos, cel, per = _to_numpy(positions, cell, pbc)
        pos, full = boxed_cell(pos, cel, per, self.cutoff)
        i, j, s = primitive_neighbor_list("ijS", per, full, pos, self.cutoff * _WIDEN,
                                          self_interaction=False, use_scaled_positions=False)
        return _exact_cut(_from_numpy(i, j, s, positions.device), positions, cell, self.cutoff)


class MatScipyNeighborList(NeighborList):
    """``matscipy.neighbours.neighbour_list`` (compiled cell list, CPU)."""

    def neighbor_pairs(self, positions: Tensor, cell: Tensor, pbc: Tensor) -> Pairs:
        from matscipy.neighbours import neighbour_list

        if len(positions) == 0:
            return _empty_pairs(positions.device)
        pos, cel, per = _to_numpy(positions, cell, pbc)
        pos, full = boxed_cell(pos, cel, per, self.cutoff)
        i, j, s = neighbour_list("ijS", positions=pos, cell=full,
                                 pbc=per, cutoff=self.cutoff * _WIDEN)
        return _exact_cut(_from_numpy(i, j, s, positions.device), positions, cell, self.cutoff)


class TorchNeighborList(NeighborList):
    """Pure-torch O(N) cell list; runs on CPU or CUDA tensors, no compiled code.

    Args:
        cutoff: Å.
        max_candidates: candidate pairs examined at once (bounds peak memory).
        half: each unordered pair once.
    """

    def __init__(self, cutoff: float, max_candidates: int = 1 << 22, half: bool = False) -> None:
        super().__init__(cutoff, half)
        self.max_candidates = int(max_candidates)

    def neighbor_pairs(self, positions: Tensor, cell: Tensor, pbc: Tensor) -> Pairs:
        if len(positions) == 0:
            return _empty_pairs(positions.device)
        images = replicate_images(positions, cell, pbc, self.cutoff * _WIDEN)
        centre, image = cell_list_search(images.images, len(positions), self.cutoff * _WIDEN,
                                         self.max_candidates)
        pairs = assemble_pairs(images, centre, image)
        return _exact_cut(pairs, positions, cell, self.cutoff)


_CLUSTER_HINT = "TorchClusterNeighborList needs torch-cluster: pip install 'mlcalc[cluster]'"


def _import_torch_cluster() -> ModuleType:
    try:
        return importlib.import_module("torch_cluster")
    except ImportError as err:
        raise ImportError(_CLUSTER_HINT) from err


class TorchClusterNeighborList(NeighborList):
    """``torch_cluster.radius`` on the same periodic images as :class:`TorchNeighborList`.

    Needs the optional ``torch-cluster`` package (``pip install 'mlcalc[cluster]'``).
    """

    def __init__(self, cutoff: float, half: bool = False) -> None:
        super().__init__(cutoff, half)
        _import_torch_cluster()  # fail at construction, not at the first structure

    def neighbor_pairs(self, positions: Tensor, cell: Tensor, pbc: Tensor) -> Pairs:
        if len(positions) == 0:
            return _empty_pairs(positions.device)
        torch_cluster = _import_torch_cluster()
        images = replicate_images(positions, cell, pbc, self.cutoff * _WIDEN)
        n = len(positions)
        # radius() silently truncates at max_num_neighbors: start from a guess and
        # double it until no centre reaches the limit.
        limit = 64
        while True:
            limit = min(limit, len(images.images))
            found = torch_cluster.radius(images.images, images.centres,
                                         self.cutoff * _WIDEN, max_num_neighbors=limit)
            centre, image = found[0], found[1]
            if len(centre) == 0 or limit >= len(images.images):
                break
            if int(torch.bincount(centre, minlength=n).max()) < limit:
                break
            limit *= 2
        keep = image != centre  # the first n images are the centres themselves
        pairs = assemble_pairs(images, centre[keep], image[keep])
        return _exact_cut(pairs, positions, cell, self.cutoff)


#: Backends by the name saved in model files and recipes.
NEIGHBOR_LISTS: dict[str, type[NeighborList]] = {
    "matscipy": MatScipyNeighborList,
    "torch": TorchNeighborList,
    "torch_cluster": TorchClusterNeighborList,
    "ase": ASENeighborList,
}


def get_neighbor_list(name: str, cutoff: float, half: bool = False,
                      **kwargs: object) -> NeighborList:
    """Build the backend registered as ``name`` with ``cutoff`` (Å), form and options."""
    check_backend(name)
    return NEIGHBOR_LISTS[name](cutoff, half=half, **kwargs)


def check_backend(name: str) -> str:
    """Return ``name`` if it is a registered backend, else raise with a did-you-mean."""
    if name not in NEIGHBOR_LISTS:
        raise unknown_name("neighbor list", name, NEIGHBOR_LISTS)
    return name


@dataclass(frozen=True)
class NeighborListSettings:
    """Which backend makes a model's pairs, per device type (saved in ``model.pt``).

    All backends give the same pairs, so the choice is one of speed: matscipy
    (compiled cell list) on CPU, the pure-torch cell list on GPUs.

    Attributes:
        cpu: backend on CPU.
        cuda: backend on CUDA (and any other accelerator).
        training: the backend the model was trained with (recorded for the
            record; None for a model not trained by ``mlcalc fit``).
    """

    cpu: str = "matscipy"
    cuda: str = "torch"
    training: str | None = None

    def __post_init__(self) -> None:
        for name in (self.cpu, self.cuda, self.training):
            if name is not None:
                check_backend(name)

    def backend(self, device: torch.device | str) -> str:
        """The backend name for ``device``."""
        return self.cpu if torch.device(device).type == "cpu" else self.cuda

    def to_dict(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "cuda": self.cuda, "training": self.training}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> NeighborListSettings:
        """From :meth:`to_dict` (keys of format-1 model files that are not settings are ignored)."""
        d = d or {}
        return cls(cpu=d.get("cpu", "matscipy"), cuda=d.get("cuda", "torch"),
                   training=d.get("training"))
