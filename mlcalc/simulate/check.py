"""A physics audit of a model on one structure: what ``mlcalc check`` runs.

Every row reuses a check of :mod:`mlcalc.testing` (and its
:data:`~mlcalc.testing.TOLERANCES`) or ASE's VelocityVerlet, and compares
the deviation it returns with a written-down bound:

* invariances (rotation, translation, permutation, wrapping) in the
  network's own dtype, since that is what simulations will see;
* finite-difference forces and stress, the harmonic test and NVE energy
  drift in float64, because float32 round-off would swamp what they measure.

The harmonic test needs an atom that is a centre of inversion of a perfect
crystal. It is run on the structure's own ideal: the structure symmetrised
by spglib (:func:`ase.spacegroup.symmetrize.refine_symmetry`, ``symprec``
0.1 Å, so a slightly distorted crystal counts as its ideal), at the first
atom whose site symmetry contains the inversion. It is skipped (not failed)
when the structure is not periodic or no atom is such a centre (diamond
Si, a rattled cell beyond 0.1 Å).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms

from mlcalc import testing as T

#: Bound on the NVE energy drift in eV/atom/ps (float64 network, 1 fs steps,
#: 300 K). Smooth float64 potentials drift by 4e-7 to 4e-5 eV/atom/ps over
#: 0.1-0.2 ps (measured: the bundled cu-emt model on 8- and 32-atom Cu cells,
#: tiny random SchNet and PaiNN models; see docs/check.rst), so the bound
#: leaves a margin of 25. It catches gross failures (energies that jump,
#: trajectories that blow up), not subtle ones: forces 10 % too large drift by
#: 5e-4 eV/atom/ps on cu-emt, below the bound; the finite-difference row is
#: the sharp test of forces = -dE/dR.
NVE_DRIFT_TOLERANCE = 1e-3

_UNITS = {"energy": "eV", "forces": "eV/Å", "stress": "eV/Å³", "fd_forces": "eV/Å",
          "fd_stress": "eV/Å³", "harmonic": "relative", "nve": "eV/atom/ps"}


@dataclass
class CheckRow:
    """One line of the audit.

    Attributes:
        name: what was checked, e.g. ``"rotation: forces"``.
        value: the largest deviation found (unit ``unit``), None if skipped.
        tolerance: the bound it must not exceed.
        unit: unit of ``value`` and ``tolerance``.
        dtype: network precision the check ran in.
        note: why it was skipped, or extra context.
        warning_only: a deviation above the bound is a known property of the
            model (see ``note``): reported as a warning, not a failure.
    """

    name: str
    value: float | None
    tolerance: float
    unit: str
    dtype: str
    note: str = ""
    warning_only: bool = False

    @property
    def passed(self) -> bool | None:
        """True / False, or None for a skipped check."""
        if self.value is None:
            return None
        return bool(math.isfinite(self.value) and self.value <= self.tolerance)

    @property
    def verdict(self) -> str:
        """``pass``, ``FAIL``, ``warn`` (a failed warning-only check) or ``skip``."""
        if self.passed is False and self.warning_only:
            return "warn"
        return {True: "pass", False: "FAIL", None: "skip"}[self.passed]


def cusp_note(model: torch.nn.Module) -> str | None:
    """Why a PaiNN with a tiny norm epsilon is expected to fail the harmonic test, or None.

    SchNetPack's PaiNN uses ε = 1e-8 in √(‖Vμ‖² + ε); an imported model keeps
    it to reproduce SchNetPack's numbers, and its energy has a cusp where μ
    vanishes by symmetry (mlcalc's own PaiNN uses ε = 1).
    """
    rep = getattr(model, "representation", None)
    eps = getattr(rep, "hyperparameters", {}).get("epsilon")
    if getattr(rep, "name", "") != "painn" or eps is None or eps >= 1.0:
        return None
    return (f"PaiNN with epsilon={eps:g} (SchNetPack's value) has an energy cusp at "
            "symmetric sites: reported as a warning; finite-displacement phonons of a "
            "perfect crystal are unreliable with it")


def inversion_site(atoms: Atoms, symprec: float = 0.1) -> tuple[Atoms, int] | None:
    """The symmetrised structure and an atom that is a centre of inversion, or None.

    Args:
        atoms: a structure periodic in all three directions.
        symprec: spglib tolerance in Å used to find and impose the symmetry.
    """
    import spglib
    from ase.spacegroup.symmetrize import refine_symmetry

    ideal = atoms.copy()
    ideal.set_constraint()
    ideal.calc = None
    try:
        refine_symmetry(ideal, symprec=symprec)
    except Exception:  # spglib finds no symmetry at all for some inputs
        return None
    cell = (ideal.cell.array, ideal.get_scaled_positions(), ideal.numbers)
    dataset = spglib.get_symmetry_dataset(cell, symprec=1e-5)
    if dataset is None:
        return None
    frac = ideal.get_scaled_positions()
    for rot, trans in zip(dataset.rotations, dataset.translations, strict=True):
        if not np.array_equal(rot, -np.eye(3, dtype=int)):
            continue
        for a, x in enumerate(frac):
            d = rot @ x + trans - x  # an inversion centre maps onto itself modulo the lattice
            if np.abs(d - np.round(d)).max() < 1e-6:
                return ideal, a
    return None


def nve_drift(calc, atoms: Atoms, steps: int = 200, timestep_fs: float = 1.0,
              temperature_K: float = 300.0, seed: int = 0) -> tuple[float, float]:
    """Energy drift of ASE VelocityVerlet from ``atoms`` with Maxwell–Boltzmann velocities.

    Returns:
        (drift, spread): the slope of a straight-line fit of the total energy
        per atom against time in eV/atom/ps (absolute value), and the largest
        deviation of the total energy per atom from its start in eV/atom.
    """
    from ase import units
    from ase.md.velocitydistribution import Stationary
    from ase.md.verlet import VelocityVerlet

    try:
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # ASE < 3.29 has only the older name
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta

    md_atoms = atoms.copy()
    md_atoms.calc = calc
    thermalize_momenta(md_atoms, temperature_K=temperature_K, rng=np.random.default_rng(seed))
    Stationary(md_atoms)  # no centre-of-mass drift to confuse with energy drift
    energies: list[float] = []
    with VelocityVerlet(md_atoms, timestep=timestep_fs * units.fs) as dyn:
        # observers are also called before the first step: steps + 1 energies
        dyn.attach(lambda: energies.append(md_atoms.get_total_energy()), interval=1)
        dyn.run(steps)
    e = np.asarray(energies) / len(atoms)
    t_ps = np.arange(len(e)) * timestep_fs * 1e-3
    if not np.isfinite(e).all():
        return math.inf, math.inf
    slope = np.polyfit(t_ps, e, 1)[0] if len(e) > 1 else 0.0
    return float(abs(slope)), float(np.abs(e - e[0]).max())


def run_checks(model: torch.nn.Module, model64: torch.nn.Module, atoms: Atoms,
               nve_calc=None, nve_steps: int = 200, timestep_fs: float = 1.0,
               temperature_K: float = 300.0) -> list[CheckRow]:
    """Run the audit; never raises for a failed check, only for bad input.

    Args:
        model: the potential in the precision it will be used in.
        model64: the same potential in float64 (finite differences, harmonic test).
        atoms: the structure to audit.
        nve_calc: a float64 calculator for the NVE run (None: skip it).
        nve_steps: VelocityVerlet steps (0: skip).
        timestep_fs: NVE time step in fs.
        temperature_K: initial temperature of the NVE run in K.
    """
    dtype = str(model.dtype).removeprefix("torch.")
    tol, tol64 = T.TOLERANCES[model.dtype], T.TOLERANCES[torch.float64]
    rows: list[CheckRow] = []

    def add(name: str, values: tuple[float, ...] | float, keys: tuple[str, ...],
            tolerances: dict[str, float], dt: str, note: str = "") -> None:
        values = values if isinstance(values, tuple) else (values,)
        for value, key in zip(values, keys, strict=True):
            label = f"{name}: {key.removeprefix('fd_')}" if len(keys) > 1 else name
            rows.append(CheckRow(label, float(value), tolerances[key], _UNITS[key], dt, note))

    add("rotation", T.check_rotation(model, atoms), ("energy", "forces"), tol, dtype)
    add("translation", T.check_translation(model, atoms), ("energy", "forces"), tol, dtype)
    add("permutation", T.check_permutation(model, atoms), ("energy", "forces"), tol, dtype)
    if atoms.pbc.any():
        add("wrapping", T.check_wrapping(model, atoms), ("energy", "forces"), tol, dtype)
    add("finite-difference forces", T.check_forces(model64, atoms), ("fd_forces",), tol64,
        "float64")
    if atoms.pbc.all():
        add("finite-difference stress", T.check_stress(model64, atoms), ("fd_stress",), tol64,
            "float64")
    else:
        rows.append(CheckRow("finite-difference stress", None, tol64["fd_stress"], "eV/Å³",
                             "float64", "skipped: not periodic in all three directions"))

    site = inversion_site(atoms) if atoms.pbc.all() else None
    if site is None:
        why = ("no atom is a centre of inversion" if atoms.pbc.all()
               else "needs a periodic crystal")
        rows.append(CheckRow("harmonic at a symmetric site", None, tol64["harmonic"],
                             "relative", "float64", f"skipped: {why}"))
    else:
        ideal, atom = site
        cusp = cusp_note(model64)
        add("harmonic at a symmetric site",
            T.check_harmonic_at_symmetric_site(model64, ideal, atom=atom), ("harmonic",),
            tol64, "float64", f"atom {atom} of the symmetrised structure"
            + (f"; {cusp}" if cusp else ""))
        rows[-1].warning_only = cusp is not None

    if nve_calc is not None and nve_steps > 0:
        drift, spread = nve_drift(nve_calc, atoms, nve_steps, timestep_fs, temperature_K)
        rows.append(CheckRow("NVE energy drift", drift, NVE_DRIFT_TOLERANCE, "eV/atom/ps",
                             "float64", f"{nve_steps} steps of {timestep_fs:g} fs from "
                             f"{temperature_K:g} K; max |ΔE| {spread:.2g} eV/atom"))
    return rows


__all__ = ["NVE_DRIFT_TOLERANCE", "CheckRow", "cusp_note", "inversion_site", "nve_drift",
           "run_checks"]
