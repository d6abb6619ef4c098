"""AtomisticModel: dict in -> dict out, derivatives and postprocessing handled."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mlcalc import properties as P


class AtomisticModel(nn.Module):
    """Base class of mlcalc's models.

    A model maps the batch dict to the same dict with outputs added. It
    collects the ``required_derivatives`` that its modules declare (e.g. the
    Forces module needs ``positions``, and ``strain`` for stress), prepares
    those inputs for autograd itself, and runs its postprocessors (e.g.
    float64 offset restoration) unless it is training or
    ``do_postprocessing`` is False.

    Args:
        postprocessors: transforms applied to the output dict in evaluation.
        do_postprocessing: switch for the postprocessors.
    """

    def __init__(self, postprocessors: Sequence[nn.Module] | None = None,
                 do_postprocessing: bool = True) -> None:
        super().__init__()
        self.postprocessors = nn.ModuleList(postprocessors or [])
        self.do_postprocessing = do_postprocessing
        self.required_derivatives: list[str] = []

    def collect_derivatives(self) -> list[str]:
        """Union of the ``required_derivatives`` of all submodules (ordered)."""
        keys: list[str] = []
        for module in self.modules():
            if module is self:
                continue
            for key in getattr(module, "required_derivatives", ()):
                if key not in keys:
                    keys.append(key)
        self.required_derivatives = keys
        return keys

    def initialize_derivatives(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Make the inputs that outputs are differentiated by require grad.

        A zero ``strain`` (M, 3, 3) is created when stress is required.
        """
        for key in self.required_derivatives:
            if key == P.strain:
                n_structures = inputs[P.n_atoms].shape[0]
                cell = inputs[P.cell]
                inputs[P.strain] = torch.zeros(
                    (n_structures, 3, 3), dtype=cell.dtype, device=cell.device, requires_grad=True
                )
            elif not inputs[key].requires_grad:
                inputs[key] = inputs[key].detach().requires_grad_()
        return inputs

    def postprocess(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Apply the postprocessors (evaluation only)."""
        if self.do_postprocessing and not self.training:
            for pp in self.postprocessors:
                inputs = pp(inputs)
        return inputs

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError
