"""Files written by :func:`mlcalc.simulate.md.run_md`: trajectory, CSV log, plot.

Everything is written as the run goes and flushed after each frame or line,
so a run that is killed leaves files that ``ase.io.read`` and ``csv`` read.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import IO

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

#: CSV columns, in order (``max_forces_std`` only for ensembles of models).
LOG_COLUMNS = ("step", "time_ps", "epot_eV", "ekin_eV", "etot_eV", "temperature_K",
               "pressure_GPa", "volume_A3")
UNCERTAINTY_COLUMN = "max_forces_std"

TRAJECTORY_FORMATS = {".extxyz": "extxyz", ".xyz": "extxyz", ".traj": "traj"}


def trajectory_format(path: str | os.PathLike) -> str:
    """``"extxyz"`` or ``"traj"`` from the file extension (ValueError otherwise)."""
    suffix = Path(path).suffix.lower()
    if suffix not in TRAJECTORY_FORMATS:
        raise ValueError(f"trajectory {path}: unknown extension '{suffix}' "
                         f"(use one of {', '.join(TRAJECTORY_FORMATS)})")
    return TRAJECTORY_FORMATS[suffix]


def snapshot(atoms: Atoms, step: int, time_ps: float) -> Atoms:
    """A frozen copy of ``atoms`` with its current results, step and time.

    Only energy, forces and (when computed) stress are kept, in a
    SinglePointCalculator: they are the results ASE's readers understand, and
    a copy costs microseconds, so one is kept per step as the last good state.

    Args:
        atoms: the dynamics' atoms, with a calculator holding current results.
        step: global MD step number.
        time_ps: simulated time in ps.
    """
    frame = atoms.copy()
    results = atoms.calc.results
    kept = {k: np.array(results[k], copy=True) for k in ("energy", "forces", "stress")
            if k in results}
    frame.calc = SinglePointCalculator(frame, **kept)
    frame.info["step"] = int(step)
    frame.info["time_ps"] = float(time_ps)
    return frame


def log_row(frame: Atoms, max_forces_std: float | None = None) -> dict[str, float | int | str]:
    """One CSV row from a :func:`snapshot` (pressure and volume only when periodic)."""
    epot = frame.get_potential_energy()
    ekin = frame.get_kinetic_energy()
    row: dict[str, float | int | str] = {
        "step": frame.info["step"], "time_ps": f"{frame.info['time_ps']:.6f}",
        "epot_eV": f"{epot:.10g}", "ekin_eV": f"{ekin:.10g}", "etot_eV": f"{epot + ekin:.10g}",
        "temperature_K": f"{frame.get_temperature():.6g}", "pressure_GPa": "", "volume_A3": ""}
    if frame.pbc.all():
        row["volume_A3"] = f"{frame.get_volume():.8g}"
        if "stress" in frame.calc.results:
            # thermodynamic pressure: virial plus the ideal-gas (kinetic) term
            stress = frame.get_stress(voigt=False, include_ideal_gas=True)
            row["pressure_GPa"] = f"{-np.trace(stress) / 3 / units.GPa:.6g}"
    if max_forces_std is not None:
        row[UNCERTAINTY_COLUMN] = f"{max_forces_std:.6g}"
    return row


class TrajectoryFile:
    """Append-only trajectory (extxyz or ASE .traj), flushed after every frame.

    Args:
        path: file name; the extension picks the format.
        append: add to an existing file instead of replacing it.
    """

    def __init__(self, path: str | os.PathLike, append: bool) -> None:
        self.path = Path(path)
        self.format = trajectory_format(path)
        self.n_written = 0
        if self.format == "traj":
            from ase.io.trajectory import Trajectory

            self._traj = Trajectory(str(path), "a" if append else "w")
        else:
            self._fh: IO[str] = open(path, "a" if append else "w")

    def write(self, frame: Atoms) -> None:
        """Append one frame (positions, cell, momenta, results, step, time)."""
        if self.format == "traj":
            self._traj.write(frame)  # ULM syncs and flushes its index on every write
        else:
            from ase.io.extxyz import write_extxyz

            write_extxyz(self._fh, [frame])
            self._fh.flush()
        self.n_written += 1

    def close(self) -> None:
        if self.format == "traj":
            self._traj.close()
        else:
            self._fh.close()


def read_last_frame(path: str | os.PathLike) -> Atoms:
    """The last frame of a trajectory written by :class:`TrajectoryFile`."""
    import ase.io

    if not Path(path).is_file():
        raise FileNotFoundError(f"cannot restart: trajectory {path} not found")
    return ase.io.read(path, index=-1, format=trajectory_format(path))


class CSVLog:
    """The MD log: one CSV line per logged step, flushed as written.

    On ``append`` the existing header must match, so a restarted run never
    mixes columns.
    """

    def __init__(self, path: str | os.PathLike, columns: tuple[str, ...], append: bool) -> None:
        self.path = Path(path)
        self.columns = columns
        exists = append and self.path.is_file() and self.path.stat().st_size > 0
        if exists:
            with open(self.path, newline="") as fh:
                header = tuple(next(csv.reader(fh), []))
            if header != columns:
                raise ValueError(f"cannot append to {path}: its columns {', '.join(header)} "
                                 f"differ from this run's {', '.join(columns)}")
        self._fh = open(self.path, "a" if append else "w", newline="")
        self._writer = csv.DictWriter(self._fh, fieldnames=list(columns), extrasaction="ignore")
        if not exists:
            self._writer.writeheader()
            self._fh.flush()

    def write(self, row: dict[str, float | int | str]) -> None:
        self._writer.writerow(row)
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def plot_md_log(log: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Energies (potential, kinetic, total) and temperature against time.

    Args:
        log: CSV written by :class:`CSVLog` (a restarted run's whole history).
        out: PNG file to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(log, newline="") as fh:
        rows = list(csv.DictReader(fh))
    data = {k: np.array([float(r[k]) for r in rows]) for k in
            ("time_ps", "epot_eV", "ekin_eV", "etot_eV", "temperature_K")}
    fig, (ax_e, ax_t) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    # Potential and total energy are large and close: both are shifted by the
    # first total energy, so E_pot + E_kin = E_tot still reads off the plot
    # and a drift of the total is visible.
    e0 = data["etot_eV"][0] if len(rows) else 0.0
    ax_e.plot(data["time_ps"], data["epot_eV"] - e0, label="potential")
    ax_e.plot(data["time_ps"], data["ekin_eV"], label="kinetic")
    ax_e.plot(data["time_ps"], data["etot_eV"] - e0, label="total", color="k")
    ax_e.set_ylabel("energy (eV)")
    ax_e.set_title(f"potential and total energy shifted by {-e0:+.6g} eV", fontsize="small")
    ax_e.legend(loc="best", fontsize="small")
    ax_t.plot(data["time_ps"], data["temperature_K"], color="C3")
    ax_t.set_ylabel("temperature (K)")
    ax_t.set_xlabel("time (ps)")
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


__all__ = ["CSVLog", "LOG_COLUMNS", "TrajectoryFile", "UNCERTAINTY_COLUMN", "log_row",
           "plot_md_log", "read_last_frame", "snapshot", "trajectory_format"]
