"""Neighbor-list backends agree with ASE and with a brute-force search."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk, fcc111

from mlcalc import properties as P
from mlcalc.exceptions import InvalidStructureError, UnknownNameError
from mlcalc.transform import (
    NEIGHBOR_LISTS,
    ASENeighborList,
    NeighborList,
    TorchClusterNeighborList,
    TorchNeighborList,
    filter_pairs,
    get_neighbor_list,
)

Structure = tuple[np.ndarray, np.ndarray, np.ndarray, float]  # positions, cell, pbc, cutoff

#: Every registered backend but ASE's, which is the reference they are compared with.
BACKENDS = [name for name in NEIGHBOR_LISTS if name != "ase"]


def _cu_bulk() -> Structure:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (3, 3, 3)
    return atoms.positions, atoms.cell[:], atoms.pbc, 5.0


def _triclinic() -> Structure:
    rng = np.random.default_rng(1)
    cell = np.array([[6.0, 0.0, 0.0], [2.1, 5.4, 0.0], [1.3, -1.7, 5.8]])
    cell += rng.normal(scale=0.2, size=(3, 3))
    positions = rng.random((24, 3)) @ cell + rng.normal(scale=0.1, size=(24, 3))
    return positions, cell, np.array([True, True, True]), 4.5


def _slab(zero_c: bool = False) -> Structure:
    atoms = fcc111("Cu", size=(3, 3, 4), vacuum=6.0, a=3.61)
    rng = np.random.default_rng(2)
    positions = atoms.positions + rng.normal(scale=0.05, size=atoms.positions.shape)
    positions[0, 2] += atoms.cell[2, 2] + 1.0  # above the top of the cell
    positions[1, 2] -= 15.0  # below the bottom
    positions[2, :2] += 3 * atoms.cell[0, :2]  # outside along a periodic direction
    cell = atoms.cell[:].copy()
    if zero_c:
        cell[2] = 0.0
    return positions, cell, np.array([True, True, False]), 5.0


def _molecule() -> Structure:
    rng = np.random.default_rng(3)
    positions = rng.random((30, 3)) * 8.0 - 20.0
    positions[0] += 100.0  # a far-away atom, nothing near it
    return positions, np.zeros((3, 3)), np.array([False, False, False]), 3.0


def _wire() -> Structure:
    rng = np.random.default_rng(4)
    cell = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.4, 0.3, 2.7]])
    positions = rng.random((5, 3)) * [4.0, 4.0, 2.7]
    return positions, cell, np.array([False, False, True]), 4.0


def _zero_a() -> Structure:
    """Periodic along b and c only, zero a: ASE's own handling misses pairs here."""
    rng = np.random.default_rng(7)
    cell = np.array([[0.0, 0.0, 0.0], [3.3, 8.86, -2.24], [1.24, 2.88, 2.08]])
    positions = rng.random((10, 3)) * 6.0 - 1.0
    return positions, cell, np.array([False, True, True]), 5.3


def _tiny(n_atoms: int) -> Structure:
    cell = np.array([[2.2, 0.0, 0.0], [1.1, 1.9, 0.0], [0.7, -0.5, 2.4]])
    # The cutoff is 3x the longest cell vector (~4x the shortest plane spacing);
    # the + 0.01 keeps the image 3 c from lying exactly on the cutoff.
    rng = np.random.default_rng(5 + n_atoms)
    positions = rng.random((n_atoms, 3)) @ cell
    cutoff = 3.0 * np.linalg.norm(cell, axis=1).max() + 0.01
    return positions, cell, np.array([True, True, True]), cutoff


def _unwrapped() -> Structure:
    positions, cell, pbc, cutoff = _triclinic()
    rng = np.random.default_rng(6)
    positions = positions + rng.integers(-3, 4, size=(len(positions), 3)) @ cell
    positions += rng.normal(scale=0.5, size=positions.shape)
    return positions, cell, pbc, cutoff


STRUCTURES = {
    "cu_bulk": _cu_bulk,
    "triclinic": _triclinic,
    "slab": _slab,
    "slab_zero_c": lambda: _slab(zero_c=True),
    "molecule_zero_cell": _molecule,
    "wire": _wire,
    "zero_a": _zero_a,
    "one_atom_small_cell": lambda: _tiny(1),
    "two_atom_small_cell": lambda: _tiny(2),
    "unwrapped": _unwrapped,
}


