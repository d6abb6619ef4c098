"""Batching of single-structure dicts into one batch dict."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mlcalc import properties as P


def collate_atoms(examples: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate structures into a batch.

    Every tensor is concatenated along its first dimension: per-atom tensors
    (N_k, ...) become (N, ...), per-structure tensors (1, ...) become (M, ...)
    and per-pair tensors (E_k, ...) become (E, ...). Pair indices ``idx_i``
    and ``idx_j`` are shifted by the number of atoms that precede their
    structure, and ``idx_m`` (N,) maps every atom to its structure.

    Args:
        examples: dicts as produced by a data set (with ``n_atoms`` of shape (1,)).
    """
    if len(examples) == 0:
        raise ValueError("cannot collate an empty list of structures")
    first = examples[0]
    n_atoms = torch.cat([ex[P.n_atoms] for ex in examples])
    batch: dict[str, torch.Tensor] = {}
    for key in first:
        if key in P.ATOM_INDEX_KEYS:
            continue
        batch[key] = torch.cat([ex[key] for ex in examples], dim=0)
    if P.idx_i in first:
        starts = torch.cumsum(n_atoms, 0) - n_atoms
        for key in P.ATOM_INDEX_KEYS:
            batch[key] = torch.cat(
                [ex[key] + start for ex, start in zip(examples, starts.tolist(), strict=True)]
            )
    batch[P.idx_m] = torch.repeat_interleave(
        torch.arange(len(examples), device=n_atoms.device), n_atoms
    )
    return batch
