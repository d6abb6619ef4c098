"""Molecular dynamics with ASE's own integrators: NVE, NVT (Langevin, Bussi,
Nosé–Hoover chain) and NPT (isotropic MTK or Berendsen).

    >>> summary = run_md(atoms, MLCalculator("cu-emt"), ensemble="nvt-langevin",
    ...                  steps=1000, temperature_K=300)     # doctest: +SKIP

:func:`run_md` adds what a long run needs around ``dyn.irun``: files written
and flushed as it goes (see :mod:`mlcalc.simulate.md_output`), restart from
the trajectory's last frame, a clean stop on Ctrl-C / SIGTERM, a stop with
:class:`MDExplodedError` when the dynamics blows up (the bad frame is never
written), and an uncertainty stop for ensembles of models. The options are
:class:`~mlcalc.simulate.md_settings.MDSettings`.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError

from mlcalc.exceptions import InvalidStructureError, MlcalcError, NonFiniteResultError
from mlcalc.simulate import md_output as out
from mlcalc.simulate.md_settings import BAROSTATS, ENSEMBLES, MDError, MDSettings
from mlcalc.simulate.outputs import output_lock, refuse_existing

#: Explosion limits: any |F| above this (eV/Å) ...
MAX_FORCE = 1e3
#: ... any atom moving more than this in one step (Å) ...
MAX_STEP_DISPLACEMENT = 2.0
#: ... or a temperature above this multiple of max(target, 10 K).
MAX_TEMPERATURE_FACTOR = 100.0


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


def run_md(atoms: Atoms, calc: Calculator, settings: MDSettings | None = None, *,
           trajectory: str | Path = "md.extxyz", log: str | Path = "md.csv",
           restart: bool = False, overwrite: bool = False,
           progress: Callable[[int, int, float, float], None] | None = None,
           **options: object) -> MDSummary:
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
    continue, and both files are appended to; a damaged last frame (a crash
    or a full disk mid-write) is cut off with one
    :class:`~mlcalc.simulate.md_output.RestartRepairWarning` and the run
    continues from the last complete frame. NVE from a ``.traj`` trajectory
    continues bit for bit (float64 frames); extxyz stores 8 decimals, so it
    continues to ~1e-8 Å. Stochastic thermostats draw new noise (seeded by
    ``seed`` and the start step) and Nosé–Hoover / MTK restart their chain
    and barostat variables at zero: the ensemble is right, the path differs.

    Args:
        atoms: structure (N atoms); on restart only its numbers are checked.
        calc: an ASE calculator, normally :class:`mlcalc.MLCalculator`.
        settings: the run's options (:class:`MDSettings`); ``**options``
            (its field names: ``ensemble``, ``steps``, ``timestep_fs``,
            ``temperature_K``, ...) build them or replace some of them.
        trajectory: ``.extxyz`` / ``.xyz`` or ``.traj`` file.
        log: CSV file (columns in :data:`mlcalc.simulate.md_output.LOG_COLUMNS`,
            plus ``max_forces_std`` for ensembles).
        restart: continue from the trajectory's last frame.
        overwrite: replace the files of an earlier run (without it they are
            refused). They are replaced at the first frame: a run that fails
            before it leaves them as they were.
        progress: called every ``interval`` steps as ``progress(steps_done,
            steps, ns_per_day, eta_s)`` (counts of this call).

    Raises:
        MDExplodedError: NaN, a force above MAX_FORCE, a jump > MAX_STEP_DISPLACEMENT
            or a runaway temperature; the last good state is kept in the files.
        UnknownNameError, MDError, InvalidStructureError, FileNotFoundError:
            bad options, NPT without a periodic cell, nothing to restart from.
        OutputExistsError: the files of an earlier run exist (and not
            ``overwrite`` or ``restart``).
        OutputLockedError: another run is writing the same files.
    """
    settings = replace(settings or MDSettings(), **options) if options else (
        settings or MDSettings())
    run = _MDRun(atoms, calc, settings, Path(trajectory), Path(log), progress)
    with output_lock(run.trajectory.with_suffix("")):
        if not restart:
            refuse_existing(run.outputs, overwrite)
        run.restore(restart)
        run.thermalise(restart)
        run.open_files(restart)
        try:
            run.loop()
            run.record_last_good()
        finally:
            run.close_files()
        return run.finish()


