"""Build a small PaiNN and print the energy, forces and stress of a Cu cell.

The weights are random (seeded): this shows the plumbing and the units, not
a trained potential. Run:  python examples/painn_cu.py
"""

from __future__ import annotations

import numpy as np
import torch
from ase.build import bulk

from mlcalc.model import build_potential, predict


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_potential("painn", n_atom_basis=32, n_interactions=3, cutoff=5.0,
                            offsets={"mean_per_atom": -3.5})
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms.rattle(0.05, seed=1)
    result = predict(model, atoms, ["energy", "forces", "stress"])[0]
    np.set_printoptions(precision=5, suppress=True)
    print(f"model: {model.representation.name}, cutoff {model.cutoff} Å, "
          f"network {str(model.dtype).removeprefix('torch.')}")
    print(f"energy  {result['energy']:.6f} eV ({len(atoms)} atoms)")
    print("forces (eV/Å)\n", result["forces"])
    print("stress (eV/Å³, Voigt xx yy zz yz xz xy)\n", result["stress"])


if __name__ == "__main__":
    main()
