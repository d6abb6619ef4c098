"""Many structures at once with TorchSim: relaxation and independent MD replicas.

What ``mlcalc relax`` (an input with many frames) and ``mlcalc md --replicas N``
run: TorchSim's own optimizers and integrators over :class:`TorchSimModel`,
with mlcalc's files, options and output safety around them.

- :func:`relax_many`: FIRE (positions) or FIRE with TorchSim's Fréchet cell
  filter (``cell=True``), converged structures leaving the batch; every
  relaxed frame with its energy, forces, stress and a converged flag.
- :func:`run_replicas`: NVE or Langevin NVT of N structures in one batch,
  each replica written to its own trajectory and CSV log.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from mlcalc import properties as P
from mlcalc.integrations.torchsim import TorchSimModel, ts
from mlcalc.simulate import md_output as out
from mlcalc.simulate.md_settings import MDError, MDSettings
from mlcalc.simulate.outputs import output_lock, refuse_existing
from mlcalc.simulate.relax import RelaxedFrame

#: MD ensembles TorchSim integrates here (its NPT is not mlcalc's MTK or Berendsen).
BATCH_ENSEMBLES = {"nve": "nve", "nvt-langevin": "nvt_langevin"}


def _frames_from_state(state, results: dict[str, torch.Tensor]) -> list[Atoms]:
    """One ase.Atoms per system with energy, forces (and stress) attached."""
    frames = []
    for k, atoms in enumerate(ts.io.state_to_atoms(state)):
        mask = (state.system_idx == k).cpu().numpy()
        kept = {P.energy: float(results[P.energy][k]),
                P.forces: results[P.forces][torch.from_numpy(mask)].cpu().numpy()}
        if P.stress in results:
            s = results[P.stress][k].cpu().numpy()
            kept[P.stress] = s[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]  # Voigt, ASE order
        frame = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        frame.calc = SinglePointCalculator(frame, **kept)
        frames.append(frame)
    return frames


def relax_many(frames: Sequence[Atoms], model, fmax: float = 0.01, steps: int = 500,
               cell: bool = False, pressure_GPa: float = 0.0, device: str = "auto",
               model_dtype: str | None = None,
               max_batch_atoms: int | None = None) -> list[RelaxedFrame]:
    """Relax every frame in TorchSim batches (one batch unless ``max_batch_atoms``).

    Args:
        frames: the structures (all periodic, or all not: TorchSim has one pbc flag).
        model: model file, bundled name, loaded potential or a list (ensemble).
        fmax: convergence threshold on the largest force (and, with ``cell``,
            cell force), eV/Å.
        steps: most optimizer steps (TorchSim counts them for the batch).
        cell: relax the cells too (Fréchet cell filter), at ``pressure_GPa``.
        device, model_dtype: as :class:`TorchSimModel`.
        max_batch_atoms: at most this many atoms in a batch: TorchSim's
            in-flight autobatcher then swaps converged frames out and waiting
            ones in (checked every 5 steps, so a frame may take up to 4 steps
            past convergence; ``steps`` then counts per frame). None: all
            frames in one batch.

    Returns:
        One :class:`~mlcalc.simulate.relax.RelaxedFrame` per input frame, in order.
    """
    periodic = [bool(a.pbc.all()) for a in frames]
    if len(set(periodic)) > 1:
        raise MDError("a batch holds periodic and non-periodic structures; TorchSim has one "
                      "pbc flag per batch: relax them in two runs")
    if cell and not periodic[0]:
        raise MDError("a cell relaxation needs structures periodic in all three directions")
    if pressure_GPa and not cell:
        raise MDError("a pressure only acts in a cell relaxation: add --cell")
    largest = max(len(a) for a in frames)
    if max_batch_atoms is not None and max_batch_atoms < largest:
        raise MDError(f"a batch of at most {max_batch_atoms} atoms cannot hold the largest "
                      f"frame ({largest} atoms)")
    engine = TorchSimModel(model, device=device, compute_stress=periodic[0],
                           model_dtype=model_dtype)
    autobatcher: ts.InFlightAutoBatcher | bool = False
    if max_batch_atoms is not None:
        autobatcher = ts.InFlightAutoBatcher(engine, memory_scales_with="n_atoms",
                                             max_memory_scaler=float(max_batch_atoms))
    state = ts.initialize_state(list(frames), engine.device, engine.dtype)
    converged = ts.generate_force_convergence_fn(fmax, include_cell_forces=cell)
    if cell:
        optimizer, kwargs = ts.frechet_cell_fire, {"scalar_pressure": pressure_GPa * units.GPa}
    else:
        optimizer, kwargs = ts.optimizers.fire, {}
    final = ts.optimize(state, engine, optimizer=optimizer, convergence_fn=converged,
                        max_steps=steps, autobatcher=autobatcher, **kwargs)
    flags = converged(final, None).cpu().numpy()
    # the final evaluation keeps to the batch limit too: one frame at a time then
    parts = [final] if max_batch_atoms is None else final.split()
    relaxed = [frame for part in parts for frame in _frames_from_state(part, engine(part))]
    return [RelaxedFrame(atoms, bool(flag),
                         float(np.sqrt((atoms.get_forces() ** 2).sum(1)).max()))
            for atoms, flag in zip(relaxed, flags, strict=True)]


def replica_files(prefix: str | Path, n: int, fmt: str = "extxyz") -> list[tuple[Path, Path]]:
    """(trajectory, log) of each replica: ``PREFIX_000.extxyz``, ``PREFIX_000.csv``, ..."""
    return [(Path(f"{prefix}_{k:03d}.{fmt}"), Path(f"{prefix}_{k:03d}.csv")) for k in range(n)]


def run_replicas(frames: Sequence[Atoms], model, settings: MDSettings, prefix: str | Path,
                 fmt: str = "extxyz", overwrite: bool = False, device: str = "auto",
                 progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """Independent MD trajectories of ``frames`` in one TorchSim batch.

    Each replica starts from its frame with Maxwell–Boltzmann momenta at
    ``settings.temperature_K`` (seeded by ``settings.seed`` plus its index)
    and is written every ``settings.interval`` steps to its own trajectory
    and CSV log (see :func:`replica_files`).

    Args:
        frames: one structure per replica.
        model: model file, bundled name, loaded potential or a list (ensemble).
        settings: ``ensemble`` nve or nvt-langevin, steps, timestep, temperature,
            friction, seed, interval.
        prefix: output prefix.
        fmt: ``extxyz`` or ``traj``.
        overwrite: replace the files of an earlier run.
        device: as :class:`TorchSimModel`.
        progress: called as ``progress(atom_steps_done, atom_steps_total)``.

    Returns:
        The trajectory files.
    """
    if settings.ensemble not in BATCH_ENSEMBLES:
        raise MDError(f"batched md runs {', '.join(BATCH_ENSEMBLES)} (TorchSim's integrators); "
                      f"run {settings.ensemble} one structure at a time")
    files = replica_files(prefix, len(frames), fmt)
    with output_lock(prefix):
        refuse_existing([p for pair in files for p in pair], overwrite,
                        "--overwrite or another -o")
        return _integrate(frames, model, settings, files, device, progress)


def _integrate(frames, model, settings: MDSettings, files, device,
               progress: Callable[[int, int], None] | None) -> list[Path]:
    from ase.md.velocitydistribution import Stationary, thermalize_momenta

    periodic = bool(frames[0].pbc.all())
    engine = TorchSimModel(model, device=device, compute_stress=periodic)
    starts = []
    for k, atoms in enumerate(frames):
        atoms = atoms.copy()
        thermalize_momenta(atoms, temperature_K=settings.temperature_K,
                           rng=np.random.default_rng([settings.seed, k]))
        Stationary(atoms)
        starts.append(atoms)
    state = ts.initialize_state(starts, engine.device, engine.dtype)
    state.momenta = torch.tensor(np.concatenate([a.get_momenta() for a in starts]),
                                 dtype=engine.dtype, device=engine.device)
    dt = torch.tensor(settings.timestep_fs * units.fs, dtype=engine.dtype, device=engine.device)
    kT = torch.tensor(settings.temperature_K * units.kB, dtype=engine.dtype,
                      device=engine.device)
    integrator = getattr(ts, BATCH_ENSEMBLES[settings.ensemble])
    extra = ({"gamma": torch.tensor(settings.friction_per_fs / units.fs, dtype=engine.dtype)}
             if settings.ensemble == "nvt-langevin" else {})
    init_fn, update_fn = integrator(model=engine, dt=dt, kT=kT, seed=settings.seed, **extra)
    state = init_fn(state)
    writers = [(out.TrajectoryFile(t, append=False),
                out.CSVLog(log, out.LOG_COLUMNS, append=False)) for t, log in files]
    n_atoms, total = state.n_atoms, state.n_atoms * settings.steps
    try:
        for step in range(settings.steps + 1):
            if step:
                state = update_fn(state)
            if step % settings.interval == 0 or step == settings.steps:
                _record(state, writers, step, settings.timestep_fs)
                if progress is not None:
                    progress(n_atoms * step, total)
    finally:
        for traj, log in writers:
            traj.close()
            log.close()
    return [t for t, _ in files]


def _record(state, writers, step: int, timestep_fs: float) -> None:
    results = {P.energy: state.energy, P.forces: state.forces}
    for k, frame in enumerate(_frames_from_state(state, results)):
        mask = (state.system_idx == k)
        frame.set_momenta(state.momenta[mask].detach().cpu().numpy(), apply_constraint=False)
        frame.info["step"], frame.info["time_ps"] = step, step * timestep_fs * 1e-3
        traj, log = writers[k]
        traj.write(frame)
        log.write(out.log_row(frame))


__all__ = ["BATCH_ENSEMBLES", "relax_many", "replica_files", "run_replicas"]
