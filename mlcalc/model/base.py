"""AtomisticModel: dict in -> dict out, derivatives and postprocessing handled."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from mlcalc import properties as P


class AtomisticModel(nn.Module):
    """Base class of mlcalc's models.

    A model maps a batch dict to the same dict with outputs added. What it
    computes is said per call (``model(inputs, properties)``); the model keeps
    no state between calls. It prepares the inputs that outputs are
    differentiated by (positions for forces, a zero strain for stress) and
    runs its postprocessors (float64 offset restoration). The rule for those:
    on, unless the model is training; ``postprocess=`` overrides it per call
    (the training task passes False, because its targets carry no offsets).

    Args:
        postprocessors: transforms applied to the output dict.

    Attributes:
        metadata: plain data about the model (the model file's contents minus
            the weights: format, versions, units, training metadata); empty
            for a model built in this process.
    """

    def __init__(self, postprocessors: Sequence[nn.Module] | None = None) -> None:
        super().__init__()
        self.postprocessors = nn.ModuleList(postprocessors or [])
        self.metadata: dict[str, Any] = {}

    @staticmethod
    def initialize_derivatives(inputs: dict[str, torch.Tensor],
                               keys: Iterable[str]) -> dict[str, torch.Tensor]:
        """Make the inputs named by ``keys`` require grad.

        A zero ``strain`` (M, 3, 3) is created when it is among the keys.
        """
        for key in keys:
            if key == P.strain:
                n_structures = inputs[P.n_atoms].shape[0]
                cell = inputs[P.cell]
                inputs[P.strain] = torch.zeros(
                    (n_structures, 3, 3), dtype=cell.dtype, device=cell.device, requires_grad=True
                )
            elif not inputs[key].requires_grad:
                inputs[key] = inputs[key].detach().requires_grad_()
        return inputs

    def postprocess(self, inputs: dict[str, torch.Tensor],
                    postprocess: bool | None = None) -> dict[str, torch.Tensor]:
        """Apply the postprocessors; ``postprocess=None`` means: unless training."""
        if postprocess is None:
            postprocess = not self.training
        if postprocess:
            for pp in self.postprocessors:
                inputs = pp(inputs)
        return inputs

    def forward(self, inputs: dict[str, torch.Tensor], properties: Iterable[str] | None = None,
                postprocess: bool | None = None) -> dict[str, torch.Tensor]:
        raise NotImplementedError
