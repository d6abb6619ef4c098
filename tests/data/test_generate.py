"""Reference data from ASE's EMT and Lennard-Jones: reproducible, labels exact."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones

from mlcalc import properties as P
from mlcalc.data import ASEAtomsData
from mlcalc.data.generate import emt_lattice_constant, generate_emt, generate_lj
from mlcalc.exceptions import UnknownNameError

TINY = dict(n_structures=8, supercell=(1, 1, 1), temperatures_K=(300.0, 900.0))


def rows(data: ASEAtomsData) -> list[dict[str, np.ndarray]]:
    """Every stored array of every structure, as numpy."""
    return [{k: v.numpy() for k, v in data.get_properties(i).items()} for i in range(len(data))]


def assert_same(a: ASEAtomsData, b: ASEAtomsData) -> None:
    ra, rb = rows(a), rows(b)
    assert len(ra) == len(rb)
    for x, y in zip(ra, rb, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            assert np.array_equal(x[key], y[key], equal_nan=True), key


def test_emt_reproducible_by_seed(tmp_path):
    kw = dict(TINY, elements=("Cu", "Au"))
    a = generate_emt(tmp_path / "a.db", seed=3, **kw)
    b = generate_emt(tmp_path / "b.db", seed=3, **kw)
    assert len(a) == 8
    assert_same(a, b)
    assert a.metadata == b.metadata
    c = generate_emt(tmp_path / "c.db", seed=4, **kw)
    assert not np.array_equal(rows(a)[0][P.R], rows(c)[0][P.R])


@pytest.mark.parametrize("elements", [("Cu",), ("Cu", "Au")])
def test_emt_labels_equal_emt_recomputed(tmp_path, elements):
    data = generate_emt(tmp_path / "d.db", elements=elements, kinds=("bulk", "md", "vacancy"),
                        **TINY)
    assert set(data.available_properties) == {P.energy, P.forces, P.stress}
    assert data.units == {P.energy: "eV", P.forces: "eV/Ang", P.stress: "eV/Ang^3"}
    for i in range(len(data)):
        stored = data.get_atoms(i)
        atoms = stored.copy()
        atoms.calc = EMT()
        assert atoms.get_potential_energy() == pytest.approx(stored.get_potential_energy(),
                                                             abs=1e-10)
        np.testing.assert_allclose(atoms.get_forces(), stored.get_forces(), atol=1e-10)
        np.testing.assert_allclose(atoms.get_stress(), stored.get_stress(), atol=1e-12)
        assert set(atoms.get_chemical_symbols()) <= set(elements)
        assert atoms.pbc.all()


def test_stress_labelled_where_defined_and_undefined_for_slabs(tmp_path):
    data = generate_emt(tmp_path / "s.db", **TINY)  # default kinds include surfaces
    assert P.stress in data.available_properties
    assert data.metadata["stress_labelled"] is True
    assert data.metadata["kinds"] == {"bulk": 2, "md": 2, "vacancy": 2, "surface": 2}
    pbcs = [tuple(data.get_atoms(i).pbc) for i in range(len(data))]
    assert pbcs.count((True, True, False)) == 2 and pbcs.count((True, True, True)) == 6
    slab = data.get_atoms(len(data) - 1)
    assert "stress" not in slab.calc.results  # undefined: stored as NaN, not a result
    assert np.isnan(data.get_properties(len(data) - 1)[P.stress]).all()
    slab_ref = slab.copy()
    slab_ref.calc = EMT()
    assert slab_ref.get_potential_energy() == pytest.approx(slab.get_potential_energy(),
                                                            abs=1e-10)
    assert np.ptp(slab.positions[:, 2]) < slab.cell[2, 2] - 10.0  # vacuum kept
    bulk_cell = data.get_atoms(0)
    reference = bulk_cell.copy()
    reference.calc = EMT()
    np.testing.assert_allclose(bulk_cell.get_stress(), reference.get_stress(), atol=1e-12)


def test_every_kind_reproducible_and_labelled_by_emt(tmp_path):
    kinds = {"bulk": 1, "strain": 2, "md": 2, "vacancy": 1, "hop": 2, "surface": 3,
             "cluster": 4}
    kw = dict(kinds=kinds, supercell=(2, 1, 1), temperatures_K=(300.0, 1500.0), seed=5)
    data = generate_emt(tmp_path / "all.db", **kw)
    assert_same(data, generate_emt(tmp_path / "again.db", **kw))
    assert len(data) == sum(kinds.values()) and data.metadata["kinds"] == kinds
    shapes = {}
    for i in range(len(data)):
        stored = data.get_atoms(i)
        atoms = stored.copy()
        atoms.calc = EMT()
        assert atoms.get_potential_energy() == pytest.approx(stored.get_potential_energy(),
                                                             abs=1e-10)
        key = (tuple(stored.pbc), len(stored))
        shapes[key] = shapes.get(key, 0) + 1
    assert sum(n for (pbc, _), n in shapes.items() if pbc == (True, True, False)) == 3
    clusters = [size for (pbc, size), n in shapes.items() if not any(pbc) for _ in range(n)]
    assert len(clusters) == 4 and 13 in clusters and 7 in clusters
    assert sum(n for (pbc, size), n in shapes.items() if all(pbc) and size == 7) == 3
    with pytest.raises(ValueError, match="add up to"):
        generate_emt(tmp_path / "x.db", n_structures=5, kinds={"bulk": 2})


def test_no_stress_on_request(tmp_path):
    no_stress = generate_emt(tmp_path / "u.db", kinds=("bulk",), stress=False, **TINY)
    assert P.stress not in no_stress.available_properties


def test_emt_kinds_and_sizes(tmp_path):
    data = generate_emt(tmp_path / "k.db", n_structures=5, kinds=("vacancy", "bulk"),
                        supercell=(2, 1, 1))
    assert data.metadata["kinds"] == {"vacancy": 3, "bulk": 2}
    assert [len(data.get_atoms(i)) for i in range(5)] == [7, 7, 7, 8, 8]


def test_emt_lattice_constant_is_the_minimum():
    a = emt_lattice_constant("Cu")
    assert 3.55 < a < 3.63
    atoms = bulk("Cu", "fcc", a=a)
    atoms.calc = EMT()
    assert abs(atoms.get_stress()[:3]).max() < 1e-4  # eV/Å³, ~0.016 GPa


def test_alloy_bulk_is_near_zero_pressure(tmp_path):
    data = generate_emt(tmp_path / "p.db", elements=("Cu", "Au"), n_structures=4,
                        kinds=("bulk",), supercell=(1, 1, 1), max_strain=0.0, rattle_A=0.0)
    for i in range(len(data)):
        pressure = -data.get_atoms(i).get_stress()[:3].mean()
        assert abs(pressure) < 2e-3  # eV/Å³, 0.3 GPa: Vegard's law alone is off by GPa


def test_emt_bad_input(tmp_path):
    with pytest.raises(UnknownNameError, match="did you mean 'Cu'"):
        generate_emt(tmp_path / "e.db", elements=("Cuu",), **TINY)
    with pytest.raises(UnknownNameError, match="not supported by EMT"):
        generate_emt(tmp_path / "e.db", elements=("Fe",), **TINY)
    with pytest.raises(UnknownNameError, match="did you mean 'surface'"):
        generate_emt(tmp_path / "e.db", kinds=("surfaces",), **TINY)
    with pytest.raises(ValueError, match="n_structures"):
        generate_emt(tmp_path / "e.db", n_structures=0)
    assert not (tmp_path / "e.db").exists()
    existing = tmp_path / "x.db"
    existing.write_bytes(b"keep me")
    with pytest.raises(FileExistsError):
        generate_emt(existing, **TINY)
    assert existing.read_bytes() == b"keep me"


def test_lj_clusters(tmp_path):
    a = generate_lj(tmp_path / "a.db", n_structures=10, n_atoms=(5, 12), seed=1)
    b = generate_lj(tmp_path / "b.db", n_structures=10, n_atoms=(5, 12), seed=1)
    assert_same(a, b)
    assert a.available_properties == [P.energy, P.forces]
    meta = a.metadata
    calc = LennardJones(sigma=meta["sigma"], epsilon=meta["epsilon"], rc=meta["rc"],
                        smooth=True)
    assert meta["rc"] == pytest.approx(3 * 3.4)
    for i in range(len(a)):
        stored = a.get_atoms(i)
        assert not stored.pbc.any() and 5 <= len(stored) <= 12
        assert set(stored.get_chemical_symbols()) == {"Ar"}
        atoms = stored.copy()
        atoms.calc = calc
        energy = atoms.get_potential_energy()
        assert energy == pytest.approx(stored.get_potential_energy(), abs=1e-12)
        assert energy < 0  # compact clusters are bound
        np.testing.assert_allclose(atoms.get_forces(), stored.get_forces(), atol=1e-12)
        distances = atoms.get_all_distances()[np.triu_indices(len(atoms), 1)]
        assert distances.min() > 0.8 * 3.4  # no overlapping atoms


def test_lj_bad_input(tmp_path):
    with pytest.raises(ValueError, match="n_atoms"):
        generate_lj(tmp_path / "l.db", n_structures=2, n_atoms=(10, 5))
    with pytest.raises(UnknownNameError, match="element"):
        generate_lj(tmp_path / "l.db", n_structures=2, element="Xx")
    assert not (tmp_path / "l.db").exists()
