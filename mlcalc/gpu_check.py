"""The GPU check: on a CUDA machine, run the GPU tests, then print the GPU table.

One command (``mlcalc bench --gpu-check`` or ``examples/gpu_check.sh``):

1. ``pytest -m gpu tests``: every physics test on CUDA for both
   representations, the padded and graph steps against the dynamic CPU path,
   skin correctness under NPT and wrapping, steady-state MD steps under
   ``torch.cuda.set_sync_debug_mode("error")``, the capture fallback and the
   TF32 error bound;
2. the benchmark table of the issue's targets: PaiNN and SchNet 128x3,
   cutoff 5 Å, float32, fcc Cu, E+F through :class:`~mlcalc.MLCalculator`
   inside ASE's VelocityVerlet, with ASE's own loop timed separately; MD
   steps/s at <= 1,000 atoms, atom-steps/s at >= 10k atoms, peak memory
   per atom up to 108,000 atoms; the dynamic and padded-eager steps (and,
   for PaiNN, the torch.compile'd one) beside the graph at 864 atoms;
3. the TF32 error of the forces at 864 atoms;
4. a PASS/FAIL line per part and overall (exit status 0 only if all pass).

Without CUDA it refuses with one line (:class:`~mlcalc.exceptions.DeviceError`).
Sized to finish in under 8 minutes on an H100/H200-class GPU (not yet timed on one).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mlcalc.exceptions import DeviceError

#: The issue's targets (H100/H200 class).
TARGET_STEPS_PER_S = 1000.0  # MD steps/s at <= 1,000 atoms
TARGET_ATOM_STEPS_PER_S = 1.0e6  # at >= 10k atoms
SMALL, LARGE, MEMORY = (108, 500, 864), (16384, 32000), (2048, 32000, 108000)


def require_cuda() -> None:
    """Raise DeviceError (one line) unless CUDA is usable."""
    if not torch.cuda.is_available():
        raise DeviceError("the GPU check needs a CUDA device; torch.cuda.is_available() is "
                          f"False here (torch {torch.__version__})")


def tests_folder() -> Path:
    """The repository's tests/ next to the package (the check runs from a checkout)."""
    folder = Path(__file__).resolve().parents[1] / "tests"
    if not (folder / "conftest.py").is_file():
        raise DeviceError(f"the GPU check runs the tests of a source checkout; {folder} "
                          "has none")
    return folder


