"""The one route from ase.Atoms to a model's input batch.

A model states what its inputs need: the cutoff, the pair-list form
(``model.pairs``), the neighbor-list backend per device
(``model.neighbor_list``) and its device. :func:`model_neighbor_list` turns
that into the neighbor-list transform, and :func:`atoms_to_batch` into a batch
of structures. ``predict``/``mlcalc eval``, ``calculate_many``, the training data
(``mlcalc fit``) and the calculator (which wraps a Verlet skin around the same
neighbor list) all take their pairs from here, and refuse bad structures here:
the checks below are the only ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from ase import Atoms

from mlcalc import properties as P
from mlcalc.data.atoms import atoms_to_inputs
from mlcalc.data.collate import collate_atoms
from mlcalc.exceptions import StressUndefinedError, UnknownElementError
from mlcalc.transform.neighbors import NeighborList, get_neighbor_list


def model_neighbor_list(model, device: torch.device | str = "cpu", skin: float = 0.0,
                        backend: str | None = None) -> NeighborList:
    """The neighbor list a model wants on ``device``.

    Args:
        model: a potential (or ensemble): reads ``cutoff``, ``pairs`` and
            ``neighbor_list`` (the backend per device type).
        device: where the model runs.
        skin: extra distance in Å (for a Verlet list).
        backend: a backend name instead of the model's choice for the device.

    Returns:
        The transform, at ``model.cutoff + skin``, in the model's pair form.
    """
    name = backend or model.neighbor_list.backend(device)
    return get_neighbor_list(name, model.cutoff + skin, half=model.pairs == "half")


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


def check_stress_defined(atoms_list: Iterable[Atoms]) -> None:
    """Raise :class:`StressUndefinedError` unless every structure is periodic in 3D."""
    if not all(a.pbc.all() for a in atoms_list):
        raise StressUndefinedError(
            "stress is only defined for structures periodic in all three directions")


def structure_inputs(atoms: Atoms, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Structure keys of one structure as a batch of one (``idx_m`` set, no pairs), on ``device``.

    The caller adds the pairs (the calculator: from its Verlet list around
    :func:`model_neighbor_list`) and checks elements and stress with
    :func:`check_elements` and :func:`check_stress_defined`.

    Raises:
        InvalidStructureError: empty structure, NaN positions, bad cell.
    """
    inputs = atoms_to_inputs(atoms)
    inputs[P.idx_m] = torch.zeros(len(atoms), dtype=torch.long)
    return {k: v.to(device) for k, v in inputs.items()}


def atoms_to_batch(atoms_list: Sequence[Atoms], model, properties: Iterable[str] = (),
                   device: torch.device | str | None = None,
                   neighbor_list: NeighborList | None = None) -> dict[str, torch.Tensor]:
    """The model's input batch for several structures.

    Args:
        atoms_list: the structures.
        model: the potential the batch is for.
        properties: what will be asked of the model (for the stress check).
        device: default: the model's device.
        neighbor_list: default :func:`model_neighbor_list` on that device.

    Returns:
        Structure keys, pairs (``idx_i``, ``idx_j``, ``cell_shifts``) in the
        model's form and ``idx_m``, on ``device``.

    Raises:
        InvalidStructureError: empty structure, NaN positions, bad cell.
        UnknownElementError: an element the model was not trained on.
        StressUndefinedError: stress asked for a structure not periodic in 3D.
    """
    props = list(properties)
    if P.stress in props:
        check_stress_defined(atoms_list)
    examples = []
    for atoms in atoms_list:
        inputs = atoms_to_inputs(atoms)  # validates the structure first
        check_elements(atoms.numbers, model.elements)
        examples.append(inputs)
    return inputs_to_batch(examples, model, device, neighbor_list)


def inputs_to_batch(examples: Sequence[dict[str, torch.Tensor]], model,
                    device: torch.device | str | None = None,
                    neighbor_list: NeighborList | None = None) -> dict[str, torch.Tensor]:
    """Pairs for structure dicts (as :func:`mlcalc.data.atoms_to_inputs` makes), collated.

    The step :func:`atoms_to_batch` shares with engines that hold their
    structures as tensors (TorchSim): each structure goes to ``device``, gets
    the model's neighbor list there, and the dicts are collated.

    Args:
        examples: per structure ``numbers`` (n,), ``positions`` (n, 3) float64,
            ``cell`` (1, 3, 3), ``pbc`` (1, 3), ``n_atoms`` (1,).
        model, device, neighbor_list: as :func:`atoms_to_batch`.
    """
    if device is None:
        device = next(model.parameters()).device
    nl = neighbor_list or model_neighbor_list(model, device)
    return collate_atoms([nl({k: v.to(device) for k, v in ex.items()}) for ex in examples])
