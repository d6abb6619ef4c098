"""Reusable physics checks for mlcalc models (shipped, so users can audit theirs).

Each ``check_*`` function returns the largest deviation it found (float,
in the units noted); ``assert_physics`` runs them all against the
tolerances of :data:`TOLERANCES` for the model's dtype. The checks use
:func:`mlcalc.model.predict`, i.e. the same path as inference.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from ase import Atoms

from mlcalc import properties as P
from mlcalc.model import NeuralNetworkPotential, predict

#: Written-down tolerances per network dtype for structures of up to ~100
#: atoms: energies in eV, forces in eV/Å, stress in eV/Å³. A float32 network
#: rounds every feature to ~6e-8 relative, so per-atom energies of O(1 eV)
#: differ by ~1e-7 eV between equivalent inputs and a sum over tens of atoms
#: by ~1e-6 eV (measured: ≤ 1e-6 eV, ≤ 5e-7 eV/Å for 8-16 Cu atoms); float64
#: agrees to ~1e-14. ``fd_*`` compare against central differences, whose own
#: truncation and round-off error sets the bound, and are only run in float64;
#: ``harmonic`` bounds the relative change of the curvature of E between 1e-3
#: and 1e-2 Å displacements (anharmonicity makes it ~1e-3 for real crystals).
TOLERANCES: dict[torch.dtype, dict[str, float]] = {
    torch.float64: {"energy": 1e-10, "forces": 1e-10, "stress": 1e-11,
                    "fd_forces": 1e-6, "fd_stress": 1e-7, "harmonic": 0.05},
    torch.float32: {"energy": 2e-5, "forces": 1e-5, "stress": 1e-6,
                    "fd_forces": float("nan"), "fd_stress": float("nan"),
                    "harmonic": float("nan")},
}


EnergyFn = Callable[[Atoms], float]


def _energy_fn(model: NeuralNetworkPotential | EnergyFn) -> EnergyFn:
    if isinstance(model, torch.nn.Module):
        return lambda atoms: float(predict(model, atoms, [P.energy])[0][P.energy])
    return model


def numerical_forces(model: NeuralNetworkPotential | EnergyFn, atoms: Atoms,
                     eps: float = 1e-5) -> np.ndarray:
    """Forces (n, 3) in eV/Å by central differences of the energy.

    ``model`` is a potential or any function atoms -> energy in eV.
    """
    energy = _energy_fn(model)
    forces = np.zeros((len(atoms), 3))
    for a in range(len(atoms)):
        for c in range(3):
            shifted = []
            for sign in (1.0, -1.0):
                moved = atoms.copy()
                moved.positions[a, c] += sign * eps
                shifted.append(energy(moved))
            forces[a, c] = -(shifted[0] - shifted[1]) / (2.0 * eps)
    return forces


def numerical_stress(model: NeuralNetworkPotential | EnergyFn, atoms: Atoms,
                     eps: float = 1e-5) -> np.ndarray:
    """Voigt stress (6,) in eV/Å³ from central differences under symmetric strain.

    ``model`` is a potential or any function atoms -> energy in eV.
    """
    energy = _energy_fn(model)
    volume = atoms.get_volume()
    voigt = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
    stress = np.zeros(6)
    for k, (a, b) in enumerate(voigt):
        energies = []
        for sign in (1.0, -1.0):
            strain = np.zeros((3, 3))
            strain[a, b] += 0.5 * sign * eps
            strain[b, a] += 0.5 * sign * eps
            deformed = atoms.copy()
            deformed.set_cell(atoms.cell @ (np.eye(3) + strain), scale_atoms=True)
            energies.append(energy(deformed))
        # one symmetric perturbation of size eps moves ε_ab (and ε_ba) by eps/2 each
        stress[k] = (energies[0] - energies[1]) / (2.0 * eps) / volume
    return stress


def check_forces(model: NeuralNetworkPotential, atoms: Atoms, eps: float = 1e-5) -> float:
    """Max ``|F - F_fd|`` in eV/Å."""
    forces = predict(model, atoms, [P.energy, P.forces])[0][P.forces]
    return float(np.abs(forces - numerical_forces(model, atoms, eps)).max())


def check_stress(model: NeuralNetworkPotential, atoms: Atoms, eps: float = 1e-5) -> float:
    """Max ``|σ - σ_fd|`` in eV/Å³ (atoms must be periodic in 3D)."""
    stress = predict(model, atoms, [P.energy, P.stress])[0][P.stress]
    return float(np.abs(stress - numerical_stress(model, atoms, eps)).max())


def random_rotation(seed: int = 0) -> np.ndarray:
    """A random proper rotation matrix (3, 3)."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _compare(model: NeuralNetworkPotential, a: Atoms, b: Atoms,
             forces_map=lambda f: f) -> tuple[float, float]:
    ra, rb = predict(model, [a, b], [P.energy, P.forces])
    return (abs(ra[P.energy] - rb[P.energy]),
            float(np.abs(forces_map(ra[P.forces]) - rb[P.forces]).max()))


