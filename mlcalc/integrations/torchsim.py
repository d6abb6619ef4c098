"""mlcalc models in TorchSim, the batched engine for many structures at once.

TorchSim (``pip install 'mlcalc[batch]'``, PyPI ``torch-sim-atomistic``)
integrates and relaxes many structures in one batch (NVE, Langevin NVT, NPT;
FIRE with or without a cell filter) with autobatching and trajectory
reporters. :class:`TorchSimModel` is its ``ModelInterface`` for any mlcalc
model: a model file, a bundled name, a loaded model, or a list of them (an
ensemble: the mean, plus ``energy_std``, ``forces_std`` and ``stress_std``).

    >>> import torch_sim as ts                                   # doctest: +SKIP
    >>> model = TorchSimModel("cu-emt")
    >>> relaxed = ts.optimize(structures, model, optimizer=ts.frechet_cell_fire)

The batch is built by the model's own route (:func:`mlcalc.model.inputs_to_batch`:
its neighbor list on its device, its pair form), so the numbers are those of
:class:`~mlcalc.calculator.MLCalculator` one structure at a time. TorchSim's
state holds positions and cells in ``dtype`` (float64 by default: mlcalc's
precision policy), its cells as columns (ASE's as rows), one ``pbc`` flag for
the whole batch, and stress as (M, 3, 3) with ASE's sign.
"""

from __future__ import annotations

import torch

from mlcalc import properties as P
from mlcalc.calculator import load_potential, resolve_device
from mlcalc.exceptions import NonFiniteResultError, StressUndefinedError
from mlcalc.model import check_elements, inputs_to_batch, model_neighbor_list

try:
    import torch_sim as ts
    from torch_sim.models.interface import ModelInterface
except ImportError as err:  # the optional 'batch' extra
    raise ImportError("mlcalc.integrations.torchsim needs TorchSim: pip install "
                      "'mlcalc[batch]' (torch-sim-atomistic)") from err

_SPREADS = (P.energy_std, P.forces_std, P.stress_std)


class TorchSimModel(ModelInterface):
    """TorchSim's model interface around an mlcalc potential (or ensemble).

    Args:
        model: model file, bundled name, loaded potential, or a list of them
            (an ensemble), as :class:`~mlcalc.calculator.MLCalculator` takes.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``.
        dtype: dtype of TorchSim's state (positions, cells, energies); float64
            keeps mlcalc's precision policy. The network keeps its own dtype
            (``model_dtype`` overrides it).
        compute_stress: return stress (TorchSim's NPT and cell filters need
            it); refused for a batch that is not periodic.
        compute_forces: return forces.
        neighbor_list: a neighbor-list backend instead of the model's own.
        model_dtype: network precision, as ``MLCalculator(dtype=)``.

    Attributes:
        model: the mlcalc potential or ensemble.
    """

    def __init__(self, model, device: str | torch.device = "auto",
                 dtype: torch.dtype = torch.float64, compute_stress: bool = True,
                 compute_forces: bool = True, neighbor_list: str | None = None,
                 model_dtype: str | torch.dtype | None = None) -> None:
        super().__init__()
        self._device = resolve_device(device)
        self._dtype = dtype
        self._compute_stress = bool(compute_stress)
        self._compute_forces = bool(compute_forces)
        self._memory_scales_with = "n_atoms_x_density"  # a radial cutoff
        self.model = load_potential(model, self._device, model_dtype)
        self.neighbor_list = model_neighbor_list(self.model, self._device, backend=neighbor_list)

    @property
    def properties(self) -> list[str]:
        """What :meth:`forward` asks of the mlcalc model."""
        props = [P.energy]
        if self._compute_forces:
            props.append(P.forces)
        if self._compute_stress:
            props.append(P.stress)
        return props

    def forward(self, state: ts.SimState | dict, **kwargs) -> dict[str, torch.Tensor]:
        """Energy (M,), forces (N, 3) and stress (M, 3, 3) of every system of ``state``.

        Ensembles add ``energy_std`` (M,), ``forces_std`` (N,) and
        ``stress_std`` (M, 3, 3). All in eV, Å and ``dtype``.

        Raises:
            StressUndefinedError: stress asked of a batch that is not periodic.
            UnknownElementError, InvalidStructureError: as the calculator.
        """
        if isinstance(state, dict):
            state = ts.SimState(**state, masses=torch.ones_like(state["positions"]))
        if self._compute_stress and not bool(state.pbc):
            raise StressUndefinedError("stress is only defined for structures periodic in "
                                       "all three directions: make the model with "
                                       "compute_stress=False for this batch")
        batch = inputs_to_batch(self._examples(state), self.model, self._device,
                                self.neighbor_list)
        props = self.properties
        with torch.set_grad_enabled(bool(self.model.required_derivatives(props))):
            out = self.model(batch, props)
        results = {P.energy: out[P.energy].detach().to(self._dtype)}
        if self._compute_forces:
            results[P.forces] = out[P.forces].detach().to(self._dtype)
        if self._compute_stress:
            results[P.stress] = voigt_to_full(out[P.stress].detach()).to(self._dtype)
        for key in _SPREADS:
            if key in out:
                value = out[key].detach().to(self._dtype)
                results[key] = voigt_to_full(value) if key == P.stress_std else value
        for key, value in results.items():
            if not torch.isfinite(value).all():
                raise NonFiniteResultError(f"the model gave a non-finite {key} (NaN or inf) "
                                           "for a structure of the batch")
        return results

    def _examples(self, state: ts.SimState) -> list[dict[str, torch.Tensor]]:
        """One input dict per system: mlcalc's keys, float64, cells as rows."""
        counts = torch.bincount(state.system_idx, minlength=state.n_systems)
        sizes = counts.tolist()
        numbers = state.atomic_numbers.split(sizes)
        positions = state.positions.to(torch.float64).split(sizes)
        cells = state.row_vector_cell.to(torch.float64)  # (M, 3, 3), vectors as rows
        pbc = torch.full((1, 3), bool(state.pbc), dtype=torch.bool, device=cells.device)
        check_elements(torch.unique(state.atomic_numbers).cpu().numpy(), self.model.elements)
        examples = []
        for k in range(state.n_systems):
            examples.append({P.Z: numbers[k].long(), P.R: positions[k], P.cell: cells[k:k + 1],
                             P.pbc: pbc, P.n_atoms: counts[k:k + 1].long()})
        return examples


def voigt_to_full(voigt: torch.Tensor) -> torch.Tensor:
    """(M, 6) Voigt (xx, yy, zz, yz, xz, xy) -> (M, 3, 3) symmetric tensors."""
    xx, yy, zz, yz, xz, xy = voigt.unbind(1)
    return torch.stack([torch.stack([xx, xy, xz], 1), torch.stack([xy, yy, yz], 1),
                        torch.stack([xz, yz, zz], 1)], 1)


__all__ = ["TorchSimModel", "voigt_to_full"]

