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
calculator); NL % is the neighbor list's share of a step.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch
from ase import units
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet

from mlcalc import MLCalculator
from mlcalc.model import build_potential

SIZES = {32: 2, 108: 3, 256: 4, 500: 5, 864: 6, 2048: 8, 4000: 10, 16384: 16}


class ZeroCalculator(Calculator):
    """Zero energy and forces: what ASE's own MD loop costs."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results = {"energy": 0.0, "free_energy": 0.0, "forces": np.zeros((len(atoms), 3))}


def cu(n_atoms: int):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * ((SIZES[n_atoms],) * 3)
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    return atoms


def time_md(atoms, calc, steps: int, repeats: int) -> tuple[float, dict[str, float]]:
    """Median seconds per MD step and median per-step split of MLCalculator's timers."""
    atoms.calc = calc
    dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    dyn.run(2)  # warm up (first neighbor list, allocator)
    per_step, splits = [], []
    for _ in range(repeats):
        before = dict(getattr(calc, "timings", {}))
        t0 = time.perf_counter()
        dyn.run(steps)
        per_step.append((time.perf_counter() - t0) / steps)
        after = getattr(calc, "timings", {})
        splits.append({k: (after[k] - before[k]) / steps for k in after})
    median_split = {k: statistics.median(s[k] for s in splits) for k in splits[0]} if splits[
        0] else {}
    return statistics.median(per_step), median_split


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
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--atom-steps", type=int, default=4000,
                        help="atoms x steps per repeat (sets the steps per size)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"# machine: {platform.processor() or platform.machine()}, {args.threads} thread(s), "
          f"device {args.device}, torch {torch.__version__}")
    print(f"# {args.features}x{args.interactions} models, cutoff {args.cutoff} Å, float32, "
          f"fcc Cu, VelocityVerlet 1 fs, median of {args.repeats} repeats")
    header = ("model", "atoms", "skin", "steps/s", "atom-steps/s", "ms/step", "NL ms", "model ms",
              "rest ms", "ASE ms", "NL %")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for n in args.sizes:
        steps = max(2, args.atom_steps // n)
        ase_step, _ = time_md(cu(n), ZeroCalculator(), steps, args.repeats)
        for name in args.models:
            torch.manual_seed(0)
            model = build_potential(name, n_atom_basis=args.features,
                                    n_interactions=args.interactions, cutoff=args.cutoff)
            for skin in args.skins:
                kwargs = {} if skin is None else {"skin": skin}
                calc = MLCalculator(model, device=args.device, threads=args.threads, **kwargs)
                step, split = time_md(cu(n), calc, steps, args.repeats)
                nl, mdl = split["neighbor_list"], split["model"]
                rest = split["calculate"] - nl - mdl
                row = (name, n, calc.skin, f"{1 / step:.1f}", f"{n / step:.0f}",
                       f"{1e3 * step:.2f}", f"{1e3 * nl:.2f}", f"{1e3 * mdl:.2f}",
                       f"{1e3 * rest:.2f}", f"{1e3 * ase_step:.2f}", f"{100 * nl / step:.1f}")
                print("| " + " | ".join(str(x) for x in row) + " |", flush=True)


if __name__ == "__main__":
    main()
