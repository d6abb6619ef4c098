"""Radial basis functions and cutoff functions of the interatomic distance."""

from __future__ import annotations

import math

import torch
from torch import nn

from mlcalc.exceptions import unknown_name

#: Gaussians are evaluated as exp(max(x, -60)). e^-60 ≈ 9e-27 is far below any
#: feature that matters, but without the clamp a float32 Gaussian 4 Å from its
#: centre underflows into subnormal numbers (e^-116 ≈ 4e-51), and a CPU multiplies
#: those up to 100x slower: the filter products of a 5 Å model took 5 ms instead
#: of 0.36 ms at 108 atoms (measured, docs/performance.rst).
GAUSSIAN_FLOOR = -60.0


class GaussianRBF(nn.Module):
    """Gaussians exp(-(d - μ_k)² / 2σ²) with centres evenly spaced on [start, cutoff].

    Values below e^-60 are held at e^-60 (see :data:`GAUSSIAN_FLOOR`).

    Args:
        n_rbf: number of basis functions.
        cutoff: last centre in Å.
        start: first centre in Å.
    """

    def __init__(self, n_rbf: int, cutoff: float, start: float = 0.0) -> None:
        super().__init__()
        centers = torch.linspace(start, cutoff, n_rbf)
        width = (centers[1] - centers[0]) if n_rbf > 1 else torch.tensor(cutoff)
        self.register_buffer("centers", centers)
        self.register_buffer("coeff", -0.5 / width**2)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        """(E,) distances in Å -> (E, n_rbf)."""
        return gaussian_rbf(d, self.centers, self.coeff)


def gaussian_rbf(d: torch.Tensor, centers: torch.Tensor, coeff: torch.Tensor) -> torch.Tensor:
    """exp(max(coeff (d - centers)², -60)): (E,) distances, Å, and (K,) centres -> (E, K).

    ``coeff`` = -1 / 2σ² (a 0-dim tensor, Å⁻²); :class:`GaussianRBF`'s formula.
    """
    return torch.exp(torch.clamp(coeff * (d[:, None] - centers) ** 2, min=GAUSSIAN_FLOOR))


class BesselRBF(nn.Module):
    """sin(k π d / r_c) / d for k = 1..n_rbf (DimeNet's radial basis).

    Args:
        n_rbf: number of basis functions.
        cutoff: cutoff radius in Å.
    """

    def __init__(self, n_rbf: int, cutoff: float) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.arange(1, n_rbf + 1) * math.pi / cutoff)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        """(E,) distances in Å -> (E, n_rbf)."""
        return torch.sin(self.freqs * d[:, None]) / d[:, None]


class CosineCutoff(nn.Module):
    """f(d) = ½ (cos(π d / r_c) + 1) for d < r_c, else 0; f and f' vanish at r_c."""

    def __init__(self, cutoff: float) -> None:
        super().__init__()
        self.cutoff = float(cutoff)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        return cosine_cutoff(d, self.cutoff)


def cosine_cutoff(d: torch.Tensor, cutoff: float) -> torch.Tensor:
    """½ (cos(π d / r_c) + 1) below ``cutoff`` (Å), else 0: :class:`CosineCutoff`'s formula."""
    f = 0.5 * (torch.cos(d * (math.pi / cutoff)) + 1.0)
    return f * (d < cutoff).to(d.dtype)


class PolynomialCutoff(nn.Module):
    """Smooth polynomial envelope 1 - 6x⁵ + 15x⁴ - 10x³, x = d / r_c (C² at r_c)."""

    def __init__(self, cutoff: float) -> None:
        super().__init__()
        self.cutoff = float(cutoff)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        x = d / self.cutoff
        f = 1.0 + x**3 * (-10.0 + x * (15.0 - 6.0 * x))
        return f * (x < 1.0).to(d.dtype)


class MollifierCutoff(nn.Module):
    """f(d) = exp(1 - 1 / (1 - (d / r_c)²)) for d + ε < r_c, else 0 (ε = 1e-7 Å).

    1 at d = 0 and infinitely smooth at r_c (every derivative vanishes there);
    SchNetPack's ``MollifierCutoff``, read by the SchNetPack import.
    """

    def __init__(self, cutoff: float, eps: float = 1e-7) -> None:
        super().__init__()
        self.cutoff = float(cutoff)
        self.eps = float(eps)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        mask = (d + self.eps < self.cutoff).to(d.dtype)
        x = d * mask / self.cutoff  # 0 outside: the exponent stays finite
        return torch.exp(1.0 - 1.0 / (1.0 - x * x)) * mask


RADIAL_BASES = {"gaussian": GaussianRBF, "bessel": BesselRBF}
CUTOFF_FUNCTIONS = {"cosine": CosineCutoff, "polynomial": PolynomialCutoff,
                    "mollifier": MollifierCutoff}


def get_radial_basis(name: str, n_rbf: int, cutoff: float) -> nn.Module:
    """Radial basis by name: ``gaussian`` or ``bessel``."""
    if name not in RADIAL_BASES:
        raise unknown_name("radial basis", name, RADIAL_BASES)
    return RADIAL_BASES[name](n_rbf, cutoff)


def get_cutoff_fn(name: str, cutoff: float) -> nn.Module:
    """Cutoff function by name: ``cosine``, ``polynomial`` or ``mollifier``."""
    if name not in CUTOFF_FUNCTIONS:
        raise unknown_name("cutoff function", name, CUTOFF_FUNCTIONS)
    return CUTOFF_FUNCTIONS[name](cutoff)
