"""Building blocks: radial bases, cutoffs, activations, MLP, scatter."""

from __future__ import annotations

import math

import pytest
import torch

from mlcalc.exceptions import UnknownNameError
from mlcalc.nn import (
    BesselRBF,
    CosineCutoff,
    GaussianRBF,
    MollifierCutoff,
    PolynomialCutoff,
    build_mlp,
    get_activation,
    scatter_add,
    shifted_softplus,
)


def test_scatter_add_sums_into_rows():
    src = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    out = scatter_add(src, torch.tensor([2, 0, 2]), 4)
    assert torch.equal(out, torch.tensor([[3.0, 4.0], [0.0, 0.0], [6.0, 8.0], [0.0, 0.0]]))


@pytest.mark.parametrize("cls", [CosineCutoff, PolynomialCutoff, MollifierCutoff])
def test_cutoff_functions_are_one_at_zero_and_vanish_smoothly(cls):
    fn = cls(5.0)
    d = torch.tensor([0.0, 4.999999, 5.0, 6.0], dtype=torch.float64, requires_grad=True)
    f = fn(d)
    assert f[0].item() == pytest.approx(1.0)
    assert f[1].item() < 1e-9 and f[2].item() == 0.0 and f[3].item() == 0.0
    (grad,) = torch.autograd.grad(f.sum(), d)
    assert abs(grad[1].item()) < 1e-5


def test_gaussian_rbf_peaks_at_centres():
    rbf = GaussianRBF(5, cutoff=4.0)
    out = rbf(torch.tensor([0.0, 2.0]))
    assert out.shape == (2, 5)
    assert out[0, 0].item() == pytest.approx(1.0) and out[1, 2].item() == pytest.approx(1.0)


def test_gaussian_rbf_makes_no_subnormal_float32_numbers():
    # Subnormals make CPU arithmetic up to 100x slower; the floor e^-60 keeps the
    # values normal and differs from the exact Gaussian by less than 1e-26.
    rbf = GaussianRBF(20, cutoff=5.0)
    d = torch.linspace(0.5, 5.0, 200)
    out = rbf(d)
    tiny = torch.finfo(torch.float32).tiny
    assert not ((out != 0) & (out.abs() < tiny)).any()
    exact = torch.exp(rbf.coeff * (d[:, None] - rbf.centers) ** 2)  # float32, no floor
    assert (out - exact).abs().max() < 1e-26
    assert ((exact != 0) & (exact < tiny)).any()  # without the floor: subnormals


def test_bessel_rbf_shape_and_value():
    out = BesselRBF(3, cutoff=5.0)(torch.tensor([1.0]))
    assert out.shape == (1, 3)
    assert out[0, 0].item() == pytest.approx(math.sin(math.pi / 5.0))


def test_shifted_softplus_zero_at_origin():
    assert shifted_softplus(torch.tensor(0.0)).item() == pytest.approx(0.0, abs=1e-7)
    assert get_activation("ssp") is shifted_softplus
    with pytest.raises(UnknownNameError, match="did you mean 'silu'"):
        get_activation("slu")


def test_build_mlp_pyramid_and_fixed_widths():
    mlp = build_mlp(32, 1, n_layers=3)
    assert [m.out_features for m in mlp] == [16, 8, 1]
    mlp = build_mlp(32, 2, n_hidden=10, n_layers=2)
    assert [m.out_features for m in mlp] == [10, 2]
    assert mlp(torch.zeros(4, 32)).shape == (4, 2)
