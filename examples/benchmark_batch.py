"""Many small structures: TorchSim's batched engine against one ASE call at a time.

64 rattled fcc Cu cells (8 to 108 atoms), the bundled ``cu-emt`` model (float32):

- static: energy and forces of every structure, batched (``ts.static``) vs
  ``MLCalculator`` one structure after the other;
- FIRE: relaxation of every structure to the same fmax, batched
  (``ts.optimize`` with TorchSim's FIRE, converged structures leave the batch)
  vs ASE's FIRE with ``MLCalculator`` one structure after the other; the final
  energies are compared.

Prints a Markdown table (structures per second, the ratio, the largest
difference of the relaxed energies). Run::

    python examples/benchmark_batch.py --threads 1 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from ase.build import bulk
from ase.optimize import FIRE

from mlcalc import MLCalculator

SHAPES = {8: (2, 1, 1), 16: (2, 2, 1), 32: (2, 2, 2), 108: (3, 3, 3)}


def structures(sizes: list[int], seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for k, n in enumerate(sizes):
        atoms = bulk("Cu", "fcc", a=3.6 * (1 + rng.uniform(-0.01, 0.01)), cubic=True)
        atoms = atoms * SHAPES[n]
        atoms.rattle(0.05, seed=seed + k)
        out.append(atoms)
    return out


def one_by_one_static(frames, model) -> float:
    calc = MLCalculator(model)
    start = time.perf_counter()
    for atoms in frames:
        a = atoms.copy()
        a.calc = calc
        a.get_forces()
    return time.perf_counter() - start


def batched_static(frames, engine) -> float:
    import torch_sim as ts

    start = time.perf_counter()
    ts.static(frames, engine)
    return time.perf_counter() - start


def one_by_one_fire(frames, model, fmax: float) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    energies = []
    for atoms in frames:
        a = atoms.copy()
        a.calc = MLCalculator(model)
        FIRE(a, logfile=None).run(fmax=fmax, steps=3000)
        energies.append(a.get_potential_energy() / len(a))
    return time.perf_counter() - start, np.array(energies)


def batched_fire(frames, engine, fmax: float) -> tuple[float, np.ndarray]:
    import torch_sim as ts

    start = time.perf_counter()
    state = ts.optimize(frames, engine, optimizer=ts.optimizers.fire, max_steps=3000,
                        convergence_fn=ts.generate_force_convergence_fn(
                            fmax, include_cell_forces=False))
    elapsed = time.perf_counter() - start
    energies = engine(state)["energy"].numpy()
    counts = torch.bincount(state.system_idx).numpy()
    return elapsed, energies / counts


def main() -> None:
    from mlcalc.integrations.torchsim import TorchSimModel

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, action="append", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fmax", type=float, default=0.01)
    args = parser.parse_args()
    sets = {"8-32 atoms": [8, 16, 32] * 21 + [8],
            "8-108 atoms": [8, 16, 32, 108] * 16}
    print("| structures | threads | task | one by one (structures/s) | batched (structures/s) "
          "| ratio | max |ΔE| (eV/atom) |")
    print("|---|---|---|---|---|---|---|")
    for threads in args.threads or [1]:
        torch.set_num_threads(threads)
        engine = TorchSimModel("cu-emt", device="cpu", compute_stress=False)
        model = engine.model
        for name, sizes in sets.items():
            frames = structures(sizes)
            batched_static(frames[:4], engine)  # warm-up (kernels, allocator)
            one = statistics.median(one_by_one_static(frames, model)
                                    for _ in range(args.repeats))
            many = statistics.median(batched_static(frames, engine) for _ in range(args.repeats))
            print(f"| {name} | {threads} | static | {len(frames) / one:.0f} | "
                  f"{len(frames) / many:.0f} | {one / many:.1f} | - |", flush=True)
            t_one, e_one = one_by_one_fire(frames, model, args.fmax)
            t_many, e_many = batched_fire(frames, engine, args.fmax)
            print(f"| {name} | {threads} | FIRE to {args.fmax} eV/Å | {len(frames) / t_one:.2f} "
                  f"| {len(frames) / t_many:.2f} | {t_one / t_many:.1f} | "
                  f"{np.abs(e_one - e_many).max():.1e} |", flush=True)


if __name__ == "__main__":
    main()
