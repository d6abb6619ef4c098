"""How well a model reproduces its reference across the properties users compute.

:func:`fidelity` computes, with the model and with the reference calculator
alike (each at its own equilibrium), the properties of an fcc metal that
property suites (matcalc, janus-core, ASE's own tutorials) report, with
ASE's and phonopy's own methods:

===========================  ==========================================================
lattice constant, B          ``ase.eos.EquationOfState`` (Birch-Murnaghan), 9 volumes
C11, C12, C44                stress of ±0.5 % strains of the cubic cell (no internal
                             relaxation: every fcc atom is a centre of inversion)
surface energies             (111) and (100) slabs, 2x2x6, relaxed with BFGS
vacancy formation            3x3x3 cubic supercell less one atom, relaxed
vacancy hop barrier          ``ase.mep.NEB`` (climbing image, 5 images) between the
                             relaxed vacancy and the one of its neighbor's site
phonons at X and L           :func:`mlcalc.simulate.phonons.run_phonons` (phonopy),
                             4x4x4 primitive supercell
Cu13 (icosahedron)           energy per atom after BFGS, and its highest vibrational
                             mode (central differences, ``ase.vibrations``)
NVE drift                    the model only: VelocityVerlet at 1 fs, 108 atoms from
                             600 K, slope of the total energy
===========================  ==========================================================

Each row holds the reference and model values, the deviation and the target
(:data:`TARGETS`, the bundled model's acceptance bounds). ``examples/fidelity.py``
prints the table for any model file and reference (EMT by default).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from ase import Atoms, units
from ase.build import bulk, fcc100, fcc111

CalcFactory = Callable[[], object]

#: property -> (kind of deviation, bound): "rel" relative (fraction), "abs" absolute.
TARGETS: dict[str, tuple[str, float]] = {
    "lattice constant": ("rel", 0.001), "bulk modulus": ("rel", 0.03),
    "C11": ("rel", 0.05), "C12": ("rel", 0.05), "C44": ("rel", 0.05),
    "surface energy (111)": ("rel", 0.03), "surface energy (100)": ("rel", 0.03),
    "vacancy formation": ("rel", 0.03), "vacancy hop barrier": ("rel", 0.03),
    "phonons at X": ("rel", 0.01), "phonons at L": ("rel", 0.01),
    "Cu13 energy per atom": ("abs", 10.0), "Cu13 highest mode": ("rel", 0.05),
    "NVE drift": ("abs", 0.1),
}


@dataclass
class Row:
    """One property: reference and model value, deviation and whether it meets its target."""

    name: str
    unit: str
    reference: float | None
    model: float
    deviation: float
    target: float
    kind: str

    @property
    def met(self) -> bool:
        return bool(abs(self.deviation) <= self.target)

    def cells(self) -> list[str]:
        ref = "-" if self.reference is None else f"{self.reference:.5g}"
        if self.kind == "rel":
            dev, target = f"{100 * self.deviation:+.2f} %", f"<= {100 * self.target:g} %"
        else:
            dev, target = f"{self.deviation:+.3g} {self.unit}", f"<= {self.target:g} {self.unit}"
        return [self.name, self.unit, ref, f"{self.model:.5g}", dev, target,
                "yes" if self.met else "NO"]


def _relaxed_energy(atoms: Atoms, calc: object, fmax: float = 0.005, steps: int = 400) -> float:
    from ase.optimize import BFGS

    atoms.calc = calc
    BFGS(atoms, logfile=None).run(fmax=fmax, steps=steps)
    return float(atoms.get_potential_energy())


def equation_of_state(symbol: str, calc: object, a_guess: float) -> tuple[float, float, float]:
    """Lattice constant (Å), bulk modulus (GPa) and energy per atom (eV) from an EOS fit."""
    from ase.eos import EquationOfState

    volumes, energies = [], []
    for scale in np.linspace(0.97, 1.03, 9):
        atoms = bulk(symbol, "fcc", a=a_guess * scale)
        atoms.calc = calc
        volumes.append(atoms.get_volume())
        energies.append(atoms.get_potential_energy())
    v0, e0, b = EquationOfState(volumes, energies, eos="birchmurnaghan").fit()
    return float((4.0 * v0) ** (1.0 / 3.0)), float(b / units.GPa), float(e0)


def elastic_constants(symbol: str, calc: object, a0: float,
                      delta: float = 0.005) -> tuple[float, float, float]:
    """C11, C12, C44 in GPa from the stress of ±``delta`` strains of the cubic cell."""
    def stress(eps: np.ndarray) -> np.ndarray:
        atoms = bulk(symbol, "fcc", a=a0, cubic=True)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
        atoms.calc = calc
        return atoms.get_stress(voigt=True)

    axial, shear = np.zeros((3, 3)), np.zeros((3, 3))
    axial[0, 0] = delta
    shear[1, 2] = shear[2, 1] = delta  # engineering shear strain 2 delta
    d_axial = (stress(axial) - stress(-axial)) / (2 * delta)
    d_shear = (stress(shear) - stress(-shear)) / (2 * delta)
    return (float(d_axial[0] / units.GPa), float(d_axial[1] / units.GPa),
            float(d_shear[3] / 2 / units.GPa))


def surface_energy(symbol: str, calc: object, a0: float, e_bulk: float, facet: str) -> float:
    """Relaxed surface energy of a 2x2x6 slab in J/m²."""
    build = fcc111 if facet == "111" else fcc100
    slab = build(symbol, size=(2, 2, 6), a=a0, vacuum=8.0)
    slab.pbc = (True, True, False)
    energy = _relaxed_energy(slab, calc)
    area = np.linalg.norm(np.cross(slab.cell[0], slab.cell[1]))
    return float((energy - len(slab) * e_bulk) / (2 * area) / (units.J / units.m**2))


def _vacancy_cells(symbol: str, a0: float) -> tuple[Atoms, Atoms, Atoms]:
    perfect = bulk(symbol, "fcc", a=a0, cubic=True) * (3, 3, 3)
    initial = perfect.copy()
    del initial[0]  # the vacancy at the origin
    neighbor = int(np.argmin(np.linalg.norm(initial.positions - [a0 / 2, a0 / 2, 0.0], axis=1)))
    final = initial.copy()
    final.positions[neighbor] = [0.0, 0.0, 0.0]  # the neighbor hops into the vacancy
    return perfect, initial, final


def vacancy(symbol: str, calc_factory: CalcFactory, a0: float) -> tuple[float, float]:
    """Vacancy formation energy and hop barrier (climbing-image NEB), both in eV."""
    from ase.mep import NEB
    from ase.optimize import FIRE

    perfect, initial, final = _vacancy_cells(symbol, a0)
    perfect.calc = calc_factory()
    e_perfect = perfect.get_potential_energy()
    e_initial = _relaxed_energy(initial, calc_factory())
    _relaxed_energy(final, calc_factory())
    formation = e_initial - (len(initial) / len(perfect)) * e_perfect
    images = [initial] + [initial.copy() for _ in range(5)] + [final]
    for image in images[1:-1]:
        image.calc = calc_factory()
    neb = NEB(images, climb=True, method="improvedtangent")
    neb.interpolate(mic=True)
    FIRE(neb, logfile=None).run(fmax=0.02, steps=500)
    barrier = max(image.get_potential_energy() for image in images) - e_initial
    return float(formation), float(barrier)


def phonons_x_l(symbol: str, calc: object, a0: float) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (THz, sorted) at X and L of the primitive fcc cell."""
    from mlcalc.simulate.phonons import run_phonons

    result = run_phonons(bulk(symbol, "fcc", a=a0), calc, supercell=(4, 4, 4),
                         mesh=(4, 4, 4), temperatures_K=(300.0,), output_dir=None)
    ph = result.phonopy
    ph.run_qpoints([[0.5, 0.0, 0.5], [0.5, 0.5, 0.5]])
    x, l_point = ph.qpoints.frequencies
    return np.sort(x), np.sort(l_point)


