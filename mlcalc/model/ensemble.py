"""An ensemble of potentials evaluated together: mean prediction and spread."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from mlcalc import properties as P
from mlcalc.exceptions import EnsembleError
from mlcalc.model.potential import NeuralNetworkPotential
from mlcalc.transform.neighbors import NeighborListSettings

_STD_OF = {P.energy: P.energy_std, P.stress: P.stress_std}
_SPREADS = (P.energy_std, P.forces_std, P.stress_std)


class EnsemblePotential(nn.Module):
    """Several potentials that share elements, cutoff and pair-list form.

    ``forward`` runs every member on the same inputs and returns the members'
    mean for every requested property, plus ``energy_std`` (M,) eV,
    ``forces_std`` (N,) eV/Å (per atom: sqrt of the mean over members of
    ``|F_k - F̄|²``) and ``stress_std`` (M, 6) eV/Å³. Standard deviations are over
    members (population, ddof = 0), so identical members give exactly zero.

    Args:
        members: the potentials.
        names: labels of the members used in error messages (e.g. file names).

    Raises:
        EnsembleError: fewer than two members, or members that disagree.
    """

    def __init__(self, members: Sequence[NeuralNetworkPotential],
                 names: Sequence[str] | None = None) -> None:
        super().__init__()
        if len(members) < 2:
            raise EnsembleError("an ensemble needs at least two models")
        names = list(names or [f"member {k}" for k in range(len(members))])
        first = members[0]
        for name, member in zip(names[1:], members[1:], strict=True):
            for what, a, b in (("cutoff", first.cutoff, member.cutoff),
                               ("pair-list form", first.pairs, member.pairs),
                               ("elements", first.elements, member.elements)):
                if a != b:
                    raise EnsembleError(f"ensemble members disagree on {what}: {a} ({names[0]}) "
                                        f"vs {b} ({name})")
        self.members = nn.ModuleList(members)

    @property
    def cutoff(self) -> float:
        return self.members[0].cutoff

    @property
    def pairs(self) -> str:
        return self.members[0].pairs

    @property
    def neighbor_list(self) -> NeighborListSettings:
        return self.members[0].neighbor_list

    @property
    def elements(self) -> list[int] | None:
        return self.members[0].elements

    @property
    def dtype(self) -> torch.dtype:
        return self.members[0].dtype

    @property
    def metadata(self) -> dict[str, Any]:
        return self.members[0].metadata

    @property
    def implemented_properties(self) -> list[str]:
        return [*self.members[0].implemented_properties, *_SPREADS]

    def required_derivatives(self, properties: Iterable[str]) -> list[str]:
        return self.members[0].required_derivatives(properties)

    def forward(self, inputs: dict[str, torch.Tensor], properties: Iterable[str] | None = None,
                postprocess: bool | None = None) -> dict[str, torch.Tensor]:
        """Members' mean of every property, plus the spreads (see the class docstring)."""
        props = None if properties is None else [p for p in properties if p not in _SPREADS]
        outputs = [m(dict(inputs), props, postprocess) for m in self.members]
        keys = [k for k in (P.energy, P.energies, P.forces, P.stress, P.hessian) if k in outputs[0]]
        result = dict(outputs[-1])
        for key in keys:
            stacked = torch.stack([o[key] for o in outputs])  # (K, ...)
            result[key] = stacked.mean(0)
            if key == P.forces:
                dev = (stacked - result[key]).pow(2).sum(-1)  # (K, N)
                result[P.forces_std] = dev.mean(0).sqrt()
            elif key in _STD_OF:
                result[_STD_OF[key]] = stacked.std(0, correction=0)
        return result
