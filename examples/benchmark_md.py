"""MD throughput of MLCalculator, split into neighbor list, model and the rest.

For fcc Cu supercells, runs ASE's VelocityVerlet with MLCalculator (random
weights: speed does not depend on them) and, in the same run, with a
zero-force calculator to measure ASE's own loop. Prints one table with the
median over repeats of the per-step times.

    python examples/benchmark_md.py          # PaiNN and SchNet 128x3, 108/500/2048 atoms
    python examples/benchmark_md.py --sizes 108 --skins 0 0.5 1 1.5 2   # skin scan
    python examples/benchmark_md.py --device cuda

Columns: steps/s and atom-steps/s of the whole MD loop; ms per step of the
whole loop, of the neighbor list (Verlet list incl. the per-step cut to the
cutoff), of the model (forward + backward + one copy of the results), of the
rest of MLCalculator (input conversion, checks), and ASE's own loop (zero-force
calculator); NL % is the neighbor list's share of a step. The measurement lives
in :func:`mlcalc.bench.bench_md`; ``mlcalc bench`` adds stress and training.
"""

from __future__ import annotations

import argparse

from mlcalc.bench import MD_COLUMNS, bench_md, format_table, machine_line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["painn", "schnet"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[108, 500, 2048])
    parser.add_argument("--skins", nargs="+", type=float, default=[None])
    parser.add_argument("--features", type=int, default=128)
    parser.add_argument("--interactions", type=int, default=3)
    parser.add_argument("--cutoff", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--paths", nargs="+", default=["fused"], choices=["fused", "eager"],
                        help="compiled message kernels and/or their plain torch reference")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--atom-steps", type=int, default=4000,
                        help="atoms x steps per repeat (sets the steps per size)")
    args = parser.parse_args()

    print(f"# machine: {machine_line(args.device, [args.threads])}")
    print(f"# {args.features}x{args.interactions} models, cutoff {args.cutoff} Å, float32, "
          f"fcc Cu, VelocityVerlet 1 fs, median of {args.repeats} repeats")
    columns = ("model", "path", "step", "atoms", "skin",
               *MD_COLUMNS[MD_COLUMNS.index("steps/s"):MD_COLUMNS.index("stress %")])
    print(format_table([], columns))
    for n in args.sizes:
        for name in args.models:
            for path in args.paths:
                for skin in args.skins:
                    row = bench_md(name, n, args.threads, args.device, features=args.features,
                                   interactions=args.interactions, cutoff=args.cutoff,
                                   repeats=args.repeats, atom_steps=args.atom_steps, skin=skin,
                                   path=path)
                    print(format_table([row], columns).splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
