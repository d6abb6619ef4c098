"""Harmonic phonons with phonopy: force constants, bands, DOS, thermal properties.

    >>> result = run_phonons(bulk("Cu"), MLCalculator("cu-emt"))   # doctest: +SKIP

All phonon physics is phonopy's (displacements, force constants and their
symmetrization, band structure, mesh and tetrahedron DOS, thermal
properties, ``phonopy.yaml``); this module is the glue: it evaluates the
displaced supercells in one batched call, builds the band path from ASE's
special points and writes the files.

Cells: phonopy is built with ``primitive_matrix="auto"``, so a conventional
cell (e.g. the 4-atom cubic fcc cell) is reduced to its primitive cell.
The supercell matrix is relative to the cell *given*; q-points and band
paths are in fractional coordinates of the *primitive* reciprocal cell, and
thermal properties are per mole of primitive cells. The special points are
ASE's for the Bravais lattice of that primitive cell, so the path is right
whichever cell was given.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator

from mlcalc.exceptions import InvalidStructureError, MlcalcWarning
from mlcalc.simulate.outputs import output_lock, refuse_existing

#: Supercell edge in Å used when neither ``supercell`` nor ``min_length`` is given.
DEFAULT_MIN_LENGTH = 10.0
#: Frequencies below this (THz) away from Γ count as imaginary modes.
IMAGINARY_THRESHOLD_THZ = -0.05
#: q-points closer to Γ than this (fractional, primitive reciprocal cell) are
#: "at Γ": acoustic modes there are ~0 and their sign is numerical noise.
GAMMA_RADIUS = 0.05


class ImaginaryModesWarning(MlcalcWarning):
    """The structure has imaginary phonon modes away from Γ (dynamically unstable)."""


@dataclass
class PhononResult:
    """What :func:`run_phonons` computed. Frequencies in THz (phonopy's unit).

    Attributes:
        phonopy: the :class:`phonopy.Phonopy` object, force constants set.
        atoms: the structure used (relaxed when ``relax_first``).
        supercell_matrix: (3, 3) integers, relative to ``atoms.cell``.
        n_displacements: displaced supercells evaluated.
        band_distances: list over segments of (n_q,) path lengths in 1/Å (phonopy's).
        band_frequencies: list over segments of (n_q, n_bands) frequencies.
        band_ticks: (distance, label) of each special point on the path; a
            jump between path pieces gives one tick labelled ``"K|U"``.
        dos_frequencies_THz, dos: (n_f,) total DOS in states/THz per primitive cell.
        temperatures_K, free_energy_kJ_per_mol, entropy_J_per_K_mol,
        heat_capacity_J_per_K_mol: (n_T,) phonopy's thermal properties, per
            mole of primitive cells.
        min_frequency_THz: lowest frequency on the mesh and the path, Γ included.
        min_frequency_off_gamma_THz: lowest frequency farther than
            :data:`GAMMA_RADIUS` from Γ.
        has_imaginary_modes: ``min_frequency_off_gamma_THz < IMAGINARY_THRESHOLD_THZ``.
        files: name -> path of each file written.
    """

    phonopy: object
    atoms: Atoms
    supercell_matrix: np.ndarray
    n_displacements: int
    band_distances: list[np.ndarray]
    band_frequencies: list[np.ndarray]
    band_ticks: list[tuple[float, str]]
    dos_frequencies_THz: np.ndarray
    dos: np.ndarray
    temperatures_K: np.ndarray
    free_energy_kJ_per_mol: np.ndarray
    entropy_J_per_K_mol: np.ndarray
    heat_capacity_J_per_K_mol: np.ndarray
    min_frequency_THz: float
    min_frequency_off_gamma_THz: float
    has_imaginary_modes: bool
    files: dict[str, Path] = field(default_factory=dict)

    def frequencies_at(self, qpoints: Sequence[Sequence[float]]) -> np.ndarray:
        """(n_q, n_bands) frequencies in THz at q-points given as (n_q, 3)
        fractional coordinates of the primitive reciprocal cell."""
        return self.phonopy.run_qpoints(np.atleast_2d(qpoints)).frequencies

    def thermal_at(self, temperature_K: float) -> tuple[float, float, float]:
        """(F kJ/mol, S J/K/mol, Cv J/K/mol) interpolated at ``temperature_K``."""
        return tuple(float(np.interp(temperature_K, self.temperatures_K, y)) for y in
                     (self.free_energy_kJ_per_mol, self.entropy_J_per_K_mol,
                      self.heat_capacity_J_per_K_mol))


def auto_supercell(atoms: Atoms, min_length: float) -> np.ndarray:
    """Diagonal (3, 3) supercell matrix making every supercell vector >= ``min_length`` Å."""
    if min_length <= 0:
        raise ValueError(f"min_length must be > 0 Å, got {min_length}")
    lengths = atoms.cell.lengths()
    return np.diag([max(1, math.ceil(min_length / length - 1e-9)) for length in lengths])


def _supercell_matrix(atoms: Atoms, supercell, min_length: float | None) -> np.ndarray:
    if supercell is not None and min_length is not None:
        raise ValueError("give either supercell or min_length, not both")
    if supercell is None:
        return auto_supercell(atoms, DEFAULT_MIN_LENGTH if min_length is None else min_length)
    matrix = np.asarray(supercell)
    matrix = np.diag(matrix) if matrix.shape == (3,) else matrix
    if matrix.shape != (3, 3) or not np.allclose(matrix, np.round(matrix)):
        raise ValueError(f"supercell must be 3 integers or a 3x3 integer matrix, got {supercell}")
    if round(abs(np.linalg.det(matrix))) < 1:
        raise ValueError(f"supercell matrix is singular: {matrix.tolist()}")
    return np.round(matrix).astype(int)


def check_periodic(atoms: Atoms) -> None:
    """Raise InvalidStructureError unless ``atoms`` is a fully periodic 3D crystal."""
    if len(atoms) == 0:
        raise InvalidStructureError("empty structure: it has no atoms")
    if not atoms.pbc.all():
        raise InvalidStructureError(
            f"phonons need a structure periodic in all three directions (pbc={atoms.pbc.tolist()})")
    if atoms.cell.rank < 3 or abs(atoms.cell.volume) < 1e-6:
        raise InvalidStructureError("phonons need a cell with three independent vectors")
    if not np.isfinite(atoms.positions).all():
        raise InvalidStructureError("structure has non-finite positions")


def _relax(atoms: Atoms, calc: BaseCalculator, fmax: float, steps: int) -> None:
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    atoms.calc = calc
    # Positions and cell together: phonons of a strained cell are not the
    # crystal's, and residual forces would bias the force constants.
    if not BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=fmax, steps=steps):
        warnings.warn(f"relaxation did not reach fmax={fmax} eV/Å in {steps} steps",
                      RuntimeWarning, stacklevel=3)


def _forces(supercells: list[Atoms], calc: BaseCalculator, batch_size: int) -> np.ndarray:
    """(n_displacements, n_atoms, 3) forces in eV/Å, batched when the calculator can."""
    if hasattr(calc, "calculate_many"):
        results = calc.calculate_many(supercells, ["energy", "forces"], batch_size=batch_size)
        return np.array([r["forces"] for r in results])
    forces = []
    for atoms in supercells:
        atoms.calc = calc
        forces.append(atoms.get_forces())
    return np.array(forces)


def _band_path(primitive_cell: np.ndarray, path: str | None):
    """Phonopy band paths (fractional, primitive reciprocal cell) and their labels."""
    from ase.cell import Cell
    from ase.dft.kpoints import parse_path_string

    # ASE transforms its special points to this cell's own reciprocal basis
    # even when the cell is not in ASE's standard orientation.
    bandpath = Cell(primitive_cell).bandpath(npoints=0)
    special = bandpath.special_points
    pieces = parse_path_string(path or bandpath.path)
    for name in (n for piece in pieces for n in piece):
        if name not in special:
            raise ValueError(f"unknown special point '{name}' in band path; "
                             f"known for this lattice: {', '.join(sorted(special))}")
    paths = [[special[name] for name in piece] for piece in pieces if len(piece) > 1]
    labels = [["Γ" if n == "G" else n for n in piece] for piece in pieces if len(piece) > 1]
    return paths, labels


def _ticks(distances: list[np.ndarray], labels: list[list[str]]) -> list[tuple[float, str]]:
    """(x, label) of the special points; segment k of a piece ends at its label k + 1."""
    ticks: list[tuple[float, str]] = []
    seg = 0
    for piece in labels:
        x0 = float(distances[seg][0])
        if ticks and abs(ticks[-1][0] - x0) < 1e-9:
            # phonopy continues the distance across a jump: one tick "K|U".
            ticks[-1] = (x0, f"{ticks[-1][1]}|{piece[0]}")
        else:
            ticks.append((x0, piece[0]))
        for name in piece[1:]:
            ticks.append((float(distances[seg][-1]), name))
            seg += 1
    return ticks


def _min_off_gamma(qpoints: np.ndarray, frequencies: np.ndarray) -> float:
    wrapped = qpoints - np.round(qpoints)  # nearest image of Γ
    away = np.linalg.norm(wrapped, axis=1) >= GAMMA_RADIUS
    return float(frequencies[away].min()) if away.any() else math.inf


def run_phonons(atoms: Atoms, calc: BaseCalculator, supercell=None,
                min_length: float | None = None, displacement: float = 0.01,
                mesh: Sequence[int] | float = (20, 20, 20),
                temperatures_K: Sequence[float] = tuple(range(0, 1001, 10)),
                band_path: str | None = None, band_npoints: int = 51,
                relax_first: bool = False, relax_fmax: float = 1e-3,
                output_dir: str | os.PathLike | None = ".", batch_size: int = 16,
                symprec: float = 1e-5, overwrite: bool = False) -> PhononResult:
    """Finite-displacement phonons of ``atoms`` with forces from ``calc``.

    Args:
        atoms: periodic crystal (any cell; see the module doc for primitive cells).
            Not modified.
        calc: an :class:`~mlcalc.calculator.MLCalculator` (its ``calculate_many``
            evaluates all displaced supercells in batches) or any ASE calculator.
        supercell: 3 integers or a (3, 3) integer matrix relative to ``atoms.cell``.
        min_length: automatic diagonal supercell with every vector >= this many Å
            (default :data:`DEFAULT_MIN_LENGTH` when ``supercell`` is not given).
        displacement: atomic displacement in Å.
        mesh: q-mesh for DOS and thermal properties: 3 integers (Γ-centred) or a
            length in Å (phonopy's mesh density).
        temperatures_K: temperatures of the thermal properties.
        band_path: ASE path string over the lattice's special points
            (``"GXWKGLUWLK,UX"``; ``G`` is Γ, a comma starts a new piece);
            default ASE's path for the Bravais lattice of the primitive cell.
        band_npoints: q-points on the longest path segment (others in proportion).
        relax_first: relax positions and cell (BFGS + FrechetCellFilter) to
            ``relax_fmax`` eV/Å first; phonons are only meaningful at a minimum.
        output_dir: folder for the files (created); None writes nothing.
        batch_size: supercells per batched model call.
        symprec: symmetry tolerance in Å (phonopy's).
        overwrite: replace the files of an earlier run in ``output_dir``
            (else refused before any work).

    Returns:
        a :class:`PhononResult`. Warns :class:`ImaginaryModesWarning` when a mode
        below :data:`IMAGINARY_THRESHOLD_THZ` appears away from Γ.

    Raises:
        InvalidStructureError: not a fully periodic 3D structure.
        ValueError: bad supercell, band path or displacement.
    """
    check_periodic(atoms)
    if not displacement > 0:
        raise ValueError(f"displacement must be > 0 Å, got {displacement}")
    if output_dir is None:
        return _run(atoms, calc, supercell, min_length, displacement, mesh, temperatures_K,
                    band_path, band_npoints, relax_first, relax_fmax, None, batch_size, symprec)
    with output_lock(Path(output_dir) / "phonons"):
        refuse_existing(output_files(output_dir).values(), overwrite)
        return _run(atoms, calc, supercell, min_length, displacement, mesh, temperatures_K,
                    band_path, band_npoints, relax_first, relax_fmax, output_dir, batch_size,
                    symprec)


def output_files(output_dir: str | os.PathLike) -> dict[str, Path]:
    """The files :func:`write_outputs` writes, by name."""
    out = Path(output_dir)
    return {name: out / name for name in
            ("phonopy.yaml", "band.yaml", "thermal.csv", "dos.csv", "phonons.png")}


def _run(atoms, calc, supercell, min_length, displacement, mesh, temperatures_K, band_path,
         band_npoints, relax_first, relax_fmax, output_dir, batch_size,
         symprec) -> PhononResult:
    atoms = atoms.copy()
    if relax_first:
        _relax(atoms, calc, relax_fmax, steps=1000)
    matrix = _supercell_matrix(atoms, supercell, min_length)
    ph, n_displacements = _force_constants(atoms, calc, matrix, displacement, batch_size,
                                           symprec)
    result = _spectra(ph, atoms, matrix, n_displacements, mesh, temperatures_K, band_path,
                      band_npoints)
    if result.has_imaginary_modes:
        warnings.warn("imaginary phonon modes away from Γ: lowest frequency "
                      f"{result.min_frequency_off_gamma_THz:.3f} THz (the structure is "
                      "dynamically unstable or not at a minimum)", ImaginaryModesWarning,
                      stacklevel=2)
    if output_dir is not None:
        result.files = write_outputs(result, output_dir)
    return result


def _force_constants(atoms: Atoms, calc: BaseCalculator, matrix: np.ndarray,
                     displacement: float, batch_size: int, symprec: float):
    """Phonopy object with symmetrised force constants from displaced supercells."""
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms
    from phonopy.structure.cells import PrimitiveMatrixAutoDefaultWarning

    # ASE's masses, so a user's custom masses (isotopes) are respected.
    unitcell = PhonopyAtoms(symbols=atoms.get_chemical_symbols(), cell=atoms.cell.array,
                            scaled_positions=atoms.get_scaled_positions(),
                            masses=atoms.get_masses())
    with warnings.catch_warnings():
        # "auto" is our deliberate choice (see the module doc), not phonopy's default.
        warnings.simplefilter("ignore", PrimitiveMatrixAutoDefaultWarning)
        ph = Phonopy(unitcell, supercell_matrix=matrix, primitive_matrix="auto",
                     symprec=symprec)
    ph.generate_displacements(distance=displacement)
    supercells = [Atoms(s.symbols, cell=s.cell, scaled_positions=s.scaled_positions,
                        masses=s.masses, pbc=True) for s in ph.supercells_with_displacements]
    # Raw forces: no residual-force subtraction, so a structure that is not at a
    # minimum shows up (as imaginary modes) instead of being hidden.
    ph.forces = _forces(supercells, calc, batch_size)
    ph.produce_force_constants()
    ph.symmetrize_force_constants()  # translational (acoustic sum rule) + permutation
    return ph, len(supercells)


def _spectra(ph, atoms: Atoms, matrix: np.ndarray, n_displacements: int,
             mesh: Sequence[int] | float, temperatures_K: Sequence[float],
             band_path: str | None, band_npoints: int) -> PhononResult:
    """Band structure, DOS and thermal properties from the force constants."""
    from phonopy.phonon.band_structure import get_band_qpoints_and_path_connections

    paths, labels = _band_path(ph.primitive.cell, band_path)
    qpaths, connections = get_band_qpoints_and_path_connections(
        paths, npoints=band_npoints, rec_lattice=np.linalg.inv(ph.primitive.cell))
    flat = [name for piece in labels for name in piece]
    bands = ph.run_band_structure(qpaths, path_connections=connections, labels=flat)
    ph.run_mesh(mesh, is_gamma_center=True)
    ph.run_total_dos()
    # The Γ acoustic modes (ω = 0 up to rounding) have zero weight in the
    # integral but would enter the sums of a Γ-centred mesh as ω ~ 1e-7 THz.
    ph.run_thermal_properties(temperatures=np.asarray(temperatures_K, dtype=float),
                              exclude_gamma_acoustic=True)
    thermal = ph.thermal_properties
    band_q = np.concatenate(bands.qpoints)
    band_f = np.concatenate(bands.frequencies)
    mesh_q, mesh_f = ph.mesh.qpoints, ph.mesh.frequencies
    min_off = min(_min_off_gamma(band_q, band_f), _min_off_gamma(mesh_q, mesh_f))
    return PhononResult(
        phonopy=ph, atoms=atoms, supercell_matrix=matrix, n_displacements=n_displacements,
        band_distances=list(bands.distances), band_frequencies=list(bands.frequencies),
        band_ticks=_ticks(list(bands.distances), labels),
        dos_frequencies_THz=ph.total_dos.frequency_points, dos=ph.total_dos.dos,
        temperatures_K=np.asarray(thermal.temperatures), free_energy_kJ_per_mol=thermal.free_energy,
        entropy_J_per_K_mol=thermal.entropy, heat_capacity_J_per_K_mol=thermal.heat_capacity,
        min_frequency_THz=float(min(band_f.min(), mesh_f.min())),
        min_frequency_off_gamma_THz=min_off,
        has_imaginary_modes=min_off < IMAGINARY_THRESHOLD_THZ)


def write_outputs(result: PhononResult, output_dir: str | os.PathLike) -> dict[str, Path]:
    """Write phonopy.yaml, band.yaml, thermal.csv, dos.csv and phonons.png to ``output_dir``."""
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    files = output_files(output_dir)
    ph = result.phonopy
    # Force constants in the file, so phonopy.load() needs no force calculator.
    ph.save(files["phonopy.yaml"], settings={"force_constants": True})
    ph.write_yaml_band_structure(filename=files["band.yaml"])
    np.savetxt(files["thermal.csv"], np.column_stack(
        [result.temperatures_K, result.free_energy_kJ_per_mol, result.entropy_J_per_K_mol,
         result.heat_capacity_J_per_K_mol]), delimiter=",", comments="", fmt="%.10g",
        header="T_K,F_kJ_per_mol,S_J_per_K_mol,Cv_J_per_K_mol")
    np.savetxt(files["dos.csv"], np.column_stack([result.dos_frequencies_THz, result.dos]),
               delimiter=",", comments="", fmt="%.10g", header="frequency_THz,dos_per_THz")
    plot_bands_dos(result, files["phonons.png"])
    return files


def plot_bands_dos(result: PhononResult, path: str | os.PathLike) -> Path:
    """PNG with the band structure (special points on the x axis) and the DOS beside it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A Figure without pyplot: no global state, no display needed.
    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax_b, ax_d = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [3, 1]})
    for d, f in zip(result.band_distances, result.band_frequencies, strict=True):
        ax_b.plot(d, f, color="C0", lw=1.2)
    xs = [x for x, _ in result.band_ticks]
    for x in xs:
        ax_b.axvline(x, color="0.7", lw=0.6)
    ax_b.axhline(0.0, color="0.5", lw=0.6, ls="--")
    ax_b.set_xticks(xs, [label for _, label in result.band_ticks])
    ax_b.set_xlim(xs[0], xs[-1])
    ax_b.set_ylabel("frequency (THz)")
    lo = min(0.0, min(float(f.min()) for f in result.band_frequencies))
    hi = max(float(f.max()) for f in result.band_frequencies)
    ax_b.set_ylim(lo - 0.04 * (hi - lo), hi + 0.04 * (hi - lo))  # imaginary modes stay visible
    ax_d.plot(result.dos, result.dos_frequencies_THz, color="C0", lw=1.2)
    ax_d.fill_betweenx(result.dos_frequencies_THz, 0, result.dos, color="C0", alpha=0.25)
    ax_d.set_xlabel("DOS (1/THz)")
    ax_d.set_xlim(left=0)
    fig.savefig(path, dpi=110)
    return Path(path)


__all__ = ["DEFAULT_MIN_LENGTH", "IMAGINARY_THRESHOLD_THZ", "ImaginaryModesWarning",
           "PhononResult", "auto_supercell", "check_periodic", "output_files", "plot_bands_dos",
           "run_phonons", "write_outputs"]
