"""What the reference-data generators share: checks, labelling, one-transaction writes."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from mlcalc import properties as P
from mlcalc.data.atoms_data import ASEAtomsData

#: Called as ``progress(done, total)`` after each labelled structure.
Progress = Callable[[int, int], None]


def minimize_1d(energy: Callable[[float], float], x0: float, width: float) -> float:
    """Minimum of a smooth ``energy(x)`` near ``x0``: parabolas through
    x0 ± width (moving on while the vertex lies outside), then ten times
    narrower around the vertex (one wide pass leaves a few 0.1 GPa from the
    anharmonicity of E(V))."""
    for w in (width, 0.1 * width):
        for _ in range(10):  # walk on while the vertex lies outside the bracket
            xs = x0 + np.array([-w, 0.0, w])
            c2, c1, _ = np.polyfit(xs, [energy(x) for x in xs], 2)
            if c2 <= 0:
                break
            vertex = -c1 / (2.0 * c2)
            x0 = float(np.clip(vertex, xs[0], xs[-1]))
            if abs(vertex - xs[1]) <= w:
                break
    return x0


def split_count(n: int, parts: int) -> list[int]:
    """``n`` items into ``parts`` near-equal counts, the larger ones first."""
    return [n // parts + (k < n % parts) for k in range(parts)]


def check_new_path(path: str | os.PathLike, n_structures: int) -> None:
    """Refuse an existing ``path`` (never overwritten) and fewer than one structure."""
    if os.path.exists(path):
        raise FileExistsError(f"data set '{os.fspath(path)}' already exists; refusing to "
                              "overwrite it (remove it or choose another path)")
    if n_structures < 1:
        raise ValueError(f"n_structures must be at least 1, got {n_structures}")


def label(atoms: Atoms, calc: Calculator, with_stress: bool) -> dict[str, np.ndarray]:
    """energy (), forces (N, 3) and, with ``with_stress``, stress (6,) of ``atoms`` in eV, Å.

    Stress only where it is defined (periodic in 3D); the data set stores the
    others' as undefined (NaN).
    """
    atoms.calc = calc
    labels = {P.energy: np.float64(atoms.get_potential_energy()),
              P.forces: atoms.get_forces().copy()}
    if with_stress and atoms.pbc.all():
        labels[P.stress] = atoms.get_stress(voigt=True).copy()
    atoms.calc = None
    return labels


def write_set(path: str | os.PathLike, frames: Sequence[Atoms], labels: Sequence[dict],
              units_: dict[str, str], **metadata: object) -> ASEAtomsData:
    """A new data set holding ``frames`` with ``labels`` (all or nothing)."""
    data = ASEAtomsData.create(path, property_unit_dict=units_, **metadata)
    try:
        data.add_systems(frames, labels)
    except BaseException:
        os.remove(os.fspath(path))  # new and empty: a corrected rerun must not hit "exists"
        raise
    return data
