"""Geometry (and cell) relaxation with ASE's optimizers: :func:`relax`.

A thin wrapper: ASE's BFGS / LBFGS / FIRE move the atoms, ASE's
:class:`~ase.filters.FrechetCellFilter` adds the cell degrees of freedom and
ASE's :class:`~ase.constraints.FixSymmetry` keeps the space group. This module
only checks the arguments, wires these together and reports the outcome.

    >>> result = relax(atoms, MLCalculator("cu-emt"), cell=True)   # doctest: +SKIP
    >>> result.converged, result.energy                              # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from mlcalc.exceptions import InvalidStructureError, unknown_name
from mlcalc.simulate.outputs import output_lock, refuse_existing

#: Optimizer names accepted by :func:`relax` -> class name in :mod:`ase.optimize`.
OPTIMIZERS: dict[str, str] = {"bfgs": "BFGS", "lbfgs": "LBFGS", "fire": "FIRE"}

#: Voigt components that carry a hydrostatic pressure (xx, yy, zz).
_DIAGONAL = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])


@dataclass
class RelaxResult:
    """Outcome of :func:`relax`.

    Attributes:
        atoms: the relaxed structure (a copy of the input, calculator attached,
            the input's own constraints restored).
        converged: whether the optimizer reached ``fmax`` within ``steps``.
        steps: optimizer steps taken.
        energy: potential energy of the relaxed structure in eV (not the
            enthalpy ``E + pV`` that a cell relaxation under pressure minimises).
        fmax: the optimizer's convergence measure at the end, in eV/Å: the
            largest atomic force norm, and with ``cell=True`` also the largest
            cell "force" of the FrechetCellFilter (virial / number of atoms).
        max_stress: largest component of ``|σ + p|`` in eV/Å³ (the stress
            left over relative to the target pressure ``p``; Voigt, ASE sign),
            or None for a structure that is not periodic in 3D.
    """

    atoms: Atoms
    converged: bool
    steps: int
    energy: float
    fmax: float
    max_stress: float | None


@dataclass
class RelaxedFrame:
    """One of many relaxed frames: the structure (results attached), whether it
    converged, and its largest force in eV/Å."""

    atoms: Atoms
    converged: bool
    fmax: float


def optimizer_class(name: str) -> type:
    """The ASE optimizer class for ``name`` (case-insensitive); UnknownNameError otherwise."""
    import ase.optimize

    key = name.lower()
    if key not in OPTIMIZERS:
        raise unknown_name("optimizer", name, OPTIMIZERS)
    return getattr(ase.optimize, OPTIMIZERS[key])


def relax(atoms: Atoms, calc: Calculator, optimizer: str = "bfgs", fmax: float = 0.01,
          steps: int = 500, cell: bool = False, pressure_GPa: float = 0.0,
          fix_symmetry: bool = False, trajectory: str | os.PathLike | None = "relax.traj",
          log: str | os.PathLike | None = "relax.log", overwrite: bool = False) -> RelaxResult:
    """Relax positions (and with ``cell=True`` the cell) of a copy of ``atoms``.

    Args:
        atoms: starting structure (not modified).
        calc: any ASE calculator (usually an :class:`~mlcalc.calculator.MLCalculator`).
        optimizer: ``bfgs``, ``lbfgs`` or ``fire`` (ASE's classes).
        fmax: convergence threshold on the largest force norm, eV/Å.
        steps: maximal number of optimizer steps.
        cell: relax the cell too, with :class:`ase.filters.FrechetCellFilter`
            (needs a structure periodic in all three directions).
        pressure_GPa: external hydrostatic pressure in GPa (cell relaxations only).
        fix_symmetry: keep the space group the structure has (spglib,
            ``symprec=0.01``), with :class:`ase.constraints.FixSymmetry`.
        trajectory: ASE trajectory file of every step, or None.
        log: the optimizer's text log (step, energy, fmax), or None.
        overwrite: replace existing ``trajectory`` / ``log`` files (else
            refused). The starting structure is evaluated before they are
            opened, so a structure the model refuses leaves them as they were.

    Returns:
        A :class:`RelaxResult`. Not converging is a result, not an error.

    Raises:
        UnknownNameError: an unknown optimizer name (with "did you mean").
        InvalidStructureError: ``cell=True`` for a structure not periodic in 3D.
        ValueError: ``fmax <= 0``, ``steps < 0``, or a pressure without ``cell``.
        OutputExistsError, OutputLockedError: see :mod:`mlcalc.simulate.outputs`.
    """
    opt_class = check_options(atoms, optimizer, fmax, steps, cell, pressure_GPa)
    outputs = [Path(p) for p in (trajectory, log) if p is not None]
    lock = output_lock(outputs[0].with_suffix("")) if outputs else contextlib.nullcontext()
    with lock:
        refuse_existing(outputs, overwrite)
        return _relax(atoms, calc, opt_class, fmax, steps, cell, pressure_GPa, fix_symmetry,
                      trajectory, log)


def check_options(atoms: Atoms, optimizer: str, fmax: float, steps: int, cell: bool,
                  pressure_GPa: float):
    """The optimizer class, after refusing options that cannot make a relaxation."""
    opt_class = optimizer_class(optimizer)
    if not fmax > 0:
        raise ValueError(f"fmax must be > 0 eV/Å, got {fmax}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if pressure_GPa != 0.0 and not cell:
        # an ignored option would be silently wrong: the pressure acts on the cell only
        raise ValueError("a pressure only acts in a cell relaxation: add cell=True (--cell)")
    if cell and not atoms.pbc.all():
        raise InvalidStructureError("a cell relaxation needs a structure periodic in all three "
                                    "directions")
    return opt_class


def _relax(atoms: Atoms, calc: Calculator, opt_class, fmax: float, steps: int, cell: bool,
           pressure_GPa: float, fix_symmetry: bool, trajectory, log) -> RelaxResult:
    from ase.units import GPa

    relaxed = atoms.copy()  # the caller's structure stays as it was
    relaxed.calc = calc
    own_constraints = list(relaxed.constraints)
    if fix_symmetry:
        from ase.constraints import FixSymmetry

        relaxed.set_constraint([*own_constraints, FixSymmetry(relaxed)])

    target = relaxed
    if cell:
        from ase.filters import FrechetCellFilter

        target = FrechetCellFilter(relaxed, scalar_pressure=pressure_GPa * GPa)

    target.get_forces()  # the model sees the structure before any file is opened
    logfile = os.fspath(log) if log is not None else None
    traj = os.fspath(trajectory) if trajectory is not None else None
    with opt_class(target, logfile=logfile, trajectory=traj) as opt:
        converged = bool(opt.run(fmax=fmax, steps=steps))
        n_steps = int(opt.nsteps)
    # the optimizer's own measure (includes the filter's cell "forces")
    final_fmax = float(np.sqrt((target.get_forces() ** 2).sum(axis=1)).max())

    # FixSymmetry is part of the procedure, not of the structure: drop it so
    # that the result can be written to any format and moved freely.
    relaxed.set_constraint(own_constraints)
    energy = float(relaxed.get_potential_energy())
    max_stress = None
    if relaxed.pbc.all():
        residual = relaxed.get_stress(voigt=True) + pressure_GPa * GPa * _DIAGONAL
        max_stress = float(np.abs(residual).max())
    return RelaxResult(relaxed, converged, n_steps, energy, final_fmax, max_stress)


__all__ = ["OPTIMIZERS", "RelaxResult", "RelaxedFrame", "check_options", "optimizer_class",
           "relax"]
