"""Scatter-add on ``index_add_`` (no torch-scatter dependency)."""

from __future__ import annotations

import torch


def scatter_add(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Sum rows of ``src`` into ``dim_size`` bins along dimension 0.

    Args:
        src: (E, ...) values, e.g. one message per pair.
        index: (E,) int64 target row of every value, e.g. ``idx_i``.
        dim_size: number of target rows, e.g. the number of atoms N.

    Returns:
        (dim_size, ...) tensor with ``out[k] = sum(src[index == k])``.
    """
    out = torch.zeros((dim_size, *src.shape[1:]), dtype=src.dtype, device=src.device)
    return out.index_add_(0, index, src)
