"""``mlcalc relax STRUCTURE -m MODEL``: relax with ASE's optimizers.

A thin layer over :func:`mlcalc.simulate.relax.relax`. Writes
``<prefix>.extxyz`` (the relaxed structure with energy, forces and stress),
``<prefix>.traj`` (every step) and ``<prefix>.log`` (the optimizer's log),
and exits non-zero when the optimizer did not converge (the files are
written all the same, so the run can be inspected or continued). An input
with many frames relaxes them all (batched through TorchSim when it is
installed; see :mod:`mlcalc.cli.relax_many`).
"""

from __future__ import annotations

import click

from mlcalc.cli.common import model_options, one_line_errors


@click.command("relax")
@click.argument("structure", type=click.Path(dir_okay=False))
@model_options
@click.option("--optimizer", default="bfgs", show_default=True,
              help="ASE optimizer: bfgs, lbfgs or fire.")
@click.option("--fmax", type=float, default=0.01, show_default=True,
              help="Convergence threshold on the largest force, eV/Å.")
@click.option("--steps", type=int, default=500, show_default=True,
              help="Maximal number of optimizer steps.")
@click.option("--cell", is_flag=True, help="Relax the cell too (FrechetCellFilter).")
@click.option("--pressure-GPa", "pressure_GPa", type=float, default=0.0, show_default=True,
              help="External hydrostatic pressure in GPa (with --cell).")
@click.option("--fix-symmetry", is_flag=True,
              help="Keep the structure's space group (ASE FixSymmetry, spglib).")
@click.option("-o", "--output", "prefix", default="relax", show_default=True,
              help="Prefix of the files written: PREFIX.extxyz, PREFIX.traj, PREFIX.log.")
@click.option("--overwrite", is_flag=True,
              help="Replace the files of an earlier run with this prefix (else refused).")
@click.option("--batched/--no-batched", default=None,
              help="Many frames: relax them in one TorchSim batch [default: when TorchSim "
                   "is installed] or one by one with ASE.")
@click.option("--max-batch-atoms", type=click.IntRange(min=1), default=None,
              help="Batched: at most this many atoms per TorchSim batch; converged frames "
                   "are swapped out for waiting ones [default: all frames in one batch].")
@one_line_errors
def relax(structure: str, model: str, device: str, dtype: str | None, threads: int | None,
          optimizer: str, fmax: float, steps: int, cell: bool, pressure_GPa: float,
          fix_symmetry: bool, prefix: str, overwrite: bool, batched: bool | None,
          max_batch_atoms: int | None) -> None:
    """Relax the positions (and with --cell the cell) of STRUCTURE (any file ase.io reads).

    STRUCTURE with many frames (extxyz, traj, db): every frame is relaxed, written to
    PREFIX.extxyz with a converged flag, and summarised in PREFIX.csv.
    """
    from pathlib import Path

    import ase.io
    from ase.units import GPa

    from mlcalc.cli.common import make_calculator, read_structure
    from mlcalc.data.convert import read_frames
    from mlcalc.simulate.outputs import output_lock, refuse_existing
    from mlcalc.simulate.relax import check_options
    from mlcalc.simulate.relax import relax as run_relax

    frames = read_frames(structure) if Path(structure).is_file() else []
    if len(frames) > 1:
        from mlcalc.cli.relax_many import relax_frames

        if fix_symmetry:
            raise click.ClickException("--fix-symmetry relaxes one structure at a time")
        check_options(frames[0], optimizer, fmax, steps, cell, pressure_GPa)
        relax_frames(frames, model, device, dtype, threads, optimizer, fmax, steps, cell,
                     pressure_GPa, prefix, overwrite, batched, max_batch_atoms)
        return
    files = {k: f"{prefix}.{k}" for k in ("extxyz", "traj", "log")}
    with output_lock(prefix):  # a second run with this prefix stops at once
        refuse_existing(files.values(), overwrite, "--overwrite or another -o")
        atoms = read_structure(structure)
        check_options(atoms, optimizer, fmax, steps, cell, pressure_GPa)  # before the model
        calc = make_calculator(model, device, dtype, threads)
        Path(prefix).parent.mkdir(parents=True, exist_ok=True)
        result = run_relax(atoms, calc, optimizer=optimizer, fmax=fmax, steps=steps, cell=cell,
                           pressure_GPa=pressure_GPa, fix_symmetry=fix_symmetry,
                           trajectory=files["traj"], log=files["log"], overwrite=overwrite)
        ase.io.write(files["extxyz"], result.atoms, format="extxyz")

    n = len(result.atoms)
    lines = [f"energy      {result.energy:.6f} eV ({result.energy / n:.6f} eV/atom, "
             f"{n} atoms)",
             f"fmax        {result.fmax:.3g} eV/Å (threshold {fmax:g})"]
    if result.max_stress is not None:
        target = f" relative to {pressure_GPa:g} GPa" if pressure_GPa else ""
        lines.append(f"max stress  {result.max_stress:.3g} eV/Å³ "
                     f"({result.max_stress / GPa:.3g} GPa){target}")
    if cell:
        lengths = " ".join(f"{x:.5f}" for x in result.atoms.cell.lengths())
        angles = " ".join(f"{x:.3f}" for x in result.atoms.cell.angles())
        lines.append(f"cell        a b c = {lengths} Å; angles {angles}°; "
                     f"volume {result.atoms.get_volume():.4f} Å³")
    lines.append(f"steps       {result.steps} ({optimizer.lower()}"
                 f"{', converged' if result.converged else ', NOT converged'})")
    lines.append(f"wrote       {files['extxyz']}, {files['traj']}, {files['log']}")
    click.echo("\n".join(lines))
    if not result.converged:
        raise click.ClickException(f"did not converge in {result.steps} steps "
                                   f"(fmax {result.fmax:.3g} > {fmax:g})")
