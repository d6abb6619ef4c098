"""Training speed: mlcalc (fused and eager path) vs SchNetPack 2 on the same architecture and data.

Each architecture is built once in SchNetPack (cosine cutoff, Gaussian radial
basis, an ``Atomwise`` energy head and ``Forces``) and imported into mlcalc with
:func:`mlcalc.integrations.schnetpack.load_schnetpack`, so both sides train the
same network from the same weights. The data are EMT-labelled 32-atom Cu cells
(:func:`mlcalc.bench.make_training_data`). Batches are built before timing on
both sides (mlcalc's data module with its cached neighbor lists; SchNetPack's
``AtomsConverter`` with its matscipy neighbor list), so only the optimizer step
is timed: ``training_step`` of each library's ``AtomisticTask`` (forward, forces
by autograd with a graph for the force loss, energy + 10 x forces MSE loss,
metrics), ``backward`` and an AdamW step. The three candidates alternate
repeat by repeat in one process; the table gives median structures/s.

Needs SchNetPack and mlcalc in one environment::

    ../shared/tools/schnetpack-venv.sh /tmp/spk
    /tmp/spk/bin/pip install --no-deps -e . && /tmp/spk/bin/pip install click ninja
    /tmp/spk/bin/python examples/benchmark_schnetpack_training.py --threads 1 2
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import ase.db
import schnetpack as spk
import schnetpack.transform as trn
import torch
import torchmetrics
from ase import Atoms

from mlcalc import kernels
from mlcalc import properties as P
from mlcalc.bench import machine_line, make_training_data
from mlcalc.data import AtomsDataModule
from mlcalc.integrations.schnetpack import load_schnetpack
from mlcalc.model import model_neighbor_list
from mlcalc.train.task import AtomisticTask, ModelOutput

# name: (representation, n_atom_basis, n_interactions, n_rbf, cutoff in Å)
ARCHITECTURES = {
    "PaiNN 128x3": ("painn", 128, 3, 20, 5.0),
    "SchNet 128x3": ("schnet", 128, 3, 20, 5.0),
    "quick-start PaiNN 32x2": ("painn", 32, 2, 16, 4.5),
}
FORCE_WEIGHT = 10.0


def schnetpack_model(kind: str, features: int, interactions: int, n_rbf: int,
                     cutoff: float) -> spk.model.NeuralNetworkPotential:
    torch.manual_seed(0)
    rep_cls = {"painn": spk.representation.PaiNN, "schnet": spk.representation.SchNet}[kind]
    rep = rep_cls(n_atom_basis=features, n_interactions=interactions,
                  radial_basis=spk.nn.GaussianRBF(n_rbf=n_rbf, cutoff=cutoff),
                  cutoff_fn=spk.nn.CosineCutoff(cutoff))
    return spk.model.NeuralNetworkPotential(
        representation=rep, input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[spk.atomistic.Atomwise(n_in=features, output_key="energy"),
                        spk.atomistic.Forces()])


def read_frames(db_path: Path) -> list[tuple[Atoms, float, torch.Tensor]]:
    with ase.db.connect(db_path) as db:
        return [(Atoms(numbers=r.numbers, positions=r.positions, cell=r.cell, pbc=r.pbc),
                 float(r.data["energy"]), torch.as_tensor(r.data["forces"]))
                for r in db.select()]


def schnetpack_batches(frames, batch_size: int, cutoff: float) -> list[dict]:
    converter = spk.interfaces.AtomsConverter(
        neighbor_list=trn.MatScipyNeighborList(cutoff=cutoff), dtype=torch.float32)
    batches = []
    for start in range(0, len(frames), batch_size):
        chunk = frames[start:start + batch_size]
        batch = converter([a for a, _, _ in chunk])
        batch["energy"] = torch.tensor([e for _, e, _ in chunk], dtype=torch.float32)
        batch["forces"] = torch.cat([f for _, _, f in chunk]).to(torch.float32)
        batches.append(batch)
    return batches


def schnetpack_step(model, batches) -> Callable[[], int]:
    mse = torch.nn.MSELoss
    task = spk.task.AtomisticTask(model, outputs=[
        spk.task.ModelOutput("energy", loss_fn=mse(), loss_weight=1.0,
                             metrics={"MAE": torchmetrics.MeanAbsoluteError()}),
        spk.task.ModelOutput("forces", loss_fn=mse(), loss_weight=FORCE_WEIGHT,
                             metrics={"MAE": torchmetrics.MeanAbsoluteError()})],
        optimizer_cls=torch.optim.AdamW, optimizer_args={"lr": 1e-4})
    return _stepper(task, batches, lambda b: len(b["_n_atoms"]))


def mlcalc_step(model, db_path: Path, n_structures: int, batch_size: int) -> tuple:
    dm = AtomsDataModule(db_path, batch_size=batch_size, num_train=n_structures, num_val=0,
                         num_test=0, load_properties=[P.energy, P.forces],
                         transforms=[model_neighbor_list(model, "cpu")])
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    task = AtomisticTask(model, [ModelOutput(P.energy, per_atom=True),
                                 ModelOutput(P.forces, loss_weight=FORCE_WEIGHT)],
                         lr_scheduler="none")
    return _stepper(task, batches, lambda b: len(b[P.n_atoms]))


def _stepper(task, batches, count) -> Callable[[], int]:
    optimizer = torch.optim.AdamW(task.parameters(), lr=1e-4)
    task.train()
    state = {"i": 0}

    def step() -> int:
        batch = dict(batches[state["i"] % len(batches)])
        state["i"] += 1
        optimizer.zero_grad(set_to_none=True)
        task.training_step(batch, 0).backward()
        optimizer.step()
        return count(batch)

    return step


def structures_per_second(step: Callable[[], int], steps: int, eager: bool) -> float:
    ctx = kernels.disabled() if eager else contextlib.nullcontext()
    with ctx:
        done, start = 0, time.perf_counter()
        for _ in range(steps):
            done += step()
        return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--models", nargs="+", default=list(ARCHITECTURES),
                        choices=list(ARCHITECTURES))
    parser.add_argument("--structures", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*self.log.*")  # no Trainer to log to
    warnings.filterwarnings("ignore", category=UserWarning, module="schnetpack")

    with tempfile.TemporaryDirectory() as tmp:
        db_path = make_training_data(Path(tmp) / "emt.db", args.structures)
        frames = read_frames(db_path)
        print(f"# machine: {machine_line('cpu', args.threads)}")
        print(f"# {args.structures} EMT Cu cells of 32 atoms, batches of {args.batch_size}, "
              f"float32, energy + {FORCE_WEIGHT:g} x forces MSE, AdamW; median of "
              f"{args.repeats} repeats of {args.steps} steps after 2 warm-up steps; "
              f"torch {torch.__version__}, schnetpack {spk.__version__}")
        print("| model | threads | SchNetPack 2.2.0 | mlcalc eager | mlcalc fused "
              "| fused / SchNetPack | fused / eager |")
        print("|---|---|---|---|---|---|---|")
        for name in args.models:
            kind, features, interactions, n_rbf, cutoff = ARCHITECTURES[name]
            for threads in args.threads:
                torch.set_num_threads(threads)
                spk_model = schnetpack_model(kind, features, interactions, n_rbf, cutoff)
                best = Path(tmp) / f"{kind}_{features}_best_model"
                torch.save(spk_model, best)
                candidates = {
                    "spk": (schnetpack_step(spk_model, schnetpack_batches(
                        frames, args.batch_size, cutoff)), False),
                    "eager": (mlcalc_step(load_schnetpack(best, elements=[29]), db_path,
                                          args.structures, args.batch_size), True),
                    "fused": (mlcalc_step(load_schnetpack(best, elements=[29]), db_path,
                                          args.structures, args.batch_size), False),
                }
                rates: dict[str, list[float]] = {k: [] for k in candidates}
                for step, eager in candidates.values():
                    structures_per_second(step, 2, eager)  # warm-up
                for _ in range(args.repeats):
                    for key, (step, eager) in candidates.items():
                        rates[key].append(structures_per_second(step, args.steps, eager))
                med = {k: statistics.median(v) for k, v in rates.items()}
                print(f"| {name} | {threads} | {med['spk']:.1f} | {med['eager']:.1f} | "
                      f"{med['fused']:.1f} | {med['fused'] / med['spk']:.2f}x | "
                      f"{med['fused'] / med['eager']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
