"""``mlcalc fit RECIPE``: train a potential from a YAML recipe."""

from __future__ import annotations

import click


@click.command("fit")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe value, e.g. --set train.max_epochs=5 (repeatable).")
@click.option("--output-dir", "-o", type=click.Path(file_okay=False), default=None,
              help="Run folder (default: the recipe's output_dir).")
@click.option("--resume", is_flag=True, help="Continue the run from its last checkpoint.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("--committee", type=click.IntRange(min=2), default=None, metavar="N",
              help="Train N models (seeds train.seed + k, one split) into OUTPUT_DIR/member_k; "
                   "-m OUTPUT_DIR then loads them as one ensemble.")
@click.option("--bootstrap", is_flag=True,
              help="With --committee: each member trains on its own resample (with "
                   "replacement) of the training split.")
def fit(recipe: str, overrides: tuple[str, ...], output_dir: str | None, resume: bool,
        no_progress: bool, committee: int | None, bootstrap: bool) -> None:
    """Train the potential described by RECIPE and write model.pt and its metrics."""
    from mlcalc.exceptions import MlcalcError
    from mlcalc.train.committee import fit_committee
    from mlcalc.train.fit import fit as run_fit
    from mlcalc.train.recipe import load_recipe

    if bootstrap and committee is None:
        raise click.ClickException("--bootstrap resamples the split of each committee member: "
                                   "add --committee N")
    try:
        parsed = load_recipe(recipe, list(overrides))
        if committee is None:
            results = [run_fit(parsed, output_dir=output_dir, resume=resume,
                               progress=not no_progress)]
        else:
            results = fit_committee(parsed, committee, output_dir=output_dir, resume=resume,
                                    progress=not no_progress, bootstrap=bootstrap)
    except (MlcalcError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
    if not results[-1].is_global_zero:
        return  # another process of a distributed run; rank 0 reports
    for result in results:
        click.echo(f"wrote {result.model_path} after {result.epochs} epochs")
        for prop, values in result.metrics.items():
            shown = ", ".join(f"{k.upper()} {v:.4g}" for k, v in values.items() if k != "unit")
            click.echo(f"test {prop}: {shown} {values['unit']}")
    if committee is not None:
        folder = results[0].run_dir.parent
        click.echo(f"committee of {committee} models in {folder} (use it as -m {folder})")
