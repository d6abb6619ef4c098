"""Compiling, caching and loading the C++ library behind the CPU kernels.

The library is compiled once per *build key* with the machine's C++ compiler
(:func:`torch.utils.cpp_extension.load`, ninja) into its own folder of the
cache, ``<cache>/mlcalc/mlcalc_kernels-<key>/``. The key hashes everything that
changes the compiler's command line or the result: the source text, the torch
version and include paths, the Python headers, the flags, the compiler and the
CPU's instruction sets (the build uses ``-march=native``). The source is copied
into that folder and compiled from there, so the command line never holds the
path of a checkout: two checkouts of the same code share one build, and two
environments with different torch installs each get their own build instead of
rebuilding each other's.

A finished build leaves a ``complete`` marker; later processes load the shared
object directly, without running ninja. The cache root is
``MLCALC_KERNEL_CACHE``, else ``TORCH_EXTENSIONS_DIR``, else
``~/.cache/torch_extensions``. ``mlcalc kernels build`` (or ``python -m
mlcalc.kernels``) builds ahead of time, e.g. on an HPC login node.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from types import ModuleType

import torch

NAME = "mlcalc_kernels"
SOURCES = ("cpu.cpp",)
_HERE = Path(__file__).parent
#: Measured first builds on the project's 2-core machine: 50 s idle, 85-107 s loaded.
BUILD_TIME_HINT = "about 1-2 min on 2 cores"


class KernelBuildError(RuntimeError):
    """The C++ kernels could not be compiled or loaded."""


def _flags() -> tuple[list[str], list[str]]:
    cflags = ["-O3", "-fopenmp"]
    if platform.machine() in ("x86_64", "AMD64"):
        cflags.append("-march=native")
    return cflags, ["-fopenmp"]


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return next((ln for ln in fh if ln.startswith(("flags", "Features"))), "")
    except OSError:
        return ""


def _compiler() -> str:
    cxx = os.environ.get("CXX", "c++")
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30)
        return f"{cxx}: {out.stdout.splitlines()[0] if out.stdout else ''}"
    except (OSError, subprocess.SubprocessError):
        return cxx


def build_key() -> str:
    """16 hex digits identifying a build: source, torch, headers, flags, compiler, CPU."""
    from torch.utils import cpp_extension

    parts = {
        "sources": [hashlib.sha256((_HERE / s).read_bytes()).hexdigest() for s in SOURCES],
        "torch": torch.__version__,
        "torch_include": cpp_extension.include_paths(),
        "python_include": sysconfig.get_paths()["include"],
        "python": sys.implementation.cache_tag,
        "flags": _flags(),
        "compiler": _compiler(),
        "cpu": platform.machine() + _cpu_flags(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def cache_root() -> Path:
    """Folder holding the builds: MLCALC_KERNEL_CACHE, TORCH_EXTENSIONS_DIR or ~/.cache."""
    root = os.environ.get("MLCALC_KERNEL_CACHE") or os.environ.get("TORCH_EXTENSIONS_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "torch_extensions"
    return base / "mlcalc"


def build_dir(key: str | None = None) -> Path:
    """The folder of this environment's build."""
    return cache_root() / f"{NAME}-{key or build_key()}"


def _import(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(NAME, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def is_built() -> bool:
    """Whether the cache holds a finished build for this environment."""
    return (build_dir() / "complete").is_file()


def load_library(verbose: bool = False, quiet: bool = False) -> ModuleType:
    """Load the compiled library, compiling it first if the cache has no build.

    Args:
        verbose: show the compiler's output.
        quiet: do not announce a compilation on stderr.

    Raises:
        KernelBuildError: no compiler, or the build failed.
    """
    folder = build_dir()
    library = folder / f"{NAME}.so"
    if (folder / "complete").is_file() and library.is_file():
        return _import(library)
    from torch.utils import cpp_extension

    folder.mkdir(parents=True, exist_ok=True)
    for source in SOURCES:  # compiled from the cache folder: no checkout path on the command line
        target = folder / source
        if not target.is_file() or target.read_bytes() != (_HERE / source).read_bytes():
            shutil.copyfile(_HERE / source, target)
    if not quiet:
        print(f"mlcalc: compiling the fused CPU kernels ({BUILD_TIME_HINT}, once per "
              f"environment) into {folder} ...", file=sys.stderr, flush=True)
    cflags, ldflags = _flags()
    start = time.perf_counter()
    try:
        module = cpp_extension.load(
            name=NAME, sources=[str(folder / s) for s in SOURCES], extra_cflags=cflags,
            extra_ldflags=ldflags, build_directory=str(folder), verbose=verbose)
    except Exception as exc:  # noqa: BLE001 - any build failure means "not available"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if first.startswith("Error building extension"):  # ninja's whole command line follows
            first = "the C++ compiler failed; 'python -m mlcalc.kernels -v' shows why"
        raise KernelBuildError(f"the fused kernels could not be built ({first})") from exc
    seconds = time.perf_counter() - start
    (folder / "complete").write_text(f"built in {seconds:.0f} s\n")
    if not quiet:
        print(f"mlcalc: kernels compiled in {seconds:.0f} s", file=sys.stderr, flush=True)
    return module
