"""``mlcalc relax`` on an input with many frames: every frame relaxed, one output file.

Batched through TorchSim (:func:`mlcalc.integrations.torchsim_runs.relax_many`)
when it is installed (``pip install 'mlcalc[batch]'``), else one frame after the
other with ASE's optimizer. Writes ``PREFIX.extxyz`` (every relaxed frame with
its energy, forces, stress and ``info["converged"]``) and ``PREFIX.csv`` (one
line per frame). Exits 1 when a frame did not converge (the files are written
all the same).
"""

from __future__ import annotations

import csv
import importlib.util
import os
from pathlib import Path

import click


def torchsim_available() -> bool:
    """Whether the optional TorchSim engine is installed."""
    return importlib.util.find_spec("torch_sim") is not None


def relax_frames(frames: list, model: str, device: str, dtype: str | None,
                 threads: int | None, optimizer: str, fmax: float, steps: int, cell: bool,
                 pressure_GPa: float, prefix: str, overwrite: bool,
                 batched: bool | None, max_batch_atoms: int | None = None) -> None:
    """Relax ``frames``, write the two files, report; see the module docstring."""
    from mlcalc.calculator import set_threads
    from mlcalc.simulate.outputs import output_lock, refuse_existing

    files = (Path(f"{prefix}.extxyz"), Path(f"{prefix}.csv"))
    use_batch = torchsim_available() if batched is None else batched
    if use_batch and not torchsim_available():
        raise click.ClickException("--batched needs TorchSim: pip install 'mlcalc[batch]'")
    if max_batch_atoms is not None and not use_batch:
        raise click.ClickException("--max-batch-atoms sizes TorchSim batches: it needs "
                                   "--batched (and TorchSim)")
    with output_lock(prefix):
        refuse_existing(files, overwrite, "--overwrite or another -o")
        set_threads(threads)
        if use_batch:
            from mlcalc.integrations.torchsim_runs import relax_many

            results = relax_many(frames, model, fmax, steps, cell, pressure_GPa, device, dtype,
                                 max_batch_atoms)
        else:
            results = _one_by_one(frames, model, device, dtype, threads, optimizer, fmax,
                                  steps, cell, pressure_GPa)
        _write(results, files)
    n_ok = sum(r.converged for r in results)
    engine = "TorchSim, batched" if use_batch else f"ASE {optimizer.lower()}, one by one"
    click.echo(f"{len(results)} frames relaxed ({engine}): {n_ok} converged to fmax "
               f"{fmax:g} eV/Å; wrote {files[0]}, {files[1]}")
    if n_ok < len(results):
        raise click.ClickException(f"{len(results) - n_ok} of {len(results)} frames did not "
                                   f"converge in {steps} steps (see {files[1]})")


def _one_by_one(frames, model, device, dtype, threads, optimizer, fmax, steps, cell,
                pressure_GPa) -> list:
    from ase.calculators.singlepoint import SinglePointCalculator

    from mlcalc.cli.common import make_calculator
    from mlcalc.simulate.relax import RelaxedFrame, relax

    calc = make_calculator(model, device, dtype, threads)
    out = []
    for atoms in frames:  # a calculator of its own per frame, on the one loaded model
        result = relax(atoms, calc.sibling(), optimizer=optimizer, fmax=fmax, steps=steps,
                       cell=cell, pressure_GPa=pressure_GPa, trajectory=None, log=None)
        relaxed = result.atoms
        kept = {k: v for k, v in relaxed.calc.results.items()
                if k in ("energy", "forces", "stress")}
        relaxed.calc = SinglePointCalculator(relaxed, **kept)  # this frame's own results
        out.append(RelaxedFrame(relaxed, result.converged, result.fmax))
    return out


def _write(results: list, files: tuple[Path, Path]) -> None:
    """All relaxed frames to extxyz and a CSV summary, each written whole then renamed."""
    import ase.io

    frames = []
    for k, result in enumerate(results):
        atoms = result.atoms
        atoms.info.update(frame=k, converged=bool(result.converged))
        frames.append(atoms)
    extxyz, summary = files
    tmp = extxyz.with_name(f".{extxyz.name}.tmp{os.getpid()}")
    ase.io.write(tmp, frames, format="extxyz")
    os.replace(tmp, extxyz)
    tmp = summary.with_name(f".{summary.name}.tmp{os.getpid()}")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["frame", "n_atoms", "energy_eV", "energy_per_atom_eV", "fmax_eV_A",
                         "converged"])
        for k, result in enumerate(results):
            energy = result.atoms.get_potential_energy()
            writer.writerow([k, len(result.atoms), f"{energy:.10g}",
                             f"{energy / len(result.atoms):.10g}", f"{result.fmax:.6g}",
                             int(result.converged)])
    os.replace(tmp, summary)
