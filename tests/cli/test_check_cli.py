"""``mlcalc check``: passes on a good model, fails (exit 1, row named) on a broken one."""

from __future__ import annotations

import ase.io
import pytest
import torch
from ase.build import bulk, molecule
from click.testing import CliRunner

from mlcalc import properties as P
from mlcalc.atomistic.pairs import PairVectors
from mlcalc.cli.main import cli
from mlcalc.model.io import save_model
from mlcalc.simulate.check import inversion_site
from tests.conftest import assert_one_line_error, tiny_model


def run(*args: str):
    return CliRunner().invoke(cli, ["check", *args])


def rows(output: str) -> dict[str, str]:
    """check name -> result column of the printed table."""
    table = {}
    for line in output.splitlines():
        for verdict in ("pass", "FAIL", "skip"):
            if line.endswith(f"  {verdict}"):
                table[line.split("  ")[0].strip()] = verdict
    return table


@pytest.fixture
def crystal(tmp_path):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)
    atoms.rattle(0.01, seed=0)  # below symprec: its ideal is fcc, a centre of inversion
    path = tmp_path / "cu.xyz"
    ase.io.write(path, atoms)
    return str(path)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_good_model_passes(tmp_path, crystal, dtype):
    model = save_model(tiny_model("painn", dtype), tmp_path / "model.pt")
    result = run(str(model), crystal, "--nve-steps", "30")
    assert result.exit_code == 0, result.output
    table = rows(result.output)
    expected = {"rotation: energy", "rotation: forces", "translation: forces",
                "permutation: forces", "wrapping: forces", "finite-difference forces",
                "finite-difference stress", "harmonic at a symmetric site", "NVE energy drift"}
    assert expected <= set(table), result.output
    assert set(table.values()) == {"pass"}
    assert "checks passed" in result.output.splitlines()[-1]
    net = str(dtype).removeprefix("torch.")
    assert f"rotation: energy              {net}" in result.output
    assert "finite-difference forces      float64" in result.output


def test_broken_translation_invariance_fails(tmp_path, crystal, monkeypatch):
    """A bug in the input module: pair vectors that depend on where atom i sits.

    Forces stay -dE/dR (autograd), so the finite-difference rows still pass;
    the invariance rows must catch it.
    """
    original = PairVectors.forward

    def broken(self, inputs):
        inputs = original(self, inputs)
        inputs[P.Rij] = inputs[P.Rij] + 1e-2 * torch.sin(inputs[P.R][inputs[P.idx_i]])
        return inputs

    monkeypatch.setattr(PairVectors, "forward", broken)
    model = save_model(tiny_model("schnet", torch.float64), tmp_path / "model.pt")
    result = run(str(model), crystal, "--nve-steps", "0")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    table = rows(result.output)
    assert table["translation: energy"] == "FAIL" and table["translation: forces"] == "FAIL"
    assert table["finite-difference forces"] == "pass"
    last = result.output.strip().splitlines()[-1]
    assert last.split()[1:3] == ["checks", "failed:"] and "translation: energy" in last
    assert int(last.split()[0]) == list(table.values()).count("FAIL")


def test_molecule_skips_periodic_checks(tmp_path):
    path = tmp_path / "cluster.xyz"
    cluster = molecule("CH4")
    cluster.numbers[:] = 29
    cluster.positions *= 2.2
    ase.io.write(path, cluster)
    model = save_model(tiny_model("schnet", torch.float64), tmp_path / "model.pt")
    result = run(str(model), str(path), "--nve-steps", "10")
    assert result.exit_code == 0, result.output
    table = rows(result.output)
    assert table["finite-difference stress"] == "skip"
    assert table["harmonic at a symmetric site"] == "skip"
    assert "wrapping: forces" not in table


def test_inversion_site_of_fcc_and_diamond():
    ideal, atom = inversion_site(bulk("Cu", "fcc", a=3.6, cubic=True))
    assert atom == 0 and len(ideal) == 4
    assert inversion_site(bulk("Si", "diamond", a=5.43)) is None  # centre between atoms


def test_bad_inputs_are_one_line_errors(tmp_path, crystal):
    h2o = tmp_path / "h2o.xyz"
    ase.io.write(h2o, molecule("H2O"))
    cases = [
        (("cu-emt", str(tmp_path / "missing.xyz")), ("structure file not found",)),
        ((str(tmp_path / "missing.pt"), crystal), ("model file not found",)),
        (("cu-emt", str(h2o)), ("not in the model",)),
        (("cu-emt", crystal, "--nve-steps", "-5"), ("--nve-steps",)),
    ]
    for args, fragments in cases:
        assert_one_line_error(run(*args), *fragments)


def test_the_model_may_be_given_with_m_as_everywhere_else(crystal):
    plain = run("cu-emt", crystal, "--nve-steps", "0")
    with_m = run("-m", "cu-emt", crystal, "--nve-steps", "0")
    assert plain.exit_code == with_m.exit_code == 0, with_m.output
    assert plain.output == with_m.output
    result = run("-m", "cu-emt", "cu-emt", crystal)
    assert result.exit_code != 0 and "'-m MODEL STRUCTURE'" in result.output
