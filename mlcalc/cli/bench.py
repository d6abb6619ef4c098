"""``mlcalc bench``: MD and training throughput as Markdown tables.

A thin layer over :mod:`mlcalc.bench`. Every (model, size, threads) runs
E+F and, with ``--stress``, E+F+S too (the ``stress %`` column is the extra
time per step). Progress goes to stderr, the tables to stdout and ``--output``.
"""

from __future__ import annotations

import os

import click

from mlcalc.cli.common import one_line_errors


def _split(values: tuple[str, ...]) -> list[str]:
    """Repeated flags and comma lists alike: ``--x a --x b,c`` -> [a, b, c]."""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _threads(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[int]:
    """``--threads N`` or ``--threads all`` (os.cpu_count())."""
    out = []
    for value in _split(values):
        if value == "all":
            out.append(os.cpu_count() or 1)
        elif value.isdigit() and int(value) > 0:
            out.append(int(value))
        else:
            raise click.BadParameter(f"'{value}' is neither a positive integer nor 'all'")
    return list(dict.fromkeys(out))


def _sizes(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[int]:
    try:
        return [int(v) for v in _split(values)]
    except ValueError:
        raise click.BadParameter(f"not a list of atom counts: {' '.join(values)}") from None


def _positive(ctx: click.Context, param: click.Parameter, value):
    values = value if isinstance(value, tuple) else (value,)
    if any(v <= 0 for v in values):
        raise click.BadParameter(f"must be positive, got {' '.join(map(str, values))}")
    return value


@click.command("bench")
@click.option("--models", multiple=True, default=("painn,schnet",), show_default=True,
              callback=lambda ctx, param, values: _split(values),
              help="Representations to time: --models painn,schnet or repeat the flag.")
@click.option("--sizes", multiple=True, default=("108,500,2048",), show_default=True,
              callback=_sizes, help="fcc Cu atom counts (32, 108, 256, 500, 864, 2048, 4000, "
                                    "8788, 16384, 32000, 108000), comma list or repeated.")
@click.option("--threads", "threads", multiple=True, default=("1",), show_default=True,
              callback=_threads, help="Torch threads, a number or 'all' (all CPUs); comma "
                                      "list or repeated: --threads 1 --threads all.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu",
              show_default=True, help="Device of the model.")
@click.option("--path", "paths", multiple=True, default=("fused",), show_default=True,
              callback=lambda ctx, param, values: _split(values),
              help="Message ops: 'fused' (the compiled kernels, where the device has "
                   "them) and/or 'eager' (their plain torch reference); comma list or repeated.")
@click.option("--step", "steps", multiple=True, default=(), callback=lambda ctx, param, values:
              _split(values), help="How a step is evaluated: 'dynamic', 'padded' (static "
              "shapes), 'graph' (padded, replayed as a CUDA graph) and/or 'compiled' (padded, "
              "through torch.compile); comma list or repeated. Default: MLCalculator's "
              "choice for the device.")
@click.option("--stress/--no-stress", default=True, show_default=True,
              help="Also time E+F+S and report the stress overhead.")
@click.option("--features", type=int, default=128, show_default=True, callback=_positive,
              help="n_atom_basis of the models.")
@click.option("--interactions", type=int, default=3, show_default=True, callback=_positive,
              help="Interaction blocks of the models.")
@click.option("--cutoff", type=float, default=5.0, show_default=True, callback=_positive,
              help="Cutoff, Å.")
@click.option("--repeats", type=int, default=5, show_default=True, callback=_positive,
              help="Timed MD repeats (the median is reported).")
@click.option("--atom-steps", type=int, default=4000, show_default=True, callback=_positive,
              help="Atoms x MD steps per repeat.")
@click.option("--training/--no-training", default=True, show_default=True,
              help="Also time training steps.")
@click.option("--train-structures", type=int, default=64, show_default=True,
              callback=_positive, help="Training structures (32-atom EMT Cu cells).")
@click.option("--batch-size", type=int, default=8, show_default=True, callback=_positive,
              help="Structures per training batch.")
@click.option("--train-steps", type=int, default=20, show_default=True, callback=_positive,
              help="Timed training steps (after 2 warm-up steps).")
@click.option("--gpu-check", is_flag=True,
              help="On a CUDA machine: run the GPU tests (pytest -m gpu) and print the GPU "
                   "table against the targets, with a PASS/FAIL summary (other options are "
                   "ignored). Without CUDA: exits non-zero with one line.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Also write the tables to this Markdown file.")
@one_line_errors
def bench(models, sizes, threads, device, paths, steps, stress, features, interactions, cutoff,
          repeats, atom_steps, training, train_structures, batch_size, train_steps, gpu_check,
          output) -> None:
    """Benchmark MD and training throughput (random weights, float32)."""
    if gpu_check:
        from mlcalc import gpu_check as G

        if not G.run():
            raise SystemExit(1)
        return
    import itertools
    import tempfile
    from pathlib import Path

    from mlcalc import bench as B
    from mlcalc.calculator import resolve_device
    from mlcalc.representation import REPRESENTATIONS

    for name in models:  # fail before any timing
        if name.lower() not in REPRESENTATIONS:
            from mlcalc.exceptions import unknown_name

            raise unknown_name("representation", name, REPRESENTATIONS)
    bad = [n for n in sizes if n not in B.SUPERCELLS]
    if bad:
        raise click.BadParameter(f"no fcc Cu supercell of {bad[0]} atoms; sizes: "
                                 f"{', '.join(map(str, B.SUPERCELLS))}", param_hint="'--sizes'")
    resolve_device(device)
    bad_paths = [p for p in paths if p not in B.PATHS]
    if bad_paths:
        raise click.BadParameter(f"'{bad_paths[0]}' is not a path; paths: {', '.join(B.PATHS)}",
                                 param_hint="'--path'")
    bad_steps = [s for s in steps if s not in B.STEPS]
    if bad_steps:
        raise click.BadParameter(f"'{bad_steps[0]}' is not a step; steps: {', '.join(B.STEPS)}",
                                 param_hint="'--step'")
    if "graph" in steps and resolve_device(device).type != "cuda":
        raise click.BadParameter("'graph' needs --device cuda", param_hint="'--step'")
    shape = dict(features=features, interactions=interactions, cutoff=cutoff)
    md_rows, training_rows = [], []
    for n in sizes:
        for t in threads:
            for name in models:
                for path, step in itertools.product(paths, steps or (None,)):
                    for with_stress in (False, True) if stress else (False,):
                        click.echo(f"md: {name} {path} {step or 'default'} {n} atoms {t} "
                                   f"thread(s) {'E+F+S' if with_stress else 'E+F'}", err=True)
                        md_rows.append(B.bench_md(name, n, t, device, with_stress,
                                                  repeats=repeats, atom_steps=atom_steps,
                                                  path=path, step=step, **shape))
    B.add_stress_overhead(md_rows)
    if training:
        with tempfile.TemporaryDirectory() as tmp:
            click.echo(f"training: labelling {train_structures} structures with EMT", err=True)
            data = B.make_training_data(Path(tmp) / "emt.db", train_structures)
            for t in threads:
                for name in models:
                    for path in paths:
                        click.echo(f"training: {name} {path} {t} thread(s)", err=True)
                        training_rows.append(B.bench_training(
                            name, train_structures, batch_size, t, device, steps=train_steps,
                            data_path=data, path=path, **shape))
    notes = (f"Models {features}x{interactions}, cutoff {cutoff} Å; MD: median of {repeats} "
             f"repeats of {atom_steps} atom-steps; ms per step; NL = neighbor list, rest = "
             "rest of MLCalculator, ASE = ASE's loop alone; peak MiB = memory high-water "
             "mark above the start of the run.")
    report = B.format_report(md_rows, training_rows, device, threads, notes)
    click.echo(report, nl=False)
    if output:
        Path(output).write_text(report)
        click.echo(f"wrote {output}", err=True)
