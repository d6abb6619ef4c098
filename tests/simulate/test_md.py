"""run_md: physics of the ensembles, restart, clean stops, explosions, uncertainty."""

from __future__ import annotations

import csv
import math
import os
import signal

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT

from mlcalc.calculator import MLCalculator
from mlcalc.exceptions import InvalidStructureError, NonFiniteResultError, UnknownNameError
from mlcalc.simulate.md import MDError, MDExplodedError, run_md
from tests.conftest import tiny_model


def cu32() -> Atoms:
    """32-atom cubic fcc Cu cell (a = 3.6 Å)."""
    return bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)


def tiny_calc(seed: int = 0) -> MLCalculator:
    return MLCalculator(tiny_model("schnet", torch.float64, seed=seed), device="cpu")


def read_log(path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def column(rows: list[dict[str, str]], key: str) -> np.ndarray:
    return np.array([float(r[key]) for r in rows])


def files(tmp_path, name: str = "md", ext: str = "extxyz") -> dict:
    return {"trajectory": tmp_path / f"{name}.{ext}", "log": tmp_path / f"{name}.csv"}


def test_nve_conserves_energy(tmp_path):
    # Measured: max |E_tot(t) - E_tot(0)| = 9.6e-6 eV/atom over 200 steps of
    # 1 fs (the random model's lattice is unstable, so the atoms heat to
    # ~1800 K: a harder test than a quiet crystal; 3.8e-5 at 2 fs, ~dt^2).
    # Bound: 1e-4 eV/atom.
    atoms = cu32()
    summary = run_md(atoms, tiny_calc(), ensemble="nve", steps=200, timestep_fs=1.0,
                     temperature_K=300, interval=5, **files(tmp_path))
    rows = read_log(tmp_path / "md.csv")
    etot = column(rows, "etot_eV")
    assert summary.steps == 200 and summary.stopped is None
    assert column(rows, "step").tolist() == list(range(0, 201, 5))
    assert np.abs(etot - etot[0]).max() / len(atoms) < 1e-4
    assert column(rows, "ekin_eV").std() > 0.1  # the atoms did move
    for path in (summary.final_structure, summary.plot):
        assert path.is_file()
    assert len(ase.io.read(tmp_path / "md.extxyz", ":")) == 41


def test_initial_velocities_seeded_and_stationary(tmp_path):
    a, b = cu32(), cu32()
    run_md(a, tiny_calc(), ensemble="nve", steps=0, seed=3, **files(tmp_path, "a"))
    run_md(b, tiny_calc(), ensemble="nve", steps=0, seed=3, **files(tmp_path, "b"))
    np.testing.assert_array_equal(a.get_momenta(), b.get_momenta())
    np.testing.assert_allclose(a.get_momenta().sum(axis=0), 0.0, atol=1e-10)
    assert 100 < a.get_temperature() < 500


@pytest.mark.parametrize("ensemble, options", [
    ("nvt-langevin", {"friction_per_fs": 0.05}),
    ("nvt-bussi", {"tdamp_fs": 20.0}),
])
@pytest.mark.slow
def test_nvt_mean_temperature_near_target(tmp_path, ensemble, options):
    # 32 atoms: instantaneous T fluctuates by sqrt(2/3N) ~ 14 % (43 K). Over the
    # last 800 fs (~40 decorrelated samples) the mean has a standard error of
    # ~7 K; measured means with seeds 0-2: 307-311 K (Langevin), 292-307 K
    # (Bussi). Bound: |mean - 300 K| < 30 K (~4 standard errors).
    run_md(cu32(), tiny_calc(), ensemble=ensemble, steps=600, timestep_fs=2.0,
           temperature_K=300, interval=5, seed=0, **options, **files(tmp_path))
    temperature = column(read_log(tmp_path / "md.csv"), "temperature_K")
    assert abs(temperature[len(temperature) // 3:].mean() - 300.0) < 30.0


@pytest.mark.parametrize("barostat", ["mtk", "berendsen"])
def test_npt_volume_follows_pressure(tmp_path, barostat):
    # Bundled cu-emt model (a trained Cu potential): measured final volumes of
    # a 32-atom cell (373.2 Å^3 at the start) after 120 fs, mtk: 354.7 Å^3 at
    # +5 GPa vs 391.8 at -5 GPa; berendsen: 363.8 vs 388.6. Bound: 10 Å^3 apart.
    volumes = {}
    for pressure in (5.0, -5.0):
        run_md(cu32(), MLCalculator("cu-emt", device="cpu"), ensemble="npt", barostat=barostat,
               steps=60, timestep_fs=2.0, temperature_K=300, pressure_GPa=pressure,
               tdamp_fs=50, pdamp_fs=100, interval=10, **files(tmp_path, f"p{pressure}"))
        rows = read_log(tmp_path / f"p{pressure}.csv")
        volumes[pressure] = column(rows, "volume_A3")[-1]
        assert rows[-1]["pressure_GPa"] != ""
    assert volumes[5.0] < volumes[-5.0] - 10.0


def test_npt_needs_periodic_cell(tmp_path, molecule):
    with pytest.raises(InvalidStructureError, match="periodic"):
        run_md(molecule, tiny_calc(), ensemble="npt", steps=2, **files(tmp_path))


def test_unknown_ensemble_suggests_a_name(tmp_path):
    with pytest.raises(UnknownNameError, match="did you mean 'nvt-bussi'"):
        run_md(cu32(), tiny_calc(), ensemble="nvt-busi", steps=2, **files(tmp_path))


def test_nve_restart_continues_bitwise_from_traj(tmp_path):
    # .traj stores float64: N + restart N reproduces 2N steps to rounding.
    full = cu32()
    run_md(full, tiny_calc(), ensemble="nve", steps=40, interval=10,
           **files(tmp_path, "full", "traj"))
    part = cu32()
    first = run_md(part, tiny_calc(), ensemble="nve", steps=20, interval=10,
                   **files(tmp_path, "part", "traj"))
    second = run_md(cu32(), tiny_calc(), ensemble="nve", steps=20, interval=10, restart=True,
                    **files(tmp_path, "part", "traj"))
    assert (first.last_step, second.last_step, second.steps) == (20, 40, 20)
    assert second.time_ps == pytest.approx(0.04)
    frames = ase.io.read(tmp_path / "part.traj", ":")
    assert [f.info["step"] for f in frames] == [0, 10, 20, 30, 40]
    assert column(read_log(tmp_path / "part.csv"), "step").tolist() == [0, 10, 20, 30, 40]
    np.testing.assert_allclose(frames[-1].positions, full.positions, rtol=0, atol=1e-10)
    np.testing.assert_allclose(frames[-1].get_momenta(), full.get_momenta(), rtol=0, atol=1e-10)


def test_restart_from_extxyz_matches_to_its_precision(tmp_path):
    # extxyz writes 8 decimals, so the restarted path starts ~1e-8 Å off.
    full = cu32()
    run_md(full, tiny_calc(), ensemble="nve", steps=30, interval=7, **files(tmp_path, "full"))
    run_md(cu32(), tiny_calc(), ensemble="nve", steps=15, interval=7, **files(tmp_path))
    atoms = cu32()
    run_md(atoms, tiny_calc(), ensemble="nve", steps=15, interval=7, restart=True,
           **files(tmp_path))
    steps = column(read_log(tmp_path / "md.csv"), "step").tolist()
    assert steps == [0, 7, 14, 15, 21, 28, 30]  # the final step of each segment is kept
    np.testing.assert_allclose(atoms.positions, full.positions, rtol=0, atol=1e-6)


def test_stochastic_restart_continues_numbering(tmp_path):
    run_md(cu32(), tiny_calc(), ensemble="nvt-langevin", steps=10, interval=5,
           **files(tmp_path))
    run_md(cu32(), tiny_calc(), ensemble="nvt-langevin", steps=10, interval=5, restart=True,
           **files(tmp_path))
    rows = read_log(tmp_path / "md.csv")
    assert column(rows, "step").tolist() == [0, 5, 10, 15, 20]
    assert column(rows, "time_ps")[-1] == pytest.approx(0.02)


def test_restart_without_trajectory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot restart"):
        run_md(cu32(), tiny_calc(), steps=2, restart=True, **files(tmp_path))


def _stop_at(step: int, how: str):
    def progress(done: int, total: int, ns_per_day: float, eta_s: float) -> None:
        if done == step:
            if how == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                raise KeyboardInterrupt
    return progress


@pytest.mark.parametrize("how", ["keyboard", "sigterm"])
def test_interrupt_leaves_readable_files(tmp_path, how):
    before = signal.getsignal(signal.SIGTERM)
    summary = run_md(cu32(), tiny_calc(), ensemble="nvt-langevin", steps=100, interval=4,
                     progress=_stop_at(12, how), **files(tmp_path))
    assert summary.stopped == "interrupted"
    assert summary.last_step == 12 if how == "keyboard" else summary.last_step in (12, 13)
    frames = ase.io.read(tmp_path / "md.extxyz", ":")
    assert frames[-1].info["step"] == summary.last_step
    assert column(read_log(tmp_path / "md.csv"), "step")[-1] == summary.last_step
    assert summary.final_structure.is_file() and summary.plot.is_file()
    assert signal.getsignal(signal.SIGTERM) is before


class _BreaksAfter(EMT):
    """EMT that turns bad after ``n`` evaluations: NaN energy or huge forces."""

    def __init__(self, n: int, how: str) -> None:
        super().__init__()
        self.n, self.how, self.calls = n, how, 0

    def calculate(self, *args, **kwargs) -> None:
        super().calculate(*args, **kwargs)
        self.calls += 1
        if self.calls > self.n:
            if self.how == "nan":
                self.results["energy"] = math.nan
            elif self.how == "refused":  # what MLCalculator raises for NaN or collided atoms
                raise NonFiniteResultError("the model gave a non-finite energy (NaN or inf)")
            else:
                self.results["forces"] = self.results["forces"] * 1e6


@pytest.mark.parametrize("how, message", [("nan", "non-finite energy"),
                                          ("refused", "non-finite energy"),
                                          ("forces", "max |F|")])
def test_explosion_stops_and_keeps_last_good_frame(tmp_path, how, message):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)
    with pytest.raises(MDExplodedError, match=message) as info:
        run_md(atoms, _BreaksAfter(15, how), ensemble="nve", steps=50, interval=4,
               **files(tmp_path))
    assert "last good frame" in str(info.value)
    frames = ase.io.read(tmp_path / "md.extxyz", ":")  # what the message says is kept, is
    last = frames[-1].info["step"]
    assert last == int(str(info.value).split("step ")[1].split(":")[0]) - 1
    assert all(np.isfinite(f.get_potential_energy()) for f in frames)
    assert np.abs(frames[-1].get_forces()).max() < 100
    assert column(read_log(tmp_path / "md.csv"), "step")[-1] == last
    np.testing.assert_allclose(atoms.positions, frames[-1].positions, atol=1e-7)  # 8 decimals


def test_a_start_the_calculator_refuses_writes_nothing_and_says_so(tmp_path):
    with pytest.raises(MDExplodedError, match="no step was good, so no file was written"):
        run_md(cu32(), _BreaksAfter(0, "nan"), ensemble="nve", steps=5, **files(tmp_path))
    assert not (tmp_path / "md.extxyz").exists() and not (tmp_path / "md.csv").exists()
    with pytest.raises(NonFiniteResultError):  # raised before any step: its own message
        run_md(cu32(), _BreaksAfter(0, "refused"), ensemble="nve", steps=5, **files(tmp_path))
    assert not (tmp_path / "md.extxyz").exists() and not (tmp_path / "md.csv").exists()


def test_uncertainty_threshold_stops_an_ensemble(tmp_path):
    calc = MLCalculator([tiny_model("schnet", torch.float64, seed=0),
                         tiny_model("schnet", torch.float64, seed=1)], device="cpu")
    summary = run_md(cu32(), calc, ensemble="nvt-langevin", steps=50, interval=5,
                     uncertainty_threshold=1e-6, **files(tmp_path))
    assert summary.stopped == "uncertainty" and summary.max_forces_std > 1e-6
    assert summary.last_step == 1  # the perfect lattice of step 0 has zero spread
    rows = read_log(tmp_path / "md.csv")
    assert column(rows, "max_forces_std")[-1] > 1e-6
    assert column(rows, "step")[-1] == summary.last_step < 50


def test_uncertainty_record_keeps_running(tmp_path):
    calc = MLCalculator([tiny_model("schnet", torch.float64, seed=0),
                         tiny_model("schnet", torch.float64, seed=1)], device="cpu")
    summary = run_md(cu32(), calc, ensemble="nve", steps=10, interval=5,
                     uncertainty_threshold=1e-6, on_uncertainty="record", **files(tmp_path))
    assert summary.stopped is None and summary.last_step == 10
    std = column(read_log(tmp_path / "md.csv"), "max_forces_std")
    # step 0 is the perfect lattice: zero forces by symmetry, so zero spread
    assert std[0] < 1e-10 and (std[1:] > 1e-6).all()


def test_uncertainty_threshold_needs_an_ensemble(tmp_path):
    with pytest.raises(MDError, match="ensemble of models"):
        run_md(cu32(), tiny_calc(), steps=2, uncertainty_threshold=0.1, **files(tmp_path))


def test_settings_are_checked_when_made_and_shared_with_run_md(tmp_path):
    from mlcalc.simulate.md_settings import MDSettings

    with pytest.raises(MDError, match="timestep_fs must be > 0"):
        MDSettings(timestep_fs=0)
    with pytest.raises(MDError, match="steps >= 0"):
        MDSettings(steps=-1)
    with pytest.raises(UnknownNameError, match="did you mean 'nvt-bussi'"):
        MDSettings(ensemble="nvt-busi")
    settings = MDSettings(ensemble="nve", steps=6, interval=3, seed=1)
    a, b = cu32(), cu32()
    first = run_md(a, tiny_calc(), settings, **files(tmp_path, "a"))
    second = run_md(b, tiny_calc(), ensemble="nve", steps=6, interval=3, seed=1,
                    **files(tmp_path, "b"))
    assert first.steps == second.steps == 6
    assert np.array_equal(a.positions, b.positions)  # same options, same run
    shorter = run_md(cu32(), tiny_calc(), settings, steps=3, **files(tmp_path, "c"))
    assert shorter.steps == 3  # keyword options replace fields of the settings
