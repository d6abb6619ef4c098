"""``mlcalc info MODEL``: what a model file holds.

Architecture, elements, cutoff, units and the precision policy from the
file itself; training facts (test-set errors, data hash, split sizes,
epochs) from its metadata, when ``mlcalc fit`` or the user stored them.
"""

from __future__ import annotations

from typing import Any

import click

#: Metadata keys shown in the training section, in this order (the rest are listed raw).
_TRAINING_KEYS = ("test_metrics", "data_path", "data_hash", "n_train", "n_val", "n_test",
                  "epochs", "best_val_loss", "created", "recipe")


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "-"


def _metrics_lines(metrics: Any) -> list[str]:
    """``test_metrics`` ({name: {"unit", "mae", "rmse"}}) as aligned table rows."""
    if not isinstance(metrics, dict) or not metrics:
        return [f"test metrics    {metrics or 'none stored'}"]
    rows = [("property", "unit", "MAE", "RMSE")]
    for name, entry in metrics.items():
        entry = entry if isinstance(entry, dict) else {"mae": entry}
        unit = str(entry.get("unit", "")).replace("Ang^3", "Å³").replace("Ang", "Å")
        rows.append((str(name), unit, _number(entry.get("mae")), _number(entry.get("rmse"))))
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    table = ["  ".join(c.ljust(w) if k < 2 else c.rjust(w)
                       for k, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]
    return ["test metrics    " + table[0]] + ["                " + line for line in table[1:]]


def _training_lines(meta: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if "test_metrics" in meta:
        lines += _metrics_lines(meta["test_metrics"])
    if "data_path" in meta or "data_hash" in meta:
        lines.append(f"training data   {meta.get('data_path', '?')} "
                     f"(sha256 {meta.get('data_hash', 'not stored')})")
    splits = [(k.removeprefix("n_"), meta[k]) for k in ("n_train", "n_val", "n_test")
              if k in meta]
    if splits:
        lines.append("split           " + ", ".join(f"{n} {name}" for name, n in splits)
                     + " structures")
    run = []
    if "epochs" in meta:
        run.append(f"{meta['epochs']} epochs")
    if meta.get("best_val_loss") is not None:
        run.append(f"best validation loss {_number(meta['best_val_loss'])}")
    if "created" in meta:
        run.append(f"saved {meta['created']}")
    if run:
        lines.append("training        " + ", ".join(run))
    if isinstance(meta.get("recipe"), dict):
        lines.append("recipe          stored (sections: " + ", ".join(meta["recipe"]) + ")")
    return lines


@click.command("info")
@click.argument("model", type=click.Path())
def info(model: str) -> None:
    """Describe MODEL (a model.pt, a bundled name or a committee folder): architecture,
    elements, cutoff, units, precision and, when stored, training metrics."""
    from mlcalc.exceptions import MlcalcError
    from mlcalc.model.committee import committee_members

    try:
        members = committee_members(model)
    except MlcalcError as err:
        raise click.ClickException(str(err)) from None
    if members is None:
        click.echo("\n".join(_describe(model)))
        return
    click.echo(f"committee       {model}: {len(members)} models (an ensemble: mean and spread)")
    for k, member in enumerate(members):
        click.echo(f"\n-- member {k}\n" + "\n".join(_describe(str(member))))


def _describe(model: str) -> list[str]:
    """The info lines of one model file or bundled name."""
    from pathlib import Path

    from ase.data import chemical_symbols

    from mlcalc.exceptions import MlcalcError
    from mlcalc.model.io import read_model_file, summary
    from mlcalc.pretrained import bundled_models

    try:
        # a bundled name (cu-emt) works as everywhere else; an existing file wins
        bundled = bundled_models()
        path = bundled[model] if model in bundled and not Path(model).exists() else model
        content = read_model_file(path)
        config = content["config"]
        rep = dict(config["representation"])
        name = rep.pop("name")
        outputs = ", ".join(m["name"] for m in config["output_modules"])
        units = ", ".join(f"{k}: {v}" for k, v in content["units"].items())
        facts = summary(content)
    except MlcalcError as err:
        raise click.ClickException(str(err)) from None
    except (KeyError, TypeError, AttributeError) as err:
        # a file that passed the format check but lacks a field: one line, not a traceback
        raise click.ClickException(f"{model}: incomplete model file ({type(err).__name__}: "
                                   f"{err})") from None
    offsets, nl, elements = facts["offsets"], facts["neighbor_list"], facts["elements"]
    trained = f"; trained with {nl.training}" if nl.training else ""
    lines = [
        f"model file      {model} (format {content['format_version']}, "
        f"mlcalc {content.get('mlcalc_version')}, torch {content.get('torch_version')})",
        f"representation  {name}: " + ", ".join(f"{k}={v}" for k, v in rep.items()),
        f"outputs         {outputs}",
        "elements        " + (", ".join(f"{chemical_symbols[z]} ({z})" for z in elements)
                                 if elements else "any"),
        f"cutoff          {facts['cutoff']} Å",
        f"neighbor list   {nl.cpu} on CPU, {nl.cuda} on GPU{trained}",
        f"units           {units}",
        f"precision       network {facts['dtype']}; positions, cell and pair vectors float64;"
        " energies summed and offsets added in float64",
        f"offsets         mean {offsets.get('mean_per_atom', 0.0):.6g} eV/atom, "
        f"atomrefs {offsets.get('atomrefs') or 'none'}",
    ]
    n_params = sum(v.numel() for v in content["state_dict"].values())
    lines.append(f"weights         {n_params} numbers")
    meta = content.get("metadata") or {}
    if isinstance(meta, dict):
        lines += _training_lines(meta)
        for key, value in meta.items():
            if key not in _TRAINING_KEYS:
                lines.append(f"metadata        {key}: {value}")
    else:
        lines.append(f"metadata        {meta}")
    return lines
