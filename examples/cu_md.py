"""Molecular dynamics of fcc Cu with the bundled ``cu-emt`` model, in plain ASE.

A 108-atom cell at 300 K with ASE's Langevin thermostat (2 fs steps); prints
the energies and temperature every 25 steps and compares the final energy
with EMT, the reference the model was trained on. Run:

    python examples/cu_md.py
"""

from __future__ import annotations

import numpy as np
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import thermalize_momenta

from mlcalc import MLCalculator


def main(steps: int = 200) -> None:
    atoms = bulk("Cu", "fcc", a=3.59, cubic=True) * (3, 3, 3)
    atoms.calc = MLCalculator("cu-emt")
    print(atoms.calc)
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    # fixcm=False: ASE's fixcm=True does not sample the canonical ensemble (and is deprecated)
    dyn = Langevin(atoms, timestep=2 * units.fs, temperature_K=300, friction=0.01,
                   fixcm=False, rng=np.random.default_rng(1))

    def report() -> None:
        epot = atoms.get_potential_energy() / len(atoms)
        ekin = atoms.get_kinetic_energy() / len(atoms)
        print(f"step {dyn.nsteps:4d}  Epot {epot:9.5f}  Ekin {ekin:8.5f}  "
              f"Etot {epot + ekin:9.5f} eV/atom  T {atoms.get_temperature():6.1f} K")

    dyn.attach(report, interval=25)
    dyn.run(steps)
    reference = atoms.copy()
    reference.calc = EMT()
    print(f"final structure: model {atoms.get_potential_energy() / len(atoms):.5f} eV/atom, "
          f"EMT {reference.get_potential_energy() / len(atoms):.5f} eV/atom")


if __name__ == "__main__":
    main()
