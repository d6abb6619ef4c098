"""``mlcalc import-schnetpack BEST_MODEL -o model.pt``: a SchNetPack 2 model as mlcalc's.

A thin layer over :func:`mlcalc.integrations.schnetpack.import_schnetpack`:
reads the pickled SchNetPack model without running any of its code, converts
units to eV / Å and writes an mlcalc model file.
"""

from __future__ import annotations

import click

from mlcalc.cli.common import one_line_errors


def parse_elements(text: str) -> list[int]:
    """``"Cu,Ni"`` or ``"29,28"`` (symbols or atomic numbers, comma separated) -> [29, 28].

    Raises:
        click.BadParameter: an entry that is neither.
    """
    from ase.data import atomic_numbers

    out = []
    for item in (t.strip() for t in text.split(",")):
        if item.isdigit():
            out.append(int(item))
        elif item in atomic_numbers and item != "X":
            out.append(atomic_numbers[item])
        else:
            raise click.BadParameter(f"'{item}' is not an element symbol or atomic number",
                                     param_hint="--elements")
    return out


@click.command("import-schnetpack")
@click.argument("best_model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", default="model.pt", show_default=True,
              help="mlcalc model file to write.")
@click.option("--energy-unit", default="eV", show_default=True,
              help="Energy unit the model was trained in (eV, kcal/mol, kJ/mol, Hartree...).")
@click.option("--length-unit", default="Ang", show_default=True,
              help="Length unit of its positions (Ang, Bohr, nm).")
@click.option("--elements", default=None, metavar="LIST",
              help="Elements it was trained on, e.g. Cu,Ni (default: guessed, with a warning).")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default=None,
              help="Precision of the written model (default: the file's; float64 reproduces "
                   "SchNetPack's float64 numbers to round-off).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@one_line_errors
def import_schnetpack(best_model: str, output: str, energy_unit: str, length_unit: str,
                      elements: str | None, dtype: str | None, overwrite: bool) -> None:
    """Convert BEST_MODEL, a model file of SchNetPack 2 training, into an mlcalc model.

    Supports SchNet and PaiNN with Gaussian or Bessel bases, cosine or mollifier
    cutoffs, an Atomwise energy head, Forces and AddOffsets. Nothing in the file
    is executed; anything else in it is refused, naming the class.
    """
    from mlcalc.integrations.schnetpack import import_schnetpack as run
    from mlcalc.simulate.outputs import refuse_existing

    numbers = parse_elements(elements) if elements else None
    refuse_existing([output], overwrite, "--overwrite or another -o")
    model = run(best_model, output, energy_unit=energy_unit, length_unit=length_unit,
                elements=numbers, dtype=dtype)
    rep = model.representation.hyperparameters
    offsets = model.offsets
    click.echo(
        f"wrote {output}: {model.representation.name} {rep['n_atom_basis']}x"
        f"{rep['n_interactions']}, cutoff {model.cutoff:.4g} Å, {len(model.elements)} "
        f"elements, offsets {offsets.mean_per_atom:.6g} eV/atom + "
        f"{len(offsets.atomrefs)} atom references, {str(model.dtype).removeprefix('torch.')}")
