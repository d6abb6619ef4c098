"""Files written by :func:`mlcalc.simulate.md.run_md`: trajectory, CSV log, plot.

Everything is written as the run goes and flushed after each frame or line,
so a run that is killed leaves files that ``ase.io.read`` and ``csv`` read.
Files are opened at their first write, so a run that fails before its first
frame leaves existing files as they were. A restart reads the last *complete*
frame; a damaged tail (a crash or a full disk mid-frame) is cut off, its bytes
kept in ``<file>.damaged`` (:func:`restart_frame`, :func:`trim_log`).
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from pathlib import Path
from typing import IO

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from mlcalc.exceptions import MlcalcWarning

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

    The file is opened at the first :meth:`write`: until then an existing
    file is untouched.

    Args:
        path: file name; the extension picks the format.
        append: add to an existing file instead of replacing it.
    """

    def __init__(self, path: str | os.PathLike, append: bool) -> None:
        self.path = Path(path)
        self.format = trajectory_format(path)
        self.append = append
        self.n_written = 0
        self._out = None

    def _open(self):
        mode = "a" if self.append else "w"
        if self.format == "traj":
            from ase.io.trajectory import Trajectory

            return Trajectory(str(self.path), mode)
        return open(self.path, mode)

    def write(self, frame: Atoms) -> None:
        """Append one frame (positions, cell, momenta, results, step, time)."""
        if self._out is None:
            self._out = self._open()
        if self.format == "traj":
            self._out.write(frame)  # ULM syncs and flushes its index on every write
        else:
            from ase.io.extxyz import write_extxyz

            write_extxyz(self._out, [frame])
            self._out.flush()
        self.n_written += 1

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


class RestartRepairWarning(MlcalcWarning):
    """A restart cut off a damaged tail of a trajectory or log (kept in ``.damaged``)."""


def _complete_extxyz(data: bytes) -> list[tuple[int, int]]:
    """(start, end) byte offsets of the complete frames of an extxyz file."""
    frames = []
    lines = data.split(b"\n")[:-1]  # the last piece lacks its newline: never complete
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line) + 1)
    i = 0
    while i < len(lines):
        try:
            n = int(lines[i].strip())
        except ValueError:
            break
        if n < 0 or i + 2 + n > len(lines):
            break
        frames.append((offsets[i], offsets[i + 2 + n]))
        i += 2 + n
    return frames


def _restart_extxyz(path: Path) -> Atoms:
    data = path.read_bytes()
    for start, end in reversed(_complete_extxyz(data)):
        try:
            frame = read_frame_text(data[start:end].decode())
        except Exception:  # noqa: BLE001 - a garbled frame: try the one before
            continue
        if end < len(data):
            kept = keep_damaged_tail(path, end)
            warnings.warn(f"{path}: the frames after step {frame.info.get('step', '?')} are "
                          f"damaged (a crash or a full disk?); restarting from that step, the "
                          f"damaged file kept as {kept}", RestartRepairWarning, stacklevel=3)
        return frame
    raise FileNotFoundError(f"cannot restart: {path} holds no complete frame")


def read_frame_text(text: str) -> Atoms:
    """One extxyz frame from its text."""
    from ase.io.extxyz import read_extxyz

    return next(read_extxyz(io.StringIO(text), index=slice(0, 1)))


def keep_damaged_tail(path: Path, end: int) -> Path:
    """Keep ``path`` as ``<path>.damaged`` and cut it to its first ``end`` bytes."""
    from mlcalc.simulate.outputs import keep_damaged

    kept = keep_damaged(path)
    with open(path, "r+b") as fh:
        fh.truncate(end)
    return kept


def _restart_traj(path: Path) -> Atoms:
    from ase.io.trajectory import Trajectory, TrajectoryWriter

    try:
        reader = Trajectory(str(path))
        n = len(reader)
    except Exception:  # noqa: BLE001 - an unreadable header
        raise FileNotFoundError(f"cannot restart: {path} is not a readable trajectory "
                                "(empty or damaged from its start)") from None
    good = []
    for k in range(n):
        try:
            good.append(reader[k])
        except Exception:  # noqa: BLE001 - a damaged frame ends the usable part
            break
    reader.close()
    if not good:
        raise FileNotFoundError(f"cannot restart: {path} holds no complete frame")
    if len(good) < n:
        from mlcalc.simulate.outputs import keep_damaged

        kept = keep_damaged(path)
        tmp = path.with_name(f".{path.name}.repair{os.getpid()}")
        with TrajectoryWriter(str(tmp), "w") as writer:
            for frame in good:
                writer.write(frame)
        os.replace(tmp, path)
        warnings.warn(f"{path}: the frames after step {good[-1].info.get('step', '?')} are "
                      f"damaged (a crash or a full disk?); restarting from that step, the "
                      f"damaged file kept as {kept}", RestartRepairWarning, stacklevel=3)
    return good[-1]


def restart_frame(path: str | os.PathLike) -> Atoms:
    """The last complete frame of a trajectory written by :class:`TrajectoryFile`.

    A damaged tail is cut off (the whole file kept as ``<path>.damaged``) with
    one :class:`RestartRepairWarning`, so the restart appends to intact frames.

    Raises:
        FileNotFoundError: no trajectory, or one with no complete frame.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cannot restart: trajectory {path} not found")
    if trajectory_format(path) == "traj":
        return _restart_traj(path)
    return _restart_extxyz(path)


def trim_log(path: str | os.PathLike, last_step: int) -> None:
    """Cut the CSV log after ``last_step`` (and a partial last line) before a restart appends.

    A log written past the trajectory's last complete frame would otherwise
    hold those steps twice. The untrimmed file is kept as ``<path>.damaged``.
    """
    path = Path(path)
    if not path.is_file():
        return
    data = path.read_bytes()
    lines = data.split(b"\n")
    end = len(lines[0]) + 1 if len(lines) > 1 else 0  # the header
    for line in lines[1:-1]:
        try:
            if int(line.split(b",", 1)[0]) > last_step:
                break
        except ValueError:
            break
        end += len(line) + 1
    if end < len(data):
        keep_damaged_tail(path, end)


class CSVLog:
    """The MD log: one CSV line per logged step, flushed as written.

    On ``append`` the existing header must match, so a restarted run never
    mixes columns.
    """

    def __init__(self, path: str | os.PathLike, columns: tuple[str, ...], append: bool) -> None:
        self.path = Path(path)
        self.columns = columns
        self.append = append and self.path.is_file() and self.path.stat().st_size > 0
        if self.append:
            with open(self.path, newline="") as fh:
                header = tuple(next(csv.reader(fh), []))
            if header != columns:
                raise ValueError(f"cannot append to {path}: its columns {', '.join(header)} "
                                 f"differ from this run's {', '.join(columns)}")
        self._fh: IO[str] | None = None  # opened at the first row

    def write(self, row: dict[str, float | int | str]) -> None:
        if self._fh is None:
            self._fh = open(self.path, "a" if self.append else "w", newline="")
            self._writer = csv.DictWriter(self._fh, fieldnames=list(self.columns),
                                          extrasaction="ignore")
            if not self.append:
                self._writer.writeheader()
        self._writer.writerow(row)
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


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


__all__ = ["CSVLog", "LOG_COLUMNS", "RestartRepairWarning", "TrajectoryFile",
           "UNCERTAINTY_COLUMN", "log_row", "plot_md_log", "restart_frame", "snapshot",
           "trajectory_format", "trim_log"]
