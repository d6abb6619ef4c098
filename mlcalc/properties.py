"""Keys of the input and output dictionaries that flow through mlcalc.

Every tensor a transform, model or task reads or writes is named by one of
these constants. Where ASE has a name for the quantity the value *is* ASE's
name, so ``results[properties.forces]`` and ``atoms.get_forces()`` agree.

Shapes use ``N`` for atoms in a batch, ``M`` for structures and ``E`` for
pairs (edges) of the neighbor list.
"""

# --- structure (inputs) -------------------------------------------------
Z = "numbers"  #: (N,) int64 atomic numbers
R = "positions"  #: (N, 3) float64 Cartesian positions, Å
cell = "cell"  #: (M, 3, 3) float64 lattice vectors as rows, Å
pbc = "pbc"  #: (M, 3) bool periodic directions
n_atoms = "n_atoms"  #: (M,) int64 number of atoms per structure
idx_m = "idx_m"  #: (N,) int64 structure index of every atom
idx = "idx"  #: (M,) int64 index of the structure in its data set

# --- neighbor list ------------------------------------------------------
idx_i = "idx_i"  #: (E,) int64 centre atom of each pair
idx_j = "idx_j"  #: (E,) int64 neighbor atom of each pair
cell_shifts = "cell_shifts"  #: (E, 3) integer cell shifts (stored as int64)
#: (E,) bool, optional: False marks a padding slot of a static-shape pair list
#: (:mod:`mlcalc.transform.padded`); its pair vector is set beyond any cutoff,
#: so it contributes exactly zero.
pair_mask = "pair_mask"
Rij = "Rij"  #: (E, 3) float64 pair vectors R_j - R_i + shift @ cell, Å

# --- strain (stress) ----------------------------------------------------
strain = "strain"  #: (M, 3, 3) symmetric strain used for the stress derivative

# --- representation -----------------------------------------------------
scalar_representation = "scalar_representation"  #: (N, F)
vector_representation = "vector_representation"  #: (N, 3, F)

# --- outputs / labels ---------------------------------------------------
energy = "energy"  #: (M,) float64 total energy, eV
free_energy = "free_energy"  #: (M,) alias of energy for ASE
energies = "energies"  #: (N,) per-atom energies, eV
forces = "forces"  #: (N, 3) forces, eV/Å
stress = "stress"  #: (M, 6) Voigt stress (xx, yy, zz, yz, xz, xy), eV/Å³, ASE sign
hessian = "hessian"  #: (M, 3n, 3n) second derivative of the energy, eV/Å²

# --- ensembles ------------------------------------------------------------
energy_std = "energy_std"  #: (M,) standard deviation of the members' energies, eV
forces_std = "forces_std"  #: (N,) per-atom RMS deviation of the members' forces, eV/Å
stress_std = "stress_std"  #: (M, 6) standard deviation of the members' stress, eV/Å³

#: Properties the models can predict and data sets can label.
PREDICTABLE = (energy, energies, forces, stress, hessian)

#: Structure keys written by :func:`mlcalc.data.atoms_to_inputs`.
STRUCTURE_KEYS = (Z, R, cell, pbc, n_atoms)

#: Keys whose values count atoms (re-indexed when batching).
ATOM_INDEX_KEYS = (idx_i, idx_j)

#: Per-atom properties (concatenated along atoms in a batch).
PER_ATOM = (Z, R, energies, forces)
