"""How well a model reproduces its reference: the property table of an fcc metal.

Lattice constant, bulk modulus, elastic constants, surface energies, vacancy
formation and hop barrier, phonons at X and L, a 13-atom cluster and the NVE
energy drift, each computed with ASE's and phonopy's own methods for the model
and for the reference calculator (see :mod:`mlcalc.simulate.fidelity`).
Run (about 5 minutes on 2 cores for the bundled model)::

    python examples/fidelity.py cu-emt                # against ASE's EMT
    python examples/fidelity.py run/model.pt --reference emt --symbol Cu -o table.md
    python examples/fidelity.py run/model.pt --reference mypackage.calc:MyCalculator

``--reference`` takes ``emt`` or any ASE calculator class as ``module:Class``
(built without arguments; from Python, :func:`mlcalc.simulate.fidelity.fidelity`
takes any factory of calculators, e.g. a DFT code with its settings).
"""

from __future__ import annotations

import argparse
import sys
import time

REFERENCES = {"emt": "ase.calculators.emt:EMT"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="model file or bundled model name")
    parser.add_argument("--reference", default="emt",
                        help="emt, or an ASE calculator class as module:Class")
    parser.add_argument("--symbol", default="Cu", help="the fcc element")
    parser.add_argument("--nve-steps", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("-o", "--output", help="also write the table to this Markdown file")
    args = parser.parse_args(argv)

    import importlib

    from mlcalc import MLCalculator
    from mlcalc.simulate.fidelity import fidelity, format_rows

    spec = REFERENCES.get(args.reference, args.reference)
    if ":" not in spec:
        parser.error(f"--reference {args.reference!r}: use emt or module:Class")
    module, name = spec.split(":", 1)
    try:
        reference = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        parser.error(f"--reference {args.reference!r}: {exc}")
    start = time.perf_counter()
    rows = fidelity(lambda: MLCalculator(args.model, threads=args.threads), reference,
                    args.symbol, args.nve_steps,
                    progress=lambda step: print(f"  {step} ...", file=sys.stderr, flush=True))
    table = format_rows(rows)
    print(f"{args.model} against {args.reference} ({args.symbol}), "
          f"{time.perf_counter() - start:.0f} s\n")
    print(table)
    print(f"\n{sum(r.met for r in rows)} of {len(rows)} targets met")
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
