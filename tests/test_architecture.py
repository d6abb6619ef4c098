"""The shape of the package: layers, import cycles, what inference imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "mlcalc"
TRAINING_STACK = ("pytorch_lightning", "lightning", "torchmetrics", "tensorboardX")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """mlcalc module -> the mlcalc modules it imports, at import time or inside functions."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                base = node.module
                if node.level:  # relative import inside a package
                    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
                    base = ".".join(pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
                                    + [node.module])
                targets.add(base)
                targets |= {f"{base}.{a.name}" for a in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def test_no_import_cycles():
    graph = _imports()
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if nxt.startswith(node + "."):
                continue  # a package importing its own submodules is not a cycle
            if state.get(nxt) == 1 and not node.startswith(nxt + "."):
                raise AssertionError("import cycle: " + " -> ".join([*stack, node, nxt]))
            if nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [])


@pytest.mark.parametrize("lower, upper", [
    ("mlcalc.model", "mlcalc.calculator"), ("mlcalc.model", "mlcalc.train"),
    ("mlcalc.atomistic", "mlcalc.train"), ("mlcalc.representation", "mlcalc.model"),
    ("mlcalc.calculator", "mlcalc.cli"), ("mlcalc.simulate", "mlcalc.cli"),
    ("mlcalc.kernels", "mlcalc.representation"), ("mlcalc.transform", "mlcalc.model"),
])
def test_no_module_imports_from_a_layer_above(lower, upper):
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        if name == lower or name.startswith(lower + "."):
            text = path.read_text()
            assert f"from {upper}" not in text and f"import {upper}" not in text, name


def test_modules_stay_small():
    sizes = {p.name: len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert max(sizes.values()) <= 400, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]


def _function_lengths(folder: Path) -> dict[str, int]:
    """'file:function' -> lines from its ``def`` to its last line (a click command's
    option decorators are declarations, not code, and are not counted)."""
    lengths = {}
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lengths[f"{path.name}:{node.name}"] = node.end_lineno - node.lineno + 1
    return lengths


@pytest.mark.parametrize("folder", ["simulate", "cli"])
def test_functions_stay_short(folder):
    lengths = _function_lengths(PACKAGE / folder)
    assert lengths  # the folder was found and parsed
    assert max(lengths.values()) <= 80, sorted(lengths.items(), key=lambda kv: -kv[1])[:3]


@pytest.mark.parametrize("code", [
    "import mlcalc.calculator",
    "import mlcalc.model",
    "from mlcalc.simulate import md, relax, phonons",
    "from mlcalc.cli.main import cli\ntry:\n    cli(['md', '--help'])\n"
    "except SystemExit:\n    pass",
])
def test_inference_never_imports_the_training_stack(code):
    check = (f"{code}\nimport sys\nloaded = [m for m in {TRAINING_STACK!r} if m in sys.modules]\n"
             "assert not loaded, loaded")
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
