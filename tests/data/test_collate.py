"""collate_atoms: concatenation, pair-index shifts and idx_m."""

from __future__ import annotations

import pytest
import torch

from mlcalc import properties as P
from mlcalc.data import collate_atoms


def structure(n: int, pairs: list[tuple[int, int]], k: int) -> dict[str, torch.Tensor]:
    idx_i = torch.tensor([p[0] for p in pairs], dtype=torch.long)
    idx_j = torch.tensor([p[1] for p in pairs], dtype=torch.long)
    return {
        P.Z: torch.full((n,), 29, dtype=torch.long),
        P.R: torch.rand(n, 3, dtype=torch.float64),
        P.cell: torch.eye(3, dtype=torch.float64).reshape(1, 3, 3) * (k + 1),
        P.pbc: torch.ones(1, 3, dtype=torch.bool),
        P.n_atoms: torch.tensor([n]),
        P.idx: torch.tensor([k]),
        P.energy: torch.tensor([float(k)], dtype=torch.float64),
        P.idx_i: idx_i,
        P.idx_j: idx_j,
        P.cell_shifts: torch.full((len(pairs), 3), k, dtype=torch.long),
    }


def test_collate_reindexes_pairs_and_builds_idx_m():
    examples = [structure(2, [(0, 1), (1, 0)], 0), structure(3, [(0, 2), (2, 1), (1, 1)], 1),
                structure(1, [], 2)]
    batch = collate_atoms(examples)
    assert batch[P.n_atoms].tolist() == [2, 3, 1]
    assert batch[P.idx_m].tolist() == [0, 0, 1, 1, 1, 2]
    assert batch[P.idx_i].tolist() == [0, 1, 2, 4, 3]
    assert batch[P.idx_j].tolist() == [1, 0, 4, 3, 3]
    assert batch[P.cell_shifts].shape == (5, 3)
    assert batch[P.cell_shifts][:, 0].tolist() == [0, 0, 1, 1, 1]
    assert batch[P.R].shape == (6, 3) and batch[P.Z].shape == (6,)
    assert batch[P.cell].shape == (3, 3, 3) and batch[P.pbc].shape == (3, 3)
    assert batch[P.energy].tolist() == [0.0, 1.0, 2.0]
    assert batch[P.idx].tolist() == [0, 1, 2]


def test_collate_empty_raises():
    with pytest.raises(ValueError, match="empty"):
        collate_atoms([])
