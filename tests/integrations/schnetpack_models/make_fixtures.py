"""Make the SchNetPack 2.2.0 fixture models and SchNetPack's own reference numbers.

Run with a SchNetPack environment (not mlcalc's; the suite never imports schnetpack)::

    ../shared/tools/schnetpack-venv.sh /tmp/spk
    /tmp/spk/bin/python tests/integrations/schnetpack_models/make_fixtures.py

Writes, next to this file, ``<name>.best_model`` (``torch.save`` of the
whole model, as SchNetPack's training writes ``best_model``) and
``reference.json``: five structures (exact positions) and the energies,
forces and stress of each model on them
(periodic bulk, triclinic alloy, slab, molecule, a Ni cell) computed by
SchNetPack itself in float64 (``SpkCalculator`` with ASE's neighbor list).

The models: a PaiNN trained for 300 Adam steps on EMT energies and forces of
Cu/Ni cells (Gaussian basis, cosine cutoff, mean + atomref offsets, stress),
a SchNet with a Bessel basis, a mollifier cutoff, a 3-layer head and mean
offsets (stress), a PaiNN with shared interactions and filters (no stress), and
``painn_lightning.ckpt``: the Lightning checkpoint of two epochs of SchNetPack's
own training (AtomisticTask on an AtomsDataModule), its reference numbers from
the model SchNetPack loads back from that checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path

import numpy as np
import schnetpack as spk
import schnetpack.transform as trn
import torch
from ase import Atoms
from ase.build import bulk, fcc111
from ase.calculators.emt import EMT

HERE = Path(__file__).parent
CUTOFF = 4.0


def structures() -> dict[str, Atoms]:
    tri = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)
    tri.set_cell(tri.cell.array @ [[1, 0.05, 0], [0, 1, 0.04], [0.03, 0, 1]], scale_atoms=True)
    tri.numbers[::3] = 28
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=5.0)
    slab.pbc = (True, True, False)
    molecule = Atoms("Cu4Ni", positions=[[0, 0, 0], [2.4, 0, 0], [0, 2.5, 0], [1.2, 1.2, 2.0],
                                         [1.3, -1.0, 1.1]])
    out = {"bulk": bulk("Cu", "fcc", a=3.6, cubic=True), "triclinic": tri, "slab": slab,
           "molecule": molecule, "nickel": bulk("Ni", "fcc", a=3.5) * (2, 1, 1)}
    for k, atoms in enumerate(out.values()):
        atoms.rattle(0.05, seed=k)
    return out


def potential(representation, n_layers=2, n_hidden=None, stress=True, offsets=None):
    pairwise = spk.atomistic.PairwiseDistances()
    inputs = [spk.atomistic.Strain(), pairwise] if stress else [pairwise]
    head = spk.atomistic.Atomwise(n_in=representation.n_atom_basis, n_layers=n_layers,
                                  n_hidden=n_hidden, output_key="energy")
    forces = spk.atomistic.Forces(calc_stress=stress)
    post = [trn.CastTo64()] + ([offsets] if offsets is not None else [])
    return spk.model.NeuralNetworkPotential(representation=representation, input_modules=inputs,
                                            output_modules=[head, forces], postprocessors=post)


def train(model, steps: int = 300) -> None:
    """A few hundred Adam steps on EMT energies and forces: weights that are not random."""
    rng = np.random.default_rng(0)
    data = []
    for k in range(24):
        atoms = bulk("Cu", "fcc", a=3.6 * (1 + rng.uniform(-0.03, 0.03)), cubic=True)
        atoms.numbers[rng.random(4) < 0.3] = 28
        atoms.rattle(0.08, seed=k)
        atoms.calc = EMT()
        data.append((atoms, atoms.get_potential_energy(), atoms.get_forces()))
    converter = spk.interfaces.AtomsConverter(neighbor_list=trn.ASENeighborList(cutoff=CUTOFF),
                                              dtype=torch.float32)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.do_postprocessing = False
    for step in range(steps):
        atoms, energy, forces = data[step % len(data)]
        out = model(converter(atoms))
        loss = (out["energy"] - energy) ** 2 + ((out["forces"] - torch.tensor(
            forces, dtype=torch.float32)) ** 2).mean()
        optimizer.zero_grad()
        loss.sum().backward()
        optimizer.step()
    model.do_postprocessing = True


def lightning_checkpoint(workdir: Path) -> tuple[Path, Path]:
    """Two epochs of SchNetPack's own training (AtomisticTask, AtomsDataModule, Lightning).

    Returns the checkpoint Lightning wrote (copied next to this file) and the
    model SchNetPack itself loads back from it, saved as a best_model for the
    reference numbers.
    """
    import shutil

    import pytorch_lightning as pl
    import torchmetrics

    pl.seed_everything(0)
    frames, labels = [], []
    for k in range(20):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.numbers[k % 4] = 28
        atoms.rattle(0.05, seed=100 + k)
        atoms.calc = EMT()
        frames.append(atoms)
        labels.append({"energy": np.array([atoms.get_potential_energy()]),
                       "forces": atoms.get_forces()})
    data = spk.data.ASEAtomsData.create(str(workdir / "data.db"), distance_unit="Ang",
                                        property_unit_dict={"energy": "eV", "forces": "eV/Ang"})
    data.add_systems(labels, frames)
    module = spk.data.AtomsDataModule(
        str(workdir / "data.db"), batch_size=4, num_train=12, num_val=4, num_workers=0,
        split_file=str(workdir / "split.npz"),
        transforms=[trn.ASENeighborList(cutoff=CUTOFF),
                    trn.RemoveOffsets("energy", remove_mean=True), trn.CastTo32()])
    model = potential(spk.representation.PaiNN(
        n_atom_basis=8, n_interactions=2, radial_basis=spk.nn.GaussianRBF(n_rbf=6, cutoff=CUTOFF),
        cutoff_fn=spk.nn.CosineCutoff(CUTOFF)), stress=False,
        offsets=trn.AddOffsets("energy", add_mean=True))
    outputs = [spk.task.ModelOutput(name="energy", loss_fn=torch.nn.MSELoss(), loss_weight=0.1,
                                    metrics={"mae": torchmetrics.MeanAbsoluteError()}),
               spk.task.ModelOutput(name="forces", loss_fn=torch.nn.MSELoss(), loss_weight=0.9,
                                    metrics={})]
    task = spk.task.AtomisticTask(model=model, outputs=outputs, optimizer_cls=torch.optim.AdamW,
                                  optimizer_args={"lr": 1e-3})
    checkpoints = pl.callbacks.ModelCheckpoint(dirpath=str(workdir / "ckpt"), save_top_k=1,
                                               monitor="val_loss")
    trainer = pl.Trainer(max_epochs=2, callbacks=[checkpoints], default_root_dir=str(workdir),
                         enable_progress_bar=False, logger=False)
    trainer.fit(task, datamodule=module)
    ckpt = HERE / "painn_lightning.ckpt"
    shutil.copy(checkpoints.best_model_path, ckpt)
    loaded = spk.task.AtomisticTask.load_from_checkpoint(str(ckpt), weights_only=False)
    best = workdir / "from_ckpt.best_model"
    torch.save(loaded.model, best)
    return ckpt, best


def reference(path: Path, stress: bool) -> dict[str, dict[str, list]]:
    out = {}
    for name, atoms in structures().items():
        atoms = atoms.copy()
        periodic = bool(atoms.pbc.all())
        atoms.calc = spk.interfaces.SpkCalculator(
            str(path), neighbor_list=trn.ASENeighborList(cutoff=CUTOFF), energy_unit="eV",
            position_unit="Ang", stress_key="stress" if stress and periodic else None,
            dtype=torch.float64)
        entry = {"energy": float(atoms.get_potential_energy()),
                 "forces": atoms.get_forces().tolist()}
        if stress and periodic:
            entry["stress"] = atoms.get_stress(voigt=True).tolist()
        out[name] = entry
    return out


def main() -> None:
    torch.manual_seed(0)
    HERE.mkdir(exist_ok=True)
    atomrefs = torch.zeros(100)
    atomrefs[28], atomrefs[29] = -0.25, -0.15
    models = {
        "painn_trained": (potential(
            spk.representation.PaiNN(
                n_atom_basis=16, n_interactions=2,
                radial_basis=spk.nn.GaussianRBF(n_rbf=12, cutoff=CUTOFF),
                cutoff_fn=spk.nn.CosineCutoff(CUTOFF)),
            offsets=trn.AddOffsets("energy", add_mean=True, add_atomrefs=True,
                                   atomrefs=atomrefs, property_mean=torch.tensor(0.05))), True),
        "schnet_bessel": (potential(
            spk.representation.SchNet(
                n_atom_basis=16, n_interactions=2, n_filters=12,
                radial_basis=spk.nn.BesselRBF(n_rbf=10, cutoff=CUTOFF),
                cutoff_fn=spk.nn.MollifierCutoff(CUTOFF)),
            n_layers=3, n_hidden=8,
            offsets=trn.AddOffsets("energy", add_mean=True,
                                   property_mean=torch.tensor(-0.3))), True),
        "painn_shared": (potential(
            spk.representation.PaiNN(
                n_atom_basis=12, n_interactions=3, shared_interactions=True,
                shared_filters=True, radial_basis=spk.nn.GaussianRBF(n_rbf=8, cutoff=CUTOFF),
                cutoff_fn=spk.nn.CosineCutoff(CUTOFF)), stress=False), False),
    }
    train(models["painn_trained"][0])
    numbers, files = {}, {}
    for name, (model, stress) in models.items():
        path = HERE / f"{name}.best_model"
        torch.save(model, path)
        numbers[name], files[name] = reference(path, stress), path.name
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):  # spk's split lock
        ckpt, best = lightning_checkpoint(Path(tmp))
        numbers["painn_lightning"], files["painn_lightning"] = reference(best, False), ckpt.name
    frames = {name: {"numbers": atoms.numbers.tolist(), "positions": atoms.positions.tolist(),
                     "cell": atoms.cell.array.tolist(), "pbc": atoms.pbc.tolist()}
              for name, atoms in structures().items()}
    content = {"structures": frames, "files": files, "models": numbers}
    (HERE / "reference.json").write_text(json.dumps(content, indent=1) + "\n")
    print(f"wrote {len(files)} models and reference.json to {HERE}")


if __name__ == "__main__":
    main()
