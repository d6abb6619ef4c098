"""``mlcalc eval MODEL DATA``: errors of a model on a labelled data set.

A thin layer over :mod:`mlcalc.evaluate`: prints an MAE / RMSE table and
writes ``eval_metrics.json`` and parity plots into ``--output-dir``.
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


def _parse_properties(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise ValueError("--properties is empty; give e.g. energy,forces,stress")
    return list(dict.fromkeys(names))


@click.command("eval")
@click.argument("args", nargs=-1, metavar="[MODEL] DATA")
@optional_model_option
@device_option
@dtype_option
@threads_option
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Structures per model call.")
@click.option("--output-dir", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Where eval_metrics.json and the parity plots go.")
@click.option("--properties", default=None,
              help="Comma-separated subset of energy,forces,stress (default: all the data "
                   "has; a requested one the data lacks is an error).")
@one_line_errors
def evaluate(args: tuple[str, ...], model: str | None, device: str, dtype: str | None,
             threads: int | None, batch_size: int, output_dir: str,
             properties: str | None) -> None:
    """Evaluate MODEL (model.pt or bundled name; or -m MODEL) on DATA (an mlcalc ASE
    database, or any labelled file ase.io reads: extxyz, traj, ...)."""
    import tempfile

    from mlcalc.cli.common import make_calculator
    from mlcalc.evaluate import evaluate as run_evaluate
    from mlcalc.evaluate import open_labelled, write_outputs

    model, data = model_and_argument(args, model, "DATA")
    props = _parse_properties(properties)
    calc = make_calculator(model, device, dtype, threads)
    with tempfile.TemporaryDirectory(prefix="mlcalc-eval-") as workdir:
        dataset = open_labelled(data, workdir)
        result = run_evaluate(calc, dataset, props, batch_size=batch_size)
        dataset = None  # close the temporary database before its folder goes
    files = write_outputs(result, output_dir, extra={"model": model, "data": data})

    click.echo(f"{result.n_structures} structures, {result.n_atoms} atoms "
               f"({model} on {data})")
    rows = [("property", "unit", "MAE", "RMSE", "n")]
    for key, m in result.metrics.items():
        unit = str(m["unit"]).replace("Ang^3", "Å³").replace("Ang", "Å")
        rows.append((key, unit, f"{m['mae']:.4g}", f"{m['rmse']:.4g}", str(m["n"])))
    widths = [max(len(r[c]) for r in rows) for c in range(5)]
    for row in rows:
        click.echo("  ".join(c.ljust(w) if k < 2 else c.rjust(w)
                             for k, (c, w) in enumerate(zip(row, widths, strict=True))))
    for prop, reason in result.skipped.items():
        click.echo(f"skipped {prop}: {reason}")
    click.echo("wrote " + ", ".join(str(f) for f in files))
