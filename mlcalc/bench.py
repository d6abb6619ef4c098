"""Throughput benchmarks: MD with :class:`MLCalculator` and training steps.

Functions return row dicts; :func:`format_report` makes Markdown tables headed
by the machine. Weights are random (speed does not depend on them).
:func:`bench_md` times ASE's VelocityVerlet on fcc Cu, split into neighbor
list, model and the rest of MLCalculator (``MLCalculator.timings``), next to
ASE's own loop (:class:`ZeroCalculator`). :func:`bench_training` times
optimizer steps of :class:`~mlcalc.train.task.AtomisticTask`, called directly (a
Lightning Trainer's per-step hooks and logging would be timed too).

Peak memory is a high-water mark above the start of the run: on CPU the
process's peak resident set (``VmHWM`` of ``/proc/self/status``, reset before
the run via ``/proc/self/clear_refs``), on CUDA ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet

from mlcalc import properties as P
from mlcalc.calculator import MLCalculator, resolve_device, set_threads
from mlcalc.exceptions import unknown_name

#: Atom counts of the fcc Cu supercells -> repetitions of the 4-atom cubic cell.
SUPERCELLS = {32: 2, 108: 3, 256: 4, 500: 5, 864: 6, 2048: 8, 4000: 10, 8788: 13, 16384: 16,
              32000: 20, 108000: 30}
#: How MLCalculator evaluates a step (see :mod:`mlcalc.model.static`): the
#: dynamic list cut to the cutoff, the padded static-shape step, the padded
#: step replayed as a CUDA graph, or the padded step through torch.compile.
STEPS = ("dynamic", "padded", "graph", "compiled")
MD_COLUMNS = ("model", "path", "step", "atoms", "threads", "props", "steps/s", "atom-steps/s",
              "ms/step", "NL ms", "model ms", "rest ms", "ASE ms", "NL %", "stress %", "peak MiB")
TRAINING_COLUMNS = ("model", "path", "structures", "batch", "threads", "structures/s", "ms/batch",
                    "peak MiB")


class ZeroCalculator(Calculator):
    """Zero energy, forces and stress: what ASE's own MD loop costs."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results = {"energy": 0.0, "free_energy": 0.0, "forces": np.zeros((len(atoms), 3)),
                        "stress": np.zeros(6)}


def cu_supercell(n_atoms: int, temperature_K: float = 300.0, seed: int = 0) -> Atoms:
    """fcc Cu (a = 3.61 Å) with ``n_atoms`` (a key of :data:`SUPERCELLS`), thermal velocities."""
    if n_atoms not in SUPERCELLS:
        raise ValueError(f"no fcc Cu supercell of {n_atoms} atoms; sizes: "
                         f"{', '.join(map(str, SUPERCELLS))}")
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * ((SUPERCELLS[n_atoms],) * 3)
    thermalize_momenta(atoms, temperature_K=temperature_K, rng=np.random.default_rng(seed))
    return atoms


