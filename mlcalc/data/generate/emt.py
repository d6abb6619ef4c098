"""fcc metals and their random alloys labelled with ASE's EMT, reproducible by seed.

:func:`generate_emt` makes the structures users compute properties of:

- ``bulk``: strained (±``max_strain`` per component) and rattled supercells;
- ``strain``: homogeneous strains for equations of state and elastic
  constants: volume within ±``max_volume_strain`` and a shear within
  ±``max_shear`` per component, barely rattled;
- ``md``: snapshots of Langevin trajectories at ``temperatures_K``;
- ``vacancy``: a supercell less one atom, strained and rattled;
- ``hop``: a vacancy with a neighbor part-way along its jump into it (the
  path of vacancy migration, saddle point included);
- ``surface``: (111), (100) and (110) slabs, 4 layers, 6 Å vacuum each side;
- ``cluster``: small clusters (13-atom icosahedra and cuboctahedra, a
  7-atom decahedron, compact fcc fragments of ``cluster_sizes`` atoms),
  partly relaxed with EMT and rattled.

Every random draw comes from one ``numpy.random.Generator`` seeded with
``seed`` (Langevin's noise and the Maxwell-Boltzmann velocities included), so
the same arguments (and ASE version) give identical structures and labels, bit
for bit. All labels are computed before the database is created: an error or
an interrupt leaves no half-written file.

**Stress** (Voigt-6, eV/Å³, ASE sign) is labelled where it is defined: on the
structures periodic in all three directions. Slabs and clusters carry an
undefined stress (stored as NaN; see :data:`mlcalc.data.labels.UNDEFINED_STRESS`),
which training and evaluation leave out, so one data set can hold them all.

Units stored: energy eV, forces eV/Å, stress eV/Å³.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence

import ase
import numpy as np
from ase import Atoms, units
from ase.build import bulk, fcc100, fcc110, fcc111
from ase.data import atomic_numbers, reference_states

from mlcalc import properties as P
from mlcalc.data.atoms_data import ASEAtomsData
from mlcalc.data.generate.common import (
    Progress,
    check_new_path,
    label,
    minimize_1d,
    split_count,
    write_set,
)
from mlcalc.exceptions import UnknownNameError, did_you_mean, unknown_name

#: Elements :func:`generate_emt` builds: the fcc metals of ASE's EMT. (EMT's
#: C, N, O and H parameters are meant for adsorbates, not for fcc lattices.)
EMT_ELEMENTS = ("Ag", "Al", "Au", "Cu", "Ni", "Pd", "Pt")
#: Structure kinds of :func:`generate_emt`.
EMT_KINDS = ("bulk", "strain", "md", "vacancy", "hop", "surface", "cluster")
#: The kinds made when none are named.
DEFAULT_KINDS = ("bulk", "md", "vacancy", "surface")
#: Surface facets, in turn.
FACETS = ("111", "100", "110")

# Langevin MD: 2 fs steps, friction 0.02/fs, 100 equilibration steps, then a
# snapshot every 10 steps (20 fs) from one trajectory per temperature.
_MD_TIMESTEP_FS = 2.0
_MD_FRICTION_PER_FS = 0.02
_MD_EQUILIBRATION = 100
_MD_INTERVAL = 10
_SLAB_LAYERS = 4
_VACUUM_A = 6.0
_CLUSTER_RELAX_STEPS = 30


def _emt_energy(atoms: Atoms) -> float:
    from ase.calculators.emt import EMT

    atoms.calc = EMT()
    energy = atoms.get_potential_energy()
    atoms.calc = None
    return energy


@functools.cache
def emt_lattice_constant(symbol: str) -> float:
    """EMT equilibrium fcc lattice constant of ``symbol`` in Å (energy of the
    primitive cell minimized from ASE's reference lattice constant)."""
    a_ref = reference_states[atomic_numbers[symbol]]["a"]
    return minimize_1d(lambda a: _emt_energy(bulk(symbol, "fcc", a=a)), a_ref, 0.03 * a_ref)


def _relax_volume(atoms: Atoms) -> Atoms:
    """Scale the cell isotropically to the EMT energy minimum: Vegard's law
    alone leaves random alloys under several GPa of pressure."""
    cell = atoms.cell.array.copy()

    def energy(scale: float) -> float:
        atoms.set_cell(cell * scale, scale_atoms=True)
        return _emt_energy(atoms)

    atoms.set_cell(cell * minimize_1d(energy, 1.0, 0.02), scale_atoms=True)
    return atoms


class _FccBuilder:
    """Random fcc structures (alloys by random substitution) from one generator."""

    def __init__(self, rng: np.random.Generator, elements: Sequence[str],
                 supercell: tuple[int, int, int], max_strain: float, rattle_A: float) -> None:
        self.rng, self.elements, self.supercell = rng, list(elements), supercell
        self.max_strain, self.rattle_A = max_strain, rattle_A
        self.a0 = np.array([emt_lattice_constant(s) for s in elements])

    def _substitute(self, atoms: Atoms) -> np.ndarray:
        """Random symbols on the sites (composition uniform on the simplex); their indices."""
        fractions = self.rng.dirichlet(np.ones(len(self.elements)))
        idx = self.rng.choice(len(self.elements), size=len(atoms), p=fractions)
        atoms.symbols = [self.elements[i] for i in idx]
        return idx

    def _decorate(self, atoms: Atoms) -> Atoms:
        """Random substitution, then Vegard's lattice constant of the drawn sites."""
        if len(self.elements) == 1:
            return atoms
        idx = self._substitute(atoms)
        atoms.set_cell(atoms.cell.array * (self.a0[idx].mean() / self.a0[0]), scale_atoms=True)
        return atoms

    def deform(self, atoms: Atoms, eps: np.ndarray) -> Atoms:
        """Apply the symmetric strain ``eps`` (3, 3) to cell and positions."""
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
        return atoms

    def strain(self, atoms: Atoms) -> Atoms:
        """Random symmetric strain, each component uniform in ±max_strain."""
        return self.deform(atoms, self.rng.uniform(-self.max_strain, self.max_strain, (3, 3)))

    def rattle(self, atoms: Atoms, scale: float = 1.0) -> Atoms:
        """Gaussian displacements with standard deviation ``scale * rattle_A`` Å."""
        atoms.positions += self.rng.normal(0.0, scale * self.rattle_A, size=(len(atoms), 3))
        return atoms

    def bulk(self) -> Atoms:
        """Conventional cubic cell times ``supercell``; an alloy's volume is relaxed."""
        atoms = self._decorate(bulk(self.elements[0], "fcc", a=self.a0[0], cubic=True)
                               * self.supercell)
        return _relax_volume(atoms) if len(self.elements) > 1 else atoms

    def homogeneous(self, max_volume: float, max_shear: float) -> Atoms:
        """A volume change within ±max_volume and a shear within ±max_shear."""
        volume = 1.0 + self.rng.uniform(-max_volume, max_volume)
        shear = self.rng.uniform(-max_shear, max_shear, (3, 3))
        shear -= np.trace(shear) / 3.0 * np.eye(3)  # traceless: the volume is set above
        eps = (volume ** (1.0 / 3.0) - 1.0) * np.eye(3) + shear
        return self.rattle(self.deform(self.bulk(), eps), 0.1)

    def vacancy(self) -> tuple[Atoms, int]:
        """A bulk cell less one random atom; also the index of the removed site's position."""
        atoms = self.bulk()
        site = int(self.rng.integers(len(atoms)))
        return atoms, site

    def hop(self) -> Atoms:
        """A vacancy whose nearest neighbor is a random fraction of the way into it."""
        atoms, site = self.vacancy()
        distances = atoms.get_distances(site, range(len(atoms)), mic=True, vector=True)
        norms = np.linalg.norm(distances, axis=1)
        norms[site] = np.inf
        neighbor = int(np.argmin(norms))  # one of the 12, the first found
        fraction = self.rng.uniform(0.0, 1.0)
        atoms.positions[neighbor] -= fraction * distances[neighbor]  # towards the site
        del atoms[site]
        return self.rattle(self.strain(atoms), 0.5)

    def surface(self, facet: str) -> Atoms:
        """fcc(111), (100) or (110) slab, ``_SLAB_LAYERS`` deep, pbc (True, True, False)."""
        build = {"111": fcc111, "100": fcc100, "110": fcc110}[facet]
        size = (self.supercell[0], self.supercell[1], _SLAB_LAYERS)
        atoms = build(self.elements[0], size=size, a=self.a0[0], vacuum=_VACUUM_A)
        atoms.pbc = (True, True, False)
        return self._decorate(atoms)

    def cluster(self, kind: int, sizes: tuple[int, int]) -> Atoms:
        """A small cluster (zero cell, not periodic), partly relaxed with EMT."""
        from ase.calculators.emt import EMT
        from ase.cluster import Decahedron, Icosahedron, Octahedron
        from ase.optimize import FIRE

        symbol, a0 = self.elements[0], float(self.a0[0])
        if kind == 0:
            atoms = Icosahedron(symbol, noshells=2, latticeconstant=a0)
        elif kind == 1:
            atoms = Octahedron(symbol, length=3, cutoff=1, latticeconstant=a0)  # cuboctahedron
        elif kind == 2:
            atoms = Decahedron(symbol, p=2, q=1, r=0, latticeconstant=a0)
        else:
            atoms = self._fragment(symbol, a0, int(self.rng.integers(sizes[0], sizes[1] + 1)))
        atoms = Atoms(atoms.numbers, atoms.positions - atoms.positions.mean(axis=0))
        if len(self.elements) > 1:
            idx = self._substitute(atoms)
            atoms.positions *= self.a0[idx].mean() / a0
        self.rattle(atoms, 1.5)
        atoms.calc = EMT()
        steps = int(self.rng.integers(0, _CLUSTER_RELAX_STEPS + 1))
        if steps:
            FIRE(atoms, logfile=None).run(fmax=0.0, steps=steps)
        return self.rattle(Atoms(atoms.numbers, atoms.positions), 0.3)

    def _fragment(self, symbol: str, a0: float, n: int) -> Atoms:
        """The ``n`` fcc sites nearest a random point, randomly rotated."""
        reps = int(np.ceil((n / 4.0) ** (1.0 / 3.0))) + 2
        sites = (bulk(symbol, "fcc", a=a0, cubic=True) * (reps, reps, reps)).positions
        sites = sites - sites.mean(axis=0)
        centre = self.rng.uniform(-0.5, 0.5, size=3) * a0
        chosen = sites[np.argsort(np.linalg.norm(sites - centre, axis=1), kind="stable")[:n]]
        rotation, _ = np.linalg.qr(self.rng.normal(size=(3, 3)))
        rotation *= np.sign(np.linalg.det(rotation))  # proper rotation, no mirror
        return Atoms([symbol] * n, positions=chosen @ rotation.T)


def _md_frames(builder: _FccBuilder, temperature_K: float, n_frames: int) -> list[Atoms]:
    """Snapshots of one Langevin EMT trajectory at ``temperature_K``."""
    from ase.calculators.emt import EMT
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    try:
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # ASE < 3.29
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta

    atoms = builder.bulk()
    atoms.calc = EMT()
    # ASE 3.28 deprecates Langevin(fixcm=True); FixCom is its recommended replacement.
    atoms.set_constraint(FixCom())
    thermalize_momenta(atoms, temperature_K=temperature_K, rng=builder.rng)
    dyn = Langevin(atoms, _MD_TIMESTEP_FS * units.fs, temperature_K=temperature_K,
                   friction=_MD_FRICTION_PER_FS / units.fs, fixcm=False, rng=builder.rng)
    dyn.run(_MD_EQUILIBRATION)
    frames = []
    for _ in range(n_frames):
        dyn.run(_MD_INTERVAL)
        frame = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=True)
        frame.wrap()
        frames.append(frame)
    return frames


