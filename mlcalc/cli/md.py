"""``mlcalc md STRUCTURE -m MODEL``: molecular dynamics with ASE's integrators.

A thin layer over :func:`mlcalc.simulate.md.run_md`. Several ``-m`` options
make an ensemble of models (``-m a.pt -m b.pt``; repeated flags rather than a
comma list, so file names may hold commas). Exit codes: 0 all steps done,
1 an error (one ``Error:`` line), 3 stopped by the uncertainty threshold,
130 interrupted (Ctrl-C or SIGTERM; the files are complete up to that step).
"""

from __future__ import annotations

import sys

import click

from mlcalc.cli.common import device_option, dtype_option, one_line_errors, threads_option
from mlcalc.simulate.md_settings import BAROSTATS, ENSEMBLES, UNCERTAINTY_ACTIONS, MDSettings

EXIT_UNCERTAINTY = 3
EXIT_INTERRUPTED = 130


class _ProgressBar:
    """A ``progress(done, total, ns_per_day, eta_s)`` callback for stderr.

    On a terminal a click bar (made on the first call, when the total is
    known); otherwise (a batch job, a pipe) a plain line at every tenth of the
    run, which a log file keeps readable.
    """

    def __init__(self, unit: str = "step") -> None:
        self._bar = None
        self._done = 0
        self._plain = not sys.stderr.isatty()
        self._next_tenth = 1
        self._unit = unit

    def __call__(self, done: int, total: int, ns_per_day: float, eta_s: float) -> None:
        if self._plain:
            if done * 10 >= self._next_tenth * total:
                click.echo(f"md: {self._unit} {done}/{total} ({100 * done // max(total, 1)}%), "
                           f"{ns_per_day:.3g} ns/day, ETA {eta_s:.0f} s", err=True)
                self._next_tenth = 10 * done // max(total, 1) + 1
            return
        if self._bar is None:
            self._bar = click.progressbar(length=max(total, 1), label="md", file=sys.stderr,
                                          show_eta=False, item_show_func=lambda item: item)
            self._bar.__enter__()
        self._bar.current_item = f"{ns_per_day:.3g} ns/day, ETA {eta_s:.0f} s"
        self._bar.update(done - self._done)
        self._done = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)


@click.command("md")
@click.argument("structure", type=click.Path(dir_okay=False))
@click.option("-m", "--model", "models", multiple=True, required=True,
              help="Model file or bundled model name; repeat for an ensemble of models.")
@device_option
@dtype_option
@threads_option
@click.option("--ensemble", default="nvt-langevin", show_default=True,
              help=", ".join(ENSEMBLES) + ".")
@click.option("--temperature-K", "temperature_K", type=float, default=300.0, show_default=True,
              help="Target temperature and of the initial velocities, K.")
@click.option("--timestep-fs", type=float, default=1.0, show_default=True, help="Time step, fs.")
@click.option("--pressure-GPa", "pressure_GPa", type=float, default=0.0, show_default=True,
              help="NPT pressure, GPa.")
@click.option("--friction-per-fs", type=float, default=0.01, show_default=True,
              help="Langevin friction, 1/fs.")
@click.option("--tdamp-fs", type=float, default=100.0, show_default=True,
              help="Thermostat time constant (Bussi, Nose-Hoover, NPT), fs.")
@click.option("--pdamp-fs", type=float, default=1000.0, show_default=True,
              help="Barostat time constant (NPT), fs.")
@click.option("--barostat", type=click.Choice(BAROSTATS), default="mtk",
              show_default=True, help="NPT barostat: isotropic MTK or Berendsen.")
@click.option("--steps", type=int, default=1000, show_default=True, help="Steps to run.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the initial velocities and thermostat noise.")
@click.option("-o", "--output", "prefix", default="md", show_default=True,
              help="Output prefix: PREFIX.extxyz|traj, PREFIX.csv, PREFIX_final.extxyz, "
                   "PREFIX.png (an extension given is dropped; folders are created).")
@click.option("--overwrite", is_flag=True,
              help="Replace the files of an earlier run with this prefix (else refused).")
@click.option("--interval", type=int, default=10, show_default=True,
              help="Steps between trajectory frames and log lines.")
@click.option("--format", "fmt", type=click.Choice(["extxyz", "traj"]), default="extxyz",
              show_default=True, help="Trajectory format (traj: binary, exact restart).")
@click.option("--restart", is_flag=True,
              help="Continue from the last frame of PREFIX's trajectory and append.")
@click.option("--uncertainty-threshold", type=float, default=None,
              help="Ensembles: max per-atom forces_std (eV/Å) that stops or is recorded.")
