"""``mlcalc check MODEL STRUCTURE``: a pass/fail physics audit of a model.

A thin layer over :func:`mlcalc.simulate.check.run_checks`: prints one row
per check (deviation, bound, verdict) and exits 1 when any check fails.
"""

from __future__ import annotations

import click

from mlcalc.cli.common import (
    device_option,
    dtype_option,
    model_and_argument,
    one_line_errors,
    optional_model_option,
    threads_option,
)


@click.command("check")
@click.argument("args", nargs=-1, metavar="[MODEL] STRUCTURE")
@optional_model_option
@device_option
@dtype_option
@threads_option
@click.option("--nve-steps", type=click.IntRange(min=0), default=200, show_default=True,
              help="VelocityVerlet steps of the energy-drift check (0: skip it).")
@click.option("--nve-timestep-fs", type=click.FloatRange(min=0, min_open=True), default=1.0,
              show_default=True, help="Time step of the energy-drift check, fs.")
@click.option("--nve-temperature-K", "nve_temperature_K", type=click.FloatRange(min=0),
              default=300.0, show_default=True,
              help="Initial temperature of the energy-drift check, K.")
@one_line_errors
def check(args: tuple[str, ...], model: str | None, device: str, dtype: str | None,
          threads: int | None, nve_steps: int, nve_timestep_fs: float,
          nve_temperature_K: float) -> None:
    """Audit MODEL (model.pt or bundled name; or -m MODEL) on STRUCTURE (any file ase.io reads):
    invariances, forces and stress against finite differences, smoothness at a
    symmetric site and NVE energy conservation. Exit code 1 if any check fails (an
    imported SchNetPack PaiNN reports its symmetric-site cusp as a warning)."""
    from mlcalc.cli.common import make_calculator, read_structure
    from mlcalc.simulate.check import run_checks

    model, structure = model_and_argument(args, model, "STRUCTURE")
    atoms = read_structure(structure)
    calc = make_calculator(model, device, dtype, threads)
    # finite differences and energy conservation need float64 round-off
    calc64 = calc if str(calc.model.dtype) == "torch.float64" else make_calculator(
        model, device, "float64", threads)
    rows = run_checks(calc.model, calc64.model, atoms, nve_calc=calc64, nve_steps=nve_steps,
                      timestep_fs=nve_timestep_fs, temperature_K=nve_temperature_K)

    table = [("check", "precision", "deviation", "bound", "unit", "result")]
    for row in rows:
        verdict = row.verdict
        value = "-" if row.value is None else f"{row.value:.2e}"
        table.append((row.name, row.dtype, value, f"{row.tolerance:.0e}", row.unit, verdict))
    widths = [max(len(r[c]) for r in table) for c in range(len(table[0]))]
    click.echo(f"{model} on {structure} ({len(atoms)} atoms)")
    for line in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    for row in rows:
        if row.note:
            click.echo(f"note: {row.name}: {row.note}")
    failed = [row.name for row in rows if row.verdict == "FAIL"]
    if failed:
        click.echo(f"{len(failed)} checks failed: {', '.join(failed)}")
        raise SystemExit(1)
    n_run = sum(row.passed is not None for row in rows)
    warned = [row.name for row in rows if row.verdict == "warn"]
    click.echo(f"all {n_run} checks passed" if not warned else
               f"{n_run - len(warned)} checks passed, {len(warned)} warned: {', '.join(warned)}")
