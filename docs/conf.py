"""Sphinx configuration of the mlcalc documentation.

Build with::

    sphinx-build -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import os
import sys

# The package is normally installed (``pip install -e .``); this makes a
# plain checkout build as well.
sys.path.insert(0, os.path.abspath(".."))

import mlcalc  # noqa: E402

project = "mlcalc"
author = "the mlcalc developers"
copyright = "the mlcalc developers"
version = mlcalc.__version__
release = mlcalc.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

# Google-style docstrings (``Args:``, ``Returns:``, ``Raises:``).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
}
autodoc_member_order = "bysource"
autodoc_typehints = "description"

nitpicky = False

templates_path: list[str] = []
exclude_patterns = ["_build", "_generated", "results"]

html_theme = "alabaster"
html_title = f"mlcalc {release}"
html_static_path: list[str] = []

# Members without their own docstring (``forward``, Lightning's
# ``train_dataloader``, ...) would otherwise show the docstring of the
# torch / Lightning base method, which is written for those projects' docs.
autodoc_inherit_docstrings = False


# --- tables generated from the code -----------------------------------------
# The tolerance table in testing.rst is written from mlcalc.testing.TOLERANCES
# at build time, so the page always shows the numbers the checks use.
def _write_tolerance_table() -> None:
    import math

    import torch

    from mlcalc.testing import TOLERANCES

    units = {"energy": "eV", "forces": "eV/Å", "stress": "eV/Å³",
             "fd_forces": "eV/Å", "fd_stress": "eV/Å³"}
    dtypes = [torch.float64, torch.float32]
    keys = list(dict.fromkeys(k for d in dtypes for k in TOLERANCES[d]))

    def fmt(value: float) -> str:
        return "not checked" if math.isnan(value) else f"{value:g}"

    rows = [["key", "unit", "float64", "float32"]]
    rows += [[f"``{k}``", units.get(k, ""), *(fmt(TOLERANCES[d].get(k, math.nan))
                                             for d in dtypes)] for k in keys]
    widths = [max(len(r[c]) for r in rows) + 2 for c in range(4)]
    rule = "  ".join("=" * w for w in widths)
    lines = [rule, "  ".join(c.ljust(w) for c, w in zip(rows[0], widths)), rule]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows[1:]]
    lines.append(rule)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_generated")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "tolerances.inc"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


_write_tolerance_table()