def cluster13(symbol: str, calc: object, a0: float) -> tuple[float, float]:
    """Energy per atom (eV) of the relaxed 13-atom icosahedron and its highest mode (meV)."""
    from ase.cluster import Icosahedron
    from ase.vibrations import VibrationsData

    atoms = Icosahedron(symbol, noshells=2, latticeconstant=a0)
    atoms = Atoms(atoms.numbers, atoms.positions - atoms.positions.mean(axis=0))
    energy = _relaxed_energy(atoms, calc, fmax=1e-4, steps=1000)
    h, n = 1e-3, len(atoms)
    hessian = np.zeros((3 * n, 3 * n))
    for k in range(3 * n):
        forces = []
        for sign in (1.0, -1.0):
            moved = atoms.copy()
            moved.positions[k // 3, k % 3] += sign * h
            moved.calc = calc
            forces.append(moved.get_forces().reshape(-1))
        hessian[k] = -(forces[0] - forces[1]) / (2 * h)
    hessian = 0.5 * (hessian + hessian.T)
    modes = VibrationsData.from_2d(atoms, hessian).get_energies()
    return float(energy / n), float(1e3 * np.max(modes.real))


def nve_drift(symbol: str, calc: object, a0: float, steps: int = 2000) -> float:
    """Absolute slope of the total energy, meV/atom/ps, in VelocityVerlet at 1 fs (108 atoms)."""
    from ase.md.velocitydistribution import Stationary, thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    atoms = bulk(symbol, "fcc", a=a0, cubic=True) * (3, 3, 3)
    thermalize_momenta(atoms, temperature_K=600.0, rng=np.random.default_rng(0))
    Stationary(atoms)
    atoms.calc = calc
    dyn = VelocityVerlet(atoms, 1.0 * units.fs)
    times, energies = [], []

    def record() -> None:
        times.append(dyn.nsteps * 1e-3)  # ps
        energies.append(atoms.get_total_energy() / len(atoms))

    dyn.attach(record, interval=10)
    dyn.run(steps)
    slope = np.polyfit(times, energies, 1)[0]
    return float(abs(slope) * 1e3)


def _properties(symbol: str, factory: CalcFactory, a_guess: float,
                progress: Callable[[str], None]) -> dict[str, object]:
    calc = factory()
    progress("equation of state")
    a0, b, e0 = equation_of_state(symbol, calc, a_guess)
    progress("elastic constants")
    c11, c12, c44 = elastic_constants(symbol, calc, a0)
    progress("surfaces")
    s111 = surface_energy(symbol, calc, a0, e0, "111")
    s100 = surface_energy(symbol, calc, a0, e0, "100")
    progress("vacancy and its hop (NEB)")
    formation, barrier = vacancy(symbol, factory, a0)
    progress("phonons")
    x, l_ = phonons_x_l(symbol, calc, a0)
    progress("13-atom cluster")
    e13, w13 = cluster13(symbol, calc, a0)
    return {"lattice constant": a0, "bulk modulus": b, "C11": c11, "C12": c12, "C44": c44,
            "surface energy (111)": s111, "surface energy (100)": s100,
            "vacancy formation": formation, "vacancy hop barrier": barrier,
            "phonons at X": x, "phonons at L": l_, "Cu13 energy per atom": 1e3 * e13,
            "Cu13 highest mode": w13}


UNITS = {"lattice constant": "Å", "bulk modulus": "GPa", "C11": "GPa", "C12": "GPa",
         "C44": "GPa", "surface energy (111)": "J/m²", "surface energy (100)": "J/m²",
         "vacancy formation": "eV", "vacancy hop barrier": "eV", "phonons at X": "THz",
         "phonons at L": "THz", "Cu13 energy per atom": "meV/atom",
         "Cu13 highest mode": "meV", "NVE drift": "meV/atom/ps"}


def fidelity(model: CalcFactory, reference: CalcFactory, symbol: str = "Cu",
             nve_steps: int = 2000,
             progress: Callable[[str], None] | None = None) -> list[Row]:
    """The property table of ``model`` against ``reference`` for the fcc metal ``symbol``.

    Args:
        model: makes a calculator of the model (e.g. ``lambda: MLCalculator("cu-emt")``).
        reference: makes a reference calculator (e.g. ``ase.calculators.emt.EMT``).
        symbol: the element; its ASE reference lattice constant starts the EOS.
        nve_steps: length of the energy-drift run (1 fs steps).
        progress: called with the name of each step, for a long run's output.

    Returns:
        One :class:`Row` per property of :data:`TARGETS`. Phonon rows show the
        highest frequency and the largest relative deviation of any mode; the
        13-atom row is named after Cu but uses ``symbol``.
    """
    from ase.data import atomic_numbers, reference_states

    say = progress or (lambda step: None)
    a_guess = reference_states[atomic_numbers[symbol]]["a"]
    values = {}
    for who, factory in (("reference", reference), ("model", model)):
        values[who] = _properties(symbol, factory, a_guess, lambda s, w=who: say(f"{w}: {s}"))
    rows = []
    for name, (kind, target) in TARGETS.items():
        if name == "NVE drift":
            say("model: NVE drift")
            drift = nve_drift(symbol, model(), values["model"]["lattice constant"], nve_steps)
            rows.append(Row(name, UNITS[name], None, drift, drift, target, kind))
            continue
        ref, mod = values["reference"][name], values["model"][name]
        if isinstance(ref, np.ndarray):  # phonons: every mode
            deviation = float(np.max(np.abs(mod - ref) / ref))
            rows.append(Row(name, UNITS[name], float(ref[-1]), float(mod[-1]), deviation,
                            target, kind))
            continue
        deviation = (mod - ref) / abs(ref) if kind == "rel" else mod - ref
        rows.append(Row(name, UNITS[name], ref, mod, deviation, target, kind))
    return rows


def format_rows(rows: list[Row]) -> str:
    """A Markdown table of :func:`fidelity`'s rows."""
    head = ["property", "unit", "reference", "model", "deviation", "target", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines)
