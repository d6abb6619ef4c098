"""Dense layers and the MLP builder."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class Dense(nn.Linear):
    """Linear layer followed by an optional activation: y = act(x Wᵀ + b).

    Args:
        n_in: input features.
        n_out: output features.
        bias: whether to add a bias.
        activation: element-wise function applied to the output, or None.
    """

    def __init__(self, n_in: int, n_out: int, bias: bool = True,
                 activation: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__(n_in, n_out, bias=bias)
        self.activation = activation
        nn.init.xavier_uniform_(self.weight)
        if bias:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return self.activation(y) if self.activation is not None else y


def build_mlp(n_in: int, n_out: int, n_hidden: int | list[int] | None = None,
              n_layers: int = 2,
              activation: Callable[[torch.Tensor], torch.Tensor] | None = None) -> nn.Sequential:
    """Multi-layer perceptron with ``n_layers`` Dense layers, linear output.

    Args:
        n_in: input features.
        n_out: output features.
        n_hidden: hidden widths; an int repeats it, None halves the width at
            each layer starting from ``n_in`` (SchNetPack's pyramid default).
        n_layers: number of layers including the output layer.
        activation: activation of the hidden layers.
    """
    if n_hidden is None:
        widths, w = [], n_in
        for _ in range(n_layers - 1):
            w = max(w // 2, 1)
            widths.append(w)
    elif isinstance(n_hidden, int):
        widths = [n_hidden] * (n_layers - 1)
    else:
        widths = list(n_hidden)
    sizes = [n_in, *widths]
    layers: list[nn.Module] = [
        Dense(a, b, activation=activation) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
    ]
    layers.append(Dense(sizes[-1], n_out))
    return nn.Sequential(*layers)