def time_md(atoms: Atoms, calc: Calculator, steps: int, repeats: int,
            stress: bool = False, warmup: int = 8) -> tuple[float, dict[str, float]]:
    """Median seconds per VelocityVerlet step and median per-step split of ``calc.timings``.

    With ``stress`` the loop asks ``atoms.get_stress()`` after every step, as NPT
    does; MLCalculator then computes stress together with the forces. ``warmup``
    steps run first, untimed. Every repeat starts again from the initial
    positions and momenta: a random-weight potential heats the crystal, and one
    trajectory through all repeats outlived it (SchNet 128×3 on 32 atoms: 3,000 K
    after 150 fs, two atoms 0.09 Å apart after 200 fs; the bench runs
    ``repeats`` × 125 steps there).
    The forces at those positions are computed before each repeat's clock
    starts, so a repeat times exactly ``steps`` model evaluations.
    """
    start = atoms.get_positions(), atoms.get_momenta()
    atoms.calc = calc
    dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    if stress:
        atoms.get_stress()  # MLCalculator keeps computing stress once asked
        dyn.attach(atoms.get_stress, interval=1)
    # Warm-up, not timed: the first neighbor list, the kernels' first call, and
    # the heap growing to its working size (with mlcalc.allocator's settings the
    # freed blocks are reused once it has; at 4000 atoms that takes ~5 steps and
    # page-faulted 54 MB per step until then).
    dyn.run(warmup)
    per_step, splits = [], []
    for _ in range(repeats):
        atoms.set_positions(start[0])
        atoms.set_momenta(start[1])
        # the forces (and stress) at the restart positions, untimed: the first
        # step would compute them, one evaluation more than the steps counted
        atoms.get_stress() if stress else atoms.get_forces()
        before = dict(getattr(calc, "timings", {}))
        t0 = time.perf_counter()
        dyn.run(steps)
        per_step.append((time.perf_counter() - t0) / steps)
        after = getattr(calc, "timings", {})
        splits.append({k: (after[k] - before[k]) / steps for k in after})
    split = {k: statistics.median(s[k] for s in splits) for k in splits[0]}
    return statistics.median(per_step), split


def _proc_status_mib(key: str) -> float:
    with open("/proc/self/status") as fh:
        line = next((ln for ln in fh if ln.startswith(key + ":")), None)
    return float(line.split()[1]) / 1024 if line else float("nan")  # kB -> MiB


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, float]]:
    """Yields a dict whose ``"MiB"`` is, on exit, the high-water mark above the start."""
    out = {"MiB": float("nan")}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        yield out
        torch.cuda.synchronize(device)
        out["MiB"] = (torch.cuda.max_memory_allocated(device) - start) / 2**20
        return
    with contextlib.suppress(OSError):  # else VmHWM may still hold an earlier, higher peak
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the RSS (Linux >= 4.0)
    start = _proc_status_mib("VmRSS")
    yield out
    out["MiB"] = max(0.0, _proc_status_mib("VmHWM") - start)


def _potential(model_name: str, features: int, interactions: int, cutoff: float):
    from mlcalc.model import build_potential

    torch.manual_seed(0)
    return build_potential(model_name, n_atom_basis=features, n_interactions=interactions,
                           cutoff=cutoff)


