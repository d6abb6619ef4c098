"""Regenerate the bundled ``cu-emt`` model and check it against EMT.

Steps: make the quick-start data with ASE's EMT (``mlcalc data generate``),
train ``recipes/quickstart.yaml`` (``mlcalc fit``), copy the model into
``mlcalc/pretrained/cu-emt.pt``, then compare the model with EMT itself:
lattice constant and bulk modulus from an equation of state, and phonon
frequencies at Γ, X and L from ASE's finite-displacement phonons. Prints a
table (reStructuredText) that goes into docs/results/cu_emt_model.inc.

    python examples/make_bundled_model.py                  # everything (~5-15 min on 2 cores)
    python examples/make_bundled_model.py --check-only     # only compare the bundled model
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.eos import EquationOfState
from ase.phonons import Phonons
from ase.units import GPa, _e, _hbar

from mlcalc import MLCalculator

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "quickstart.yaml"
DATA = ROOT / "recipes" / "data" / "cu-emt.db"
TARGET = ROOT / "mlcalc" / "pretrained" / "cu-emt.pt"
#: fcc special points in reciprocal-lattice coordinates of the primitive cell
POINTS = {"Γ": (0.0, 0.0, 0.0), "X": (0.5, 0.0, 0.5), "L": (0.5, 0.5, 0.5)}


def train(run_dir: Path) -> Path:
    from mlcalc.data.generate import generate_emt
    from mlcalc.train.fit import fit
    from mlcalc.train.recipe import load_recipe

    if not DATA.exists():
        generate_emt(DATA, elements=("Cu",), n_structures=300, seed=0,
                     kinds=("bulk", "md", "vacancy"))
    result = fit(load_recipe(RECIPE), output_dir=run_dir, progress=False)
    shutil.copyfile(result.model_path, TARGET)
    return TARGET


def equation_of_state(calc) -> tuple[float, float]:
    """Lattice constant (Å) and bulk modulus (GPa) of fcc Cu."""
    volumes, energies = [], []
    for a in np.linspace(3.45, 3.75, 13):
        atoms = bulk("Cu", "fcc", a=a, cubic=True)
        atoms.calc = calc
        volumes.append(atoms.get_volume())
        energies.append(atoms.get_potential_energy())
    v0, _, b = EquationOfState(volumes, energies).fit()
    return v0 ** (1 / 3), b / GPa  # 4-atom cubic cell: V = a³


def phonon_frequencies(calc, a: float, workdir: Path) -> dict[str, np.ndarray]:
    """Frequencies (THz) at Γ, X, L from a 4x4x4 supercell of the primitive cell."""
    atoms = bulk("Cu", "fcc", a=a)
    ph = Phonons(atoms, calc, supercell=(4, 4, 4), delta=0.01, name=str(workdir))
    ph.run()
    ph.read(acoustic=True)
    ph.clean()
    ev_to_thz = _e / (2 * np.pi * _hbar) / 1e12  # f = E / h
    energies = ph.band_structure(list(POINTS.values()))  # eV
    return {k: np.sort(e) * ev_to_thz for k, e in zip(POINTS, energies, strict=True)}


def compare(model: Path, workdir: Path) -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    ml = MLCalculator(model, dtype="float64")
    rows = []
    a_ref, b_ref = equation_of_state(EMT())
    a_ml, b_ml = equation_of_state(ml)
    rows.append(("lattice constant (Å)", a_ref, a_ml))
    rows.append(("bulk modulus (GPa)", b_ref, b_ml))
    f_ref = phonon_frequencies(EMT(), a_ref, workdir / "emt")
    f_ml = phonon_frequencies(ml, a_ref, workdir / "ml")
    for point in ("X", "L"):
        for k, label in ((0, "TA"), (2, "LA")):
            rows.append((f"{label} at {point} (THz)", f_ref[point][k], f_ml[point][k]))
    gamma = float(np.abs(f_ml["Γ"]).max())
    metrics = ml.model.metadata.get("test_metrics", {})
    lines = [".. list-table::", "   :header-rows: 1", "",
             "   * - quantity", "     - EMT", "     - cu-emt model", "     - deviation"]
    for name, ref, val in rows:
        lines += [f"   * - {name}", f"     - {ref:.4g}", f"     - {val:.4g}",
                  f"     - {100 * (val - ref) / ref:+.2f} %"]
    lines += ["", f"Acoustic frequencies at Γ: at most {gamma:.2g} THz.", ""]
    lines += ["Test-set errors of the bundled model (from its metadata):", ""]
    for prop, values in metrics.items():
        shown = ", ".join(f"{k.upper()} {v:.3g}" for k, v in values.items() if k != "unit")
        lines.append(f"- {prop}: {shown} {values['unit']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check-only", action="store_true")
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "cu-emt")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "cu_emt_model.inc")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = TARGET if args.check_only else train(args.run_dir)
    table = compare(model, args.run_dir / "phonons")
    print(table)
    args.out.write_text(table)
    print(json.dumps({"model": str(model), "table": str(args.out)}))


if __name__ == "__main__":
    main()
