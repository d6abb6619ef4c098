"""``mlcalc learn RECIPE``: the uncertainty-driven learning loop (:mod:`mlcalc.learn`)."""

from __future__ import annotations

import click


@click.command("learn")
@click.argument("recipe", type=click.Path(dir_okay=False))
def learn(recipe: str) -> None:
    """Train a committee, explore with MD, label the uncertain frames, retrain; repeat.

    Each iteration writes OUTPUT_DIR/iter_k; running the same recipe again continues an
    interrupted loop where it stopped. The table is OUTPUT_DIR/learn.csv (and learn.png).
    """
    import logging

    import pytorch_lightning  # noqa: F401  (it sets its own log level on import)

    from mlcalc.exceptions import MlcalcError
    from mlcalc.learn import learn as run_learn
    from mlcalc.learn import load_learn_recipe

    for name in ("pytorch_lightning", "lightning.pytorch"):  # one line per step is ours
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        parsed = load_learn_recipe(recipe)
        rows = run_learn(parsed, report=click.echo)
    except (MlcalcError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
    last = rows[-1]
    click.echo(f"{last['status']} after {len(rows)} iteration(s); table in "
               f"{parsed.output_dir}/learn.csv, models in "
               f"{parsed.output_dir}/iter_{last['iteration']:03d}/committee")