def output_files(trajectory: str | Path, log: str | Path) -> tuple[Path, Path, Path, Path]:
    """The files a run writes: trajectory, log, ``<stem>_final.extxyz``, ``<stem>.png``."""
    trajectory = Path(trajectory)
    stem = trajectory.with_suffix("")
    return trajectory, Path(log), Path(f"{stem}_final.extxyz"), stem.with_suffix(".png")


class _MDRun:
    """The state of one :func:`run_md` call, split where the data changes hands."""

    def __init__(self, atoms: Atoms, calc: Calculator, settings: MDSettings, trajectory: Path,
                 log: Path, progress: Callable | None) -> None:
        self.atoms, self.calc, self.settings = atoms, calc, settings
        self.progress = progress
        self.ensemble_calc = "forces_std" in getattr(calc, "implemented_properties", ())
        if settings.uncertainty_threshold is not None and not self.ensemble_calc:
            raise MDError("uncertainty_threshold needs an ensemble of models "
                          "(several model files)")
        out.trajectory_format(trajectory)  # refuse a bad extension before any work
        settings.check_structure(atoms)
        self.trajectory, self.log = trajectory, log
        self.outputs = output_files(trajectory, log)
        self.final_path, self.plot_path = self.outputs[2:]
        self.start_step, self.start_time_ps = 0, 0.0
        self.frame: Atoms | None = None  # restart frame
        self.last_good: tuple[Atoms, float | None] | None = None
        self.written = -1  # global step of the last frame written
        self.max_std: float | None = None
        self.stopped: str | None = None
        self.exploded, self.step, self.wall = "", 0, 0.0

    def restore(self, restart: bool) -> None:
        """On restart: positions, cell and step/time from the trajectory's last frame."""
        if not restart:
            return
        frame = out.restart_frame(self.trajectory)
        atoms = self.atoms
        if not np.array_equal(frame.numbers, atoms.numbers):
            raise MDError(f"cannot restart: {self.trajectory} holds a different structure "
                          f"({frame.get_chemical_formula()} vs {atoms.get_chemical_formula()})")
        out.trim_log(self.log, int(frame.info.get("step", 0)))
        atoms.set_cell(frame.cell, scale_atoms=False)
        atoms.pbc = frame.pbc
        atoms.positions = frame.positions
        self.start_step = self.written = int(frame.info.get("step", 0))
        self.start_time_ps = float(frame.info.get("time_ps", 0.0))
        self.frame = frame

    def thermalise(self, restart: bool) -> None:
        """Momenta (the frame's on restart, else Maxwell–Boltzmann) and the integrator."""
        s, atoms = self.settings, self.atoms
        rng = np.random.default_rng([s.seed, self.start_step])  # a restart draws fresh noise
        if restart and self.frame.has("momenta"):
            atoms.set_momenta(self.frame.get_momenta(), apply_constraint=False)
        else:
            from ase.md.velocitydistribution import Stationary, thermalize_momenta

            thermalize_momenta(atoms, temperature_K=s.temperature_K, rng=rng)
            Stationary(atoms)  # no drift of the centre of mass
        atoms.calc = self.calc
        self.dyn = s.make_dynamics(atoms, rng)

    def open_files(self, restart: bool) -> None:
        columns = out.LOG_COLUMNS + ((out.UNCERTAINTY_COLUMN,) if self.ensemble_calc else ())
        self.csv_log = out.CSVLog(self.log, columns, append=restart)
        self.traj = out.TrajectoryFile(self.trajectory, append=restart)

    def close_files(self) -> None:
        self.traj.close()
        self.csv_log.close()

    def record(self, frame: Atoms, max_std: float | None) -> None:
        if frame.info["step"] > self.written:
            if self.traj.n_written == 0 and not self.traj.append:
                # a new run replaces an earlier one's files (overwrite): all of them
                for stale in (self.final_path, self.plot_path):
                    stale.unlink(missing_ok=True)
            self.traj.write(frame)
            self.csv_log.write(out.log_row(frame, max_std))
            self.written = frame.info["step"]

    def loop(self) -> None:
        """Integrate, keeping the last good state; stop on signals, explosions, uncertainty."""
        s, atoms, dyn = self.settings, self.atoms, self.dyn
        max_temperature = MAX_TEMPERATURE_FACTOR * max(s.temperature_K, 10.0)
        self.want_stress = bool(atoms.pbc.all())
        t_start = time.perf_counter()
        previous = atoms.positions.copy()
        try:
            with _StopFlag() as stop:
                for _ in dyn.irun(s.steps):
                    self.step = self.start_step + dyn.nsteps
                    self.exploded = _explosion(atoms, previous, max_temperature)
                    if self.exploded:
                        break
                    previous = atoms.positions.copy()
                    if self._after_step(t_start) or stop.set:
                        self.stopped = self.stopped or "interrupted"
                        break
        except KeyboardInterrupt:
            self.stopped = "interrupted"  # mid-step or by an observer: use the last good state
        except (NonFiniteResultError, InvalidStructureError) as err:
            if self.last_good is None:
                raise  # the starting structure itself: the calculator's own message
            self.exploded = str(err)  # e.g. atoms driven onto each other mid-run
            self.step = self.start_step + dyn.nsteps + 1
        self.wall = time.perf_counter() - t_start

    def _after_step(self, t_start: float) -> bool:
        """Keep and record the state of a good step; True when the run should stop."""
        s, atoms, dyn = self.settings, self.atoms, self.dyn
        if self.want_stress:
            try:  # frames and log carry stress (MLCalculator computes it with forces)
                atoms.get_stress()
            except PropertyNotImplementedError:
                self.want_stress = False
        frame = out.snapshot(atoms, self.step, self.start_time_ps
                             + (self.step - self.start_step) * s.timestep_fs * 1e-3)
        max_std = None
        if self.ensemble_calc:
            max_std = float(np.max(self.calc.results["forces_std"]))
            self.max_std = max(max_std, self.max_std or 0.0)
        self.last_good = (frame, max_std)
        if self.step % s.interval == 0 or dyn.nsteps == s.steps:
            self.record(frame, max_std)
        if self.progress is not None and dyn.nsteps % s.interval == 0 and dyn.nsteps > 0:
            rate = dyn.nsteps / (time.perf_counter() - t_start)
            self.progress(dyn.nsteps, s.steps, rate * s.timestep_fs * 1e-6 * 86400,
                          (s.steps - dyn.nsteps) / rate)
        if s.uncertainty_threshold is not None and max_std > s.uncertainty_threshold \
                and s.on_uncertainty == "stop":
            self.stopped = "uncertainty"
            return True
        return False

    def record_last_good(self) -> None:
        """The last good state goes to the files even when it fell between intervals."""
        if self.last_good is not None:
            self.record(*self.last_good)

    def finish(self) -> MDSummary:
        """Final structure and plot of the last good state, which is left in ``atoms``."""
        if self.last_good is not None:
            frame = self.last_good[0]
            atoms = self.atoms  # the last good state, never a half step
            atoms.set_cell(frame.cell, scale_atoms=False)
            atoms.positions = frame.positions
            atoms.set_momenta(frame.get_momenta(), apply_constraint=False)
            from ase.io.extxyz import write_extxyz

            with open(self.final_path, "w") as fh:
                write_extxyz(fh, [frame])
        if self.log.is_file():  # no log when not even the first frame was good
            out.plot_md_log(self.log, self.plot_path)
        last_step = self.last_good[0].info["step"] if self.last_good else self.start_step
        if self.exploded:
            kept = (f"last good frame (step {last_step}) kept in {self.trajectory}"
                    if self.last_good else "no step was good, so no file was written")
            raise MDExplodedError(f"MD exploded at step {self.step}: {self.exploded}; "
                                  f"stopped, {kept}")
        done, dt_ps = last_step - self.start_step, self.settings.timestep_fs * 1e-3
        wall = self.wall
        return MDSummary(
            steps=done, last_step=last_step, time_ps=self.start_time_ps + done * dt_ps,
            wall_s=wall, ns_per_day=done * dt_ps * 1e-3 * 86400 / wall if wall > 0 and done
            else 0.0, stopped=self.stopped, trajectory=self.trajectory, log=self.log,
            final_structure=self.final_path, plot=self.plot_path,
            frames_written=self.traj.n_written, max_forces_std=self.max_std)


__all__ = ["BAROSTATS", "ENSEMBLES", "MDError", "MDExplodedError", "MDSettings", "MDSummary",
           "output_files", "run_md"]
