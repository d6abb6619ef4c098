"""Forces, stress and Hessian as derivatives of the energy."""

from __future__ import annotations

from collections.abc import Collection
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

    Forces and stress come from one ``torch.autograd.grad`` call. What is
    computed is decided per call by the properties the model is asked for
    (:meth:`required_derivatives`), so nothing is differentiated that was not
    asked for, and the module keeps no switches between calls.

    Stress is Voigt-6 in eV/Å³ with ASE's sign (negative under compression);
    NaN for a structure of the batch that is not periodic in all three
    directions (a slab or a cluster beside bulk cells in a training batch;
    inference refuses to ask for it).
    Hessian is (3n, 3n) in eV/Å² for a batch of one structure. The graph is
    kept for a second derivative when the model trains (a loss on the forces)
    or the Hessian is asked for.

    Args:
        energy_key, force_key, stress_key, hessian_key: dict keys used.
    """

    name = "forces"

    def __init__(self, energy_key: str = P.energy, force_key: str = P.forces,
                 stress_key: str = P.stress, hessian_key: str = P.hessian) -> None:
        super().__init__()
        self.energy_key = energy_key
        self.force_key = force_key
        self.stress_key = stress_key
        self.hessian_key = hessian_key

    @property
    def output_keys(self) -> tuple[str, str, str]:
        """The properties this module can add."""
        return self.force_key, self.stress_key, self.hessian_key

    def required_derivatives(self, properties: Collection[str]) -> list[str]:
        """Input keys the energy must be differentiable by for ``properties``."""
        keys = []
        if self.force_key in properties or self.hessian_key in properties:
            keys.append(P.R)
        if self.stress_key in properties:
            keys.append(P.strain)
        return keys

    def forward(self, inputs: dict[str, torch.Tensor],
                properties: Collection[str]) -> dict[str, torch.Tensor]:
        wanted_f, wanted_s = self.force_key in properties, self.stress_key in properties
        wanted_h = self.hessian_key in properties
        keys = self.required_derivatives(properties)
        if not keys:
            return inputs
        energy = inputs[self.energy_key]
        create_graph = self.training or wanted_h
        grads = torch.autograd.grad(energy.sum(), [inputs[k] for k in keys],
                                    create_graph=create_graph, retain_graph=create_graph)
        k = 0
        if wanted_f or wanted_h:
            forces = -grads[0]
            k = 1
            if wanted_f:
                inputs[self.force_key] = forces
            if wanted_h:
                inputs[self.hessian_key] = self._hessian(forces, inputs[P.R])
        if wanted_s:
            cell = inputs[P.cell].detach()
            periodic = inputs[P.pbc].all(dim=1)  # (M,)
            # stress is undefined (NaN) for a structure not periodic in 3D; the
            # volume there is set to 1 so that no gradient goes through 1/0
            # |det| as the triple product: element-wise, so a CUDA graph can hold it
            det = (torch.linalg.cross(cell[:, 0], cell[:, 1], dim=-1) * cell[:, 2]).sum(-1)
            volume = torch.where(periodic, torch.abs(det), 1.0)  # (M,)
            stress = full_to_voigt(grads[k]) / volume[:, None]
            inputs[self.stress_key] = torch.where(periodic[:, None], stress, torch.nan)
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
