"""``mlcalc data``: make (``generate``), convert (``convert``) and inspect
(``info``) data sets, i.e. ASE SQLite databases of labelled structures.

Thin layers over :mod:`mlcalc.data.generate` and :mod:`mlcalc.data`; heavy
imports happen inside the commands so that ``mlcalc --help`` stays instant.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

import click

CALCULATORS = ("emt", "lj")


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    """Turn the errors bad input raises into one ``Error: ...`` line, exit 1."""
    from ase.io.formats import UnknownFileTypeError

    from mlcalc.exceptions import MlcalcError

    try:
        yield
    except (MlcalcError, OSError, ValueError, UnknownFileTypeError) as err:
        message = " ".join(str(err).split()) or type(err).__name__
        raise click.ClickException(message) from None


def _refuse_existing(path: str) -> None:
    if os.path.exists(path):
        raise click.ClickException(f"'{path}' already exists; refusing to overwrite it "
                                   "(remove it or choose another path)")


@click.group("data")
def data() -> None:
    """Make, convert and inspect data sets (ASE SQLite databases)."""


# --- generate ------------------------------------------------------------------
def _progress_printer() -> Any:
    """``progress(done, total)`` that prints one line per 10 %."""
    state = {"last": 0}

    def progress(done: int, total: int) -> None:
        decile = 10 * done // total
        if decile != state["last"]:
            state["last"] = decile
            click.echo(f"  {done}/{total} structures ({100 * done // total}%)", err=True)

    return progress


def _not_for(what: str, given: dict[str, bool]) -> None:
    """Refuse options given (True) that have no effect on ``what``."""
    bad = [name for name, is_given in given.items() if is_given]
    if bad:
        raise click.ClickException(f"{', '.join(bad)} does not apply to {what}")


#: Structures of ``mlcalc data generate`` when neither -n nor counts are given.
DEFAULT_N = 200


def _parse_kinds(kinds: tuple[str, ...], no_surfaces: bool,
                 default: tuple[str, ...]) -> tuple[str, ...] | dict[str, int]:
    """``--kinds bulk --kinds md`` or ``--kinds bulk=100 --kinds md=50`` (not mixed)."""
    if no_surfaces and any(k.split("=")[0] == "surface" for k in kinds):
        raise click.ClickException("--no-surfaces contradicts --kinds surface")
    with_counts = [k for k in kinds if "=" in k]
    if with_counts and len(with_counts) != len(kinds):
        raise click.ClickException("give every --kinds a count (bulk=100) or none")
    if with_counts:
        counts = {}
        for item in kinds:
            name, _, count = item.partition("=")
            if not count.isdigit():
                raise click.ClickException(f"--kinds {item}: the count must be an integer")
            counts[name] = int(count)
        return counts
    return tuple(k for k in (kinds or default) if not (no_surfaces and k == "surface"))


@data.command("generate")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--calculator", default="emt", show_default=True,
              help="Reference calculator: emt (fcc metals and alloys) or lj (Lennard-Jones "
                   "clusters).")
@click.option("--elements", "-e", multiple=True,
              help="Element symbol; repeat for random alloys (emt: Ag Al Au Cu Ni Pd Pt, "
                   "default Cu; lj: one symbol, default Ar).")
@click.option("--n-structures", "-n", type=int, default=None,
              help="Structures in all, split evenly over the kinds [default: 200; with counts "
                   "in --kinds: their sum].")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed: the same seed gives the same data set.")
@click.option("--kinds", multiple=True,
              help="emt: structure kind (bulk, strain, md, vacancy, hop, surface, cluster), "
                   "optionally with a count (surface=40); repeat for several "
                   "[default: bulk md vacancy surface].")
@click.option("--no-surfaces", is_flag=True,
              help="emt: leave out the surface slabs.")
@click.option("--stress/--no-stress", default=True, show_default=True,
              help="emt: label stress where it is defined (periodic structures; slabs and "
                   "clusters get none).")
@click.option("--temperature-K", "temperatures_K", type=float, multiple=True,
              help="emt: MD temperature in K, repeat for several [default: 300 600 1200].")
@click.option("--supercell", type=(int, int, int), default=None,
              help="emt: repetitions of the cubic fcc cell [default: 2 2 2].")
@click.option("--n-atoms", type=(int, int), default=None,
              help="lj: smallest and largest cluster size [default: 8 20].")
def generate(out: str, calculator: str, elements: tuple[str, ...], n_structures: int | None,
             seed: int, kinds: tuple[str, ...], no_surfaces: bool, stress: bool,
             temperatures_K: tuple[float, ...], supercell: tuple[int, int, int] | None,
             n_atoms: tuple[int, int] | None) -> None:
    """Label reference structures with an ASE calculator and write them to OUT (.db).

    With emt the set holds any of: strained bulk, homogeneous strains (EOS,
    elastic constants), MD snapshots, vacancies, vacancy hops, (111)/(100)/(110)
    slabs and small clusters; stress is labelled on the periodic structures.
    """
    from mlcalc.data.generate import generate_emt, generate_lj
    from mlcalc.data.generate.emt import DEFAULT_KINDS
    from mlcalc.exceptions import unknown_name

    _refuse_existing(out)
    start = time.perf_counter()
    with _one_line_errors():
        name = calculator.lower()
        if name not in CALCULATORS:
            raise unknown_name("calculator", calculator, CALCULATORS)
        if name == "lj":
            _not_for("--calculator lj", {
                "--kinds": bool(kinds), "--no-surfaces": no_surfaces,
                "--no-stress": not stress,
                "--temperature-K": bool(temperatures_K), "--supercell": supercell is not None})
            if len(elements) > 1:
                raise click.ClickException("--calculator lj takes one element, got "
                                           f"{', '.join(elements)}")
            # Options not given keep the library's defaults (one place for them).
            given = {"n_atoms": n_atoms, "element": elements[0] if elements else None}
            dataset = generate_lj(out, n_structures or DEFAULT_N, seed=seed,
                                  progress=_progress_printer(),
                                  **{k: v for k, v in given.items() if v is not None})
        else:
            _not_for("--calculator emt", {"--n-atoms": n_atoms is not None})
            chosen = _parse_kinds(kinds, no_surfaces, DEFAULT_KINDS)
            if not isinstance(chosen, dict) and n_structures is None:
                n_structures = DEFAULT_N
            given = {"elements": elements or None, "temperatures_K": temperatures_K or None,
                     "supercell": supercell}
            dataset = generate_emt(out, n_structures=n_structures, seed=seed, kinds=chosen,
                                   stress=stress, progress=_progress_printer(),
                                   **{k: v for k, v in given.items() if v is not None})
    meta = dataset.metadata
    props = ", ".join(f"{k} [{v}]" for k, v in dataset.units.items())
    counts = meta.get("kinds")
    detail = f" ({', '.join(f'{k} {v}' for k, v in counts.items())})" if counts else ""
    click.echo(f"wrote {out}: {len(dataset)} structures{detail}; labels {props}; "
               f"{time.perf_counter() - start:.1f} s")


# --- convert ---------------------------------------------------------------------
@data.command("convert")
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--energy-unit", default="eV", show_default=True, help="Unit of the energies.")
@click.option("--distance-unit", default="Ang", show_default=True,
              help="Unit of positions and cell.")
@click.option("--forces-unit", default=None,
              help="Unit of the forces [default: energy unit / distance unit].")
@click.option("--stress-unit", default=None,
              help="Unit of the stress [default: energy unit / distance unit^3].")
@click.option("--index", default=":", show_default=True,
              help="Frames to read, ase.io.read syntax (not for .npz).")
def convert(input_path: str, out: str, energy_unit: str, distance_unit: str,
            forces_unit: str | None, stress_unit: str | None, index: str) -> None:
    """Convert INPUT (extxyz, traj, anything ase.io reads, or MD17-style .npz) into
    the data set OUT (.db). Labels are stored as given with their units."""

    from mlcalc import properties as P
    from mlcalc.exceptions import UnitError
    from mlcalc.units import to_internal

    _refuse_existing(out)
    if not os.path.isfile(input_path):
        raise click.ClickException(f"input file '{input_path}' does not exist")
    forces_unit = forces_unit or f"{energy_unit}/{distance_unit}"
    stress_unit = stress_unit or f"{energy_unit}/{distance_unit}^3"
    # Refuse a bad unit before reading anything.
    for option, prop, unit in (("--energy-unit", P.energy, energy_unit),
                               ("--distance-unit", P.R, distance_unit),
                               ("--forces-unit", P.forces, forces_unit),
                               ("--stress-unit", P.stress, stress_unit)):
        try:
            to_internal(prop, unit)
        except UnitError as err:
            raise click.ClickException(f"{option}: {err}") from None
    with _one_line_errors():
        if input_path.lower().endswith(".npz"):
            from mlcalc.data import from_npz

            _not_for(".npz input", {"--index": index != ":",
                                   "--stress-unit": stress_unit != f"{energy_unit}/"
                                                                   f"{distance_unit}^3"})
            dataset = from_npz(input_path, out, energy_unit=energy_unit,
                               distance_unit=distance_unit, forces_unit=forces_unit)
        else:
            from mlcalc.data import from_ase_file
            from mlcalc.data.convert import detect_properties, read_frames

            units = detect_properties(read_frames(input_path, index=0)[0])
            for prop in units:
                if prop in (P.energy, P.free_energy, P.energies):
                    units[prop] = energy_unit
                elif prop == P.forces:
                    units[prop] = forces_unit
                elif prop == P.stress:
                    units[prop] = stress_unit
            dataset = from_ase_file(input_path, out, property_unit_dict=units,
                                    distance_unit=distance_unit, index=index)
    props = ", ".join(f"{k} [{v}]" for k, v in dataset.units.items()) or "none"
    click.echo(f"wrote {out}: {len(dataset)} structures from {input_path}; labels {props}")


# --- info ------------------------------------------------------------------------
def _fmt(values: Any) -> str:
    return ", ".join(f"{v:.6g}" for v in values)


def _label_lines(labels: dict[str, list[Any]], n_atoms: Any) -> list[str]:
    """Statistics of every label (internal units), one line each."""
    import numpy as np
    from ase import units

    from mlcalc import properties as P

    lines = []
    for prop, values in labels.items():
        if not values:
            continue
        if prop == P.energy:
            e = np.array(values) / n_atoms[: len(values)]
            lines.append(f"energy / atom   mean {e.mean():.6g}, std {e.std():.6g}, "
                         f"min {e.min():.6g}, max {e.max():.6g} eV")
        elif prop == P.forces:
            f = np.concatenate([np.reshape(v, (-1, 3)) for v in values])
            norm = np.linalg.norm(f, axis=1)
            lines.append(f"forces          mean |F_i| {norm.mean():.6g}, max |F_i| "
                         f"{norm.max():.6g}, mean |component| {np.abs(f).mean():.6g}, "
                         f"component std {f.std():.6g} eV/Å")
        elif prop == P.stress:
            s = np.stack([np.reshape(v, 6) for v in values])
            lines.append(f"stress          min {s.min():.6g}, max {s.max():.6g} eV/Å³ "
                         f"({s.min() / units.GPa:.4g} .. {s.max() / units.GPa:.4g} GPa); "
                         f"mean xx,yy,zz,yz,xz,xy {_fmt(s.mean(axis=0))}")
        else:
            v = np.concatenate([np.ravel(x) for x in values]).astype(float)
            lines.append(f"{prop:<15} mean {v.mean():.6g}, std {v.std():.6g}, "
                         f"min {v.min():.6g}, max {v.max():.6g}")
    return lines


@data.command("info")
@click.argument("path", type=click.Path(dir_okay=False))
def info(path: str) -> None:
    """Describe the data set PATH (.db): sizes, elements, periodicity, labels with units
    and statistics (in eV, Å), atomrefs and metadata."""
    from collections import Counter

    import numpy as np
    from ase.data import chemical_symbols

    from mlcalc.data import ASEAtomsData
    from mlcalc.units import INTERNAL_UNITS, to_internal

    with _one_line_errors():
        dataset = ASEAtomsData(path)
        units = dataset.units
        factors = {p: to_internal(p, u) for p, u in units.items()}
        atomrefs = dataset.atomrefs
        n_atoms, elements, periodic = [], Counter(), Counter()
        labels: dict[str, list[Any]] = {p: [] for p in units}
        with dataset.db as db:
            for row in db.select():
                n_atoms.append(row.natoms)
                elements.update(row.numbers.tolist())
                periodic[int(np.sum(row.pbc))] += 1
                for prop in units:
                    value = dataset.row_label(row, prop)
                    if value is not None:
                        labels[prop].append(np.asarray(value, float) * factors[prop])
    n = np.array(n_atoms)
    lines = [f"data set        {path} ({len(n)} structures, distance unit "
             f"{dataset.distance_unit})"]
    if len(n):
        lines.append(f"atoms           min {n.min()}, mean {n.mean():.4g}, max {n.max()} "
                     f"({n.sum()} in all)")
    lines.append("elements        " + (", ".join(f"{chemical_symbols[z]} {c}"
                                                 for z, c in sorted(elements.items())) or "none"))
    lines.append(f"periodicity     {periodic[3]} periodic (3D), {periodic[2]} slab (2D), "
                 f"{periodic[1]} wire (1D), {periodic[0]} molecule (0D)")
    lines.append("properties      " + (", ".join(f"{p} [{u or 'no unit'}]"
                                                 for p, u in units.items()) or "none"))
    missing = [p for p, v in labels.items() if len(v) != len(n)]
    if missing:
        lines.append(f"incomplete      {', '.join(missing)} missing in some rows")
    lines.extend(_label_lines(labels, n))
    for prop, ref in atomrefs.items():
        nonzero = [f"{chemical_symbols[z]} {ref[z].item():.6g}" for z in ref.nonzero().ravel()]
        lines.append(f"atomrefs        {prop}: {', '.join(nonzero) or 'all zero'} "
                     f"{INTERNAL_UNITS.get(prop, '')}")
    for key, value in dataset.metadata.items():
        lines.append(f"metadata        {key}: {value}")
    click.echo("\n".join(lines))
