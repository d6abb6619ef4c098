"""AtomsDataModule: a data set split into train/val/test, with data loaders.

The split is saved to (and reused from) a file so that a resumed or repeated
fit, and the final test, see exactly the same structures.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from mlcalc.data.atoms_data import ASEAtomsData
from mlcalc.data.base import BaseAtomsData
from mlcalc.data.collate import collate_atoms
from mlcalc.transform.base import Transform

_SPLITS = ("train", "val", "test")


class SplitDataset(Dataset):
    """One split of a data set, with its own transforms.

    Item ``k`` is structure ``indices[k]`` of ``data`` (``get_properties``,
    ignoring ``data.transforms``) passed through ``transforms``. After
    :meth:`cache` the transformed dicts are kept in memory.
    """

    def __init__(self, data: BaseAtomsData, indices: np.ndarray,
                 transforms: Sequence[Transform]) -> None:
        self.data = data
        self.indices = indices
        self.transforms = list(transforms)
        self._cache: list[dict[str, torch.Tensor]] | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def _compute(self, k: int) -> dict[str, torch.Tensor]:
        inputs = self.data.get_properties(int(self.indices[k]))
        for transform in self.transforms:
            inputs = transform(inputs)
        return inputs

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        if self._cache is not None:
            return self._cache[k]
        return self._compute(k)

    def cache(self) -> None:
        """Run the transforms once for every structure and keep the results."""
        if self._cache is None:
            with torch.no_grad():
                self._cache = [self._compute(k) for k in range(len(self))]


def _count(value: int | float | None, n: int, name: str) -> int | None:
    """A count (int) or fraction (float in (0, 1]) of ``n`` structures -> count."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be an int count or a float fraction, got {value!r}")
    if isinstance(value, float):
        if not 0.0 < value <= 1.0:
            raise ValueError(f"{name}={value} is not a fraction in (0, 1]; "
                             "give an int for a count")
        return int(value * n + 1e-9)  # floor, robust to 0.7 * 10 = 6.9999...
    if value < 0:
        raise ValueError(f"{name}={value} must not be negative")
    return value


