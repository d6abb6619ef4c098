"""Regenerate the bundled ``cu-emt`` model and its fidelity table against EMT.

Steps, end to end and reproducible by seed:

1. the reference data (:data:`KINDS`: strained and homogeneously strained bulk,
   MD from 300 to 1500 K, vacancies and vacancy hops, (111)/(100)/(110) slabs,
   small clusters) labelled with ASE's EMT into ``recipes/data/cu-emt-full.db``
   (``mlcalc data generate`` makes the same set with ``--kinds bulk=200 ...``);
2. ``mlcalc fit recipes/cu-emt.yaml`` (2 threads);
3. the model copied to ``mlcalc/pretrained/cu-emt.pt``;
4. the fidelity table (:mod:`mlcalc.simulate.fidelity`: EOS, elastic
   constants, surfaces, vacancy and its NEB barrier, phonons, Cu13, NVE drift)
   written to ``docs/results/cu_emt_fidelity.inc`` for docs/fitting.rst.

    python examples/make_bundled_model.py                  # everything (~15 min on 2 cores)
    python examples/make_bundled_model.py --check-only     # only the table of the bundled model
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch
from ase.calculators.emt import EMT

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "cu-emt.yaml"
DATA = ROOT / "recipes" / "data" / "cu-emt-full.db"
TARGET = ROOT / "mlcalc" / "pretrained" / "cu-emt.pt"
OUT = ROOT / "docs" / "results" / "cu_emt_fidelity.inc"
#: Structures per kind of the bundled model's data (960 in all, seed 0).
KINDS = {"bulk": 200, "strain": 160, "md": 200, "vacancy": 80, "hop": 80, "surface": 120,
         "cluster": 120}
TEMPERATURES_K = (300.0, 600.0, 900.0, 1200.0, 1500.0)


def make_data() -> Path:
    from mlcalc.data.generate import generate_emt

    if not DATA.exists():
        generate_emt(DATA, elements=("Cu",), seed=0, kinds=KINDS, temperatures_K=TEMPERATURES_K)
    return DATA


def train(run_dir: Path) -> tuple[Path, float]:
    from mlcalc.train.fit import fit
    from mlcalc.train.recipe import load_recipe

    make_data()
    start = time.perf_counter()
    result = fit(load_recipe(RECIPE), output_dir=run_dir, progress=False)
    minutes = (time.perf_counter() - start) / 60
    shutil.copyfile(result.model_path, TARGET)
    return TARGET, minutes


def table(model: Path, minutes: float | None) -> str:
    from mlcalc import MLCalculator
    from mlcalc.simulate.fidelity import fidelity, format_rows

    rows = fidelity(lambda: MLCalculator(model), EMT, "Cu",
                    progress=lambda step: print(f"  {step} ...", flush=True))
    metrics = MLCalculator(model).model.metadata.get("test_metrics", {})
    lines = [f"``{model.name}`` against ASE's EMT (float32 network; "
             f"{sum(r.met for r in rows)} of {len(rows)} targets met"
             + (f"; trained in {minutes:.1f} min on 2 cores" if minutes else "") + "):", "",
             ".. code-block:: text", ""]
    lines += ["   " + line for line in format_rows(rows).splitlines()] + [""]
    lines += ["Test-set errors (from the model's metadata):", ""]
    for prop, values in metrics.items():
        shown = ", ".join(f"{k.upper()} {v:.3g}" for k, v in values.items() if k != "unit")
        lines.append(f"- {prop}: {shown} {values['unit']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check-only", action="store_true")
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "cu-emt")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, minutes = (TARGET, None) if args.check_only else train(args.run_dir)
    text = table(model, minutes)
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