def bench_md(model_name: str, n_atoms: int, threads: int, device: str = "cpu",
             stress: bool = False, *, features: int = 128, interactions: int = 3,
             cutoff: float = 5.0, repeats: int = 5, atom_steps: int = 4000,
             skin: float | None = None, path: str = "fused",
             step: str | None = None) -> dict[str, object]:
    """MD throughput of one model on ``n_atoms`` fcc Cu atoms.

    Args:
        model_name: representation (``painn``, ``schnet``), float32, random weights.
        n_atoms: a key of :data:`SUPERCELLS`.
        threads: torch threads.
        device: ``cpu``, ``cuda`` or ``auto``.
        stress: compute energy, forces and stress (``E+F+S``) instead of ``E+F``.
        features, interactions, cutoff: ``n_atom_basis``, ``n_interactions``, cutoff in Å.
        repeats: timed repeats (the median is reported).
        atom_steps: atoms x steps per repeat (steps = max(2, atom_steps // n_atoms)).
        skin: Verlet skin in Å (None: MLCalculator's default).
        path: ``fused`` (the compiled kernels of :mod:`mlcalc.kernels` where
            the device has them) or ``eager`` (their plain torch reference).
            The row's ``path`` says which one ran.
        step: ``dynamic``, ``padded``, ``graph`` or ``compiled`` (:data:`STEPS`); None:
            MLCalculator's default for the device (graph on CUDA, dynamic on CPU).

    Returns:
        A row: the :data:`MD_COLUMNS` (times per step in ms; ``stress %`` is
        filled in by :func:`add_stress_overhead`) plus ``skin`` and ``device``.
    """
    dev = resolve_device(device)
    atoms = cu_supercell(n_atoms)  # refuses unknown sizes before any work
    set_threads(threads)
    steps = max(2, atom_steps // n_atoms)
    options = {} if skin is None else {"skin": skin}
    if step is not None:
        if step not in STEPS:
            raise unknown_name("step", step, STEPS)
        options.update(padded=step != "dynamic", cuda_graphs=step == "graph")
    ase_step, _ = time_md(cu_supercell(n_atoms), ZeroCalculator(), steps, repeats, stress)
    model = _potential(model_name, features, interactions, cutoff)
    model.requires_grad_(False)  # as MLCalculator freezes the models it loads itself
    calc = MLCalculator(model, device=dev,
                        threads=threads, **options)
    if step == "compiled":  # a bench-only variant of the padded step (MLCalculator has no option)
        from mlcalc.model.static import StaticEvaluator

        old = calc.static
        calc.static = StaticEvaluator(old.model, old.verlet.neighbor_list, old.verlet.skin,
                                      compile=True)
    with kernel_path(path, dev) as ran, peak_memory(dev) as peak:
        step, split = time_md(atoms, calc, steps, repeats, stress)
    nl, mdl = split["neighbor_list"], split["model"]
    static = calc.static
    ran_step = ("dynamic" if static is None else "graph" if static.cuda_graphs
                else "compiled" if static.compile else "padded")
    return {"model": model_name, "path": ran, "step": ran_step,
            "atoms": n_atoms, "threads": calc.threads,
            "props": "E+F+S" if stress else "E+F", "steps/s": 1 / step,
            "atom-steps/s": n_atoms / step, "ms/step": 1e3 * step, "NL ms": 1e3 * nl,
            "model ms": 1e3 * mdl, "rest ms": 1e3 * (split["calculate"] - nl - mdl),
            "ASE ms": 1e3 * ase_step, "NL %": 100 * nl / step, "stress %": None,
            "peak MiB": peak["MiB"], "skin": calc.skin, "device": str(dev)}


PATHS = ("fused", "eager")


@contextlib.contextmanager
def kernel_path(path: str, device: torch.device) -> Iterator[str]:
    """Run the block on ``path`` (``fused`` or ``eager``); yields the path that runs."""
    from mlcalc import kernels

    if path not in PATHS:
        raise unknown_name("path", path, PATHS)
    if path == "eager":
        with kernels.disabled():
            yield "eager"
    else:
        yield "fused" if kernels.active(device) else "eager"


def add_stress_overhead(rows: Sequence[dict]) -> None:
    """Set ``stress %`` of each E+F+S row: its extra time per step over the matching E+F row."""
    key = ("model", "path", "step", "atoms", "threads", "device", "skin")
    plain = {tuple(r[k] for k in key): r for r in rows if r["props"] == "E+F"}
    for row in rows:
        base = plain.get(tuple(row[k] for k in key))
        if row["props"] == "E+F+S" and base is not None:
            row["stress %"] = 100 * (row["ms/step"] / base["ms/step"] - 1)


def make_training_data(path: str | os.PathLike, n_structures: int, seed: int = 0) -> Path:
    """EMT-labelled 32-atom Cu cells (strained, rattled bulk) at ``path``."""
    from mlcalc.data.generate import generate_emt

    generate_emt(path, ("Cu",), n_structures=n_structures, seed=seed, kinds=("bulk",))
    return Path(path)


def bench_training(model_name: str, n_structures: int, batch_size: int, threads: int,
                   device: str = "cpu", *, features: int = 128, interactions: int = 3,
                   cutoff: float = 5.0, steps: int = 10, warmup: int = 2,
                   data_path: str | os.PathLike | None = None,
                   path: str = "fused") -> dict[str, object]:
    """Training throughput: structures per second of full optimizer steps.

    One step is :meth:`AtomisticTask.training_step` (forward, forces by
    autograd, energy + forces MSE loss, metrics), ``backward`` and an AdamW
    step, on shuffled batches that cycle through the training set (neighbor
    lists are cached by the data module, as in ``mlcalc fit``). ``warmup``
    steps are run first, then ``steps`` are timed.

    Args:
        n_structures: training structures (32-atom EMT Cu cells).
        batch_size: structures per batch.
        data_path: an existing data set from :func:`make_training_data`; None
            makes ``n_structures`` of them in a temporary folder.
        path: ``fused`` or ``eager`` (see :func:`bench_md`).

    Returns:
        A row with the :data:`TRAINING_COLUMNS` and ``device``.
    """
    import warnings

    from mlcalc.data import AtomsDataModule
    from mlcalc.model import model_neighbor_list
    from mlcalc.train.task import AtomisticTask, ModelOutput

    dev = resolve_device(device)
    threads = set_threads(threads)
    model = _potential(model_name, features, interactions, cutoff).to(dev)
    with tempfile.TemporaryDirectory() as tmp:
        if data_path is None:
            data_path = make_training_data(Path(tmp) / "emt.db", n_structures)
        dm = AtomsDataModule(data_path, batch_size=batch_size, num_train=n_structures, num_val=0,
                             num_test=0, load_properties=[P.energy, P.forces],
                             transforms=[model_neighbor_list(model, "cpu")])
        dm.setup("fit")  # holds every structure and its neighbor list in memory from here
    task = AtomisticTask(model, [ModelOutput(P.energy, per_atom=True),
                                 ModelOutput(P.forces, loss_weight=10.0)], lr_scheduler="none")
    optimizer = task.configure_optimizers()
    task.train()

    def run(n: int, it) -> int:
        done = 0
        for _ in range(n):
            batch = {k: v.to(dev) for k, v in next(it).items()}
            optimizer.zero_grad(set_to_none=True)
            task.training_step(batch, 0).backward()
            optimizer.step()
            done += len(batch[P.n_atoms])
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return done

    it = itertools.chain.from_iterable(iter(dm.train_dataloader, None))  # epochs forever
    with warnings.catch_warnings(), kernel_path(path, dev) as ran:
        warnings.filterwarnings("ignore", message=".*self.log.*")  # no Trainer to log to
        run(warmup, it)
        with peak_memory(dev) as peak:
            t0 = time.perf_counter()
            done = run(steps, it)
            elapsed = time.perf_counter() - t0
    return {"model": model_name, "path": ran, "structures": n_structures, "batch": batch_size,
            "threads": threads, "structures/s": done / elapsed, "ms/batch": 1e3 * elapsed / steps,
            "peak MiB": peak["MiB"], "device": str(dev)}


def machine_line(device: str = "cpu", threads: Sequence[int] = ()) -> str:
    """One line naming the machine, torch, threads, device and the date."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    dev = str(resolve_device(device))
    if dev.startswith("cuda"):
        dev += f" ({torch.cuda.get_device_name(torch.device(dev))})"
    return (f"{platform.platform()}, {cpu}, {os.cpu_count()} cores; torch {torch.__version__}; "
            f"threads {', '.join(map(str, threads)) or torch.get_num_threads()}; device {dev}; "
            f"{datetime.date.today().isoformat()}")


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return str(value)


def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A Markdown table of ``rows`` with ``columns`` (numbers to 3 digits, None as ``-``)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def format_report(md_rows: Sequence[dict], training_rows: Sequence[dict], device: str,
                  threads: Sequence[int], notes: str = "") -> str:
    """The Markdown report: machine line, then the MD and the training table."""
    parts = [f"# mlcalc bench\n\nMachine: {machine_line(device, threads)}"]
    if notes:
        parts.append(notes)
    if md_rows:
        parts.append("## MD (VelocityVerlet, fcc Cu, float32)\n\n"
                     + format_table(md_rows, MD_COLUMNS))
    if training_rows:
        parts.append("## Training (AtomisticTask steps, EMT Cu, 32 atoms each)\n\n"
                     + format_table(training_rows, TRAINING_COLUMNS))
    return "\n\n".join(parts) + "\n"


def print_report(*args, **kwargs) -> None:
    """Print :func:`format_report` (same arguments)."""
    print(format_report(*args, **kwargs), end="")
