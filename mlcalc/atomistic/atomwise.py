"""Atomwise output: per-atom contributions and their per-structure sum."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import torch
from torch import nn

from mlcalc import properties as P
from mlcalc.nn import build_mlp, get_activation, scatter_add


class Atomwise(nn.Module):
    """Predict a per-atom scalar y_i with an MLP and sum it per structure.

    The per-atom values are cast to float64 before the sum (precision policy:
    a float32 network still sums thousands of atoms without round-off).

    Args:
        n_in: input features (the representation's ``n_atom_basis``).
        n_hidden: hidden widths of the MLP (None: halve at each layer).
        n_layers: layers of the MLP.
        activation: hidden activation name.
        output_key: per-structure key written, (M,) float64.
        per_atom_output_key: per-atom key written, (N,) float64 (None: not kept).
        aggregation_mode: ``sum`` or ``avg`` over the atoms of a structure.
    """

    name = "atomwise"

    def __init__(self, n_in: int, n_hidden: int | list[int] | None = None, n_layers: int = 2,
                 activation: str = "silu", output_key: str = P.energy,
                 per_atom_output_key: str | None = P.energies,
                 aggregation_mode: str = "sum") -> None:
        super().__init__()
        if aggregation_mode not in ("sum", "avg"):
            raise ValueError(f"aggregation_mode must be 'sum' or 'avg', got {aggregation_mode!r}")
        self.config = dict(
            n_in=n_in, n_hidden=n_hidden, n_layers=n_layers, activation=activation,
            output_key=output_key, per_atom_output_key=per_atom_output_key,
            aggregation_mode=aggregation_mode,
        )
        self.output_key = output_key
        self.per_atom_output_key = per_atom_output_key
        self.aggregation_mode = aggregation_mode
        self.net = build_mlp(n_in, 1, n_hidden, n_layers, get_activation(activation))

    @property
    def output_keys(self) -> tuple[str, ...]:
        """The properties this module adds."""
        keys = (self.output_key, self.per_atom_output_key)
        return tuple(k for k in keys if k is not None)

    def forward(self, inputs: dict[str, torch.Tensor],
                properties: Collection[str] = ()) -> dict[str, torch.Tensor]:
        """Adds ``output_key`` (M,) and ``per_atom_output_key`` (N,), float64, eV."""
        y = self.net(inputs[P.scalar_representation]).squeeze(-1).double()  # (N,)
        n_atoms = inputs[P.n_atoms]
        total = scatter_add(y, inputs[P.idx_m], n_atoms.shape[0])  # (M,)
        if self.aggregation_mode == "avg":
            total = total / n_atoms
        inputs[self.output_key] = total
        if self.per_atom_output_key is not None:
            inputs[self.per_atom_output_key] = y
        return inputs

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, **self.config}
