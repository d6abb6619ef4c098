"""The Transform base class: a torch module mapping an input dict to a dict."""

from __future__ import annotations

import torch
from torch import nn


class Transform(nn.Module):
    """A step that maps ``dict[str, Tensor]`` to ``dict[str, Tensor]``.

    Transforms run in the data loader on single structures (preprocessing:
    neighbor lists, offset removal, casting) or on the model output
    (postprocessing: offset restoration). They hold no trainable parameters.

    Class attributes:
        is_preprocessor: may be used in a data pipeline.
        is_postprocessor: may be used as a model postprocessor.
    """

    is_preprocessor: bool = True
    is_postprocessor: bool = False

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class CastTo32(Transform):
    """Cast every float64 tensor of the dict to float32."""

    is_postprocessor = True

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.float() if v.dtype == torch.float64 else v for k, v in inputs.items()}


class CastTo64(Transform):
    """Cast every float32 tensor of the dict to float64."""

    is_postprocessor = True

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.double() if v.dtype == torch.float32 else v for k, v in inputs.items()}
