"""``mlcalc md --replicas N`` (or an input with many frames): independent trajectories
in one TorchSim batch (:func:`mlcalc.integrations.torchsim_runs.run_replicas`).

Replica k starts from frame k (or from the one structure, N times) with its own
Maxwell–Boltzmann momenta (seed + k) and is written to ``PREFIX_k.extxyz`` and
``PREFIX_k.csv``. The progress bar counts atom-steps of all replicas.
"""

from __future__ import annotations

import time
from pathlib import Path

import click


def many_frames(structure: str) -> bool:
    """Whether STRUCTURE exists and holds more than one frame."""
    if not Path(structure).is_file():
        return False
    from mlcalc.data.convert import read_frames

    return len(read_frames(structure)) > 1


def run_batched(structure: str, models: tuple[str, ...], device: str, dtype: str | None,
                threads: int | None, settings, prefix: str, fmt: str, replicas: int | None,
                restart: bool, overwrite: bool, progress_bar) -> None:
    """Read, check, run and report the replicas (one line)."""
    from mlcalc.calculator import set_threads
    from mlcalc.cli.relax_many import torchsim_available
    from mlcalc.data.convert import read_frames
    from mlcalc.simulate.md_settings import MDError

    if restart:
        raise MDError("--restart continues one trajectory; batched replicas start anew")
    if settings.uncertainty_threshold is not None:
        raise MDError("--uncertainty-threshold stops one trajectory; not for batched replicas")
    if replicas is not None and replicas < 1:
        raise MDError(f"--replicas must be >= 1, got {replicas}")
    if not torchsim_available():
        raise MDError("batched replicas need TorchSim: pip install 'mlcalc[batch]'")
    from mlcalc.integrations.torchsim_runs import BATCH_ENSEMBLES, run_replicas

    if settings.ensemble not in BATCH_ENSEMBLES:
        raise MDError(f"batched replicas run {', '.join(BATCH_ENSEMBLES)} (TorchSim's "
                      f"integrators), not {settings.ensemble}")
    frames = read_frames(structure)
    if replicas is not None:
        frames = [frames[-1].copy() for _ in range(replicas)] if len(frames) == 1 else frames
        if len(frames) != replicas:
            raise MDError(f"--replicas {replicas} but {structure} holds {len(frames)} frames")
    for atoms in frames:
        settings.check_structure(atoms)
    set_threads(threads)
    model = list(models) if len(models) > 1 else models[0]
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if progress_bar is not None and done:
            rate = done / (time.perf_counter() - start)
            n_atoms = sum(len(a) for a in frames)
            progress_bar(done, total, rate / n_atoms * settings.timestep_fs * 1e-6 * 86400,
                         (total - done) / rate)

    try:
        files = run_replicas(frames, model, settings, prefix, fmt, overwrite, device, progress)
    finally:
        if progress_bar is not None:
            progress_bar.close()
    wall = time.perf_counter() - start
    atom_steps = sum(len(a) for a in frames) * settings.steps
    click.echo(f"{len(frames)} replicas x {settings.steps} steps ({atom_steps} atom-steps, "
               f"{atom_steps / wall:.0f} atom-steps/s, TorchSim); wrote {files[0]} .. "
               f"{files[-1]} and their .csv logs")
