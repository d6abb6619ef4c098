"""CastTo32 / CastTo64 cast floating tensors only."""

from __future__ import annotations

import torch

from mlcalc.transform import CastTo32, CastTo64


def test_cast_float_tensors_only():
    inputs = {"positions": torch.zeros(2, 3, dtype=torch.float64),
              "numbers": torch.tensor([1, 2]), "pbc": torch.tensor([[True, False, True]])}
    out32 = CastTo32()(inputs)
    assert out32["positions"].dtype == torch.float32
    assert out32["numbers"].dtype == torch.int64 and out32["pbc"].dtype == torch.bool
    assert inputs["positions"].dtype == torch.float64  # input dict untouched
    assert CastTo64()(out32)["positions"].dtype == torch.float64
