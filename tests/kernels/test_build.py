"""Building and caching the C++ kernels: one build per environment, shared by checkouts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mlcalc
from mlcalc import kernels
from mlcalc.kernels import build

REPO = Path(mlcalc.__file__).parent.parent

pytestmark = pytest.mark.skipif(not kernels.active("cpu"),
                                reason="the fused kernels could not be built here")

_REPORT = ("import mlcalc; from mlcalc import kernels; from mlcalc.kernels import build; "
           "kernels.load(); print(mlcalc.__file__); print(build.build_dir())")


def _run(code: str, where: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(where), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([sys.executable, "-c", code], cwd=where, env=environment,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_second_checkout_loads_the_first_build_without_compiling(tmp_path):
    """Build in one checkout, import from a second one with the same cache, then the
    first again: no compilation, the very same shared object."""
    folder = build.build_dir()
    library = folder / f"{build.NAME}.so"
    stamp = library.stat().st_mtime_ns
    checkout = tmp_path / "second-checkout"
    shutil.copytree(REPO / "mlcalc", checkout / "mlcalc",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for where in (checkout, REPO):
        result = _run(_REPORT, where)
        assert result.returncode == 0, result.stderr
        assert "compiling" not in result.stderr
        package, used = result.stdout.split()
        assert package.startswith(str(where)) and used == str(folder)
    assert library.stat().st_mtime_ns == stamp


def test_the_key_follows_what_changes_the_build(monkeypatch):
    from torch.utils import cpp_extension

    key = build.build_key()
    assert build.build_key() == key
    monkeypatch.setattr(cpp_extension, "include_paths", lambda *a, **k: ["/other/torch/include"])
    assert build.build_key() != key  # another environment's torch: its own build
    monkeypatch.undo()
    monkeypatch.setattr(build, "_flags", lambda: (["-O0"], []))
    assert build.build_key() != key


@pytest.mark.slow
def test_the_module_entry_point_builds_ahead_of_time():
    result = _run("import runpy; runpy.run_module('mlcalc.kernels', run_name='__main__')", REPO)
    assert result.returncode == 0, result.stderr
    assert f"ready in {build.build_dir()}" in result.stdout


@pytest.mark.slow
def test_turned_off_by_environment():
    code = ("from mlcalc import kernels; from ase.build import bulk; from mlcalc.model import "
            "predict; from tests.conftest import tiny_model\n"
            "assert not kernels.active('cpu')\n"
            "e = predict(tiny_model('painn'), bulk('Cu', cubic=True), ['energy'])[0]['energy']\n"
            "try:\n    kernels.load()\nexcept kernels.KernelBuildError as err:\n    print(err)\n")
    result = _run(code, REPO, MLCALC_KERNELS="0")
    assert result.returncode == 0, result.stderr
    assert "MLCALC_KERNELS=0" in result.stdout


@pytest.mark.slow
def test_a_failed_build_warns_once_and_runs_the_reference(tmp_path):
    code = ("import warnings; warnings.simplefilter('always')\n"
            "from mlcalc import kernels; from ase.build import bulk\n"
            "from mlcalc.model import predict; from tests.conftest import tiny_model\n"
            "assert not kernels.active('cpu') and not kernels.active('cpu')\n"
            "r = predict(tiny_model('painn'), bulk('Cu', cubic=True), ['energy', 'forces'])[0]\n"
            "import numpy as np; assert np.isfinite(r['forces']).all()\n")
    result = _run(code, REPO, MLCALC_KERNEL_CACHE=str(tmp_path), CXX="/nonexistent/c++",
                  PYTHONPATH=f"{REPO}")
    assert result.returncode == 0, result.stderr
    warnings = [ln for ln in result.stderr.splitlines() if "RuntimeWarning" in ln]
    assert len(warnings) == 1 and "could not be built" in warnings[0]
    assert "python -m mlcalc.kernels -v" in warnings[0]
