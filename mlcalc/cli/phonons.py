"""``mlcalc phonons STRUCTURE -m MODEL``: phonopy bands, DOS and thermal properties.

A thin layer over :func:`mlcalc.simulate.phonons.run_phonons`: it reads the
structure, builds the calculator, prints a short summary and the files
written. Heavy imports happen inside the command so ``--help`` stays instant.
"""

from __future__ import annotations

import click

from mlcalc.cli.common import make_calculator, model_options, one_line_errors, read_structure


@click.command("phonons")
@click.argument("structure", type=click.Path(dir_okay=False))
@model_options
@click.option("--supercell", type=int, nargs=3, default=None, metavar="N N N",
              help="Supercell multiples of the given cell (default: from --min-length).")
@click.option("--min-length", "min_length", type=float, default=None,
              help="Automatic diagonal supercell with every vector at least this long, in Å "
                   "[default: 10].")
@click.option("--displacement", type=float, default=0.01, show_default=True,
              help="Atomic displacement in Å.")
@click.option("--mesh", type=int, nargs=3, default=(20, 20, 20), show_default=True,
              metavar="N N N", help="Γ-centred q-mesh for the DOS and thermal properties.")
@click.option("--tmax-K", "tmax_K", type=float, default=1000.0, show_default=True,
              help="Highest temperature of the thermal properties, in K.")
@click.option("--tstep-K", "tstep_K", type=float, default=10.0, show_default=True,
              help="Temperature step, in K.")
@click.option("--relax-first", is_flag=True,
              help="Relax positions and cell (BFGS + FrechetCellFilter) before the phonons.")
@click.option("--batch-size", type=int, default=16, show_default=True,
              help="Displaced supercells per batched model call.")
@click.option("--output-dir", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Folder for phonopy.yaml, band.yaml, thermal.csv, dos.csv, phonons.png.")
@click.option("--overwrite", is_flag=True,
              help="Replace the files of an earlier run in the output folder (else refused).")
@one_line_errors
def phonons(structure: str, model: str, device: str, dtype: str | None, threads: int | None,
            supercell: tuple[int, int, int] | None, min_length: float | None,
            displacement: float, mesh: tuple[int, int, int], tmax_K: float, tstep_K: float,
            relax_first: bool, batch_size: int, output_dir: str, overwrite: bool) -> None:
    """Phonons of STRUCTURE (a periodic crystal in any file ase.io reads).

    Forces of the displaced supercells come from MODEL in batches; phonopy
    makes the force constants, band structure (ASE's special-point path),
    DOS and thermal properties (per mole of primitive cells).
    """
    import warnings

    import numpy as np

    from mlcalc.simulate.outputs import refuse_existing
    from mlcalc.simulate.phonons import (
        IMAGINARY_THRESHOLD_THZ,
        ImaginaryModesWarning,
        check_periodic,
        output_files,
        run_phonons,
    )

    if tstep_K <= 0 or tmax_K < 0:
        raise ValueError(f"need --tstep-K > 0 and --tmax-K >= 0 (got {tstep_K}, {tmax_K})")
    if min(mesh) < 1:
        raise ValueError(f"--mesh needs three integers >= 1, got {' '.join(map(str, mesh))}")
    refuse_existing(output_files(output_dir).values(), overwrite,
                    "--overwrite or another --output-dir")
    atoms = read_structure(structure)
    check_periodic(atoms)  # before loading the model: fail fast on a molecule or a slab
    calc = make_calculator(model, device, dtype, threads)
    temperatures = np.arange(0.0, tmax_K + 0.5 * tstep_K, tstep_K)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ImaginaryModesWarning)
        result = run_phonons(atoms, calc, supercell=supercell, min_length=min_length,
                             displacement=displacement, mesh=mesh, temperatures_K=temperatures,
                             relax_first=relax_first, output_dir=output_dir,
                             batch_size=batch_size, overwrite=overwrite)
    for w in caught:
        if issubclass(w.category, ImaginaryModesWarning | RuntimeWarning):
            click.echo(f"warning: {w.message}", err=True)

    diag = np.diag(result.supercell_matrix)
    shape = (" x ".join(map(str, diag)) if np.count_nonzero(result.supercell_matrix) == 3
             else str(result.supercell_matrix.tolist()))
    n_atoms = len(result.phonopy.supercell)
    f_max = max(float(f.max()) for f in result.band_frequencies)
    t_report = 300.0 if tmax_K >= 300.0 else float(temperatures[-1])
    free, entropy, cv = result.thermal_at(t_report)
    lines = [
        f"supercell       {shape} ({n_atoms} atoms), {result.n_displacements} displacement(s) "
        f"of {displacement} Å",
        f"frequencies     {result.min_frequency_THz:.3f} .. {f_max:.3f} THz "
        f"(lowest away from Γ {result.min_frequency_off_gamma_THz:.3f} THz)",
        f"at {t_report:g} K        F {free:.4f} kJ/mol, S {entropy:.4f} J/K/mol, "
        f"Cv {cv:.4f} J/K/mol (per mole of primitive cells)",
    ]
    if result.has_imaginary_modes:
        lines.append(f"stability       UNSTABLE: modes below {IMAGINARY_THRESHOLD_THZ} THz "
                     "away from Γ")
    lines += [f"wrote           {path}" for path in result.files.values()]
    click.echo("\n".join(lines))
