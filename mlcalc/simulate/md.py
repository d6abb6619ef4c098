"""Molecular dynamics with ASE's own integrators: NVE, NVT (Langevin, Bussi,
Nosé–Hoover chain) and NPT (isotropic MTK or Berendsen).

    >>> summary = run_md(atoms, MLCalculator("cu-emt"), ensemble="nvt-langevin",
    ...                  steps=1000, temperature_K=300)     # doctest: +SKIP

:func:`run_md` adds what a long run needs around ``dyn.irun``: files written
and flushed as it goes (see :mod:`mlcalc.simulate.md_output`), restart from
the trajectory's last frame, a clean stop on Ctrl-C / SIGTERM, a stop with
:class:`MDExplodedError` when the dynamics blows up (the bad frame is never
written), and an uncertainty stop for ensembles of models.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator, PropertyNotImplementedError
from ase.md.md import MolecularDynamics

from mlcalc.exceptions import InvalidStructureError, MlcalcError, unknown_name
from mlcalc.simulate import md_output as out

ENSEMBLES = ("nve", "nvt-langevin", "nvt-bussi", "nvt-nose-hoover", "npt")
BAROSTATS = ("mtk", "berendsen")

#: Berendsen NPT needs a compressibility; 1/(100 GPa) is the order of metals
#: and oxides (Cu: 1/140 GPa). It sets only how fast the volume relaxes.
DEFAULT_BULK_MODULUS_GPA = 100.0
#: Explosion limits: any |F| above this (eV/Å) ...
MAX_FORCE = 1e3
#: ... any atom moving more than this in one step (Å) ...
MAX_STEP_DISPLACEMENT = 2.0
#: ... or a temperature above this multiple of max(target, 10 K).
MAX_TEMPERATURE_FACTOR = 100.0


class MDError(MlcalcError, ValueError):
    """Options that cannot make a molecular-dynamics run."""


class MDExplodedError(MlcalcError, RuntimeError):
    """The dynamics produced NaN or an exploding structure; the run was stopped."""


@dataclass
class MDSummary:
    """What a :func:`run_md` call did.

    Attributes:
        steps: steps integrated by this call.
        last_step: global step number of the final state (continues on restart).
        time_ps: simulated time of the final state, ps.
        wall_s: wall-clock seconds of the integration loop.
        ns_per_day: simulated ns per wall-clock day of this call.
        stopped: None when all steps ran; ``"interrupted"`` (Ctrl-C, SIGTERM)
            or ``"uncertainty"`` (ensemble spread above the threshold).
        trajectory, log, final_structure, plot: files written.
        frames_written: trajectory frames written by this call.
        max_forces_std: largest per-atom forces_std seen, eV/Å (ensembles only).
    """

    steps: int
    last_step: int
    time_ps: float
    wall_s: float
    ns_per_day: float
    stopped: str | None
    trajectory: Path
    log: Path
    final_structure: Path
    plot: Path
    frames_written: int
    max_forces_std: float | None = None


def make_dynamics(atoms: Atoms, ensemble: str, timestep_fs: float, temperature_K: float,
                  pressure_GPa: float, friction_per_fs: float, tdamp_fs: float, pdamp_fs: float,
                  barostat: str, rng: np.random.Generator) -> MolecularDynamics:
    """The ASE integrator for ``ensemble``, with mlcalc's units converted to ASE's.

    Raises:
        UnknownNameError: unknown ensemble or barostat (with a did-you-mean).
        InvalidStructureError: NPT on a structure not periodic in all directions.
        MDError: a thermostat asked for at 0 K.
    """
    if ensemble not in ENSEMBLES:
        raise unknown_name("ensemble", ensemble, ENSEMBLES)
    if barostat not in BAROSTATS:
        raise unknown_name("barostat", barostat, BAROSTATS)
    if ensemble != "nve" and temperature_K <= 0:
        raise MDError(f"ensemble '{ensemble}' needs temperature_K > 0, got {temperature_K}")
    dt = timestep_fs * units.fs
    tdamp, pdamp = tdamp_fs * units.fs, pdamp_fs * units.fs
    if ensemble == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, dt)
    if ensemble == "nvt-langevin":
        from ase.md.langevin import Langevin

        # fixcm=False: ASE's fixcm=True does not sample the canonical ensemble
        return Langevin(atoms, dt, temperature_K=temperature_K,
                        friction=friction_per_fs / units.fs, fixcm=False, rng=rng)
    if ensemble == "nvt-bussi":
        from ase.md.bussi import Bussi

        return Bussi(atoms, dt, temperature_K=temperature_K, taut=tdamp, rng=rng)
    if ensemble == "nvt-nose-hoover":
        from ase.md.nose_hoover_chain import NoseHooverChainNVT

        return NoseHooverChainNVT(atoms, dt, temperature_K=temperature_K, tdamp=tdamp)
    if not atoms.pbc.all() or atoms.cell.rank < 3:
        raise InvalidStructureError("npt needs a structure periodic in all three directions "
                                    f"with a full cell (pbc={atoms.pbc.tolist()})")
    if barostat == "berendsen":
        from ase.md.nptberendsen import NPTBerendsen

        return NPTBerendsen(atoms, dt, temperature_K=temperature_K,
                            pressure_au=pressure_GPa * units.GPa, taut=tdamp, taup=pdamp,
                            compressibility_au=1.0 / (DEFAULT_BULK_MODULUS_GPA * units.GPa))
    from ase.md.nose_hoover_chain import IsotropicMTKNPT

    return IsotropicMTKNPT(atoms, dt, temperature_K=temperature_K,
                           pressure_au=pressure_GPa * units.GPa, tdamp=tdamp, pdamp=pdamp)


def _explosion(atoms: Atoms, previous_positions: np.ndarray, max_temperature_K: float) -> str:
    """Why the current state is not physical ("" when it is fine)."""
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()  # (N, 3) eV/Å, cached by the calculator
    if not math.isfinite(energy) or not np.isfinite(forces).all():
        return f"non-finite energy or forces (energy = {energy})"
    fmax = float(np.sqrt((forces**2).sum(axis=1)).max())
    if fmax > MAX_FORCE:
        return f"max |F| = {fmax:.3g} eV/Å > {MAX_FORCE:g} eV/Å"
    moved = float(np.sqrt(((atoms.positions - previous_positions) ** 2).sum(axis=1)).max())
    if moved > MAX_STEP_DISPLACEMENT:
        return f"an atom moved {moved:.3g} Å in one step (> {MAX_STEP_DISPLACEMENT:g} Å)"
    temperature = atoms.get_temperature()
    if not temperature <= max_temperature_K:  # also catches NaN
        return f"temperature {temperature:.4g} K > {max_temperature_K:.4g} K"
    return ""


class _StopFlag:
    """SIGTERM and Ctrl-C set a flag; the loop stops after the current step.

    A second Ctrl-C raises KeyboardInterrupt at once (the run is still
    finished from the last good state). Handlers are installed only in the
    main thread (Python allows no other) and restored on exit.
    """

    def __init__(self) -> None:
        self.set = False
        self._previous: dict[int, object] = {}

    def _handler(self, signum: int, frame: object) -> None:
        if self.set and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.set = True

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            # None: the old handler was not installed from Python; default is the best guess
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def run_md(atoms: Atoms, calc: Calculator, ensemble: str = "nvt-langevin", steps: int = 1000,
           timestep_fs: float = 1.0, temperature_K: float = 300.0, pressure_GPa: float = 0.0,
           friction_per_fs: float = 0.01, tdamp_fs: float = 100.0, pdamp_fs: float = 1000.0,
           barostat: str = "mtk", seed: int = 0, trajectory: str | Path = "md.extxyz",
           interval: int = 10, log: str | Path = "md.csv", restart: bool = False,
           uncertainty_threshold: float | None = None, on_uncertainty: str = "stop",
           progress: Callable[[int, int, float, float], None] | None = None) -> MDSummary:
    """Run molecular dynamics of ``atoms`` with ``calc`` and ASE's integrators.

    A new run draws Maxwell–Boltzmann momenta at ``temperature_K`` (seeded)
    and removes the centre-of-mass momentum. Every ``interval`` steps, and at
    the final step, a frame (positions, cell, momenta, energy, forces, stress,
    ``info["step"]``, ``info["time_ps"]``) goes to ``trajectory`` and a line to
    the CSV ``log``; at the end the final state goes to
    ``<trajectory stem>_final.extxyz`` and a plot to ``<trajectory stem>.png``.
    ``atoms`` is moved in place and ends in the final (last good) state.

    Restart (``restart=True``) continues from the trajectory's last frame:
    positions, cell and momenta (no new velocities), step numbers and time
    continue, and both files are appended to. NVE from a ``.traj`` trajectory
    continues bit for bit (float64 frames); extxyz stores 8 decimals, so it
    continues to ~1e-8 Å. Stochastic thermostats draw new noise (seeded by
    ``seed`` and the start step) and Nosé–Hoover / MTK restart their chain
    and barostat variables at zero: the ensemble is right, the path differs.

    Args:
        atoms: structure (N atoms); on restart only its numbers are checked.
        calc: an ASE calculator, normally :class:`mlcalc.MLCalculator`.
        ensemble: ``nve``, ``nvt-langevin``, ``nvt-bussi``, ``nvt-nose-hoover``, ``npt``.
        steps: steps to integrate in this call.
        timestep_fs: time step in fs.
        temperature_K: target temperature (and of the initial velocities), K.
        pressure_GPa: NPT target pressure, GPa.
        friction_per_fs: Langevin friction, 1/fs.
        tdamp_fs: thermostat time constant (Bussi, Nosé–Hoover, NPT), fs.
        pdamp_fs: barostat time constant (NPT), fs.
        barostat: NPT barostat, ``mtk`` (isotropic MTK) or ``berendsen``.
        seed: seed of the initial velocities and of the thermostat noise.
        trajectory: ``.extxyz`` / ``.xyz`` or ``.traj`` file.
        interval: steps between frames, log lines and progress calls.
        log: CSV file (columns in :data:`mlcalc.simulate.md_output.LOG_COLUMNS`,
            plus ``max_forces_std`` for ensembles).
        restart: continue from the trajectory's last frame.
        uncertainty_threshold: ensembles only: stop (or record) when the
            largest per-atom ``forces_std`` exceeds it, eV/Å.
        on_uncertainty: ``stop`` (end the run, ``stopped="uncertainty"``) or
            ``record`` (keep going; the CSV has the column anyway).
        progress: called every ``interval`` steps as ``progress(steps_done,
            steps, ns_per_day, eta_s)`` (counts of this call).

    Raises:
        MDExplodedError: NaN, a force above MAX_FORCE, a jump > MAX_STEP_DISPLACEMENT
            or a runaway temperature; the last good state is kept in the files.
        UnknownNameError, MDError, InvalidStructureError, FileNotFoundError:
            bad options, NPT without a periodic cell, nothing to restart from.
    """
    if steps < 0 or interval < 1 or timestep_fs <= 0:
        raise MDError(f"need steps >= 0, interval >= 1, timestep_fs > 0 (got {steps}, "
                      f"{interval}, {timestep_fs})")
    if on_uncertainty not in ("stop", "record"):
        raise unknown_name("on_uncertainty action", on_uncertainty, ("stop", "record"))
    ensemble_calc = "forces_std" in getattr(calc, "implemented_properties", ())
    if uncertainty_threshold is not None and not ensemble_calc:
        raise MDError("uncertainty_threshold needs an ensemble of models (several model files)")
    trajectory, log = Path(trajectory), Path(log)
    out.trajectory_format(trajectory)  # refuse a bad extension before any work
    stem = trajectory.with_suffix("")
    final_path, plot_path = Path(f"{stem}_final.extxyz"), stem.with_suffix(".png")

    start_step, start_time_ps = 0, 0.0
    if restart:
        frame = out.read_last_frame(trajectory)
        if not np.array_equal(frame.numbers, atoms.numbers):
            raise MDError(f"cannot restart: {trajectory} holds a different structure "
                          f"({frame.get_chemical_formula()} vs {atoms.get_chemical_formula()})")
        atoms.set_cell(frame.cell, scale_atoms=False)
        atoms.pbc = frame.pbc
        atoms.positions = frame.positions
        start_step = int(frame.info.get("step", 0))
        start_time_ps = float(frame.info.get("time_ps", 0.0))
    rng = np.random.default_rng([seed, start_step])  # a restart draws fresh noise
    if restart and frame.has("momenta"):
        atoms.set_momenta(frame.get_momenta(), apply_constraint=False)
    else:
        from ase.md.velocitydistribution import Stationary, thermalize_momenta

        thermalize_momenta(atoms, temperature_K=temperature_K, rng=rng)
        Stationary(atoms)  # no drift of the centre of mass
    atoms.calc = calc
    dyn = make_dynamics(atoms, ensemble, timestep_fs, temperature_K, pressure_GPa,
                        friction_per_fs, tdamp_fs, pdamp_fs, barostat, rng)

    columns = out.LOG_COLUMNS + ((out.UNCERTAINTY_COLUMN,) if ensemble_calc else ())
    csv_log = out.CSVLog(log, columns, append=restart)
    traj = out.TrajectoryFile(trajectory, append=restart)
    max_temperature = MAX_TEMPERATURE_FACTOR * max(temperature_K, 10.0)
    state = {"last_good": None, "written": start_step if restart else -1, "max_std": None}
    stopped: str | None = None
    exploded = ""

    def record(frame: Atoms, max_std: float | None) -> None:
        if frame.info["step"] > state["written"]:
            traj.write(frame)
            csv_log.write(out.log_row(frame, max_std))
            state["written"] = frame.info["step"]

    want_stress = bool(atoms.pbc.all())
    t_start = time.perf_counter()
    previous = atoms.positions.copy()
    step = start_step
    try:
        with _StopFlag() as stop:
            for _ in dyn.irun(steps):
                step = start_step + dyn.nsteps
                exploded = _explosion(atoms, previous, max_temperature)
                if exploded:
                    break
                previous = atoms.positions.copy()
                if want_stress:
                    try:  # frames and log carry stress (MLCalculator computes it with forces)
                        atoms.get_stress()
                    except PropertyNotImplementedError:
                        want_stress = False
                frame = out.snapshot(atoms, step, start_time_ps + (step - start_step)
                                     * timestep_fs * 1e-3)
                max_std = None
                if ensemble_calc:
                    max_std = float(np.max(calc.results["forces_std"]))
                    state["max_std"] = max(max_std, state["max_std"] or 0.0)
                state["last_good"] = (frame, max_std)
                if step % interval == 0 or dyn.nsteps == steps:
                    record(frame, max_std)
                if uncertainty_threshold is not None and max_std > uncertainty_threshold \
                        and on_uncertainty == "stop":
                    stopped = "uncertainty"
                    break
                if progress is not None and dyn.nsteps % interval == 0 and dyn.nsteps > 0:
                    elapsed = time.perf_counter() - t_start
                    rate = dyn.nsteps / elapsed
                    progress(dyn.nsteps, steps, rate * timestep_fs * 1e-6 * 86400,
                             (steps - dyn.nsteps) / rate)
                if stop.set:
                    stopped = "interrupted"
                    break
    except KeyboardInterrupt:
        stopped = "interrupted"  # raised mid-step or by an observer: use the last good state
    wall = time.perf_counter() - t_start
    try:
        if state["last_good"] is not None:
            frame, max_std = state["last_good"]
            record(frame, max_std)
            # leave the caller's atoms in the last good state, never a half step
            atoms.set_cell(frame.cell, scale_atoms=False)
            atoms.positions = frame.positions
            atoms.set_momenta(frame.get_momenta(), apply_constraint=False)
            from ase.io.extxyz import write_extxyz

            with open(final_path, "w") as fh:
                write_extxyz(fh, [frame])
    finally:
        traj.close()
        csv_log.close()
    out.plot_md_log(log, plot_path)
    last_step = state["last_good"][0].info["step"] if state["last_good"] else start_step
    if exploded:
        raise MDExplodedError(f"MD exploded at step {step}: {exploded}; stopped, last good "
                              f"frame (step {last_step}) kept in {trajectory}")
    done = last_step - start_step
    return MDSummary(
        steps=done, last_step=last_step,
        time_ps=start_time_ps + done * timestep_fs * 1e-3, wall_s=wall,
        ns_per_day=done * timestep_fs * 1e-6 * 86400 / wall if wall > 0 and done else 0.0,
        stopped=stopped, trajectory=trajectory, log=log, final_structure=final_path,
        plot=plot_path, frames_written=traj.n_written, max_forces_std=state["max_std"])


__all__ = ["BAROSTATS", "ENSEMBLES", "MDError", "MDExplodedError", "MDSummary",
           "make_dynamics", "run_md"]
