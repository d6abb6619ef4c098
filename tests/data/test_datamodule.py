"""AtomsDataModule: splits, split files, transforms, caching and loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT

from mlcalc import properties as P
from mlcalc.data import ASEAtomsData, AtomsDataModule
from mlcalc.transform.base import Transform

N = 20


@pytest.fixture
def db_path(tmp_path):
    frames = []
    for k in range(N):
        atoms = bulk("Cu", cubic=True)
        if k % 2:
            atoms = atoms.repeat((2, 1, 1))  # two sizes, to check per-atom shapes
        atoms.rattle(0.05, seed=k)
        atoms.calc = EMT()
        frames.append(atoms)
    path = tmp_path / "cu.db"
    data = ASEAtomsData.create(path, property_unit_dict={
        "energy": "eV", "forces": "eV/Ang", "stress": "eV/Ang^3"})
    data.add_systems(frames)
    return path


class AddKey(Transform):
    """Adds ``twice_energy``; counts its calls and sees the datamodule."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.setup_train_idx: np.ndarray | None = None

    def datamodule_setup(self, dm: AtomsDataModule) -> None:
        self.setup_train_idx = dm.train_idx.copy()
        self.n_energies = len(dm.dataset.numbers_and_labels(dm.train_idx, P.energy))

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.calls += 1
        return {**inputs, "twice_energy": 2 * inputs[P.energy]}


def all_idx(dm: AtomsDataModule) -> np.ndarray:
    return np.concatenate([dm.train_idx, dm.val_idx, dm.test_idx])


def test_split_by_counts_and_fractions(db_path):
    dm = AtomsDataModule(db_path, batch_size=4, num_train=12, num_val=3, num_test=2)
    dm.setup("fit")
    assert (len(dm.train_idx), len(dm.val_idx), len(dm.test_idx)) == (12, 3, 2)
    assert len(set(all_idx(dm).tolist())) == 17
    dm = AtomsDataModule(db_path, batch_size=4, num_train=0.7, num_val=0.2)
    dm.setup()
    assert (len(dm.train_idx), len(dm.val_idx), len(dm.test_idx)) == (14, 4, 2)
    assert sorted(all_idx(dm).tolist()) == list(range(N))
    with pytest.raises(ValueError, match="exceeds"):
        AtomsDataModule(db_path, batch_size=4, num_train=15, num_val=10).setup()
    with pytest.raises(ValueError, match="fraction"):
        AtomsDataModule(db_path, batch_size=4, num_train=1.5, num_val=1).setup()


def test_split_file_written_and_reused(db_path, tmp_path):
    split = tmp_path / "splits" / "split.npz"
    dm = AtomsDataModule(db_path, batch_size=4, num_train=10, num_val=5, split_file=split, seed=1)
    dm.setup()
    assert split.exists()
    other = AtomsDataModule(db_path, batch_size=4, num_train=3, num_val=3, split_file=split,
                            seed=99)
    other.setup()
    for name in ("train_idx", "val_idx", "test_idx"):
        assert np.array_equal(getattr(dm, name), getattr(other, name))
    fresh = AtomsDataModule(db_path, batch_size=4, num_train=10, num_val=5, seed=99)
    fresh.setup()
    assert not np.array_equal(fresh.train_idx, dm.train_idx)


def test_split_file_out_of_range(db_path, tmp_path):
    split = tmp_path / "split.npz"
    np.savez(split, train_idx=np.arange(5), val_idx=np.array([N + 3]), test_idx=np.array([]))
    dm = AtomsDataModule(db_path, batch_size=4, num_train=5, num_val=1, split_file=split)
    with pytest.raises(IndexError, match=f"val index {N + 3}.*only {N} structures"):
        dm.setup()


def test_loaders_transforms_and_cache(db_path):
    add = AddKey()
    dm = AtomsDataModule(db_path, batch_size=4, num_train=8, num_val=4, num_test=4,
                         transforms=[add])
    dm.setup()
    assert np.array_equal(add.setup_train_idx, dm.train_idx) and add.n_energies == 8
    assert add.calls == 16  # every structure once, at setup
    for _ in range(2):  # two epochs: still no more transform calls
        batches = list(dm.train_dataloader())
    assert add.calls == 16
    assert len(batches) == 2
    batch = batches[0]
    n = int(batch[P.n_atoms].sum())
    assert batch[P.idx_m].shape == (n,) and batch[P.n_atoms].shape == (4,)
    assert batch[P.R].shape == (n, 3) and batch[P.forces].shape == (n, 3)
    assert batch[P.energy].shape == (4,) and batch[P.stress].shape == (4, 6)
    assert torch.equal(batch["twice_energy"], 2 * batch[P.energy])
    seen = torch.cat([b[P.idx] for b in batches]).sort().values
    assert seen.tolist() == sorted(dm.train_idx.tolist())
    val = next(iter(dm.val_dataloader()))
    assert val[P.idx].tolist() == dm.val_idx[:4].tolist()


def test_split_transforms_separate_and_uncached(db_path):
    train_t, val_t = AddKey(), AddKey()
    dm = AtomsDataModule(db_path, batch_size=4, num_train=8, num_val=4,
                         train_transforms=[train_t], val_transforms=[val_t], cache=False,
                         load_properties=[P.energy])
    dm.setup()
    assert train_t.calls == 0 and val_t.calls == 0
    batch = next(iter(dm.val_dataloader()))
    assert val_t.calls == 4 and train_t.calls == 0
    assert P.forces not in batch
    assert "twice_energy" not in next(iter(dm.test_dataloader()))


def test_num_workers(db_path):
    dm = AtomsDataModule(db_path, batch_size=5, num_train=10, num_val=5, num_workers=1,
                         cache=False)
    dm.setup()
    batches = list(dm.val_dataloader())
    assert len(batches) == 1 and batches[0][P.idx].tolist() == dm.val_idx.tolist()


def test_not_set_up(db_path):
    dm = AtomsDataModule(db_path, batch_size=4, num_train=8, num_val=4)
    with pytest.raises(RuntimeError, match="setup"):
        dm.train_dataloader()
