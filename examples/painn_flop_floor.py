"""How close PaiNN's MD step runs to its FLOP floor on this CPU (1 thread).

The floor is the arithmetic of one E+F step (forward, and the backward for the
input gradients only) done at the rate this core sustains on the model's own
matrix products. The script counts the multiply-adds of PaiNN 128×3 per atom
(matrix products and the message loops, with the pairs per atom of the
structure), measures the GEMM rate on the shapes of the step, runs MD with
MLCalculator in the same process, and prints a table.

    python examples/painn_flop_floor.py --sizes 108,500,2048

Numbers depend on the CPU (name it, e.g. with ``lscpu``); compare the fraction
of the floor, not the absolute rate, across machines.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from ase.neighborlist import neighbor_list

from mlcalc.bench import bench_md, cu_supercell, machine_line


def macs_per_atom(pairs_per_atom: float, F: int = 128, K: int = 21, n_interactions: int = 3
                  ) -> dict[str, float]:
    """Multiply-adds per atom of a PaiNN E+F step, by part (half list: pairs_per_atom)."""
    filt = pairs_per_atom * K * 3 * F  # W = basis @ Wt, once per pair
    dense = F * F + F * 3 * F + 3 * F * 2 * F + 2 * F * F + F * 3 * F  # context, mix, update ctx
    # message loop per pair, both edges: Δq (F), Δμ (3 components × 2 terms × F)
    loop = pairs_per_atom * 2 * (F + 6 * F)
    per_interaction = {
        "filter products": filt * 2,  # forward, and the basis gradient Wt gWᵀ
        "dense layers": dense * 2,  # forward, and the input gradient
        "message loops": loop * 3,  # forward, backward about twice the forward
    }
    return {k: v * n_interactions for k, v in per_interaction.items()}


def gemm_rate(shapes: list[tuple[int, int, int]], repeats: int = 50) -> float:
    """Median GFLOP/s of torch.mm over ``shapes`` (m, k, n), float32, this thread count."""
    rates = []
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        out = torch.empty(m, n)
        for _ in range(5):
            torch.mm(a, b, out=out)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, b, out=out)
            times.append(time.perf_counter() - t0)
        rates.append(2 * m * k * n / statistics.median(times) / 1e9)
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="108,500,2048")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"Machine: {machine_line('cpu', [1])}\n")
    rows = []
    for n in sizes:
        atoms = cu_supercell(n)
        i, _ = neighbor_list("ij", atoms, 5.0)
        ppa = len(i) / 2 / n
        parts = macs_per_atom(ppa)
        flop = 2 * sum(parts.values())
        # the step's own products: pair tiles of the filter, atom-wise dense layers
        rate = gemm_rate([(170, 21, 384), (n, 128, 384), (3 * n, 128, 256), (n, 256, 128)])
        speeds = [bench_md("painn", n, 1, repeats=3, atom_steps=3000)["atom-steps/s"]
                  for _ in range(args.rounds)]
        speed = statistics.median(speeds)
        floor = rate * 1e9 / flop
        rows.append((n, ppa, flop / 1e6, rate, floor, speed, speed / floor))
    print("| atoms | pairs/atom | MFLOP/atom | GEMM GFLOP/s | floor atom-steps/s "
          "| measured atom-steps/s | of floor |")
    print("|---|---|---|---|---|---|---|")
    for n, ppa, mflop, rate, floor, speed, frac in rows:
        print(f"| {n} | {ppa:.1f} | {mflop:.2f} | {rate:.0f} | {floor:,.0f} | {speed:,.0f} "
              f"| {100 * frac:.0f} % |")


if __name__ == "__main__":
    main()
