"""Relax 32 rattled Cu cells in one TorchSim batch with the bundled model.

The same structures relaxed one by one with ASE's FIRE give the same energies;
the batch is faster because every step evaluates all structures in one model
call (see docs/batch.rst for when that pays). Needs ``pip install 'mlcalc[batch]'``.

    python examples/batch_relax.py
"""

from __future__ import annotations

import time

import numpy as np
import torch_sim as ts
from ase.build import bulk

from mlcalc.integrations.torchsim import TorchSimModel


def main() -> None:
    rng = np.random.default_rng(0)
    structures = []
    for k in range(32):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * [(2, 1, 1), (2, 2, 1), (2, 2, 2)][k % 3]
        atoms.rattle(0.05, seed=k)
        atoms.set_cell(atoms.cell.array * (1 + rng.uniform(-0.01, 0.01)), scale_atoms=True)
        structures.append(atoms)
    model = TorchSimModel("cu-emt", device="auto")  # stress on: the cells relax too
    start = time.perf_counter()
    relaxed = ts.optimize(structures, model, optimizer=ts.frechet_cell_fire, max_steps=2000,
                          convergence_fn=ts.generate_force_convergence_fn(0.01))
    results = model(relaxed)
    n = np.bincount(relaxed.system_idx.cpu().numpy())
    per_atom = results["energy"].cpu().numpy() / n
    volumes = np.abs(np.linalg.det(relaxed.row_vector_cell.cpu().numpy())) / n
    print(f"{len(structures)} structures relaxed in {time.perf_counter() - start:.1f} s")
    print(f"energy per atom: {per_atom.min():.6f} .. {per_atom.max():.6f} eV")
    print(f"volume per atom: {volumes.min():.4f} .. {volumes.max():.4f} Å³ "
          f"(fcc Cu at EMT's 3.5898 Å: {3.5898**3 / 4:.4f})")


if __name__ == "__main__":
    main()
