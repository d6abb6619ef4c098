"""``mlcalc data generate | convert | info`` through click's CliRunner."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from click.testing import CliRunner

from mlcalc import properties as P
from mlcalc.cli.main import cli
from mlcalc.data import ASEAtomsData
from tests.conftest import assert_one_line_error, help_without_torch


def run(*args: str):
    return CliRunner().invoke(cli, ["data", *args])


def test_data_help_does_not_import_torch():
    help_text = help_without_torch("data", "generate")
    assert "--no-surfaces" in help_text


def test_generate_convert_info_round_trip(tmp_path):
    db = tmp_path / "emt.db"
    result = run("generate", str(db), "-n", "6", "--supercell", "1", "1", "1",
                 "--no-surfaces", "-e", "Cu", "-e", "Au")
    assert result.exit_code == 0, result.output
    assert "6/6 structures (100%)" in result.output
    assert "wrote" in result.output and "stress [eV/Ang^3]" in result.output
    data = ASEAtomsData(db)
    assert len(data) == 6 and data.metadata["kinds"] == {"bulk": 2, "md": 2, "vacancy": 2}

    xyz = tmp_path / "emt.extxyz"
    ase.io.write(xyz, [data.get_atoms(i) for i in range(len(data))])
    back = tmp_path / "back.db"
    result = run("convert", str(xyz), str(back))
    assert result.exit_code == 0, result.output
    assert "6 structures" in result.output
    converted = ASEAtomsData(back)
    assert converted.units == {P.energy: "eV", P.forces: "eV/Ang", P.stress: "eV/Ang^3"}
    for i in range(len(data)):
        a, b = data.get_properties(i), converted.get_properties(i)
        assert np.array_equal(a[P.Z].numpy(), b[P.Z].numpy())
        for key in (P.R, P.cell, P.energy, P.forces, P.stress):
            np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), atol=1e-8, err_msg=key)

    infos = [run("info", str(path)) for path in (db, back)]
    for result in infos:
        assert result.exit_code == 0, result.output
        assert "6 structures" in result.output
        assert "6 periodic (3D), 0 slab (2D)" in result.output
        assert "energy [eV], forces [eV/Ang], stress [eV/Ang^3]" in result.output
    lines = [[ln for ln in r.output.splitlines() if ln.startswith(("atoms", "elements",
                                                                 "energy /", "forces  "))]
             for r in infos]
    assert len(lines[0]) == 4 and lines[0] == lines[1]
    assert "generator: ase.calculators.emt.EMT" in infos[0].output


def test_generate_default_emt_labels_stress_where_periodic(tmp_path):
    result = run("generate", str(tmp_path / "s.db"), "-n", "4", "--supercell", "1", "1", "1",
                 "--temperature-K", "500")
    assert result.exit_code == 0, result.output
    info = run("info", str(tmp_path / "s.db"))
    assert "3 periodic (3D), 1 slab (2D)" in info.output
    assert "stress" in info.output.split("properties")[1].splitlines()[0]


def test_generate_kinds_with_counts(tmp_path):
    result = run("generate", str(tmp_path / "k.db"), "--supercell", "1", "1", "1",
                 "--kinds", "strain=2", "--kinds", "cluster=2", "--kinds", "hop=1")
    assert result.exit_code == 0, result.output
    assert "5 structures (strain 2, cluster 2, hop 1)" in result.output
    assert_one_line_error(run("generate", str(tmp_path / "m.db"), "--kinds", "strain=2",
                              "--kinds", "bulk"), "give every --kinds a count")


def test_generate_lj_and_info(tmp_path):
    db = tmp_path / "lj.db"
    result = run("generate", str(db), "--calculator", "lj", "-n", "5", "--n-atoms", "4", "9")
    assert result.exit_code == 0, result.output
    info = run("info", str(db))
    assert info.exit_code == 0, info.output
    assert "0 periodic (3D), 0 slab (2D), 0 wire (1D), 5 molecule (0D)" in info.output
    assert "elements        Ar" in info.output and "stress" not in info.output


def test_convert_npz_with_units(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "md17.npz"
    E = rng.normal(size=(3, 1))
    F = rng.normal(size=(3, 2, 3))
    np.savez(path, z=np.array([1, 8]), R=rng.normal(size=(3, 2, 3)), E=E, F=F)
    result = run("convert", str(path), str(tmp_path / "m.db"), "--energy-unit", "kcal/mol")
    assert result.exit_code == 0, result.output
    data = ASEAtomsData(tmp_path / "m.db")
    assert data.units == {P.energy: "kcal/mol", P.forces: "kcal/mol/Ang"}
    info = run("info", str(tmp_path / "m.db"))
    assert "energy [kcal/mol]" in info.output and "3 molecule (0D)" in info.output


def test_refuses_to_overwrite(tmp_path):
    out = tmp_path / "keep.db"
    out.write_bytes(b"precious")
    result = run("generate", str(out), "-n", "2")
    assert_one_line_error(result, "already exists")
    assert result.exit_code == 1
    xyz = tmp_path / "a.xyz"
    ase.io.write(xyz, ase.Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7]]))
    assert_one_line_error(run("convert", str(xyz), str(out)), "already exists")
    assert out.read_bytes() == b"precious"


@pytest.mark.parametrize("args, fragments", [
    (["generate", "{tmp}/o.db", "--calculator", "emtt"], ["unknown calculator", "'emt'"]),
    (["generate", "{tmp}/o.db", "-e", "Fe"], ["'Fe' is not supported by EMT"]),
    (["generate", "{tmp}/o.db", "-e", "Cuu"], ["did you mean 'Cu'"]),
    (["generate", "{tmp}/o.db", "--kinds", "vacancies"], ["did you mean 'vacancy'"]),
    (["generate", "{tmp}/o.db", "--kinds", "surface", "--no-surfaces"], ["contradicts"]),
    (["generate", "{tmp}/o.db", "--kinds", "bulk=x"], ["must be an integer"]),
    (["generate", "{tmp}/o.db", "-n", "0"], ["n_structures"]),
    (["generate", "{tmp}/o.db", "--calculator", "lj", "--kinds", "bulk"], ["--kinds"]),
    (["generate", "{tmp}/o.db", "--calculator", "lj", "-e", "Ar", "-e", "Ne"], ["one element"]),
    (["generate", "{tmp}/o.db", "--n-atoms", "3", "5"], ["--n-atoms", "emt"]),
    (["convert", "{tmp}/missing.xyz", "{tmp}/o.db"], ["does not exist"]),
    (["convert", "{tmp}/in.xyz", "{tmp}/o.db", "--energy-unit", "eV/parsec"], ["unit"]),
    (["convert", "{tmp}/in.xyz", "{tmp}/o.db", "--forces-unit", "eV"],
     ["--forces-unit", "dimensions"]),
    (["convert", "{tmp}/in.npz", "{tmp}/o.db", "--index", "0:2"], ["--index"]),
    (["convert", "{tmp}/junk.qqq", "{tmp}/o.db"], ["cannot read", "junk.qqq"]),
    (["info", "{tmp}/missing.db"], ["does not exist"]),
    (["info", "{tmp}/in.xyz"], ["not an ASE SQLite database"]),
])
def test_bad_input_is_one_line_error(tmp_path, args, fragments):
    ase.io.write(tmp_path / "in.xyz", ase.Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7]]))
    np.savez(tmp_path / "in.npz", z=np.array([1]), R=np.zeros((1, 1, 3)), E=np.zeros(1))
    (tmp_path / "junk.qqq").write_text("not a structure\n")
    result = run(*[a.format(tmp=tmp_path) for a in args])
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "o.db").exists()


@pytest.mark.parametrize("content", ["data_x\n_cell_length_a 3.6\nloop_\n_atom_site_label\n",
                                     "not a structure at all\n"])
def test_convert_an_unreadable_file_is_one_line(tmp_path, content):
    bad = tmp_path / "bad.cif"
    bad.write_text(content)
    result = run("convert", str(bad), str(tmp_path / "out.db"))
    assert_one_line_error(result, "bad.cif: cannot read structures")
    assert not (tmp_path / "out.db").exists()
