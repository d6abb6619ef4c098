"""docs/reliability.rst: every row names a test, and every named test exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
DOC = ROOT / "docs" / "reliability.rst"


def _rows() -> list[tuple[str, str]]:
    text = DOC.read_text()
    table = text[text.index(".. list-table::"):]
    rows = re.split(r"\n   \* - ", table)[2:]  # [0]: the directive, [1]: the header
    refs = []
    for row in rows:
        match = re.search(r"``(tests/[\w/]+\.py)::(test_\w+)``", row)
        assert match, f"a row without a test: {row[:80]!r}"
        refs.append((match.group(1), match.group(2)))
    return refs


def test_the_table_has_at_least_forty_rows_each_with_a_test():
    assert len(_rows()) >= 40


def test_every_test_the_table_names_exists():
    for path, name in _rows():
        tree = ast.parse((ROOT / path).read_text())
        names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        assert name in names, f"{path}::{name} named in docs/reliability.rst does not exist"
