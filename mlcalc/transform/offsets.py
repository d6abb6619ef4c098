"""Energy offsets: removed from training targets, restored in float64 on output.

Total energies are large (tens of keV for a few hundred atoms) while the
network predicts small per-atom corrections. ``RemoveOffsets`` subtracts a
per-atom mean and/or per-element reference energies (atomrefs) from the
targets before training; ``AddOffsets``, a model postprocessor, adds the very
same numbers back in float64, so a float32 network still returns exact
totals. Both read their numbers from :class:`Offsets`, which the model file
stores as plain data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mlcalc import properties as P
from mlcalc.transform.base import Transform

MAX_Z = 118


@dataclass
class Offsets:
    """Energy offset E_off = n · mean_per_atom + Σ_i atomrefs[Z_i] (eV).

    Attributes:
        mean_per_atom: eV per atom.
        atomrefs: eV per element, keyed by atomic number (empty: none).
    """

    mean_per_atom: float = 0.0
    atomrefs: dict[int, float] = field(default_factory=dict)

    def table(self) -> torch.Tensor:
        """(MAX_Z + 1,) float64 per-element offset including the mean."""
        t = torch.full((MAX_Z + 1,), float(self.mean_per_atom), dtype=torch.float64)
        for z, value in self.atomrefs.items():
            t[int(z)] += float(value)
        return t

    def to_dict(self) -> dict[str, Any]:
        return {"mean_per_atom": float(self.mean_per_atom),
                "atomrefs": {int(z): float(v) for z, v in self.atomrefs.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Offsets:
        d = d or {}
        return cls(float(d.get("mean_per_atom", 0.0)),
                   {int(z): float(v) for z, v in (d.get("atomrefs") or {}).items()})


def fit_offsets(numbers: Sequence[np.ndarray], energies: Sequence[float],
                mean: bool = True, atomrefs: bool = False) -> Offsets:
    """Estimate offsets from structures and their total energies (eV).

    With ``atomrefs`` the per-element energies are the least-squares solution
    of E_k ≈ Σ_Z n_kZ a_Z over the given structures; with ``mean`` alone the
    offset is the mean energy per atom. With both, the mean of what the
    atomrefs leave per atom is added (≈ 0 for a well-posed fit).
    """
    e = np.asarray(energies, dtype=np.float64)
    n = np.array([len(z) for z in numbers], dtype=np.float64)
    if atomrefs:
        elements = np.unique(np.concatenate(list(numbers)))
        counts = np.stack([np.bincount(z, minlength=MAX_Z + 1)[elements] for z in numbers])
        coef, *_ = np.linalg.lstsq(counts.astype(np.float64), e, rcond=None)
        refs = {int(z): float(c) for z, c in zip(elements, coef, strict=True)}
        resid = e - counts @ coef
        return Offsets(float(np.mean(resid / n)) if mean else 0.0, refs)
    return Offsets(float(np.mean(e / n)) if mean else 0.0, {})


def _energy_offset(table: torch.Tensor, numbers: torch.Tensor, idx_m: torch.Tensor | None,
                   n_structures: int) -> tuple[torch.Tensor, torch.Tensor]:
    per_atom = table.to(numbers.device)[numbers]  # (N,) float64
    if idx_m is None:
        return per_atom, per_atom.sum().reshape(1)
    total = torch.zeros(n_structures, dtype=torch.float64, device=numbers.device)
    return per_atom, total.index_add_(0, idx_m, per_atom)


class RemoveOffsets(Transform):
    """Subtract energy offsets from the labels of one structure (training only).

    The offsets are given, or fitted on the training split when the data
    module calls :meth:`datamodule_setup` (least squares for atomrefs, mean
    per atom; reference atomrefs from the data set's metadata are used when
    ``use_dataset_atomrefs`` is True).

    Args:
        remove_mean: subtract a per-atom mean.
        remove_atomrefs: subtract per-element references.
        offsets: fixed offsets (skip fitting).
        use_dataset_atomrefs: take atomrefs from the data set metadata
            instead of fitting them.
        property: the per-structure label to correct (``energy``).
    """

    is_postprocessor = False

    def __init__(self, remove_mean: bool = True, remove_atomrefs: bool = False,
                 offsets: Offsets | None = None, use_dataset_atomrefs: bool = False,
                 property: str = P.energy) -> None:
        super().__init__()
        self.remove_mean = remove_mean
        self.remove_atomrefs = remove_atomrefs
        self.use_dataset_atomrefs = use_dataset_atomrefs
        self.property = property
        self.offsets = offsets
        self._table = offsets.table() if offsets is not None else None

    def datamodule_setup(self, dm: Any) -> None:
        """Fit the offsets on ``dm.train_idx`` of ``dm.dataset`` unless given."""
        if self.offsets is not None:
            return
        ds = dm.dataset
        pairs = ds.numbers_and_labels(dm.train_idx, self.property)
        numbers = [z.numpy() for z, _ in pairs]
        energies = [float(e.reshape(-1)[0]) for _, e in pairs]
        if self.use_dataset_atomrefs:
            refs = ds.atomrefs.get(self.property)
            ref_table = {z: float(v) for z, v in enumerate(refs.tolist()) if v != 0.0}
            resid = [e - sum(ref_table.get(int(z), 0.0) for z in zs)
                     for zs, e in zip(numbers, energies, strict=True)]
            mean = fit_offsets(numbers, resid, mean=self.remove_mean).mean_per_atom
            self.set_offsets(Offsets(mean, ref_table))
        else:
            self.set_offsets(fit_offsets(numbers, energies, self.remove_mean,
                                         self.remove_atomrefs))

    def set_offsets(self, offsets: Offsets) -> None:
        self.offsets = offsets
        self._table = offsets.table()

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self._table is None:
            raise RuntimeError("RemoveOffsets has no offsets: fit it on the training data first")
        out = dict(inputs)
        per_atom, total = _energy_offset(self._table, inputs[P.Z], inputs.get(P.idx_m),
                                         inputs[P.n_atoms].shape[0])
        if self.property in inputs:
            out[self.property] = inputs[self.property].double() - total
        if P.energies in inputs:
            out[P.energies] = inputs[P.energies].double() - per_atom
        return out


class AddOffsets(Transform):
    """Postprocessor adding the offsets back to predicted energies, in float64.

    The offset table is a plain float64 attribute, not a buffer, so casting
    the model to float32 (``model.float()``) leaves it in double precision.

    Args:
        offsets: the offsets (or their ``to_dict()`` form).
        property: per-structure output to correct (``energy``).
        per_atom_property: per-atom output to correct (``energies``).
    """

    is_preprocessor = False
    is_postprocessor = True
    name = "add_offsets"

    def __init__(self, offsets: Offsets | dict | None = None, property: str = P.energy,
                 per_atom_property: str = P.energies) -> None:
        super().__init__()
        if not isinstance(offsets, Offsets):
            offsets = Offsets.from_dict(offsets)
        self.offsets = offsets
        self.property = property
        self.per_atom_property = per_atom_property
        self._table = offsets.table()

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self._table.device != inputs[P.Z].device:
            self._table = self._table.to(inputs[P.Z].device)
        per_atom, total = _energy_offset(self._table, inputs[P.Z], inputs.get(P.idx_m),
                                         inputs[P.n_atoms].shape[0])
        if self.property in inputs:
            inputs[self.property] = inputs[self.property].double() + total
        if self.per_atom_property in inputs:
            inputs[self.per_atom_property] = inputs[self.per_atom_property].double() + per_atom
        return inputs

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "property": self.property,
                "per_atom_property": self.per_atom_property, "offsets": self.offsets.to_dict()}

    def extra_repr(self) -> str:
        return f"mean_per_atom={self.offsets.mean_per_atom:.6g}, atomrefs={self.offsets.atomrefs}"
