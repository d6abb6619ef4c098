"""SchNet: continuous-filter convolutions on interatomic distances.

K. T. Schütt et al., "SchNet – A deep learning architecture for molecules and
materials", J. Chem. Phys. 148, 241722 (2018).

Each interaction updates atom features x_i by::

    x_i ← x_i + f_out( Σ_j  f_in(x_j) ⊙ W(d_ij) · f_cut(d_ij) )

with W a filter network on a radial expansion of the distance d_ij.
"""

from __future__ import annotations

import torch
from torch import nn

from mlcalc import kernels
from mlcalc import properties as P
from mlcalc.nn import Dense, get_activation
from mlcalc.representation.base import Representation


class SchNetInteraction(nn.Module):
    """One continuous-filter convolution block (cfconv) with its atom-wise layers."""

    def __init__(self, n_atom_basis: int, n_rbf: int, n_filters: int, activation) -> None:
        super().__init__()
        self.in2f = Dense(n_atom_basis, n_filters, bias=False)
        self.filter_net = nn.Sequential(
            Dense(n_rbf, n_filters, activation=activation), Dense(n_filters, n_filters)
        )
        self.f2out = nn.Sequential(
            Dense(n_filters, n_atom_basis, activation=activation),
            Dense(n_atom_basis, n_atom_basis),
        )

    def forward(self, x: torch.Tensor, w_ij: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                order: torch.Tensor, rowptr: torch.Tensor) -> torch.Tensor:
        """x (N, F) and the filters w_ij (P, n_filters) of a half list -> update of x (N, F)."""
        conv = kernels.cfconv(self.in2f(x), w_ij, a, b, order, rowptr)  # (N, n_filters)
        return self.f2out(conv)


class SchNet(Representation):
    """SchNet representation.

    Args:
        n_atom_basis: size of the atom features F.
        n_interactions: number of interaction blocks.
        cutoff: cutoff radius in Å.
        n_rbf: number of radial basis functions.
        radial_basis: ``gaussian`` or ``bessel``.
        cutoff_fn: ``cosine``, ``polynomial`` or ``mollifier``.
        n_filters: width of the filters (default: n_atom_basis).
        shared_interactions: use one set of weights for all interactions.
        max_z: largest atomic number that can be embedded.
        activation: ``ssp`` (default), ``silu`` or ``tanh``.
    """

    name = "schnet"

    def __init__(self, n_atom_basis: int = 128, n_interactions: int = 3, cutoff: float = 5.0,
                 n_rbf: int = 20, radial_basis: str = "gaussian", cutoff_fn: str = "cosine",
                 n_filters: int | None = None, shared_interactions: bool = False,
                 max_z: int = 100, activation: str = "ssp") -> None:
        super().__init__(cutoff, n_rbf, radial_basis, cutoff_fn)
        n_filters = n_filters or n_atom_basis
        self._save_hyperparameters(
            n_atom_basis=n_atom_basis, n_interactions=n_interactions, cutoff=float(cutoff),
            n_rbf=n_rbf, radial_basis=radial_basis, cutoff_fn=cutoff_fn, n_filters=n_filters,
            shared_interactions=shared_interactions, max_z=max_z, activation=activation,
        )
        act = get_activation(activation)
        self.embedding = nn.Embedding(max_z + 1, n_atom_basis, padding_idx=0)
        n_blocks = 1 if shared_interactions else n_interactions
        blocks = [SchNetInteraction(n_atom_basis, n_rbf, n_filters, act) for _ in range(n_blocks)]
        self.interactions = nn.ModuleList(blocks)
        self.n_interactions = n_interactions

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Features of every atom from a half neighbor list.

        Each filter is computed once per unordered pair and serves both directions.
        """
        a, b = inputs[P.idx_i], inputs[P.idx_j]
        order, rowptr = kernels.half_graph(a, b, inputs[P.Z].shape[0])
        _, _, rbf, fcut = self.pair_geometry(inputs)  # (P, n_rbf), (P,)
        x = self.embedding(inputs[P.Z])  # (N, F)
        for k in range(self.n_interactions):
            block = self.interactions[k % len(self.interactions)]
            w_ij = block.filter_net(rbf) * fcut[:, None]  # (P, n_filters)
            x = x + block(x, w_ij, a, b, order, rowptr)
        inputs[P.scalar_representation] = x
        return inputs