def check_rotation(model: NeuralNetworkPotential, atoms: Atoms,
                   seed: int = 0) -> tuple[float, float]:
    """(``|ΔE|`` eV, max ``|ΔF|`` eV/Å) after rotating positions and cell; forces rotate along."""
    rot = random_rotation(seed)
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ rot.T
    rotated.cell = atoms.cell.array @ rot.T
    return _compare(model, atoms, rotated, lambda f: f @ rot.T)


def check_translation(model: NeuralNetworkPotential, atoms: Atoms,
                      shift: Sequence[float] = (0.37, -1.1, 2.3)) -> tuple[float, float]:
    """(``|ΔE|``, max ``|ΔF|``) after translating every atom by ``shift`` Å."""
    moved = atoms.copy()
    moved.positions += np.asarray(shift)
    return _compare(model, atoms, moved)


def check_permutation(model: NeuralNetworkPotential, atoms: Atoms,
                      seed: int = 0) -> tuple[float, float]:
    """(``|ΔE|``, max ``|ΔF|``) after reordering the atoms; forces reorder along."""
    perm = np.random.default_rng(seed).permutation(len(atoms))
    return _compare(model, atoms, atoms[perm], lambda f: f[perm])


def check_wrapping(model: NeuralNetworkPotential, atoms: Atoms,
                   seed: int = 0) -> tuple[float, float]:
    """(``|ΔE|``, max ``|ΔF|``): positions moved by random lattice vectors vs wrapped."""
    unwrapped = atoms.copy()
    n = np.random.default_rng(seed).integers(-2, 3, size=(len(atoms), 3)) * atoms.pbc
    unwrapped.positions += n @ atoms.cell.array
    wrapped = unwrapped.copy()
    wrapped.wrap()
    return _compare(model, unwrapped, wrapped)


def check_supercell(model: NeuralNetworkPotential, atoms: Atoms,
                    repeat: tuple[int, int, int] = (2, 2, 2)) -> float:
    """``|E(supercell) - n·E(cell)|`` per atom of the supercell, eV/atom."""
    n = int(np.prod(repeat))
    big = atoms.repeat(repeat)
    e_small, e_big = (r[P.energy] for r in predict(model, [atoms, big], [P.energy]))
    return abs(e_big - n * e_small) / len(big)


def check_batch(model: NeuralNetworkPotential, atoms_list: Sequence[Atoms]) -> tuple[float, float]:
    """(max ``|ΔE|``, max ``|ΔF|``) between one batch of all structures and each alone."""
    batched = predict(model, atoms_list, [P.energy, P.forces])
    de = df = 0.0
    for atoms, rb in zip(atoms_list, batched, strict=True):
        ra = predict(model, atoms, [P.energy, P.forces])[0]
        de = max(de, abs(ra[P.energy] - rb[P.energy]))
        df = max(df, float(np.abs(ra[P.forces] - rb[P.forces]).max()))
    return de, df


def check_save_load(model: NeuralNetworkPotential, atoms: Atoms,
                    path: str | os.PathLike) -> tuple[float, float]:
    """(``|ΔE|``, max ``|ΔF|``) between ``model`` and its save → load copy at ``path``."""
    from mlcalc.model.io import load_model, save_model

    save_model(model, path)
    loaded = load_model(path, device=next(model.parameters()).device)
    ra = predict(model, atoms, [P.energy, P.forces])[0]
    rb = predict(loaded, atoms, [P.energy, P.forces])[0]
    return abs(ra[P.energy] - rb[P.energy]), float(np.abs(ra[P.forces] - rb[P.forces]).max())


def check_cutoff_continuity(model: NeuralNetworkPotential, element: int = 29,
                            delta: float = 1e-6) -> tuple[float, float]:
    """(``|ΔE|``, max ``|ΔF|``) of a dimer just inside vs just outside the cutoff."""
    rc = model.cutoff
    dimers = [Atoms([element, element], positions=[[0, 0, 0], [rc + s, 0, 0]])
              for s in (-delta, delta)]
    return _compare(model, dimers[0], dimers[1])