def run_gpu_tests(folder: Path, timeout: float = 300.0) -> tuple[bool, str]:
    """``pytest -m gpu`` on ``folder``; (passed, its summary line)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
           str(folder)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              cwd=folder.parent)
    except subprocess.TimeoutExpired:
        return False, f"the GPU tests ran past {timeout:.0f} s"
    print(proc.stdout[-6000:], proc.stderr[-2000:], sep="\n", flush=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    return proc.returncode == 0, lines[-1] if lines else f"pytest exited {proc.returncode}"


def tf32_force_error(n_atoms: int = 864, device: str = "cuda", features: int = 128) -> float:
    """Largest ``|F(TF32) - F(FP32)| / max |F|`` of PaiNN (random weights) on rattled Cu."""
    from mlcalc.bench import _potential, cu_supercell
    from mlcalc.calculator import MLCalculator

    model = _potential("painn", features, 3, 5.0).to(device)
    atoms = cu_supercell(n_atoms)
    atoms.rattle(0.05, seed=1)
    exact = MLCalculator(model, device=device).get_forces(atoms.copy())
    fast = MLCalculator(model, device=device, tf32=True).get_forces(atoms.copy())
    return float(np.abs(fast - exact).max() / np.abs(exact).max())


def benchmark(models=("painn", "schnet"), device: str = "cuda", step: str = "graph",
              sizes: tuple[tuple[int, ...], ...] = (SMALL, LARGE, MEMORY), compare_at: int = 864,
              atom_steps: int = 20000, compare: tuple[str, ...] = ("dynamic", "padded", "compiled"),
              **shape) -> tuple[list[dict], list[str]]:
    """The GPU rows and the target verdicts (one line each).

    Each timed repeat runs max(20 N, ``atom_steps``) atom-steps; the steps
    named in ``compare`` are timed at ``compare_at`` atoms beside ``step``. ``device``,
    ``step``, ``sizes`` and ``shape`` (features, interactions, cutoff) exist so
    that the same code runs small on CPU in the tests.
    """
    from mlcalc.bench import bench_md

    small_sizes, large_sizes, memory_sizes = sizes
    rows, verdicts = [], []
    for name in models:
        timed = [bench_md(name, n, 1, device, repeats=5, atom_steps=max(20 * n, atom_steps),
                          step=step, **shape) for n in small_sizes + large_sizes]
        rows += timed
        for other in compare:
            if other != step:
                rows.append(bench_md(name, compare_at, 1, device, repeats=3,
                                     atom_steps=20 * compare_at, step=other, **shape))
        memory = [bench_md(name, n, 1, device, repeats=1, atom_steps=3 * n, step=step, **shape)
                  for n in memory_sizes]
        rows += memory
        worst_small = min(r["steps/s"] for r in timed if r["atoms"] in small_sizes)
        best_large = max(r["atom-steps/s"] for r in timed if r["atoms"] in large_sizes)
        per_atom = [r["peak MiB"] / r["atoms"] for r in memory]
        linear = max(per_atom) <= 1.5 * min(per_atom)
        at = ", ".join(f"{r['atoms']:,}" for r in memory)
        verdicts += [
            f"{name}: MD steps/s at <= 1,000 atoms: {worst_small:,.0f} (target >= "
            f"{TARGET_STEPS_PER_S:,.0f}) {'PASS' if worst_small >= TARGET_STEPS_PER_S else 'FAIL'}",
            f"{name}: atom-steps/s at >= 10k atoms: {best_large:,.0f} (target >= "
            f"{TARGET_ATOM_STEPS_PER_S:,.0f}) "
            f"{'PASS' if best_large >= TARGET_ATOM_STEPS_PER_S else 'FAIL'}",
            f"{name}: peak KiB/atom at {at} atoms: "
            f"{', '.join(f'{1024 * p:.1f}' for p in per_atom)} (linear: max <= 1.5 min) "
            f"{'PASS' if linear else 'FAIL'}",
        ]
    return rows, verdicts


def run(models=("painn", "schnet"), tests: bool = True) -> bool:
    """The whole check; prints as it goes and returns whether everything passed."""
    from mlcalc.bench import MD_COLUMNS, format_table, machine_line

    require_cuda()
    folder = tests_folder() if tests else None
    t0 = time.perf_counter()
    print(f"# mlcalc GPU check\n\nMachine: {machine_line('cuda', [1])}\n", flush=True)
    verdicts = []
    if folder is not None:
        passed, summary = run_gpu_tests(folder)
        verdicts.append(f"GPU tests (pytest -m gpu): {summary} {'PASS' if passed else 'FAIL'}")
    rows, targets = [], []
    for k, name in enumerate(models):
        # torch.compile takes minutes to compile a model: timed for the first one only
        compare = ("dynamic", "padded", "compiled") if k == 0 else ("dynamic", "padded")
        model_rows, model_targets = benchmark((name,), compare=compare)
        rows += model_rows
        targets += model_targets
    columns = tuple(c for c in MD_COLUMNS if c not in ("threads", "NL ms", "NL %", "stress %"))
    print("## MD (VelocityVerlet, fcc Cu, float32, E+F, 128x3, cutoff 5 Å)\n")
    print(format_table(rows, columns), flush=True)
    error = tf32_force_error()
    verdicts += targets
    verdicts.append(f"TF32 force error (off by default): {error:.2e} of max |F| "
                    f"{'PASS' if error < 1e-2 else 'FAIL'}")
    ok = all(v.endswith("PASS") for v in verdicts)
    print("\n## Summary\n")
    for line in verdicts:
        print(f"- {line}")
    print(f"\nGPU check: {'PASS' if ok else 'FAIL'} ({time.perf_counter() - t0:.0f} s)")
    return ok


__all__ = ["require_cuda", "run", "run_gpu_tests", "tf32_force_error"]
