"""The malloc settings are applied once, on glibc only, and can be switched off."""

from __future__ import annotations

import subprocess
import sys

import pytest

CODE = ("from mlcalc.allocator import keep_freed_memory\n"
        "print(keep_freed_memory(), keep_freed_memory())")


def run(env: dict[str, str]) -> str:
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    base.pop("MLCALC_MALLOC", None)
    result = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True,
                            env={**base, **env}, check=True)
    return result.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_applied_once_on_linux():
    assert run({}) == "True True"


def test_opt_out_and_user_settings_are_respected():
    assert run({"MLCALC_MALLOC": "default"}) == "False False"
    assert run({"MALLOC_ARENA_MAX": "2"}) == "False False"