def check_harmonic_at_symmetric_site(model: NeuralNetworkPotential, atoms: Atoms | None = None,
                                     atom: int = 0, h: float = 1e-3) -> float:
    """Relative difference of the curvature of E(d) at d = h and d = 10 h.

    Moving one atom of a perfect crystal (every atom a centre of inversion)
    by d changes the energy by k d²/2 + O(d⁴) for any smooth potential, so
    (E(h) - E(0)) / h² and (E(10h) - E(0)) / (10h)² agree closely. A model
    whose invariants are not smooth where features vanish by symmetry (a
    norm √(x² + ε) with tiny ε) has an energy cusp there, which ruins
    finite-displacement phonons. Meaningful in float64 only.
    """
    if atoms is None:
        from ase.build import bulk

        atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    frames = []
    for d in (0.0, h, 10 * h):
        moved = atoms.copy()
        moved.positions[atom] += d * np.array([1.0, 0.6, 0.2])
        frames.append(moved)
    e0, e1, e2 = (r[P.energy] for r in predict(model, frames, [P.energy]))
    k_small, k_large = (e1 - e0) / h**2, (e2 - e0) / (10 * h) ** 2
    return abs(k_small - k_large) / max(abs(k_large), 1e-12)


def assert_physics(model: NeuralNetworkPotential, atoms: Atoms,
                   tolerances: dict[str, float] | None = None) -> None:
    """Run the invariance checks (and finite differences in float64); raise on failure."""
    tol = tolerances or TOLERANCES[model.dtype]
    failures = []

    def expect(name: str, values: tuple[float, ...] | float, keys: tuple[str, ...]) -> None:
        values = values if isinstance(values, tuple) else (values,)
        for value, key in zip(values, keys, strict=True):
            if not value <= tol[key]:
                failures.append(f"{name}: {key} deviation {value:.3g} > {tol[key]:.3g}")

    expect("rotation", check_rotation(model, atoms), ("energy", "forces"))
    expect("translation", check_translation(model, atoms), ("energy", "forces"))
    expect("permutation", check_permutation(model, atoms), ("energy", "forces"))
    if atoms.pbc.any():
        expect("wrapping", check_wrapping(model, atoms), ("energy", "forces"))
    if model.dtype == torch.float64:
        expect("finite-difference forces", check_forces(model, atoms), ("fd_forces",))
        expect("harmonic at a symmetric site", check_harmonic_at_symmetric_site(model),
               ("harmonic",))
        if atoms.pbc.all():
            expect("finite-difference stress", check_stress(model, atoms), ("fd_stress",))
    if failures:
        raise AssertionError("; ".join(failures))


# ---- host synchronisation (static-shape step) --------------------------------------------------
#: Operators that make the host wait for the device: a value read back
#: (``.item()``, ``bool(t)``, ``torch.equal``) or an output whose shape
#: depends on the data (``nonzero``, ``unique``, boolean-mask indexing, ...).
#: On CUDA each is a synchronisation and none can be captured in a graph.
SYNCING_OPS = ("_local_scalar_dense", "nonzero", "masked_select", "unique_consecutive",
               "_unique2", "unique_dim", "_unique", "equal", "is_nonzero", "allclose",
               "repeat_interleave", "bincount", "histc", "_assert_async")


class HostSyncRecorder:
    """Record the syncing operators (:data:`SYNCING_OPS`) run inside a block, on any device.

    The CPU counterpart of ``torch.cuda.set_sync_debug_mode("error")``: it
    sees every aten operator, so a step that passes it on CPU has no
    data-dependent shape and reads no value back.

        >>> with HostSyncRecorder() as rec:   # doctest: +SKIP
        ...     step()
        >>> rec.ops
        []
    """

    def __init__(self) -> None:
        self.ops: list[str] = []
        self._mode = None

    def __enter__(self) -> HostSyncRecorder:
        from torch.utils._python_dispatch import TorchDispatchMode

        recorder = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                name = func.overloadpacket.__name__
                boolean_index = name == "index" and any(
                    isinstance(t, torch.Tensor) and t.dtype == torch.bool
                    for t in (args[1] if len(args) > 1 else []) if t is not None)
                if name in SYNCING_OPS or boolean_index:
                    recorder.ops.append(str(func))
                return func(*args, **(kwargs or {}))

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)
