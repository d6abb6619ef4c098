"""MD speed of an imported SchNetPack PaiNN: mlcalc's MLCalculator vs SchNetPack's SpkCalculator.

A SchNetPack 2 PaiNN 128x3 (cutoff 5 Å, 20 Gaussians, random weights: speed
does not depend on them) is saved as SchNetPack's training saves it, imported
with :func:`mlcalc.integrations.schnetpack.load_schnetpack`, and both
calculators run ASE's VelocityVerlet (1 fs, fcc Cu at 300 K, float32) in the
same process, alternating repeats. Prints a Markdown table of the median
steps/s and the ratio, and the largest difference of the two calculators'
energies and forces on the starting structure (float32).

Needs SchNetPack and mlcalc in one environment::

    ../shared/tools/schnetpack-venv.sh /tmp/spk
    /tmp/spk/bin/pip install --no-deps -e . && /tmp/spk/bin/pip install click ninja
    /tmp/spk/bin/python examples/benchmark_schnetpack.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import schnetpack as spk
import schnetpack.transform as trn
import torch
from ase import units
from ase.build import bulk
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet

from mlcalc import MLCalculator
from mlcalc.bench import machine_line
from mlcalc.integrations.schnetpack import load_schnetpack

SHAPES = {108: (3, 3, 3), 256: (4, 4, 4), 500: (5, 5, 5)}


def schnetpack_painn(path: Path, features: int, interactions: int, cutoff: float) -> None:
    """A SchNetPack PaiNN energy/forces/stress model saved like training's best_model."""
    torch.manual_seed(0)
    rep = spk.representation.PaiNN(
        n_atom_basis=features, n_interactions=interactions,
        radial_basis=spk.nn.GaussianRBF(n_rbf=20, cutoff=cutoff),
        cutoff_fn=spk.nn.CosineCutoff(cutoff))
    model = spk.model.NeuralNetworkPotential(
        representation=rep,
        input_modules=[spk.atomistic.Strain(), spk.atomistic.PairwiseDistances()],
        output_modules=[spk.atomistic.Atomwise(n_in=features, output_key="energy"),
                        spk.atomistic.Forces(calc_stress=True)],
        postprocessors=[trn.CastTo64(), trn.AddOffsets("energy", add_mean=True,
                                                       property_mean=torch.tensor(-3.5))])
    torch.save(model, path)


def structure(n: int):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * SHAPES[n]
    atoms.rattle(0.02, seed=1)
    return atoms


def steps_per_second(atoms, calc, steps: int) -> float:
    atoms = atoms.copy()
    atoms.calc = calc
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(atoms, 1.0 * units.fs)
    dyn.run(3)  # warm-up: first neighbor list, kernel dispatch
    start = time.perf_counter()
    dyn.run(steps)
    return steps / (time.perf_counter() - start)


def make_calculators(best_model: Path, model, args) -> dict:
    """SchNetPack's calculator with its plain and its skin neighbor list, and mlcalc's."""
    def spk_calc(neighbor_list):
        return spk.interfaces.SpkCalculator(str(best_model), neighbor_list=neighbor_list,
                                            energy_unit="eV", position_unit="Ang",
                                            dtype=torch.float32)

    return {
        "SpkCalculator (matscipy list)": spk_calc(trn.MatScipyNeighborList(cutoff=args.cutoff)),
        "SpkCalculator (skin list)": spk_calc(trn.SkinNeighborList(
            trn.MatScipyNeighborList(cutoff=args.cutoff), cutoff_skin=1.0)),
        "MLCalculator (imported)": MLCalculator(model, threads=args.threads),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[108, 500])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--features", type=int, default=128)
    parser.add_argument("--interactions", type=int, default=3)
    parser.add_argument("--cutoff", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--atom-steps", type=int, default=6000,
                        help="atoms x steps per repeat (sets the steps per size)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # ASE's velocity helpers

    with tempfile.TemporaryDirectory() as tmp:
        best_model = Path(tmp) / "best_model"
        schnetpack_painn(best_model, args.features, args.interactions, args.cutoff)
        model = load_schnetpack(best_model, elements=[29])
        print(f"# machine: {machine_line('cpu', [args.threads])}")
        print(f"# PaiNN {args.features}x{args.interactions}, cutoff {args.cutoff} Å, float32, "
              f"fcc Cu, VelocityVerlet 1 fs, median of {args.repeats} repeats, "
              f"torch {torch.__version__}, schnetpack {spk.__version__}")
        names = list(make_calculators(best_model, model, args))
        print("| atoms | " + " | ".join(f"{n} steps/s" for n in names)
              + " | mlcalc / best SpkCalculator | max abs ΔE (eV) | max abs ΔF (eV/Å) |")
        print("|---" * (len(names) + 4) + "|")
        for n in args.sizes:
            atoms = structure(n)
            calcs = make_calculators(best_model, model, args)  # the skin list holds one system
            ml = calcs[names[-1]]
            ref = calcs[names[0]]
            e = [c.get_potential_energy(atoms.copy()) for c in (ref, ml)]
            f = [c.get_forces(atoms.copy()) for c in (ref, ml)]
            steps = max(args.atom_steps // n, 5)
            rates = {name: [] for name in names}
            for _ in range(args.repeats):
                for name in names:
                    rates[name].append(steps_per_second(atoms, calcs[name], steps))
            med = {name: statistics.median(v) for name, v in rates.items()}
            best_spk = max(v for k, v in med.items() if k.startswith("Spk"))
            print(f"| {n} | " + " | ".join(f"{med[name]:.1f}" for name in names)
                  + f" | {med[names[-1]] / best_spk:.2f}x | {abs(e[0] - e[1]):.1e}"
                  + f" | {np.abs(f[0] - f[1]).max():.1e} |", flush=True)


if __name__ == "__main__":
    main()