def _tensors(structure: Structure) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    positions, cell, pbc, _ = structure
    return (torch.tensor(positions, dtype=torch.float64), torch.tensor(cell, dtype=torch.float64),
            torch.tensor(pbc, dtype=torch.bool))


def _as_set(idx_i: torch.Tensor, idx_j: torch.Tensor, shifts: torch.Tensor) -> set:
    triples = zip(idx_i.tolist(), idx_j.tolist(), map(tuple, shifts.tolist()), strict=True)
    return set(triples)


def _brute_force(structure: Structure) -> set:
    """Every (i, j, S) with |R_j - R_i + S @ cell| < cutoff, by enumerating shifts."""
    positions, cell, pbc, cutoff = structure
    periodic = np.asarray(pbc, dtype=bool)
    # Non-periodic rows -> orthonormal complement of the periodic ones (from the SVD),
    # which leaves the periodic fractional coordinates as they are.
    safe = cell.copy()
    safe[~periodic] = np.linalg.svd(np.vstack([cell[periodic], np.zeros((3, 3))]))[2][
        periodic.sum():]
    inv = np.linalg.inv(safe)
    frac = positions @ inv
    layers = np.where(periodic, np.ceil(cutoff * np.linalg.norm(inv, axis=0)) + 1, 0).astype(int)
    grid = np.stack(np.meshgrid(*[np.arange(-n, n + 1) for n in layers], indexing="ij"), -1)
    grid = grid.reshape(-1, 3)
    found = set()
    for i in range(len(positions)):
        # Centre the shift window on the one bringing j closest in fractional terms.
        base = np.where(periodic, np.rint(frac[i] - frac), 0).astype(int)  # (N, 3)
        shifts = base[:, None, :] + grid[None]  # (N, S, 3)
        rij = positions[:, None, :] - positions[i] + shifts @ cell
        hits = np.argwhere(np.linalg.norm(rij, axis=-1) < cutoff)
        for j, s in hits:
            shift = tuple(int(v) for v in shifts[j, s])
            if j != i or any(shift):
                found.add((i, int(j), shift))
    return found


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "torch_cluster":
        pytest.importorskip("torch_cluster")
    return request.param


@pytest.fixture(scope="module")
def references() -> dict[str, set]:
    out = {}
    for name, build in STRUCTURES.items():
        structure = build()
        out[name] = _as_set(*ASENeighborList(structure[3]).neighbor_pairs(*_tensors(structure)))
    return out


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_ase_matches_brute_force(name: str, references: dict[str, set]) -> None:
    assert references[name] == _brute_force(STRUCTURES[name]())
    assert len(references[name]) > 0 or name == "wire"


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_backend_matches_ase(backend: str, name: str, references: dict[str, set]) -> None:
    structure = STRUCTURES[name]()
    positions, cell, pbc = _tensors(structure)
    cutoff = structure[3]
    idx_i, idx_j, shifts = get_neighbor_list(backend, cutoff).neighbor_pairs(positions, cell, pbc)
    assert idx_i.dtype == idx_j.dtype == shifts.dtype == torch.int64
    assert shifts.shape == (len(idx_i), 3)
    pairs = _as_set(idx_i, idx_j, shifts)
    assert len(pairs) == len(idx_i), "duplicate pairs"
    assert pairs == references[name]
    rij = positions[idx_j] - positions[idx_i] + shifts.double() @ cell
    assert bool((rij.norm(dim=1) < cutoff).all())
    assert not bool(((idx_i == idx_j) & (shifts == 0).all(dim=1)).any()), "self pair"
    assert not bool(shifts[:, ~pbc].any()), "shift along a non-periodic direction"


def test_small_cell_has_many_images() -> None:
    structure = _tiny(1)
    idx_i, _, shifts = TorchNeighborList(structure[3]).neighbor_pairs(*_tensors(structure))
    assert len(idx_i) > 100 and int(shifts.abs().max()) >= 3


