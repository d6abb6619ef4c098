"""Nothing already written is lost: re-runs, failed runs, concurrent runs, damaged restarts.

Every CLI case checks the exit code, one ``Error:`` line, no traceback, and
that the earlier files are byte-identical afterwards.
"""

from __future__ import annotations

import subprocess
import sys
import time

import ase.io
import pytest
from ase.build import bulk
from click.testing import CliRunner

from mlcalc.cli.main import cli
from tests.conftest import assert_one_line_error

MD_FILES = ("md.extxyz", "md.csv", "md_final.extxyz", "md.png")


def run(*args) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args])


def snapshot(folder, names) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in names}


def md(setup, tmp_path, *extra):
    model, structure = setup
    return run("md", structure, "-m", model, "--ensemble", "nve", "--steps", 6, "--interval",
               3, "-o", tmp_path / "md", "--no-progress", *extra)


def test_md_rerun_is_refused_and_leaves_the_files_alone(setup, tmp_path):
    assert md(setup, tmp_path).exit_code == 0
    before = snapshot(tmp_path, MD_FILES)
    assert_one_line_error(md(setup, tmp_path), "md.extxyz exists", "--overwrite")
    assert snapshot(tmp_path, MD_FILES) == before


def test_md_overwrite_replaces_all_files_of_the_earlier_run(setup, tmp_path):
    assert md(setup, tmp_path).exit_code == 0
    before = snapshot(tmp_path, MD_FILES)
    result = md(setup, tmp_path, "--overwrite", "--seed", 5)
    assert result.exit_code == 0, result.output
    after = snapshot(tmp_path, MD_FILES)
    assert all(after[name] != before[name] for name in ("md.extxyz", "md.csv"))


def test_a_failed_overwrite_before_the_first_step_keeps_the_files(setup, tmp_path):
    """--overwrite with a structure the model refuses: nothing is replaced."""
    assert md(setup, tmp_path).exit_code == 0
    before = snapshot(tmp_path, MD_FILES)
    model, _ = setup
    bad = tmp_path / "bad.xyz"
    ase.io.write(bad, bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1))
    atoms = ase.io.read(bad)
    atoms.positions[1] = atoms.positions[0]  # two atoms on top of each other
    ase.io.write(bad, atoms)
    result = run("md", bad, "-m", model, "--steps", 6, "-o", tmp_path / "md", "--overwrite",
                 "--no-progress")
    assert_one_line_error(result, "atoms 0 and 1 are 0 Å apart", "closer than 0.1 Å")
    assert snapshot(tmp_path, MD_FILES) == before


