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
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from mlcalc import properties as P
from mlcalc.allocator import keep_freed_memory
from mlcalc.data.atoms import atoms_to_inputs
from mlcalc.ensemble import EnsemblePotential
from mlcalc.exceptions import DeviceError
from mlcalc.model import NeuralNetworkPotential, predict, split_results
from mlcalc.model.potential import DTYPES, _dtype_name
from mlcalc.model.predict import check_elements
from mlcalc.model_io import load_model
from mlcalc.pretrained import resolve_model_path
from mlcalc.transform.neighbors import get_neighbor_list
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
    """Set torch's intra-op threads deliberately and return the number in use."""
    if threads is None:
        if os.environ.get("OMP_NUM_THREADS"):
            return torch.get_num_threads()  # torch honours OMP_NUM_THREADS itself
        threads = default_threads()
    if threads != torch.get_num_threads():
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def _load(spec: ModelSpec, device: torch.device, dtype) -> NeuralNetworkPotential:
    if isinstance(spec, torch.nn.Module):
        model = spec
        if dtype is not None:
            dtype = DTYPES[_dtype_name(dtype)]
            if dtype != spec.dtype:  # a copy: the caller's model keeps its precision
                model = copy.deepcopy(spec).to(dtype)
        return model.to(device).eval()
    return load_model(resolve_model_path(spec), device=device, dtype=dtype)


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
            ``torch_cluster``, ``ase``); default matscipy on CPU, torch on GPU.
        info_keys: ``atoms.info`` keys the model reads; a change of any of
            them invalidates the cached results.
        fused: use the fused CPU kernels of :mod:`mlcalc.kernels` (half
            neighbor lists, one pass per message step) where they apply; the
            numbers are those of the eager path to rounding. False: eager.
        **kwargs: passed to :class:`ase.calculators.calculator.Calculator`.

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
                 info_keys: Sequence[str] = (), fused: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        keep_freed_memory()  # no page faults from per-step allocations (see mlcalc.allocator)
        self.threads = set_threads(threads)
        self.device = resolve_device(device)
        if isinstance(model, list | tuple):
            names = [str(m) if not isinstance(m, torch.nn.Module) else f"member {k}"
                     for k, m in enumerate(model)]
            members = [_load(m, self.device, dtype) for m in model]
            self.model: NeuralNetworkPotential | EnsemblePotential = EnsemblePotential(
                members, names)
            self.implemented_properties = [*MLCalculator.implemented_properties,
                                           P.energy_std, P.forces_std, P.stress_std]
        else:
            self.model = _load(model, self.device, dtype)
        self.model.eval()
        self.cutoff = self.model.cutoff
        self.skin = float(skin)
        self.backend = neighbor_list or ("torch" if self.device.type == "cuda" else "matscipy")
        #: whether the model gets half neighbor lists and so its fused kernels
        self.fused = bool(fused) and self.model.accepts_half_list()
        self.verlet = self._new_verlet()
        self.info_keys = tuple(info_keys)
        self.n_model_calls = 0
        self.timings = {"neighbor_list": 0.0, "model": 0.0, "calculate": 0.0}
        self._want_stress = False
        self._checked_numbers: np.ndarray | None = None

    def _new_verlet(self) -> VerletNeighborList:
        nl = get_neighbor_list(self.backend, self.cutoff + self.skin)
        return VerletNeighborList(nl, self.cutoff, self.skin, half=self.fused)

    @property
    def elements(self) -> list[int] | None:
        """Atomic numbers the model knows (None: not recorded)."""
        return self.model.elements

    # ---- ASE contract -----------------------------------------------------
    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
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
        if P.stress in props:
            if not atoms.pbc.all():
                raise PropertyNotImplementedError(
                    "stress is only defined for structures periodic in all three directions")
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
        inputs = atoms_to_inputs(atoms)
        self._check_elements(atoms.numbers)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        t1 = time.perf_counter()
        idx_i, idx_j, shifts = self.verlet(inputs[P.R], inputs[P.cell][0], inputs[P.pbc][0],
                                           inputs[P.Z])
        inputs.update({P.idx_i: idx_i, P.idx_j: idx_j, P.cell_shifts: shifts,
                       P.idx_m: torch.zeros(len(atoms), dtype=torch.long, device=self.device)})
        if self.verlet.half:
            inputs[P.half_list] = torch.ones((), dtype=torch.bool)
        t2 = time.perf_counter()
        self.model.request(props)
        with torch.set_grad_enabled(bool(self.model.required_derivatives)):
            out = self.model(inputs)
        (results,) = split_results(out, [len(atoms)], props)
        t3 = time.perf_counter()
        self.n_model_calls += 1
        results[P.free_energy] = results[P.energy]
        self.results = results
        self.timings["neighbor_list"] += t2 - t1
        self.timings["model"] += t3 - t2
        self.timings["calculate"] += time.perf_counter() - t0

    # ---- batched evaluation --------------------------------------------------
    def calculate_many(self, atoms_list: Sequence[Atoms],
                       properties: Sequence[str] = (P.energy, P.forces),
                       batch_size: int = 32) -> list[dict[str, float | np.ndarray]]:
        """Evaluate many structures in batches; same numbers as one by one.

        Each structure gets a calculator holding its results (sharing this
        calculator's model), so ``atoms.get_forces()`` works on each without
        another evaluation. Memory is bounded by ``batch_size`` structures.

        Returns:
            one results dict per structure (ASE names, float64).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        props = sorted({P.energy, *properties} - {P.free_energy})
        if P.stress in props and not all(a.pbc.all() for a in atoms_list):
            raise PropertyNotImplementedError(
                "stress is only defined for structures periodic in all three directions")
        nl = get_neighbor_list(self.backend, self.cutoff)
        all_results = []
        for start in range(0, len(atoms_list), batch_size):
            chunk = atoms_list[start:start + batch_size]
            results = predict(self.model, chunk, props, nl, half=self.fused)
            for atoms, res in zip(chunk, results, strict=True):
                res[P.free_energy] = res[P.energy]
                calc = copy.copy(self)
                calc.verlet = self._new_verlet()
                calc.results = dict(res)
                calc.atoms = atoms.copy()
                atoms.calc = calc
                all_results.append(res)
        return all_results

    def __repr__(self) -> str:
        kind = type(self.model).__name__
        return (f"MLCalculator({kind}, cutoff={self.cutoff}, skin={self.skin}, "
                f"device={self.device}, dtype={str(self.model.dtype).removeprefix('torch.')})")


def _same(a, b) -> bool:
    try:
        return bool(np.all(np.asarray(a) == np.asarray(b))) and type(a) is type(b)
    except Exception:
        return a is b


__all__ = ["DEFAULT_SKIN", "MLCalculator", "default_threads", "resolve_device", "set_threads"]
