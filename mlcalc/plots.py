"""Plots a person would rather look at than read: learning curves, parity plots.

Matplotlib with the non-interactive Agg backend (no display needed).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curve(metrics_csv: Sequence[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Training and validation loss per epoch (log scale) from Lightning's CSV logs.

    Args:
        metrics_csv: the CSV files of successive sessions (a resumed run has
            several); later files win for an epoch logged twice.
        out: PNG file to write.
    """
    plt = _pyplot()
    series: dict[str, dict[int, float]] = {"train_loss": {}, "val_loss": {}}
    for path in metrics_csv:
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                for key, values in series.items():
                    if row.get(key) not in (None, "") and row.get("epoch") not in (None, ""):
                        values[int(float(row["epoch"]))] = float(row[key])
    fig, ax = plt.subplots(figsize=(5, 3.5), constrained_layout=True)
    for key, values in series.items():
        if values:
            epochs = sorted(values)
            ax.plot(epochs, [values[e] for e in epochs], marker="o", ms=3,
                    label=key.replace("_", " "))
    ax.set_yscale("log")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (offset-free targets)")
    ax.legend()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return Path(out)


def parity_plot(reference: np.ndarray, predicted: np.ndarray, name: str, unit: str,
                out: str | os.PathLike) -> Path:
    """Predicted vs reference values with the identity line, MAE and RMSE in the title."""
    plt = _pyplot()
    err = predicted - reference
    mae, rmse = float(np.mean(np.abs(err))), float(np.sqrt(np.mean(err**2)))
    fig, ax = plt.subplots(figsize=(4, 4), constrained_layout=True)
    ax.scatter(reference, predicted, s=4, alpha=0.5)
    lo = float(min(reference.min(), predicted.min()))
    hi = float(max(reference.max(), predicted.max()))
    ax.plot([lo, hi], [lo, hi], color="k", lw=0.8)
    ax.set_xlabel(f"reference {name} ({unit})")
    ax.set_ylabel(f"predicted {name} ({unit})")
    ax.set_title(f"{name}: MAE {mae:.3g}, RMSE {rmse:.3g} {unit}", fontsize=9)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return Path(out)


def learning_loop_plot(rows: Sequence[dict], out: str | os.PathLike) -> Path:
    """The learning loop per iteration: force spread (max, mean) and the held-out force error
    (left, eV/Å), data-set size (right)."""
    plt = _pyplot()
    it = [r["iteration"] for r in rows]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(8, 3.2), constrained_layout=True)
    ax.plot(it, [r["max_force_std"] for r in rows], marker="o", label="max force spread")
    ax.plot(it, [r["mean_force_std"] for r in rows], marker="o", label="mean force spread")
    held = [(i, r["heldout_force_mae"]) for i, r in zip(it, rows, strict=True)
            if r["heldout_force_mae"] is not None]
    if held:
        ax.plot(*zip(*held, strict=True), marker="s", label="force MAE on selected frames")
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("eV/Å")
    ax.legend(fontsize=8)
    ax2.bar(it, [r["data_size"] for r in rows], label="structures trained on")
    ax2.bar(it, [r["labels_added"] for r in rows], bottom=[r["data_size"] for r in rows],
            label="labels added")
    ax2.set_xlabel("iteration")
    ax2.legend(fontsize=8)
    for a in (ax, ax2):
        a.xaxis.get_major_locator().set_params(integer=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)
