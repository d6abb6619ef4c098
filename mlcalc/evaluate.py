"""Errors of a model on a labelled data set: what ``mlcalc eval`` computes.

Labels come from an :class:`~mlcalc.data.ASEAtomsData` (converted to eV, Å
on load); predictions from the calculator's model and neighbor list in
batches (:func:`mlcalc.model.predict_defined`). Stress is compared on the
structures periodic in all three directions (a data set may also hold slabs
and clusters, whose stress is undefined).
Metric names and units match the test metrics that ``mlcalc fit`` stores in
the model file (``energy_per_atom``, ``forces``, ``stress``), plus the total
``energy``, so the two can be compared directly.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlcalc import properties as P
from mlcalc.exceptions import MissingPropertyError, unknown_name

#: Properties ``evaluate`` can compare.
EVAL_PROPERTIES = (P.energy, P.forces, P.stress)

#: metric key -> (property it comes from, unit as written in metrics files)
METRICS: dict[str, tuple[str, str]] = {
    "energy_per_atom": (P.energy, "eV/atom"),
    "energy": (P.energy, "eV"),
    "forces": (P.forces, "eV/Ang"),
    "stress": (P.stress, "eV/Ang^3"),
}


@dataclass
class Evaluation:
    """Reference and predicted values, flattened per metric key.

    Attributes:
        n_structures: structures evaluated.
        n_atoms: atoms in all of them.
        reference: metric key -> 1-D float64 array: energies per atom (eV/atom)
            and total (eV) one per structure, force components (eV/Å) 3 per
            atom, Voigt stress components (eV/Å³) 6 per structure.
        predicted: the model's values, same keys and shapes.
        skipped: property -> why it was not evaluated.
    """

    n_structures: int
    n_atoms: int
    reference: dict[str, np.ndarray] = field(default_factory=dict)
    predicted: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, dict[str, float | str | int]]:
        """metric key -> ``{"unit", "mae", "rmse", "n"}`` (n: numbers compared)."""
        out: dict[str, dict[str, float | str | int]] = {}
        for key, ref in self.reference.items():
            err = self.predicted[key] - ref
            out[key] = {"unit": METRICS[key][1], "mae": float(np.mean(np.abs(err))),
                        "rmse": float(np.sqrt(np.mean(err**2))), "n": int(err.size)}
        return out


def open_labelled(path: str | os.PathLike, workdir: str | os.PathLike):
    """The data set at ``path``: an mlcalc/ASE database, or any labelled file
    ``ase.io`` reads (extxyz, traj, ...), converted into ``workdir`` on the fly.

    Raises:
        FileNotFoundError: no such file.
        MlcalcError / ValueError: the file cannot be read as labelled structures.
    """
    from mlcalc.data import ASEAtomsData, from_ase_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    with open(path, "rb") as fh:
        is_sqlite = fh.read(16) == b"SQLite format 3\x00"
    if is_sqlite:
        return ASEAtomsData(path)
    return from_ase_file(path, Path(workdir) / f"{path.stem}.db")


def choose_properties(available: Sequence[str], requested: Sequence[str] | None,
                      periodic: bool, implemented: Sequence[str]) -> tuple[list[str], dict]:
    """Properties to evaluate and the reasons others are skipped.

    Requested properties that cannot be evaluated raise; unrequested ones
    (``requested=None``: all of :data:`EVAL_PROPERTIES`) are skipped with a note.

    Raises:
        UnknownNameError: a requested name is not energy, forces or stress.
        MissingPropertyError: a requested property the data, model or geometry lacks.
    """
    for name in requested or ():
        if name not in EVAL_PROPERTIES:
            raise unknown_name("property", name, EVAL_PROPERTIES)
    chosen, skipped = [], {}
    for prop in requested or EVAL_PROPERTIES:
        reason = None
        if prop not in available:
            reason = f"the data set has no '{prop}' labels"
        elif prop not in implemented:
            reason = f"the model does not compute '{prop}'"
        elif prop == P.stress and not periodic:
            reason = "no structure is periodic in all three directions (stress is undefined)"
        if reason is None:
            chosen.append(prop)
        elif requested is not None:
            raise MissingPropertyError(f"cannot evaluate {prop}: {reason}")
        else:
            skipped[prop] = reason
    if not chosen:
        raise MissingPropertyError("nothing to evaluate: " + "; ".join(skipped.values()))
    return chosen, skipped


def evaluate(calc, data, properties: Sequence[str] | None = None,
             batch_size: int = 32) -> Evaluation:
    """Compare ``calc``'s predictions with the labels of ``data``.

    Args:
        calc: an :class:`~mlcalc.calculator.MLCalculator`.
        data: a labelled data set (:class:`~mlcalc.data.BaseAtomsData`).
        properties: any of energy, forces, stress; None: all the data has.
        batch_size: structures per model call.
    """
    n = len(data)
    if n == 0:
        raise MissingPropertyError(f"data set '{data.name}' holds no structures")
    # stress is compared where it is defined: decide before predicting anything
    periodic = P.stress in data.available_properties and any(
        data.get_atoms(i).pbc.all() for i in range(n))
    props, skipped = choose_properties(data.available_properties, properties, periodic,
                                       calc.model.implemented_properties)
    from mlcalc.model import model_neighbor_list, predict_defined

    nl = model_neighbor_list(calc.model, calc.device, backend=calc.backend)
    ref: dict[str, list[np.ndarray]] = {k: [] for k, (p, _) in METRICS.items() if p in props}
    pred: dict[str, list[np.ndarray]] = {k: [] for k in ref}
    n_atoms = 0
    # Read one chunk at a time so that memory is bounded by the batch, not the data set.
    for start in range(0, n, batch_size):
        chunk = [data.get_atoms(i) for i in range(start, min(n, start + batch_size))]
        labels = [atoms.calc.results for atoms in chunk]
        results = predict_defined(calc.model, chunk, props, nl, batch_size)
        for atoms, label, res in zip(chunk, labels, results, strict=True):
            n_atoms += len(atoms)
            for key in ref:
                prop = METRICS[key][0]
                if prop not in res or prop not in label:
                    continue  # undefined for this structure (the stress of a slab)
                scale = len(atoms) if key == "energy_per_atom" else 1
                ref[key].append(np.ravel(label[prop]) / scale)
                pred[key].append(np.ravel(res[prop]) / scale)
    return Evaluation(n, n_atoms, {k: np.concatenate(v) for k, v in ref.items()},
                      {k: np.concatenate(v) for k, v in pred.items()}, skipped)


def write_outputs(evaluation: Evaluation, output_dir: str | os.PathLike,
                  extra: dict | None = None) -> list[Path]:
    """Write ``eval_metrics.json`` and one parity PNG per property into ``output_dir``.

    The energy plot shows eV/atom (comparable across structure sizes).
    """
    from mlcalc.plots import parity_plot

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    content = {**(extra or {}), "n_structures": evaluation.n_structures,
               "n_atoms": evaluation.n_atoms, "metrics": evaluation.metrics,
               "skipped": evaluation.skipped}
    # written to a temporary name and renamed: an interrupt never leaves half a file
    with tempfile.NamedTemporaryFile("w", dir=out, suffix=".tmp", delete=False) as fh:
        json.dump(content, fh, indent=2)
        fh.write("\n")
    os.replace(fh.name, out / "eval_metrics.json")
    written = [out / "eval_metrics.json"]
    for key in evaluation.reference:
        if key == "energy":
            continue
        name = P.energy if key == "energy_per_atom" else key
        written.append(parity_plot(evaluation.reference[key], evaluation.predicted[key], name,
                                   METRICS[key][1], out / f"parity_{name}.png"))
    return written


__all__ = ["EVAL_PROPERTIES", "METRICS", "Evaluation", "choose_properties", "evaluate",
           "open_labelled", "write_outputs"]