def _kind_counts(kinds: Sequence[str] | Mapping[str, int],
                 n_structures: int | None) -> dict[str, int]:
    """Structures per kind: given as a mapping, or ``n_structures`` split evenly."""
    if isinstance(kinds, Mapping):
        counts = {str(k): int(v) for k, v in kinds.items()}
        if n_structures is not None and n_structures != sum(counts.values()):
            raise ValueError(f"n_structures={n_structures} but the kinds add up to "
                             f"{sum(counts.values())}")
    else:
        names = list(dict.fromkeys(kinds))
        n = 100 if n_structures is None else n_structures
        counts = dict(zip(names, split_count(n, len(names)), strict=True)) if names else {}
    for kind, count in counts.items():
        if kind not in EMT_KINDS:
            raise unknown_name("structure kind", kind, EMT_KINDS)
        if count < 0:
            raise ValueError(f"negative count {count} for kind '{kind}'")
    if not counts:
        raise ValueError("no structure kinds given")
    return counts


def _check_elements(elements: Sequence[str]) -> list[str]:
    elements = list(dict.fromkeys(elements))
    for symbol in elements:
        if symbol not in EMT_ELEMENTS:
            raise UnknownNameError(f"element '{symbol}' is not supported by EMT data generation"
                                   f"{did_you_mean(symbol, EMT_ELEMENTS)}; supported: "
                                   f"{', '.join(EMT_ELEMENTS)}")
    if not elements:
        raise ValueError("no elements given")
    return elements