@click.option("--on-uncertainty", type=click.Choice(UNCERTAINTY_ACTIONS), default="stop",
              show_default=True, help="What to do when the threshold is exceeded.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("--replicas", type=int, default=None,
              help="N independent trajectories of STRUCTURE in one TorchSim batch (an input "
                   "with many frames runs one per frame): PREFIX_000.extxyz, ...")
@one_line_errors
def md(structure: str, models: tuple[str, ...], device: str, dtype: str | None,
       threads: int | None, ensemble: str, temperature_K: float, timestep_fs: float,
       pressure_GPa: float, friction_per_fs: float, tdamp_fs: float, pdamp_fs: float,
       barostat: str, steps: int, seed: int, prefix: str, interval: int, fmt: str,
       restart: bool, uncertainty_threshold: float | None, on_uncertainty: str,
       no_progress: bool, overwrite: bool, replicas: int | None) -> None:
    """Run molecular dynamics of STRUCTURE (any file ase.io reads) with MODEL.

    With --replicas N, or a STRUCTURE file with many frames, independent
    trajectories run in one TorchSim batch (nve or nvt-langevin).
    """
    # every option is checked before a structure is read or a model loaded
    settings = MDSettings(
        ensemble=ensemble, steps=steps, timestep_fs=timestep_fs, temperature_K=temperature_K,
        pressure_GPa=pressure_GPa, friction_per_fs=friction_per_fs, tdamp_fs=tdamp_fs,
        pdamp_fs=pdamp_fs, barostat=barostat, seed=seed, interval=interval,
        uncertainty_threshold=uncertainty_threshold, on_uncertainty=on_uncertainty)
    if uncertainty_threshold is not None and len(models) < 2:
        from mlcalc.simulate.md_settings import MDError

        raise MDError("--uncertainty-threshold needs an ensemble of models (repeat -m)")

    from mlcalc.cli.common import make_calculator, read_structure
    from mlcalc.simulate.md import output_files, run_md
    from mlcalc.simulate.outputs import output_lock, refuse_existing

    prefix = _strip_extension(prefix)
    from mlcalc.cli.md_replicas import many_frames, run_batched

    if replicas is not None or many_frames(structure):
        run_batched(structure, models, device, dtype, threads, settings, prefix, fmt, replicas,
                    restart, overwrite, None if no_progress else _ProgressBar("atom-step"))
        return
    trajectory, log = f"{prefix}.{fmt}", f"{prefix}.csv"
    with output_lock(prefix):  # before reading anything: a second run stops at once
        if not restart:
            refuse_existing(output_files(trajectory, log), overwrite, "--overwrite or another -o")
        atoms = read_structure(structure)
        settings.check_structure(atoms)
        calc = make_calculator(list(models) if len(models) > 1 else models[0], device, dtype,
                               threads)
        progress = None if no_progress else _ProgressBar()
        try:
            summary = run_md(atoms, calc, settings, trajectory=trajectory, log=log,
                             restart=restart, overwrite=overwrite, progress=progress)
        finally:
            if progress is not None:
                progress.close()
    _report(summary, uncertainty_threshold)


def _strip_extension(prefix: str) -> str:
    """``-o out.extxyz`` means the prefix ``out`` (not ``out.extxyz.extxyz`` beside ``out.png``)."""
    for ext in (".extxyz", ".xyz", ".traj", ".csv", ".png"):
        if prefix.lower().endswith(ext) and len(prefix) > len(ext):
            return prefix[: -len(ext)]
    return prefix


def _report(summary, uncertainty_threshold: float | None) -> None:
    """One line on what the run did; exit 130 if interrupted, 3 on the uncertainty stop."""
    files = (f"{summary.trajectory}, {summary.log}, {summary.final_structure}, "
             f"{summary.plot}")
    if summary.stopped == "interrupted":
        click.echo(f"interrupted at step {summary.last_step}; files up to that step: {files}",
                   err=True)
        sys.exit(EXIT_INTERRUPTED)
    std = f", max forces_std {summary.max_forces_std:.3g} eV/Å" \
        if summary.max_forces_std is not None else ""
    if summary.stopped == "uncertainty":
        click.echo(f"stopped at step {summary.last_step}: forces_std above "
                   f"{uncertainty_threshold:g} eV/Å{std}; wrote {files}", err=True)
        sys.exit(EXIT_UNCERTAINTY)
    click.echo(f"{summary.steps} steps (to step {summary.last_step}, {summary.time_ps:.4g} ps) "
               f"at {summary.ns_per_day:.3g} ns/day{std}; wrote {files}")
