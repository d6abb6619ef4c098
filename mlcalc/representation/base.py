"""Common base of the representations: hyperparameters and pair geometry."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mlcalc import properties as P
from mlcalc.nn import get_cutoff_fn, get_radial_basis


class Representation(nn.Module):
    """A map from the input dict to per-atom features.

    Subclasses set ``name`` (the registry name) and call
    :meth:`_save_hyperparameters` so the model file can rebuild them; they
    read ``numbers``, ``Rij``, ``idx_i``, ``idx_j`` and write
    ``scalar_representation`` (N, F) (and, if equivariant,
    ``vector_representation`` (N, 3, F)). They say which pair-list form they
    read in :attr:`pairs`; the model's input pipeline builds that form.

    Pair vectors arrive in float64 (the precision policy) and are cast to the
    network's dtype here, so gradients still flow back to float64 positions.
    """

    name: str = ""
    #: Pair-list form read: ``"half"`` (each unordered pair once, standing for
    #: both directions; what :mod:`mlcalc.kernels` ops take) or ``"full"``.
    pairs: str = "half"

    def __init__(self, cutoff: float, n_rbf: int, radial_basis: str, cutoff_fn: str) -> None:
        super().__init__()
        self.cutoff = float(cutoff)
        self.radial_basis = get_radial_basis(radial_basis, n_rbf, cutoff)
        self.cutoff_fn = get_cutoff_fn(cutoff_fn, cutoff)
        self.hyperparameters: dict[str, Any] = {}

    def _save_hyperparameters(self, **hparams: Any) -> None:
        self.hyperparameters = dict(hparams)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def pair_geometry(
        self, inputs: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Distances (E,), unit vectors (E, 3), radial basis (E, n_rbf), cutoff (E,).

        All in the network dtype.
        """
        r_ij = inputs[P.Rij].to(self.dtype)  # (E, 3)
        d_ij = torch.linalg.vector_norm(r_ij, dim=1)  # (E,)
        return d_ij, r_ij / d_ij[:, None], self.radial_basis(d_ij), self.cutoff_fn(d_ij)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters.items())
