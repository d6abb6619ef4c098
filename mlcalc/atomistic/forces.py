"""Forces, stress and Hessian as derivatives of the energy."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mlcalc import properties as P

_VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def full_to_voigt(t: torch.Tensor) -> torch.Tensor:
    """(M, 3, 3) symmetric tensors -> (M, 6) Voigt (xx, yy, zz, yz, xz, xy)."""
    return torch.stack([t[:, a, b] for a, b in _VOIGT], dim=1)


class Forces(nn.Module):
    """Derivatives of the energy: F = -∂E/∂R, σ = (1/V) ∂E/∂ε, H = ∂²E/∂R².

    Forces and stress come from one ``torch.autograd.grad`` call. Which ones
    are computed is switched per call (``calc_forces``, ``calc_stress``,
    ``calc_hessian``; see :meth:`NeuralNetworkPotential.request`), so nothing
    is differentiated that was not asked for.

    Stress is Voigt-6 in eV/Å³ with ASE's sign (negative under compression).
    Hessian is (3n, 3n) in eV/Å² for a batch of one structure.

    Args:
        calc_forces, calc_stress, calc_hessian: initial switches.
        energy_key, force_key, stress_key, hessian_key: dict keys used.
    """

    name = "forces"

    def __init__(self, calc_forces: bool = True, calc_stress: bool = False,
                 calc_hessian: bool = False, energy_key: str = P.energy,
                 force_key: str = P.forces, stress_key: str = P.stress,
                 hessian_key: str = P.hessian) -> None:
        super().__init__()
        self.calc_forces = calc_forces
        self.calc_stress = calc_stress
        self.calc_hessian = calc_hessian
        self.energy_key = energy_key
        self.force_key = force_key
        self.stress_key = stress_key
        self.hessian_key = hessian_key

    @property
    def required_derivatives(self) -> list[str]:
        """Input keys the energy must be differentiable with respect to."""
        keys = []
        if self.calc_forces or self.calc_hessian:
            keys.append(P.R)
        if self.calc_stress:
            keys.append(P.strain)
        return keys

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        wrt = [inputs[k] for k in self.required_derivatives]
        if not wrt:
            return inputs
        energy = inputs[self.energy_key]
        # Training differentiates the loss through the forces again.
        create_graph = self.training or self.calc_hessian
        grads = torch.autograd.grad(
            energy.sum(), wrt, create_graph=create_graph, retain_graph=create_graph
        )
        k = 0
        if self.calc_forces or self.calc_hessian:
            forces = -grads[0]
            k = 1
            if self.calc_forces:
                inputs[self.force_key] = forces
            if self.calc_hessian:
                inputs[self.hessian_key] = self._hessian(forces, inputs[P.R])
        if self.calc_stress:
            cell = inputs[P.cell].detach()
            volume = torch.abs(torch.linalg.det(cell))  # (M,)
            inputs[self.stress_key] = full_to_voigt(grads[k]) / volume[:, None]
        return inputs

    def _hessian(self, forces: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        if positions.shape[0] * 3 > 3 * 5000:
            raise ValueError("the Hessian is limited to 5000 atoms")
        flat = forces.reshape(-1)
        rows = []
        for k in range(flat.shape[0]):
            (g,) = torch.autograd.grad(flat[k], positions, retain_graph=True)
            rows.append(-g.reshape(-1))
        return torch.stack(rows)  # (3N, 3N)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "energy_key": self.energy_key, "force_key": self.force_key,
                "stress_key": self.stress_key, "hessian_key": self.hessian_key}
