"""MLCalculator: an ASE calculator around an mlcalc model.

    >>> atoms.calc = MLCalculator("model.pt")   # doctest: +SKIP

Cutoff, neighbor-list settings, elements, units and offsets come from the
model file; the caller never passes them. One model evaluation serves every
property of a geometry; the neighbor list is a Verlet list with a skin.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from mlcalc import properties as P
from mlcalc.allocator import keep_freed_memory
from mlcalc.data.atoms import validate_structure
from mlcalc.exceptions import DeviceError
from mlcalc.model import (
    DTYPES,
    EnsemblePotential,
    NeuralNetworkPotential,
    check_elements,
    check_stress_defined,
    dtype_name,
    load_model,
    model_neighbor_list,
    predict,
    split_results,
    structure_inputs,
)
from mlcalc.model.committee import committee_members
from mlcalc.model.static import STATIC_PROPERTIES, StaticEvaluator
from mlcalc.pretrained import resolve_model_path
from mlcalc.transform.verlet import VerletNeighborList

#: Default Verlet skin in Å (see docs/calculator.rst for the measurement).
DEFAULT_SKIN = 0.5

ModelSpec = str | os.PathLike | NeuralNetworkPotential


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when present, else CPU; refuse CUDA without CUDA."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device '{device}' was requested but CUDA is not available")
    return device


def default_threads() -> int:
    """Torch threads used when neither ``threads`` nor OMP_NUM_THREADS is set.

    Half the logical CPUs (hyperthreads share a core's floating-point units),
    at least 1 and at most 8: more threads than that rarely pay for the
    small per-step kernels of MD, and on a loaded 2-core machine two threads
    can be many times slower than one.
    """
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads deliberately and return the number in use.

    Raises:
        ValueError: ``threads`` < 1.
    """
    if threads is not None and (isinstance(threads, bool) or int(threads) != threads
                                or threads < 1):
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    if threads is None:
        if os.environ.get("OMP_NUM_THREADS"):
            return torch.get_num_threads()  # torch honours OMP_NUM_THREADS itself
        threads = default_threads()
    if threads != torch.get_num_threads():
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def _load(spec: ModelSpec, device: torch.device, dtype) -> NeuralNetworkPotential:
    """The potential of one model argument.

    A model the calculator makes (read from a file, or a copy at another
    precision) is its own and is frozen: its weights need no gradients, so
    autograd and the message kernels skip the weight gradients that a
    training step would need (PaiNN's filter-weight gradient is a third of
    its message backward). A module passed in is used as it is, its
    ``requires_grad`` untouched (``model.requires_grad_(False)`` before
    handing it over gives the same speed).
    """
    if isinstance(spec, torch.nn.Module):
        model = spec
        if dtype is not None:
            dtype = DTYPES[dtype_name(dtype)]
            if dtype != spec.dtype:  # a copy: the caller's model keeps its precision
                model = copy.deepcopy(spec).to(dtype).requires_grad_(False)
        return model.to(device).eval()
    return load_model(resolve_model_path(spec), device=device, dtype=dtype).requires_grad_(False)


def load_potential(model: ModelSpec | Sequence[ModelSpec], device: torch.device,
                   dtype: str | torch.dtype | None = None
                   ) -> NeuralNetworkPotential | EnsemblePotential:
    """The potential a model argument names, in evaluation mode on ``device``.

    Args:
        model: a model file, a bundled name, a committee folder
            (:mod:`mlcalc.model.committee`), a loaded potential (or ensemble),
            or a list of those (an ensemble).
        device: where the weights go.
        dtype: network precision; None keeps the model's.
    """
    if isinstance(model, str | os.PathLike):
        members = committee_members(model)  # a committee folder: its members as an ensemble
        model = model if members is None else members
    if isinstance(model, list | tuple):
        names = [str(m) if not isinstance(m, torch.nn.Module) else f"member {k}"
                 for k, m in enumerate(model)]
        return EnsemblePotential([_load(m, device, dtype) for m in model], names).eval()
    return _load(model, device, dtype).eval()


class MLCalculator(Calculator):
    """ASE calculator for mlcalc models (and ensembles of them).

    Args:
        model: path to a model file, the name of a bundled model, a loaded
            :class:`NeuralNetworkPotential`, or a list of those (an ensemble:
            results are the members' mean plus ``energy_std``, ``forces_std``
            and ``stress_std``).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ...
        dtype: network precision, ``"float32"`` or ``"float64"``; None keeps
            the model file's. Positions, energy sums and offsets are float64
            either way.
        skin: Verlet skin in Å; 0 rebuilds the neighbor list at every call.
        threads: torch threads; None respects OMP_NUM_THREADS, else
            :func:`default_threads`. Torch's thread count is process-wide.
        neighbor_list: backend name (``matscipy``, ``torch``,
            ``torch_cluster``, ``ase``) instead of the model's own choice for
            the device (saved in the model file: matscipy on CPU, torch on GPU).
        info_keys: ``atoms.info`` keys the model reads; a change of any of
            them invalidates the cached results.
        padded: evaluate energy, forces and stress on the static-shape,
            device-resident step (:mod:`mlcalc.model.static`: padded pair
            capacity, skin check on the device, one synchronisation per
            step). None: on for CUDA, off on CPU (where the dynamic list,
            cut to the cutoff, is faster). Ensembles and the Hessian always
            take the dynamic path.
        cuda_graphs: replay the padded step as a CUDA graph (recaptured when
            the pair capacity grows or the atom count changes; a failed
            capture warns once and runs eagerly). None: on for CUDA.
        tf32: allow TF32 matrix products on CUDA during a step. Off by
            default: TF32 keeps 10 mantissa bits, so float32 forces would
            carry ~1e-3 relative error, more than the model's own float32
            rounding; set only around the step, never process-wide.
        **kwargs: passed to :class:`ase.calculators.calculator.Calculator`.

    Which implementation of the message steps runs (the compiled kernels of
    :mod:`mlcalc.kernels` on CPU) is decided there, by device;
    ``MLCALC_KERNELS=0`` turns the kernels off.

    Attributes:
        n_model_calls: model evaluations so far.
        timings: seconds spent so far in ``neighbor_list`` (the Verlet list),
            ``model`` (forward and backward) and ``calculate`` (all of it).
    """

    implemented_properties = [P.energy, P.free_energy, P.energies, P.forces, P.stress,
                              P.hessian]

    def __init__(self, model: ModelSpec | Sequence[ModelSpec], device: str = "auto",
                 dtype: str | torch.dtype | None = None, skin: float = DEFAULT_SKIN,
                 threads: int | None = None, neighbor_list: str | None = None,
                 info_keys: Sequence[str] = (), padded: bool | None = None,
                 cuda_graphs: bool | None = None, tf32: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        keep_freed_memory()  # no page faults from per-step allocations (see mlcalc.allocator)
        self.threads = set_threads(threads)
        self.device = resolve_device(device)
        self.model = load_potential(model, self.device, dtype)
        if isinstance(self.model, EnsemblePotential):
            self.implemented_properties = [*MLCalculator.implemented_properties,
                                           P.energy_std, P.forces_std, P.stress_std]
        self.model.eval()
        self.cutoff = self.model.cutoff
        self.skin = float(skin)
        self.backend = neighbor_list
        self.verlet = VerletNeighborList(
            model_neighbor_list(self.model, self.device, self.skin, neighbor_list),
            self.cutoff, self.skin)
        self.info_keys = tuple(info_keys)
        self.static = self._static_evaluator(padded, cuda_graphs, tf32)
        self.n_model_calls = 0
        self.timings = {"neighbor_list": 0.0, "model": 0.0, "calculate": 0.0}
        self._want_stress = False
        self._checked_numbers: np.ndarray | None = None

    def _static_evaluator(self, padded: bool | None, cuda_graphs: bool | None,
                          tf32: bool) -> StaticEvaluator | None:
        on_cuda = self.device.type == "cuda"
        if cuda_graphs and not on_cuda:
            raise ValueError(f"cuda_graphs needs a CUDA device; this calculator runs on "
                             f"{self.device}")
        if padded is None:
            padded = on_cuda and not isinstance(self.model, EnsemblePotential)
        if not padded:
            if cuda_graphs:
                raise ValueError("cuda_graphs needs the padded step (padded=True)")
            return None
        if isinstance(self.model, EnsemblePotential):
            raise ValueError("the padded step evaluates one model, not an ensemble")
        nl = model_neighbor_list(self.model, self.device, self.skin, self.backend)
        graphs = on_cuda if cuda_graphs is None else bool(cuda_graphs)
        return StaticEvaluator(self.model, nl, self.skin, cuda_graphs=graphs, tf32=tf32)

    @property
    def elements(self) -> list[int] | None:
        """Atomic numbers the model knows (None: not recorded)."""
        return self.model.elements

    # ---- ASE contract -----------------------------------------------------
    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        # ASE asks three times per MD step (forces before and after the move,
        # and again for the observers), twice of a structure that has not
        # changed: its comparison (np.allclose per array) costs ~0.13 ms at
        # 108 atoms, the exact one below ~0.02 ms. Arrays equal bit for bit
        # are within any tolerance, so ASE would find no change either.
        if self.atoms is not None and _unchanged(self.atoms, atoms):
            changes = []
        else:
            changes = super().check_state(atoms, tol)
        if self.atoms is not None and any(
                not _same(atoms.info.get(k), self.atoms.info.get(k)) for k in self.info_keys):
            changes.append("info")
        return changes

    def _check_elements(self, numbers: np.ndarray) -> None:
        if self._checked_numbers is not None and np.array_equal(numbers, self._checked_numbers):
            return
        check_elements(numbers, self.elements)
        self._checked_numbers = numbers.copy()

    def _properties_to_compute(self, atoms: Atoms, properties: Sequence[str]) -> list[str]:
        props = {P.energy, P.energies, P.forces} | set(properties)
        props.discard(P.free_energy)
        props -= {P.energy_std, P.forces_std, P.stress_std}  # come with their property
        if P.stress in props:
            check_stress_defined([atoms])
            # Once asked, stress is kept: NPT and cell filters ask every step,
            # and computing it with the forces costs far less than a second call.
            self._want_stress = True
        elif self._want_stress and atoms.pbc.all():
            props.add(P.stress)
        return sorted(props)

    def calculate(self, atoms: Atoms | None = None, properties: Sequence[str] = (P.energy,),
                  system_changes: Sequence[str] = all_changes) -> None:
        t0 = time.perf_counter()
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        props = self._properties_to_compute(atoms, properties)
        if self.static is not None and set(props) <= STATIC_PROPERTIES:
            validate_structure(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc)
            self._check_elements(atoms.numbers)
            t1 = time.perf_counter()
            self.results = self.static(atoms, props)
            self.results[P.free_energy] = self.results[P.energy]
            self.n_model_calls += 1
            self.timings["model"] += time.perf_counter() - t1
            self.timings["calculate"] += time.perf_counter() - t0
            return
        inputs = structure_inputs(atoms, self.device)  # validates the structure first
        self._check_elements(atoms.numbers)
        t1 = time.perf_counter()
        inputs[P.idx_i], inputs[P.idx_j], inputs[P.cell_shifts] = self.verlet(
            inputs[P.R], inputs[P.cell][0], inputs[P.pbc][0], inputs[P.Z])
        t2 = time.perf_counter()
        with torch.set_grad_enabled(bool(self.model.required_derivatives(props))):
            out = self.model(inputs, props)
        (results,) = split_results(out, [len(atoms)], props)
        t3 = time.perf_counter()
        self.n_model_calls += 1
        results[P.free_energy] = results[P.energy]
        self.results = results
        self.timings["neighbor_list"] += t2 - t1
        self.timings["model"] += t3 - t2
        self.timings["calculate"] += time.perf_counter() - t0

    def get_hessian(self, atoms: Atoms | None = None) -> np.ndarray:
        """The analytic Hessian ∂²E/∂R² of ``atoms``, (3N, 3N) float64 in eV/Å².

        Rows and columns run over atoms, then x, y, z (``H[3a + i, 3b + j]``),
        the layout of ``ase.vibrations.VibrationsData.from_2d``. The name is
        the one other ML calculators (MACE, janus-core) use.
        """
        return self.get_property(P.hessian, atoms)

    # ---- batched evaluation --------------------------------------------------
    def calculate_many(self, atoms_list: Sequence[Atoms],
                       properties: Sequence[str] = (P.energy, P.forces),
                       batch_size: int = 32) -> list[dict[str, float | np.ndarray]]:
        """Evaluate many structures in batches; same numbers as one by one.

        Each structure gets its own calculator holding its results (sharing
        this calculator's model, nothing else), so ``atoms.get_forces()``
        works on each without another evaluation. Memory is bounded by
        ``batch_size`` structures.

        Returns:
            one results dict per structure (ASE names, float64).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        props = sorted({P.energy, *properties} - {P.free_energy})
        if P.stress in props:
            check_stress_defined(atoms_list)
        nl = model_neighbor_list(self.model, self.device, backend=self.backend)
        all_results = []
        for start in range(0, len(atoms_list), batch_size):
            chunk = atoms_list[start:start + batch_size]
            results = predict(self.model, chunk, props, nl)
            for atoms, res in zip(chunk, results, strict=True):
                res[P.free_energy] = res[P.energy]
                calc = self.sibling()
                calc.results = dict(res)
                calc.atoms = atoms.copy()
                atoms.calc = calc
                all_results.append(res)
        return all_results

    def sibling(self) -> MLCalculator:
        """A new calculator on the same model object (no reload): own Verlet list, own timings."""
        return MLCalculator(self.model, device=self.device, skin=self.skin,
                            threads=self.threads, neighbor_list=self.backend,
                            info_keys=self.info_keys, padded=self.static is not None,
                            cuda_graphs=self.static is not None and self.static.cuda_graphs,
                            tf32=self.static is not None and self.static.tf32)

    def __repr__(self) -> str:
        kind = type(self.model).__name__
        return (f"MLCalculator({kind}, cutoff={self.cutoff}, skin={self.skin}, "
                f"device={self.device}, dtype={str(self.model.dtype).removeprefix('torch.')})")


def _unchanged(old: Atoms, new: Atoms) -> bool:
    """Whether ``new`` equals ``old`` exactly in everything ASE's check_state compares.

    That is the cell, pbc and the per-atom arrays named in ASE's
    ``all_changes`` (positions, numbers, initial charges and magnetic
    moments); momenta and other arrays are not a change, as in ASE.
    False means "maybe changed": ASE's own comparison then decides.
    """
    if not (np.array_equal(old.cell.array, new.cell.array) and np.array_equal(old.pbc, new.pbc)):
        return False
    a, b = old.arrays, new.arrays
    for key in all_changes:
        in_a, in_b = key in a, key in b
        if in_a != in_b or (in_a and not np.array_equal(a[key], b[key])):
            return False
    return True


def _same(a, b) -> bool:
    try:
        return bool(np.all(np.asarray(a) == np.asarray(b))) and type(a) is type(b)
    except Exception:
        return a is b


__all__ = ["DEFAULT_SKIN", "MLCalculator", "default_threads", "load_potential", "resolve_device",
           "set_threads"]
