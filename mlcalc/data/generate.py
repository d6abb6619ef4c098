"""Reference data made offline with ASE's own calculators, reproducible by seed.

:func:`generate_emt` labels fcc metals and their random alloys with ASE's
effective-medium theory (:class:`ase.calculators.emt.EMT`): strained and
rattled bulk cells, Langevin MD snapshots, vacancies and surface slabs.
:func:`generate_lj` labels compact Lennard-Jones clusters.

Every random draw comes from one ``numpy.random.Generator`` seeded with
``seed`` (Langevin's noise and the Maxwell-Boltzmann velocities included),
so the same arguments (and ASE version) give identical structures and
labels, bit for bit; only ASE's per-row timestamps and unique ids in the
database file differ. All labels are computed before the database is created: an error or
an interrupt leaves no half-written file.

**Stress and surfaces.** A data set column must exist for every row, and a
slab (pbc ``(True, True, False)``) has no stress. :func:`generate_emt`
therefore labels stress only when every structure of the set is fully
periodic: by default (``stress=None``) it does so exactly when ``"surface"``
is not among ``kinds``; ``stress=True`` with surfaces is refused. To train on
stress, generate without surfaces (``mlcalc data generate --no-surfaces``)
and, if wanted, the surfaces into a second, stress-less set.

Units stored: energy eV, forces eV/Å, stress eV/Å³ (Voigt-6, ASE sign).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence

import ase
import numpy as np
from ase import Atoms, units
from ase.build import bulk, fcc100, fcc111
from ase.calculators.calculator import Calculator
from ase.data import atomic_numbers, reference_states

from mlcalc import properties as P
from mlcalc.data.atoms_data import ASEAtomsData
from mlcalc.exceptions import UnknownNameError, did_you_mean, unknown_name

#: Elements :func:`generate_emt` builds: the fcc metals of ASE's EMT. (EMT's
#: C, N, O and H parameters are meant for adsorbates, not for fcc lattices.)
EMT_ELEMENTS = ("Ag", "Al", "Au", "Cu", "Ni", "Pd", "Pt")
#: Structure kinds of :func:`generate_emt`.
EMT_KINDS = ("bulk", "md", "vacancy", "surface")
#: Called as ``progress(done, total)`` after each labelled structure.
Progress = Callable[[int, int], None]

# Langevin MD: 2 fs steps, friction 0.02/fs, 100 equilibration steps, then a
# snapshot every 10 steps (20 fs) from one trajectory per temperature.
_MD_TIMESTEP_FS = 2.0
_MD_FRICTION_PER_FS = 0.02
_MD_EQUILIBRATION = 100
_MD_INTERVAL = 10
_SLAB_LAYERS = 4
_VACUUM_A = 6.0


def _minimize_1d(energy: Callable[[float], float], x0: float, width: float) -> float:
    """Minimum of a smooth ``energy(x)`` near ``x0``: parabolas through
    x0 ± width (moving on while the vertex lies outside), then ten times
    narrower around the vertex (one wide pass leaves a few 0.1 GPa from the
    anharmonicity of E(V))."""
    for w in (width, 0.1 * width):
        for _ in range(10):  # walk on while the vertex lies outside the bracket
            xs = x0 + np.array([-w, 0.0, w])
            c2, c1, _ = np.polyfit(xs, [energy(x) for x in xs], 2)
            if c2 <= 0:
                break
            vertex = -c1 / (2.0 * c2)
            x0 = float(np.clip(vertex, xs[0], xs[-1]))
            if abs(vertex - xs[1]) <= w:
                break
    return x0


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
    return _minimize_1d(lambda a: _emt_energy(bulk(symbol, "fcc", a=a)), a_ref, 0.03 * a_ref)


def _relax_volume(atoms: Atoms) -> Atoms:
    """Scale the cell isotropically to the EMT energy minimum: Vegard's law
    alone leaves random alloys under several GPa of pressure."""
    cell = atoms.cell.array.copy()

    def energy(scale: float) -> float:
        atoms.set_cell(cell * scale, scale_atoms=True)
        return _emt_energy(atoms)

    atoms.set_cell(cell * _minimize_1d(energy, 1.0, 0.02), scale_atoms=True)
    return atoms


def _split(n: int, parts: int) -> list[int]:
    """``n`` items into ``parts`` near-equal counts, the larger ones first."""
    return [n // parts + (k < n % parts) for k in range(parts)]


def _check_new_path(path: str | os.PathLike, n_structures: int) -> None:
    if os.path.exists(path):
        raise FileExistsError(f"data set '{os.fspath(path)}' already exists; refusing to "
                              "overwrite it (remove it or choose another path)")
    if n_structures < 1:
        raise ValueError(f"n_structures must be at least 1, got {n_structures}")


def _label(atoms: Atoms, calc: Calculator, with_stress: bool) -> dict[str, np.ndarray]:
    """energy (), forces (N, 3) and optionally stress (6,) of ``atoms`` in eV, Å."""
    atoms.calc = calc
    labels = {P.energy: np.float64(atoms.get_potential_energy()),
              P.forces: atoms.get_forces().copy()}
    if with_stress:
        labels[P.stress] = atoms.get_stress(voigt=True).copy()
    atoms.calc = None
    return labels


def _write(path: str | os.PathLike, frames: Sequence[Atoms], labels: Sequence[dict],
           units_: dict[str, str], **metadata: object) -> ASEAtomsData:
    data = ASEAtomsData.create(path, property_unit_dict=units_, **metadata)
    try:
        data.add_systems(frames, labels)
    except BaseException:
        os.remove(os.fspath(path))  # new and empty: a corrected rerun must not hit "exists"
        raise
    return data


class _FccBuilder:
    """Random fcc structures (alloys by random substitution) from one generator."""

    def __init__(self, rng: np.random.Generator, elements: Sequence[str],
                 supercell: tuple[int, int, int], max_strain: float, rattle_A: float) -> None:
        self.rng, self.elements, self.supercell = rng, list(elements), supercell
        self.max_strain, self.rattle_A = max_strain, rattle_A
        self.a0 = np.array([emt_lattice_constant(s) for s in elements])

    def _decorate(self, atoms: Atoms) -> Atoms:
        """Random substitution on the sites of ``atoms`` (built at the first
        element's lattice constant), then scaled to Vegard's lattice constant
        of the drawn composition. The composition is uniform on the simplex."""
        if len(self.elements) == 1:
            return atoms
        fractions = self.rng.dirichlet(np.ones(len(self.elements)))
        idx = self.rng.choice(len(self.elements), size=len(atoms), p=fractions)
        atoms.symbols = [self.elements[i] for i in idx]
        atoms.set_cell(atoms.cell.array * (self.a0[idx].mean() / self.a0[0]), scale_atoms=True)
        return atoms

    def strain(self, atoms: Atoms) -> Atoms:
        """Random symmetric strain, each component uniform in ±max_strain."""
        eps = self.rng.uniform(-self.max_strain, self.max_strain, size=(3, 3))
        eps = 0.5 * (eps + eps.T)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
        return atoms

    def rattle(self, atoms: Atoms, scale: float = 1.0) -> Atoms:
        """Gaussian displacements with standard deviation ``scale * rattle_A`` Å."""
        atoms.positions += self.rng.normal(0.0, scale * self.rattle_A, size=(len(atoms), 3))
        return atoms

    def bulk(self) -> Atoms:
        """Conventional cubic cell times ``supercell``; an alloy's volume is relaxed."""
        atoms = self._decorate(bulk(self.elements[0], "fcc", a=self.a0[0], cubic=True)
                               * self.supercell)
        return _relax_volume(atoms) if len(self.elements) > 1 else atoms

    def surface(self, facet: str) -> Atoms:
        """fcc(111) or fcc(100) slab, ``_SLAB_LAYERS`` deep, pbc (True, True, False)."""
        build = fcc111 if facet == "111" else fcc100
        size = (self.supercell[0], self.supercell[1], _SLAB_LAYERS)
        atoms = build(self.elements[0], size=size, a=self.a0[0], vacuum=_VACUUM_A)
        atoms.pbc = (True, True, False)
        return self._decorate(atoms)


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


def generate_emt(path: str | os.PathLike, elements: Sequence[str] = ("Cu",),
                 n_structures: int = 100, seed: int = 0, kinds: Sequence[str] = EMT_KINDS,
                 temperatures_K: Sequence[float] = (300.0, 600.0, 1200.0),
                 supercell: tuple[int, int, int] = (2, 2, 2), stress: bool | None = None,
                 max_strain: float = 0.03, rattle_A: float = 0.05,
                 progress: Progress | None = None) -> ASEAtomsData:
    """Label fcc metals (alloys when several ``elements``) with ASE's EMT.

    The ``n_structures`` are split evenly over ``kinds`` (in that order):

    - ``bulk``: the cubic 4-atom cell times ``supercell``, random symmetric
      strain (each component in ±``max_strain``), Gaussian rattle ``rattle_A``;
    - ``md``: snapshots every 20 fs of one Langevin trajectory (2 fs steps,
      after 200 fs equilibration) per temperature in ``temperatures_K``;
    - ``vacancy``: a bulk cell less one random atom, strained and rattled;
    - ``surface``: fcc(111) and fcc(100) slabs (alternating), 4 layers,
      ``supercell[:2]`` in-plane, 6 Å vacuum each side, pbc (True, True, False),
      rattled by half of ``rattle_A``.

    Lattice constants are EMT's own (:func:`emt_lattice_constant`); alloys
    draw a composition uniformly on the simplex per structure, substitute the
    sites at random and take Vegard's lattice constant of the drawn sites;
    bulk cells (bulk, md, vacancy) then relax their volume to EMT's minimum
    before strain and rattle, slabs (vacuum scaled along) keep Vegard's.

    Args:
        path: new database file (never overwritten).
        elements: symbols from :data:`EMT_ELEMENTS`.
        n_structures: number of structures, at least 1.
        seed: seed of the one random generator used for everything.
        kinds: subset of :data:`EMT_KINDS`.
        temperatures_K: MD temperatures in K.
        supercell: repetitions of the cubic cell (bulk, md, vacancy) and of the
            surface cell in-plane.
        stress: label stress (Voigt-6, eV/Å³). None: only if no surfaces; True
            with surfaces raises ValueError (see the module docstring).
        max_strain: largest strain component.
        rattle_A: standard deviation of the rattle in Å.
        progress: called as ``progress(done, total)`` after each structure.

    Returns:
        The new data set with energy (eV), forces (eV/Å) and maybe stress.
    """
    from ase.calculators.emt import EMT

    _check_new_path(path, n_structures)
    elements = list(dict.fromkeys(elements))
    for symbol in elements:
        if symbol not in EMT_ELEMENTS:
            raise UnknownNameError(f"element '{symbol}' is not supported by EMT data generation"
                                   f"{did_you_mean(symbol, EMT_ELEMENTS)}; supported: "
                                   f"{', '.join(EMT_ELEMENTS)}")
    if not elements:
        raise ValueError("no elements given")
    kinds = list(dict.fromkeys(kinds))
    for kind in kinds:
        if kind not in EMT_KINDS:
            raise unknown_name("structure kind", kind, EMT_KINDS)
    if not kinds:
        raise ValueError("no structure kinds given")
    if "md" in kinds and (not temperatures_K or min(temperatures_K) <= 0):
        raise ValueError(f"MD temperatures must be positive, got {list(temperatures_K)}")
    supercell = tuple(int(k) for k in supercell)
    if len(supercell) != 3 or min(supercell) < 1:
        raise ValueError(f"supercell must be three positive integers, got {supercell}")
    if stress is None:
        stress = "surface" not in kinds
    elif stress and "surface" in kinds:
        raise ValueError("stress cannot be labelled when the set includes surfaces (slabs "
                         "are not periodic along z); leave out the 'surface' kind (--no-surfaces)")

    rng = np.random.default_rng(seed)
    builder = _FccBuilder(rng, elements, supercell, max_strain, rattle_A)
    calc = EMT()
    counts = dict(zip(kinds, _split(n_structures, len(kinds)), strict=True))
    frames: list[Atoms] = []
    labels: list[dict[str, np.ndarray]] = []

    def add(atoms: Atoms) -> None:
        labels.append(_label(atoms, calc, stress))
        frames.append(atoms)
        if progress is not None:
            progress(len(frames), n_structures)

    for kind, count in counts.items():
        if kind == "md":
            for temperature, n in zip(temperatures_K, _split(count, len(temperatures_K)),
                                      strict=True):
                for frame in _md_frames(builder, temperature, n) if n else []:
                    add(frame)
            continue
        for k in range(count):
            if kind == "bulk":
                add(builder.rattle(builder.strain(builder.bulk())))
            elif kind == "vacancy":
                atoms = builder.bulk()
                del atoms[int(rng.integers(len(atoms)))]
                add(builder.rattle(builder.strain(atoms)))
            else:
                add(builder.rattle(builder.surface("111" if k % 2 == 0 else "100"), 0.5))

    units_ = {P.energy: "eV", P.forces: "eV/Ang", **({P.stress: "eV/Ang^3"} if stress else {})}
    return _write(path, frames, labels, units_, generator="ase.calculators.emt.EMT",
                  elements=elements, seed=seed, kinds=counts,
                  temperatures_K=[float(t) for t in temperatures_K], supercell=list(supercell),
                  max_strain=max_strain, rattle_A=rattle_A, stress_labelled=bool(stress),
                  ase_version=ase.__version__)


def generate_lj(path: str | os.PathLike, n_structures: int = 100,
                n_atoms: tuple[int, int] = (8, 20), seed: int = 0, element: str = "Ar",
                sigma: float = 3.4, epsilon: float = 0.0104, rc: float | None = None,
                rattle_A: float = 0.15, max_relax_steps: int = 20,
                progress: Progress | None = None) -> ASEAtomsData:
    """Label compact Lennard-Jones clusters (non-periodic, zero cell).

    Each cluster takes a random number of atoms in ``n_atoms`` (inclusive):
    the sites of an fcc lattice at the LJ pair distance 2^(1/6) σ nearest to
    a random point, randomly rotated, rattled by ``rattle_A``, then relaxed
    with FIRE for a random 0..``max_relax_steps`` steps, so the set spans
    strained to nearly relaxed clusters. The potential is ASE's
    :class:`~ase.calculators.lj.LennardJones` with ``smooth=True`` (energy and
    forces go smoothly to zero between 0.66 rc and rc), Ar-like by default:
    σ = 3.4 Å, ε = 0.0104 eV, rc = 3σ.

    Args:
        path: new database file (never overwritten).
        n_structures: number of clusters, at least 1.
        n_atoms: smallest and largest cluster size.
        seed: seed of the one random generator used for everything.
        element: chemical symbol stored for the atoms.
        sigma: LJ length σ in Å.
        epsilon: LJ well depth ε in eV.
        rc: cutoff in Å (default 3σ).
        rattle_A: standard deviation of the rattle in Å.
        max_relax_steps: most FIRE steps per cluster.
        progress: called as ``progress(done, total)`` after each structure.

    Returns:
        The new data set with energy (eV) and forces (eV/Å).
    """
    from ase.calculators.lj import LennardJones
    from ase.optimize import FIRE

    _check_new_path(path, n_structures)
    if element not in atomic_numbers:
        raise unknown_name("element", element, [s for s in atomic_numbers if s != "X"])
    lo, hi = (int(k) for k in n_atoms)
    if not 2 <= lo <= hi:
        raise ValueError(f"n_atoms must be (min, max) with 2 <= min <= max, got {n_atoms}")
    rc = 3.0 * sigma if rc is None else rc
    calc = LennardJones(sigma=sigma, epsilon=epsilon, rc=rc, smooth=True)
    rng = np.random.default_rng(seed)
    # Enough lattice sites around the origin for the largest cluster.
    reps = int(np.ceil((hi / 4.0) ** (1.0 / 3.0))) + 2
    lattice = bulk(element, "fcc", a=2.0 ** (1.0 / 6.0) * sigma * np.sqrt(2.0), cubic=True)
    sites = (lattice * (reps, reps, reps)).positions
    sites -= sites.mean(axis=0)
    frames, labels = [], []
    for k in range(n_structures):
        n = int(rng.integers(lo, hi + 1))
        centre = rng.uniform(-0.5, 0.5, size=3) * sigma
        chosen = sites[np.argsort(np.linalg.norm(sites - centre, axis=1), kind="stable")[:n]]
        rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        rotation *= np.sign(np.linalg.det(rotation))  # proper rotation, no mirror
        positions = (chosen - chosen.mean(axis=0)) @ rotation.T
        positions += rng.normal(0.0, rattle_A, size=positions.shape)
        atoms = Atoms([element] * n, positions=positions, pbc=False)
        atoms.calc = calc
        steps = int(rng.integers(0, max_relax_steps + 1))
        if steps:
            FIRE(atoms, logfile=None).run(fmax=0.0, steps=steps)
        atoms = Atoms(atoms.numbers, atoms.positions, pbc=False)
        labels.append(_label(atoms, calc, with_stress=False))
        frames.append(atoms)
        if progress is not None:
            progress(k + 1, n_structures)
    return _write(path, frames, labels, {P.energy: "eV", P.forces: "eV/Ang"},
                  generator="ase.calculators.lj.LennardJones", element=element, seed=seed,
                  n_atoms=[lo, hi], sigma=sigma, epsilon=epsilon, rc=rc, smooth=True,
                  rattle_A=rattle_A, max_relax_steps=max_relax_steps,
                  ase_version=ase.__version__)
