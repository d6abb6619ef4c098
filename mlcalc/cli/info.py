"""``mlcalc info MODEL``: what a model file holds."""

from __future__ import annotations

import click


@click.command("info")
@click.argument("model", type=click.Path(dir_okay=False))
def info(model: str) -> None:
    """Describe MODEL (a model.pt): architecture, elements, cutoff, units, precision."""
    from mlcalc.exceptions import MlcalcError
    from mlcalc.model_io import read_model_file

    try:
        content = read_model_file(model)
    except MlcalcError as err:
        raise click.ClickException(str(err)) from None
    config = content["config"]
    rep = dict(config["representation"])
    name = rep.pop("name")
    offsets = content.get("offsets", {})
    lines = [
        f"model file      {model} (format {content['format_version']}, "
        f"mlcalc {content.get('mlcalc_version')}, torch {content.get('torch_version')})",
        f"representation  {name}: " + ", ".join(f"{k}={v}" for k, v in rep.items()),
        f"outputs         {', '.join(m['name'] for m in config['output_modules'])}",
        f"elements        {content.get('elements') or 'any'}",
        f"cutoff          {content['cutoff']} Å",
        "units           " + ", ".join(f"{k}: {v}" for k, v in content["units"].items()),
        f"precision       network {content['dtype']}; positions, cell and pair vectors float64;"
        " energies summed and offsets added in float64",
        f"offsets         mean {offsets.get('mean_per_atom', 0.0):.6g} eV/atom, "
        f"atomrefs {offsets.get('atomrefs') or 'none'}",
    ]
    n_params = sum(v.numel() for v in content["state_dict"].values())
    lines.append(f"weights         {n_params} numbers")
    for key, value in (content.get("metadata") or {}).items():
        lines.append(f"metadata        {key}: {value}")
    click.echo("\n".join(lines))
