"""Evaluate a model on ase.Atoms: one batch in, one float64 numpy dict per structure out."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from ase import Atoms

from mlcalc import properties as P
from mlcalc.exceptions import NonFiniteResultError
from mlcalc.model.batch import atoms_to_batch
from mlcalc.transform.neighbors import NeighborList

_PER_ATOM = (P.energies, P.forces, P.forces_std)


def non_finite_result(key: str) -> NonFiniteResultError:
    """The error for a NaN or inf in result ``key`` (it is never returned)."""
    return NonFiniteResultError(
        f"the model gave a non-finite {key} (NaN or inf) for this structure; nothing "
        "is returned (is the structure far outside the training data?)")

_SCALAR = (P.energy, P.energy_std)


def predict(model: torch.nn.Module, atoms: Atoms | Sequence[Atoms],
            properties: Iterable[str] = (P.energy, P.forces),
            neighbor_list: NeighborList | None = None) -> list[dict[str, float | np.ndarray]]:
    """Predict properties of one or several structures in one batch.

    Args:
        model: the potential or ensemble (evaluation mode is set here).
        atoms: a structure or a list of them.
        properties: any of ``energy``, ``energies``, ``forces``, ``stress``, ``hessian``.
        neighbor_list: default: the model's own (:func:`mlcalc.model.model_neighbor_list`).

    Returns:
        One dict per structure: ``energy`` (float, eV), ``energies`` (n,) eV,
        ``forces`` (n, 3) eV/Å, ``stress`` (6,) eV/Å³, ``hessian`` (3n, 3n) eV/Å²,
        all float64.

    Raises:
        InvalidStructureError: a structure that cannot be evaluated (atoms
            closer than 0.1 Å among them).
        NonFiniteResultError: the model gave NaN or inf.
        StressUndefinedError: stress of a structure not periodic in all three directions.
        UnknownElementError: an element the model was not trained on.
    """
    atoms_list = [atoms] if isinstance(atoms, Atoms) else list(atoms)
    props = list(dict.fromkeys(properties))
    batch = atoms_to_batch(atoms_list, model, props, neighbor_list=neighbor_list)
    model.eval()
    with torch.set_grad_enabled(bool(model.required_derivatives(props))):
        out = model(batch, props)
    return split_results(out, batch[P.n_atoms].tolist(), props)


def predict_defined(model: torch.nn.Module, atoms_list: Sequence[Atoms],
                    properties: Iterable[str], neighbor_list: NeighborList | None = None,
                    batch_size: int = 32) -> list[dict[str, float | np.ndarray]]:
    """:func:`predict` in batches, every property only where it is defined.

    Stress is asked only of the structures periodic in all three directions;
    the others' dicts have no ``stress`` (a data set may mix bulk cells with
    slabs and clusters). Same numbers as :func:`predict`.

    Args:
        model, neighbor_list: as :func:`predict`.
        atoms_list: the structures.
        properties: as :func:`predict`.
        batch_size: structures per model call.
    """
    props = list(dict.fromkeys(properties))
    groups = [[k for k, a in enumerate(atoms_list) if a.pbc.all()],
              [k for k, a in enumerate(atoms_list) if not a.pbc.all()]]
    if P.stress not in props:
        groups = [list(range(len(atoms_list)))]
    results: list[dict[str, float | np.ndarray]] = [{} for _ in atoms_list]
    for group, wanted in zip(groups, (props, [p for p in props if p != P.stress]), strict=False):
        for start in range(0, len(group), batch_size):
            chunk = group[start:start + batch_size]
            for k, res in zip(chunk, predict(model, [atoms_list[k] for k in chunk], wanted,
                                             neighbor_list), strict=True):
                results[k] = res
    return results


def split_results(out: dict[str, torch.Tensor], n_atoms: Sequence[int],
                  properties: Iterable[str]) -> list[dict[str, float | np.ndarray]]:
    """Cut batch outputs into one float64 numpy dict per structure.

    Ensemble spreads (``energy_std``, ``forces_std``, ``stress_std``) follow
    their property when present.

    Raises:
        NonFiniteResultError: a NaN or inf in any result: it is never returned.
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
        if not np.isfinite(value).all():
            raise non_finite_result(key)
        if key in _PER_ATOM:
            parts = np.split(value, np.cumsum(n_atoms)[:-1])
        elif key == P.hessian:
            parts = [value]
        else:
            parts = list(value)
        for res, part in zip(results, parts, strict=True):
            res[key] = float(part) if key in _SCALAR else part
    return results
