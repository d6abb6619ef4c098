"""Evaluate a model on ase.Atoms: build inputs, batch, run, split the results."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from ase import Atoms

from mlcalc import properties as P
from mlcalc.data.atoms import atoms_to_inputs
from mlcalc.data.collate import collate_atoms
from mlcalc.exceptions import InvalidStructureError, UnknownElementError
from mlcalc.model.potential import NeuralNetworkPotential
from mlcalc.transform.neighbors import half_pairs

_PER_ATOM = (P.energies, P.forces, P.forces_std)
_SCALAR = (P.energy, P.energy_std)


def check_elements(numbers: np.ndarray, elements: Sequence[int] | None) -> None:
    """Raise :class:`UnknownElementError` for atomic numbers outside ``elements``.

    Args:
        numbers: (N,) atomic numbers of a structure.
        elements: atomic numbers the model was trained on (None: any).
    """
    if elements is None:
        return
    unknown = sorted(set(np.asarray(numbers).tolist()) - set(elements))
    if unknown:
        from ase.data import chemical_symbols

        names = ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in unknown)
        known = ", ".join(chemical_symbols[z] for z in elements)
        raise UnknownElementError(f"element {names} is not in the model; the model knows: {known}")


def atoms_to_batch(atoms_list: Sequence[Atoms], neighbor_list,
                   device: torch.device | str = "cpu",
                   half: bool = False) -> dict[str, torch.Tensor]:
    """Inputs of several structures with neighbor lists, collated and moved to ``device``.

    With ``half`` the pairs are a half list (marked by ``properties.half_list``).
    """
    examples = [neighbor_list(atoms_to_inputs(a)) for a in atoms_list]
    batch = collate_atoms(examples)
    if half:
        pairs = half_pairs(batch[P.idx_i], batch[P.idx_j], batch[P.cell_shifts])
        batch[P.idx_i], batch[P.idx_j], batch[P.cell_shifts] = pairs
        batch[P.half_list] = torch.ones((), dtype=torch.bool)
    return {k: v.to(device) for k, v in batch.items()}


def predict(model: NeuralNetworkPotential, atoms: Atoms | Sequence[Atoms],
            properties: Iterable[str] = (P.energy, P.forces),
            neighbor_list=None, half: bool | None = None) -> list[dict[str, float | np.ndarray]]:
    """Predict properties of one or several structures in one batch.

    Args:
        model: the potential (evaluation mode is set here).
        atoms: a structure or a list of them.
        properties: any of ``energy``, ``energies``, ``forces``, ``stress``, ``hessian``.
        neighbor_list: a neighbor-list transform (default: matscipy at the model cutoff).
        half: give the model a half list (its fused kernels); None: when
            ``model.accepts_half_list()``. False forces the eager path.

    Returns:
        One dict per structure: ``energy`` (float, eV), ``energies`` (n,) eV,
        ``forces`` (n, 3) eV/Å, ``stress`` (6,) eV/Å³, ``hessian`` (3n, 3n) eV/Å²,
        all float64.

    Raises:
        InvalidStructureError: bad structure, or stress of a structure that is
            not periodic in all three directions.
        UnknownElementError: an element the model was not trained on.
    """
    from mlcalc.transform.neighbors import MatScipyNeighborList

    atoms_list = [atoms] if isinstance(atoms, Atoms) else list(atoms)
    props = list(dict.fromkeys(properties))
    if P.stress in props and not all(a.pbc.all() for a in atoms_list):
        raise InvalidStructureError("stress needs a structure periodic in all three directions")
    for a in atoms_list:
        check_elements(a.numbers, model.elements)
    nl = neighbor_list or MatScipyNeighborList(model.cutoff)
    device = next(model.parameters()).device
    if half is None:
        half = hasattr(model, "accepts_half_list") and model.accepts_half_list()
    batch = atoms_to_batch(atoms_list, nl, device, half=half)

    model.eval()
    model.request(props)
    needs_grad = bool(model.required_derivatives)
    with torch.set_grad_enabled(needs_grad):
        out = model(batch)
    return split_results(out, batch[P.n_atoms].tolist(), props)


def split_results(out: dict[str, torch.Tensor], n_atoms: Sequence[int],
                  properties: Iterable[str]) -> list[dict[str, float | np.ndarray]]:
    """Cut batch outputs into one float64 numpy dict per structure.

    Ensemble spreads (``energy_std``, ``forces_std``, ``stress_std``) follow
    their property when present.
    """
    keys = list(properties)
    for prop, std in ((P.energy, P.energy_std), (P.forces, P.forces_std),
                      (P.stress, P.stress_std)):
        if prop in keys and std in out and std not in keys:
            keys.append(std)
    results: list[dict[str, float | np.ndarray]] = [{} for _ in n_atoms]
    for key in keys:
        if key not in out:
            continue
        value = out[key].detach().to("cpu", torch.float64).numpy()
        if key in _PER_ATOM:
            parts = np.split(value, np.cumsum(n_atoms)[:-1])
        elif key == P.hessian:
            parts = [value]
        else:
            parts = list(value)
        for res, part in zip(results, parts, strict=True):
            res[key] = float(part) if key in _SCALAR else part
    return results