def _structures(builder: _FccBuilder, kind: str, count: int, temperatures_K: Sequence[float],
                max_volume_strain: float, max_shear: float,
                cluster_sizes: tuple[int, int]) -> list[Atoms]:
    """``count`` structures of ``kind``."""
    if kind == "md":
        return [frame for temperature, n in
                zip(temperatures_K, split_count(count, len(temperatures_K)), strict=True)
                for frame in (_md_frames(builder, temperature, n) if n else [])]
    out = []
    for k in range(count):
        if kind == "bulk":
            out.append(builder.rattle(builder.strain(builder.bulk())))
        elif kind == "strain":
            out.append(builder.homogeneous(max_volume_strain, max_shear))
        elif kind == "vacancy":
            atoms, site = builder.vacancy()
            del atoms[site]
            out.append(builder.rattle(builder.strain(atoms)))
        elif kind == "hop":
            out.append(builder.hop())
        elif kind == "surface":
            out.append(builder.rattle(builder.surface(FACETS[k % len(FACETS)]), 0.5))
        else:
            out.append(builder.cluster(k % 4, cluster_sizes))
    return out


def generate_emt(path: str | os.PathLike, elements: Sequence[str] = ("Cu",),
                 n_structures: int | None = None, seed: int = 0,
                 kinds: Sequence[str] | Mapping[str, int] = DEFAULT_KINDS,
                 temperatures_K: Sequence[float] = (300.0, 600.0, 1200.0),
                 supercell: tuple[int, int, int] = (2, 2, 2), stress: bool = True,
                 max_strain: float = 0.03, rattle_A: float = 0.05,
                 max_volume_strain: float = 0.05, max_shear: float = 0.03,
                 cluster_sizes: tuple[int, int] = (4, 20),
                 progress: Progress | None = None) -> ASEAtomsData:
    """Label fcc metals (alloys when several ``elements``) with ASE's EMT.

    Lattice constants are EMT's own (:func:`emt_lattice_constant`); alloys
    draw a composition uniformly on the simplex per structure, substitute the
    sites at random and take Vegard's lattice constant of the drawn sites;
    bulk cells then relax their volume to EMT's minimum before strain and
    rattle, slabs and clusters keep Vegard's.

    Args:
        path: new database file (never overwritten).
        elements: symbols from :data:`EMT_ELEMENTS`.
        n_structures: structures in all, split evenly over ``kinds`` (default
            100); with ``kinds`` as a mapping, None or their sum.
        seed: seed of the one random generator used for everything.
        kinds: names from :data:`EMT_KINDS` (see the module docstring), or a
            mapping name -> number of structures.
        temperatures_K: MD temperatures in K.
        supercell: repetitions of the cubic cell (bulk kinds) and of the
            surface cell in-plane.
        stress: label stress where it is defined (periodic structures).
        max_strain: largest strain component of ``bulk``, ``vacancy``, ``hop``.
        rattle_A: standard deviation of the rattle in Å.
        max_volume_strain: largest relative volume change of ``strain``.
        max_shear: largest shear component of ``strain``.
        cluster_sizes: smallest and largest compact fragment of ``cluster``.
        progress: called as ``progress(done, total)`` after each structure.

    Returns:
        The new data set with energy (eV), forces (eV/Å) and stress (eV/Å³).
    """
    from ase.calculators.emt import EMT

    counts = _kind_counts(kinds, n_structures)
    total = sum(counts.values())
    check_new_path(path, total)
    elements = _check_elements(elements)
    if "md" in counts and (not temperatures_K or min(temperatures_K) <= 0):
        raise ValueError(f"MD temperatures must be positive, got {list(temperatures_K)}")
    supercell = tuple(int(k) for k in supercell)
    if len(supercell) != 3 or min(supercell) < 1:
        raise ValueError(f"supercell must be three positive integers, got {supercell}")
    if not 2 <= cluster_sizes[0] <= cluster_sizes[1]:
        raise ValueError(f"cluster_sizes must be (min, max) with 2 <= min <= max, "
                         f"got {cluster_sizes}")

    builder = _FccBuilder(np.random.default_rng(seed), elements, supercell, max_strain,
                          rattle_A)
    calc = EMT()
    frames: list[Atoms] = []
    labels: list[dict[str, np.ndarray]] = []
    for kind, count in counts.items():
        for atoms in _structures(builder, kind, count, temperatures_K, max_volume_strain,
                                 max_shear, tuple(cluster_sizes)):
            labels.append(label(atoms, calc, stress))
            frames.append(atoms)
            if progress is not None:
                progress(len(frames), total)
    units_ = {P.energy: "eV", P.forces: "eV/Ang", **({P.stress: "eV/Ang^3"} if stress else {})}
    return write_set(path, frames, labels, units_, generator="ase.calculators.emt.EMT",
                     elements=elements, seed=seed, kinds=counts,
                     temperatures_K=[float(t) for t in temperatures_K],
                     supercell=list(supercell), max_strain=max_strain, rattle_A=rattle_A,
                     max_volume_strain=max_volume_strain, max_shear=max_shear,
                     cluster_sizes=list(cluster_sizes), stress_labelled=bool(stress),
                     ase_version=ase.__version__)
