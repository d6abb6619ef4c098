"""The steps of one iteration: explore with the committee, select uncertain frames, label them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.calculators.singlepoint import SinglePointCalculator

from mlcalc.learn.recipe import ExploreSection, SelectSection

SPREAD = "max_force_std"  #: info key: largest per-atom force spread of a frame, eV/Å


def explore(starts: Sequence[Atoms], committee: str | os.PathLike,
            settings: ExploreSection) -> list[Atoms]:
    """MD with the committee from every start under every condition of ``settings``
    (:func:`mlcalc.learn.recipe.md_settings`: mlcalc md's ensembles and integrators).

    Every ``record_every`` steps the frame is recorded with ``info``:
    ``trajectory``, ``step``, ``temperature_K``, ``pressure_GPa`` and
    :data:`SPREAD` (eV/Å). A trajectory stops early once its spread exceeds
    ``settings.stop_above`` (the model is lost there; the frame is recorded)
    or its forces become non-finite.
    """
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    from mlcalc.calculator import MLCalculator
    from mlcalc.exceptions import NonFiniteResultError
    from mlcalc.learn.recipe import md_settings

    calc = MLCalculator(str(committee))
    frames: list[Atoms] = []
    traj = 0
    for start in starts:
        for md in md_settings(settings):
            atoms = start.copy()
            atoms.calc = calc.sibling()
            rng = np.random.default_rng(settings.seed + traj)
            MaxwellBoltzmannDistribution(atoms, temperature_K=md.temperature_K, rng=rng)
            dyn = md.make_dynamics(atoms, rng)
            for step in range(0, settings.steps + 1, settings.record_every):
                try:
                    if step:
                        dyn.run(settings.record_every)
                    atoms.get_forces()
                except NonFiniteResultError:
                    break
                spread = float(np.max(atoms.calc.results["forces_std"]))
                frame = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
                frame.info.update(trajectory=traj, step=step, temperature_K=md.temperature_K,
                                  pressure_GPa=md.pressure_GPa, **{SPREAD: spread})
                frames.append(frame)
                if settings.stop_above is not None and spread > settings.stop_above:
                    break
            traj += 1
    return frames


def select(frames: Sequence[Atoms], settings: SelectSection, budget: int | None) -> list[Atoms]:
    """Frames above the threshold, the most uncertain first, at least ``min_separation``
    recorded frames apart within a trajectory, at most ``max_per_iteration`` (and ``budget``)."""
    cap = settings.max_per_iteration if budget is None else min(budget,
                                                                settings.max_per_iteration)
    above = sorted((f for f in frames if f.info[SPREAD] > settings.threshold),
                   key=lambda f: -f.info[SPREAD])
    gap = settings.min_separation * _record_step(frames)  # in MD steps
    chosen: list[Atoms] = []
    for frame in above:
        if len(chosen) >= cap:
            break
        near = any(c.info["trajectory"] == frame.info["trajectory"]
                   and abs(c.info["step"] - frame.info["step"]) < gap for c in chosen)
        if not near:
            chosen.append(frame)
    return chosen


def _record_step(frames: Sequence[Atoms]) -> int:
    steps = sorted({f.info["step"] for f in frames})
    return steps[1] - steps[0] if len(steps) > 1 else 1


def label(frames: Sequence[Atoms], reference: Calculator) -> list[Atoms]:
    """The frames with the reference's energy, forces (and stress where periodic) attached."""
    from mlcalc.data.generate.common import label as reference_labels

    out = []
    for frame in frames:
        atoms = frame.copy()
        atoms.calc = SinglePointCalculator(atoms, **reference_labels(atoms, reference, True))
        out.append(atoms)
    return out


def reference_calculator(name: str) -> Calculator:
    """The offline references: ASE's EMT, or the Lennard-Jones of ``mlcalc data generate``."""
    if name == "emt":
        from ase.calculators.emt import EMT

        return EMT()
    from mlcalc.data.generate.lj import lj_calculator

    return lj_calculator()


def write_frames(path: Path, frames: Sequence[Atoms]) -> None:
    """extxyz, written whole then renamed (a file that exists is complete)."""
    import ase.io

    from mlcalc.files import written_whole

    with written_whole(path) as tmp:
        ase.io.write(tmp, list(frames), format="extxyz")


def read_frames(path: Path) -> list[Atoms]:
    import ase.io

    return ase.io.read(path, ":", format="extxyz") if path.stat().st_size else []