def _hold_lock(prefix) -> subprocess.Popen:
    code = ("import sys, time; from mlcalc.simulate.outputs import output_lock\n"
            f"with output_lock({str(prefix)!r}):\n    print('locked', flush=True)\n"
            "    time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_run_on_the_same_prefix_stops_with_one_line(setup, tmp_path):
    holder = _hold_lock(tmp_path / "md")
    try:
        result = md(setup, tmp_path)
        assert_one_line_error(result, "another run (pid", "is writing")
        assert not (tmp_path / "md.extxyz").exists()
        model, structure = setup  # relax with the same prefix name is locked the same way
        assert_one_line_error(run("relax", structure, "-m", model, "-o", tmp_path / "md"),
                              "another run")
    finally:
        holder.kill()
        holder.wait()
    assert md(setup, tmp_path).exit_code == 0  # a killed holder leaves no stale lock


@pytest.mark.slow
def test_two_md_processes_in_one_folder(setup, tmp_path):
    """Really concurrent: one finishes, the other stops at once with one line."""
    model, structure = setup
    args = [sys.executable, "-m", "mlcalc.cli.main", "md", str(structure), "-m", str(model),
            "--steps", "400", "--interval", "50", "-o", str(tmp_path / "md"), "--no-progress",
            "--threads", "1"]
    code = "from mlcalc.cli.main import cli; cli()"
    first = subprocess.Popen([sys.executable, "-c", code, *args[3:]], stderr=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.time() + 120
    while not (tmp_path / ".md.lock").exists() and time.time() < deadline:
        time.sleep(0.1)
    second = subprocess.run([sys.executable, "-c", code, *args[3:]], capture_output=True,
                            text=True, cwd=tmp_path)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert second.returncode != 0 and "Traceback" not in second.stderr
    assert len([ln for ln in second.stderr.splitlines() if ln.startswith("Error:")]) == 1
    assert "another run" in second.stderr or "exists" in second.stderr
    frames = ase.io.read(tmp_path / "md.extxyz", ":")
    assert [f.info["step"] for f in frames] == list(range(0, 401, 50))


def test_relax_rerun_is_refused_and_overwrite_works(setup, tmp_path):
    model, structure = setup
    files = ("relax.extxyz", "relax.traj", "relax.log")
    prefix = tmp_path / "relax"
    assert run("relax", structure, "-m", model, "-o", prefix, "--steps", 3).exit_code in (0, 1)
    before = snapshot(tmp_path, files)
    assert_one_line_error(run("relax", structure, "-m", model, "-o", prefix), "relax.extxyz "
                          "exists", "--overwrite")
    assert snapshot(tmp_path, files) == before
    result = run("relax", structure, "-m", model, "-o", prefix, "--steps", 3, "--overwrite")
    assert "Traceback" not in result.output and "wrote" in result.output


def test_phonons_rerun_is_refused(tmp_path):
    structure = tmp_path / "cu.xyz"
    ase.io.write(structure, bulk("Cu", "fcc", a=3.59))
    out = tmp_path / "ph"
    args = ("phonons", structure, "-m", "cu-emt", "--supercell", 2, 2, 2, "--mesh", 4, 4, 4,
            "--output-dir", out)
    assert run(*args).exit_code == 0
    names = ("phonopy.yaml", "band.yaml", "thermal.csv", "dos.csv", "phonons.png")
    before = snapshot(out, names)
    assert_one_line_error(run(*args), "phonopy.yaml exists", "--overwrite")
    assert snapshot(out, names) == before
    assert run(*args, "--overwrite").exit_code == 0


def test_md_output_prefix_with_an_extension_and_new_folders(setup, tmp_path):
    model, structure = setup
    result = run("md", structure, "-m", model, "--steps", 2, "--interval", 1, "--no-progress",
                 "-o", tmp_path / "new" / "folder" / "out.extxyz")
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in (tmp_path / "new" / "folder").iterdir()
                     if not p.name.startswith("."))
    assert written == ["out.csv", "out.extxyz", "out.png", "out_final.extxyz"]


def test_progress_without_a_terminal_prints_plain_lines(setup, tmp_path):
    model, structure = setup
    result = run("md", structure, "-m", model, "--steps", 20, "--interval", 2, "-o",
                 tmp_path / "p")
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("md: step")]
    assert len(lines) == 10 and lines[-1].startswith("md: step 20/20 (100%)")
    assert "ns/day" in lines[0] and "ETA" in lines[0]


@pytest.mark.parametrize("fmt", ["extxyz", "traj"])
def test_restart_from_a_damaged_trajectory_continues_from_the_last_complete_frame(
        setup, tmp_path, fmt):
    """A crash mid-frame: the tail is cut (kept in .damaged) with one warning line, the
    log is cut to the same step, and the run continues without a duplicated step."""
    model, structure = setup
    base = ("md", structure, "-m", model, "--ensemble", "nve", "--interval", 5,
            "--format", fmt, "-o", tmp_path / "md", "--no-progress")
    assert run(*base, "--steps", 20).exit_code == 0
    traj = tmp_path / f"md.{fmt}"
    data = traj.read_bytes()
    traj.write_bytes(data[:len(data) - 40])  # the last frame (step 20) loses its end
    result = run(*base, "--steps", 10, "--restart")
    assert result.exit_code == 0, result.output
    warnings = [ln for ln in result.output.splitlines() if ln.startswith("Warning:")]
    assert len(warnings) == 1 and "after step 15 are damaged" in warnings[0]
    assert "Traceback" not in result.output and "to step 25" in result.output
    assert (tmp_path / f"md.{fmt}.damaged").read_bytes() == data[:len(data) - 40]
    steps = [f.info["step"] for f in ase.io.read(traj, ":")]
    assert steps == [0, 5, 10, 15, 20, 25]
    logged = [int(line.split(",")[0]) for line in (tmp_path / "md.csv").read_text().split()[1:]]
    assert logged == steps


@pytest.mark.parametrize("content", [b"", b"garbage without a frame\n"])
def test_restart_from_a_trajectory_without_frames_is_one_line(setup, tmp_path, content):
    model, structure = setup
    (tmp_path / "md.extxyz").write_bytes(content)
    result = run("md", structure, "-m", model, "--restart", "-o", tmp_path / "md")
    assert_one_line_error(result, "cannot restart", "no complete frame")
    assert (tmp_path / "md.extxyz").read_bytes() == content
