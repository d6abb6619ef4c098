"""Input module: pair vectors from positions, cell and integer cell shifts."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mlcalc import properties as P

#: Length (Å) of the pair vector given to a padding slot (``pair_mask`` False):
#: beyond any model's cutoff, so the cutoff function (and its derivative) is
#: exactly zero there and the slot contributes nothing.
PADDING_DISTANCE = 1000.0


class PairVectors(nn.Module):
    """Compute ``Rij = R_j - R_i + shift_ij @ cell`` in float64.

    When the input dict holds a ``strain`` (M, 3, 3) (created by the model
    when stress is asked for), positions and cell are deformed by its
    symmetric part, ``x -> x (1 + ε)``, before the pair vectors are formed.
    The energy then depends on ε, and ∂E/∂ε at ε = 0 gives the stress in
    the same autograd call as the forces. Because the Cartesian image offsets
    are computed here from the (strained) cell and the stored integer shifts,
    the stress is exact for periodic images too.

    With a ``pair_mask`` (E,) in the inputs (a static-shape list from
    :mod:`mlcalc.transform.padded`), the slots it marks False get the vector
    (:data:`PADDING_DISTANCE`, 0, 0): finite, beyond the cutoff, and not
    connected to positions or strain, so they add exactly zero to energy,
    forces and stress.
    """

    name = "pair_vectors"

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pos = inputs[P.R]  # (N, 3) float64
        cell = inputs[P.cell]  # (M, 3, 3)
        idx_i, idx_j = inputs[P.idx_i], inputs[P.idx_j]
        shifts = inputs[P.cell_shifts].to(cell.dtype)  # (E, 3)
        strain = inputs.get(P.strain)
        if strain is not None:
            sym = 0.5 * (strain + strain.transpose(1, 2))  # (M, 3, 3)
            idx_m = inputs[P.idx_m]
            pos = pos + torch.bmm(pos[:, None, :], sym[idx_m]).squeeze(1)
            cell = cell + torch.bmm(cell, sym)
        if cell.shape[0] == 1:
            offsets = shifts @ cell[0]  # (E, 3)
        else:
            pair_cell = cell[inputs[P.idx_m][idx_i]]  # (E, 3, 3)
            offsets = torch.bmm(shifts[:, None, :], pair_cell).squeeze(1)
        # index_select, not pos[idx]: its backward is an index_add, not an
        # accumulating index_put (which sorts the indices): 73 vs 107 us at 108 atoms
        rij = pos.index_select(0, idx_j) - pos.index_select(0, idx_i) + offsets
        mask = inputs.get(P.pair_mask)
        if mask is not None:
            # filled on the device: a tensor made from a Python list would be a host copy
            far = torch.zeros(3, dtype=rij.dtype, device=rij.device)
            far[0] = PADDING_DISTANCE
            rij = torch.where(mask[:, None], rij, far)
        inputs[P.Rij] = rij
        return inputs

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name}