def test_torch_chunking_is_invisible() -> None:
    structure = _cu_bulk()
    tensors = _tensors(structure)
    whole = TorchNeighborList(structure[3]).neighbor_pairs(*tensors)
    chunked = TorchNeighborList(structure[3], max_candidates=1000).neighbor_pairs(*tensors)
    assert _as_set(*whole) == _as_set(*chunked)


def test_filter_pairs_equals_list_at_smaller_cutoff() -> None:
    structure = _unwrapped()
    positions, cell, pbc = _tensors(structure)
    wide = TorchNeighborList(structure[3] + 1.0).neighbor_pairs(positions, cell, pbc)
    cut = filter_pairs(*wide, positions, cell, structure[3])
    assert len(cut[0]) < len(wide[0])
    expected = ASENeighborList(structure[3]).neighbor_pairs(positions, cell, pbc)
    assert _as_set(*cut) == _as_set(*expected)


def test_forward_adds_int64_keys() -> None:
    structure = _triclinic()
    positions, cell, pbc = _tensors(structure)
    inputs = {P.R: positions, P.cell: cell[None], P.pbc: pbc[None],
              P.Z: torch.full((len(positions),), 29)}
    out = TorchNeighborList(structure[3])(inputs)
    assert P.idx_i not in inputs, "input dict was modified"
    assert out[P.Z] is inputs[P.Z]
    for key in (P.idx_i, P.idx_j, P.cell_shifts):
        assert out[key].dtype == torch.int64
    assert out[P.cell_shifts].shape == (len(out[P.idx_i]), 3)


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_half_form_holds_each_pair_of_the_full_list_once(backend: str, name: str) -> None:
    from mlcalc.transform.neighbors import full_pairs

    structure = STRUCTURES[name]()
    tensors, cutoff = _tensors(structure), structure[3]
    full = get_neighbor_list(backend, cutoff).pairs(*tensors)
    half = get_neighbor_list(backend, cutoff, half=True).pairs(*tensors)
    assert 2 * len(half[0]) == len(full[0])
    assert _as_set(*full_pairs(*half)) == _as_set(*full)


def test_registry_and_repr() -> None:
    assert {"matscipy", "torch", "torch_cluster", "ase"} <= set(NEIGHBOR_LISTS)
    nl = get_neighbor_list("torch", 5.0, max_candidates=10_000)
    assert isinstance(nl, TorchNeighborList) and isinstance(nl, NeighborList)
    assert "cutoff=5.0" in repr(nl)
    with pytest.raises(UnknownNameError, match="did you mean 'torch'"):
        get_neighbor_list("torh", 5.0)
    with pytest.raises(KeyError):  # UnknownNameError is also a KeyError
        get_neighbor_list("nonsense", 5.0)


def test_torch_cluster_missing_message(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "torch_cluster", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"pip install 'mlcalc\[cluster\]'"):
        TorchClusterNeighborList(5.0)


@pytest.mark.parametrize("name", ["matscipy", "torch", "ase"])
def test_empty_structure(name: str) -> None:
    idx_i, idx_j, shifts = get_neighbor_list(name, 3.0).neighbor_pairs(
        torch.zeros(0, 3, dtype=torch.float64), torch.eye(3, dtype=torch.float64) * 5,
        torch.ones(3, dtype=torch.bool))
    assert len(idx_i) == len(idx_j) == len(shifts) == 0


@pytest.mark.parametrize("name", ["matscipy", "torch"])
def test_periodic_zero_cell_is_refused(name: str) -> None:
    with pytest.raises(InvalidStructureError):
        get_neighbor_list(name, 3.0).neighbor_pairs(
            torch.zeros(2, 3, dtype=torch.float64), torch.zeros(3, 3, dtype=torch.float64),
            torch.ones(3, dtype=torch.bool))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["cu_bulk", "slab", "molecule_zero_cell", "unwrapped",
                                  "two_atom_small_cell"])
def test_torch_on_cuda(name: str, references: dict[str, set]) -> None:
    structure = STRUCTURES[name]()
    tensors = [t.cuda() for t in _tensors(structure)]
    idx_i, idx_j, shifts = TorchNeighborList(structure[3]).neighbor_pairs(*tensors)
    assert idx_i.is_cuda and idx_j.is_cuda and shifts.is_cuda
    assert _as_set(idx_i.cpu(), idx_j.cpu(), shifts.cpu()) == references[name]
