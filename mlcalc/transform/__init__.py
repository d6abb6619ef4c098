"""Transforms: steps mapping an input dict to an input dict (see :mod:`.base`)."""

from .base import CastTo32, CastTo64, Transform
from .neighbors import (
    NEIGHBOR_LISTS,
    ASENeighborList,
    MatScipyNeighborList,
    NeighborList,
    TorchClusterNeighborList,
    TorchNeighborList,
    filter_pairs,
    get_neighbor_list,
)

__all__ = [
    "Transform",
    "CastTo32",
    "CastTo64",
    "NeighborList",
    "MatScipyNeighborList",
    "ASENeighborList",
    "TorchNeighborList",
    "TorchClusterNeighborList",
    "NEIGHBOR_LISTS",
    "get_neighbor_list",
    "filter_pairs",
]