class AtomsDataModule(pl.LightningDataModule):
    """Train/val/test splits of a data set and their data loaders.

    Args:
        datapath: ASE database path (opened as :class:`ASEAtomsData`), or a
            :class:`BaseAtomsData` to use as is (its own ``transforms`` are
            not used: each split applies the transforms given here).
        batch_size: structures per training batch.
        num_train, num_val, num_test: int counts or float fractions in (0, 1]
            of the data set; ``num_test=None`` takes the rest.
        split_file: npz with ``train_idx``, ``val_idx``, ``test_idx``. Loaded
            and reused if it exists (num_* and seed are then ignored), else the
            new random split is written to it.
        load_properties: labels to load (None: all).
        transforms: transforms of every split; ``train_transforms`` etc.
            replace them for one split.
        val_batch_size, test_batch_size: default ``batch_size``.
        num_workers, pin_memory: passed to the DataLoaders.
        seed: seed of the random split.
        cache: run the transforms once per structure in :meth:`setup` and keep
            the results in memory (neighbor lists are then built once). Only
            valid for deterministic transforms: random augmentation would be
            frozen to its first draw, so pass ``cache=False`` for those.
    """

    def __init__(self, datapath: str | os.PathLike | BaseAtomsData, batch_size: int,
                 num_train: int | float, num_val: int | float,
                 num_test: int | float | None = None, split_file: str | os.PathLike | None = None,
                 load_properties: Sequence[str] | None = None,
                 transforms: Sequence[Transform] | None = None,
                 train_transforms: Sequence[Transform] | None = None,
                 val_transforms: Sequence[Transform] | None = None,
                 test_transforms: Sequence[Transform] | None = None,
                 val_batch_size: int | None = None, test_batch_size: int | None = None,
                 num_workers: int = 0, pin_memory: bool = False, seed: int = 0,
                 cache: bool = True) -> None:
        super().__init__()
        self.datapath = datapath
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.test_batch_size = test_batch_size or batch_size
        self.num_train, self.num_val, self.num_test = num_train, num_val, num_test
        self.split_file = None if split_file is None else os.fspath(split_file)
        self.load_properties = None if load_properties is None else list(load_properties)
        common = list(transforms or [])
        # Separate lists per split (the objects may be shared, the lists not).
        self.split_transforms: dict[str, list[Transform]] = {
            "train": list(common if train_transforms is None else train_transforms),
            "val": list(common if val_transforms is None else val_transforms),
            "test": list(common if test_transforms is None else test_transforms),
        }
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed
        self.cache = cache
        self._dataset: BaseAtomsData | None = None
        self._idx: dict[str, np.ndarray] = {}
        self._splits: dict[str, SplitDataset] = {}

    # --- setup -------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Open the data set, make or load the split, let transforms see the
        training data (``datamodule_setup(dm)``, e.g. to fit offsets), then
        cache. Idempotent: Lightning calls it again for ``test``."""
        if self._splits:
            return
        data = self._open()
        self._idx = self._load_split() if self._split_exists() else self._make_split()
        self._splits = {s: SplitDataset(data, self._idx[s], self.split_transforms[s])
                        for s in _SPLITS}
        try:
            # Each transform object once, even if it is shared by the splits.
            seen: set[int] = set()
            for transform in (t for ts in self.split_transforms.values() for t in ts):
                hook = getattr(transform, "datamodule_setup", None)
                if hook is not None and id(transform) not in seen:
                    seen.add(id(transform))
                    hook(self)
            if self.cache:
                for split in self._splits.values():
                    split.cache()
        except BaseException:
            self._splits = {}  # not set up: a later setup() starts again
            raise

    def _open(self) -> BaseAtomsData:
        if self._dataset is None:
            if isinstance(self.datapath, BaseAtomsData):
                self._dataset = self.datapath
                if self.load_properties is not None:
                    self._dataset.load_properties = self.load_properties
            else:
                self._dataset = ASEAtomsData(self.datapath, load_properties=self.load_properties)
        return self._dataset

    def split_indices(self) -> dict[str, np.ndarray]:
        """``train``/``val``/``test`` indices: the split file's, or a new split (written to
        the split file when one is set), without setting the module up."""
        self._open()
        return self._load_split() if self._split_exists() else self._make_split()

    def _split_exists(self) -> bool:
        return self.split_file is not None and os.path.exists(self.split_file)

    def _load_split(self) -> dict[str, np.ndarray]:
        n = len(self.dataset)
        with np.load(self.split_file) as f:
            missing = [f"{s}_idx" for s in _SPLITS if f"{s}_idx" not in f.files]
            if missing:
                raise KeyError(f"split file '{self.split_file}' lacks {', '.join(missing)}")
            idx = {s: np.asarray(f[f"{s}_idx"], dtype=np.int64).reshape(-1) for s in _SPLITS}
        for s, ids in idx.items():
            if len(ids) and (ids.min() < 0 or ids.max() >= n):
                raise IndexError(
                    f"split file '{self.split_file}' has {s} index {int(ids.max())} but the "
                    f"data set '{self.dataset.name}' has only {n} structures; was the split "
                    "made for another data set?")
        return idx

    def _make_split(self) -> dict[str, np.ndarray]:
        n = len(self.dataset)
        n_train = _count(self.num_train, n, "num_train")
        n_val = _count(self.num_val, n, "num_val")
        n_test = _count(self.num_test, n, "num_test")
        if n_test is None:
            n_test = n - n_train - n_val
        if n_train + n_val + n_test > n or n_test < 0:
            raise ValueError(f"split of {n_train} train + {n_val} val + {n_test} test "
                             f"structures exceeds the data set's {n} structures")
        perm = np.random.default_rng(self.seed).permutation(n).astype(np.int64)
        idx = {"train": perm[:n_train], "val": perm[n_train:n_train + n_val],
               "test": perm[n_train + n_val:n_train + n_val + n_test]}
        if self.split_file is not None:
            # Write to a temporary file and rename, so that an interrupt never
            # leaves a truncated split file that a later run would reuse.
            os.makedirs(os.path.dirname(os.path.abspath(self.split_file)), exist_ok=True)
            tmp = f"{self.split_file}.tmp{os.getpid()}"
            with open(tmp, "wb") as f:
                np.savez(f, **{f"{s}_idx": idx[s] for s in _SPLITS})
            os.replace(tmp, self.split_file)
        return idx

    # --- access ------------------------------------------------------------
    def _get(self, mapping: dict, key: str):
        if key not in mapping:
            raise RuntimeError("AtomsDataModule is not set up: call setup() first")
        return mapping[key]

    @property
    def dataset(self) -> BaseAtomsData:
        """The whole data set, without transforms."""
        if self._dataset is None:
            raise RuntimeError("AtomsDataModule is not set up: call setup() first")
        return self._dataset

    @property
    def train_idx(self) -> np.ndarray:
        """(n_train,) int64 indices into :attr:`dataset`."""
        return self._get(self._idx, "train")

    @property
    def val_idx(self) -> np.ndarray:
        return self._get(self._idx, "val")

    @property
    def test_idx(self) -> np.ndarray:
        return self._get(self._idx, "test")

    @property
    def train_dataset(self) -> SplitDataset:
        return self._get(self._splits, "train")

    @property
    def val_dataset(self) -> SplitDataset:
        return self._get(self._splits, "val")

    @property
    def test_dataset(self) -> SplitDataset:
        return self._get(self._splits, "test")

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(self._get(self._splits, split), batch_size=batch_size,
                          shuffle=shuffle, collate_fn=collate_atoms,
                          num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches of the training split (collated with ``collate_atoms``)."""
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Batches of the validation split, in order."""
        return self._loader("val", self.val_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Batches of the test split, in order."""
        return self._loader("test", self.test_batch_size, shuffle=False)
