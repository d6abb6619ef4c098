"""``mlcalc fit`` with Lightning's DDP strategy, really run: two CPU processes (gloo).

The fit runs in a subprocess (Lightning's launcher starts the second process
by running the same command again). A callback records the structure indices
each process trains on, per epoch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mlcalc import MLCalculator, load_model
from tests.train.test_fit import write_recipe

DRIVER = textwrap.dedent('''
    """Run mlcalc's fit with a callback that writes the indices each process saw."""
    import json
    import sys
    from pathlib import Path

    import pytorch_lightning as pl

    from mlcalc.train.fit import fit
    from mlcalc.train.recipe import load_recipe


    class Seen(pl.Callback):
        def on_train_epoch_start(self, trainer, module):
            self.idx = []

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.idx += batch["idx"].tolist()

        def on_train_epoch_end(self, trainer, module):
            name = f"seen_rank{trainer.global_rank}_epoch{trainer.current_epoch}.json"
            Path(sys.argv[2], name).write_text(json.dumps(self.idx))


    recipe = load_recipe(sys.argv[1], sys.argv[4:])
    result = fit(recipe, resume=sys.argv[3] == "resume", progress=False, callbacks=[Seen()])
    if result.is_global_zero:
        print("epochs", result.epochs)
''')


def run_driver(tmp_path, recipe: str, mode: str, *overrides: str):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(driver), recipe, str(tmp_path), mode, *overrides],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)


@pytest.mark.slow
def test_ddp_two_processes_train_disjoint_shares_and_resume(tmp_path, emt_db):
    recipe = write_recipe(tmp_path, emt_db, train__accelerator="cpu", train__devices=2,
                          train__strategy="ddp", train__threads=1)
    first = run_driver(tmp_path, recipe, "new")
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("epochs 2") == 1  # rank 0 reports, once
    run_dir = tmp_path / "run"
    split = np.load(run_dir / "split.npz")
    for epoch in (0, 1):
        seen = [json.loads((tmp_path / f"seen_rank{r}_epoch{epoch}.json").read_text())
                for r in (0, 1)]
        assert seen[0] and seen[1]
        assert not set(seen[0]) & set(seen[1])  # disjoint shares
        assert sorted(seen[0] + seen[1]) == sorted(split["train_idx"].tolist())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == {"energy_per_atom", "forces"}
    model = load_model(run_dir / "model.pt")
    assert model.metadata["n_train"] == 18
    atoms = __import__("ase.build", fromlist=["bulk"]).bulk("Cu", "fcc", a=3.6, cubic=True)
    assert np.isfinite(MLCalculator(model).get_potential_energy(atoms))

    resumed = run_driver(tmp_path, recipe, "resume", "train.max_epochs=3")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "epochs 3" in resumed.stdout
    assert (tmp_path / "seen_rank1_epoch2.json").exists()  # both processes ran epoch 3
    assert load_model(run_dir / "model.pt").metadata["epochs"] == 3
