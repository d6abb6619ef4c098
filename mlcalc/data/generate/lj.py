"""Compact Lennard-Jones clusters labelled with ASE's LennardJones (offline reference data)."""

from __future__ import annotations

import os

import ase
import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.data import atomic_numbers

from mlcalc import properties as P
from mlcalc.data.atoms_data import ASEAtomsData
from mlcalc.data.generate.common import Progress, check_new_path, label, write_set
from mlcalc.exceptions import unknown_name


def lj_calculator(sigma: float = 3.4, epsilon: float = 0.0104, rc: float | None = None):
    """ASE's smooth :class:`~ase.calculators.lj.LennardJones`, Ar-like by default (σ in Å,
    ε in eV, cutoff ``rc`` in Å, default 3σ): the reference of :func:`generate_lj`."""
    from ase.calculators.lj import LennardJones

    return LennardJones(sigma=sigma, epsilon=epsilon, rc=3.0 * sigma if rc is None else rc,
                        smooth=True)


def generate_lj(path: str | os.PathLike, n_structures: int = 100,
                n_atoms: tuple[int, int] = (8, 20), seed: int = 0, element: str = "Ar",
                sigma: float = 3.4, epsilon: float = 0.0104, rc: float | None = None,
                rattle_A: float = 0.15, max_relax_steps: int = 20,
                progress: Progress | None = None) -> ASEAtomsData:
    """Label compact Lennard-Jones clusters (non-periodic, zero cell).

    Each cluster takes a random number of atoms in ``n_atoms`` (inclusive):
    the sites of an fcc lattice at the LJ pair distance 2^(1/6) σ nearest to
    a random point, randomly rotated, rattled by ``rattle_A``, then relaxed
    with FIRE for a random 0..``max_relax_steps`` steps, so the set spans
    strained to nearly relaxed clusters. The potential is ASE's
    :class:`~ase.calculators.lj.LennardJones` with ``smooth=True`` (energy and
    forces go smoothly to zero between 0.66 rc and rc), Ar-like by default:
    σ = 3.4 Å, ε = 0.0104 eV, rc = 3σ.

    Args:
        path: new database file (never overwritten).
        n_structures: number of clusters, at least 1.
        n_atoms: smallest and largest cluster size.
        seed: seed of the one random generator used for everything.
        element: chemical symbol stored for the atoms.
        sigma: LJ length σ in Å.
        epsilon: LJ well depth ε in eV.
        rc: cutoff in Å (default 3σ).
        rattle_A: standard deviation of the rattle in Å.
        max_relax_steps: most FIRE steps per cluster.
        progress: called as ``progress(done, total)`` after each structure.

    Returns:
        The new data set with energy (eV) and forces (eV/Å).
    """
    from ase.optimize import FIRE

    check_new_path(path, n_structures)
    if element not in atomic_numbers:
        raise unknown_name("element", element, [s for s in atomic_numbers if s != "X"])
    lo, hi = (int(k) for k in n_atoms)
    if not 2 <= lo <= hi:
        raise ValueError(f"n_atoms must be (min, max) with 2 <= min <= max, got {n_atoms}")
    calc = lj_calculator(sigma, epsilon, rc)
    rng = np.random.default_rng(seed)
    # Enough lattice sites around the origin for the largest cluster.
    reps = int(np.ceil((hi / 4.0) ** (1.0 / 3.0))) + 2
    lattice = bulk(element, "fcc", a=2.0 ** (1.0 / 6.0) * sigma * np.sqrt(2.0), cubic=True)
    sites = (lattice * (reps, reps, reps)).positions
    sites -= sites.mean(axis=0)
    frames, labels = [], []
    for k in range(n_structures):
        n = int(rng.integers(lo, hi + 1))
        centre = rng.uniform(-0.5, 0.5, size=3) * sigma
        chosen = sites[np.argsort(np.linalg.norm(sites - centre, axis=1), kind="stable")[:n]]
        rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        rotation *= np.sign(np.linalg.det(rotation))  # proper rotation, no mirror
        positions = (chosen - chosen.mean(axis=0)) @ rotation.T
        positions += rng.normal(0.0, rattle_A, size=positions.shape)
        atoms = Atoms([element] * n, positions=positions, pbc=False)
        atoms.calc = calc
        steps = int(rng.integers(0, max_relax_steps + 1))
        if steps:
            FIRE(atoms, logfile=None).run(fmax=0.0, steps=steps)
        atoms = Atoms(atoms.numbers, atoms.positions, pbc=False)
        labels.append(label(atoms, calc, with_stress=False))
        frames.append(atoms)
        if progress is not None:
            progress(k + 1, n_structures)
    return write_set(path, frames, labels, {P.energy: "eV", P.forces: "eV/Ang"},
                  generator="ase.calculators.lj.LennardJones", element=element, seed=seed,
                  n_atoms=[lo, hi], sigma=sigma, epsilon=epsilon, rc=calc.parameters.rc,
                  smooth=True, rattle_A=rattle_A, max_relax_steps=max_relax_steps,
                  ase_version=ase.__version__)
