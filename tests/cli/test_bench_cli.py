"""``mlcalc bench`` through click's CliRunner: tiny runs, torch-free help, bad options."""

from __future__ import annotations

import os

import pytest
import torch
from click.testing import CliRunner

from mlcalc.cli.main import cli
from tests.conftest import help_without_torch

TINY = ["--features", "8", "--interactions", "1", "--cutoff", "4", "--sizes", "32",
        "--repeats", "1", "--atom-steps", "64"]


def run(*args: str):
    return CliRunner().invoke(cli, ["bench", *map(str, args)])


def table(output: str, first_column: str) -> list[dict[str, str]]:
    """The Markdown table whose header starts with ``first_column`` as dicts."""
    lines = output.splitlines()
    start = next(k for k, line in enumerate(lines)
                 if line.startswith(f"| {first_column} |") and "---" in lines[k + 1])
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (c.strip() for c in line.strip("|").split("|")),
                             strict=True)))
    return rows


def test_bench_prints_md_and_training_tables(tmp_path):
    out = tmp_path / "bench.md"
    result = run(*TINY, "--models", "schnet", "--threads", "1", "--threads", "all",
                 "--train-structures", "4", "--batch-size", "2", "--train-steps", "2",
                 "-o", out)
    assert result.exit_code == 0, result.output
    assert "Machine:" in result.output and "torch" in result.output
    md = table(result.output, "model")
    threads = [str(t) for t in dict.fromkeys([1, os.cpu_count()])]  # 'all' may be 1
    assert [(r["threads"], r["props"]) for r in md] == [
        (t, p) for t in threads for p in ("E+F", "E+F+S")]
    for row in md:
        assert row["model"] == "schnet" and row["atoms"] == "32"
        for column in ("steps/s", "atom-steps/s", "ms/step", "NL ms", "model ms", "ASE ms"):
            assert float(row[column]) > 0, (column, row)
    assert md[0]["stress %"] == "-" and md[1]["stress %"] != "-"
    training = table(result.output.split("## Training")[1], "model")
    assert len(training) == len({r["threads"] for r in md})
    assert all(float(r["structures/s"]) > 0 for r in training)
    assert out.read_text().startswith("# mlcalc bench")


def test_bench_no_stress_no_training():
    result = run(*TINY, "--models", "painn", "--no-stress", "--no-training")
    assert result.exit_code == 0, result.output
    assert [r["props"] for r in table(result.output, "model")] == ["E+F"]
    assert "## Training" not in result.output


def test_bench_times_both_paths():
    from mlcalc import kernels

    result = run(*TINY, "--models", "painn", "--path", "fused,eager", "--no-stress",
                 "--no-training")
    assert result.exit_code == 0, result.output
    expected = ["fused" if kernels.active("cpu") else "eager", "eager"]
    assert [r["path"] for r in table(result.output, "model")] == expected
    assert "## Training" not in result.output


def test_help_does_not_import_torch():
    help_text = help_without_torch("bench")
    assert "--atom-steps" in help_text and "--threads" in help_text


@pytest.mark.parametrize(("args", "fragment"), [
    (["--sizes", "100"], "100 atoms"),
    (["--sizes", "abc"], "--sizes"),
    (["--models", "pain"], "did you mean 'painn'"),
    (["--threads", "zero"], "--threads"),
    (["--threads", "0"], "--threads"),
    (["--repeats", "0"], "--repeats"),
    (["--device", "tpu"], "--device"),
    (["--path", "fast"], "not a path"),
    pytest.param(["--device", "cuda"], "CUDA", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="needs a machine without CUDA")),
])
def test_bad_options_give_one_error_line(args, fragment):
    result = run(*args, "--no-training")
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert fragment in errors[0], errors[0]
