"""Entry point of the ``mlcalc`` command.

The group imports nothing heavy: each subcommand lives in its own module and
is imported only when it is run, so ``mlcalc --help`` and ``mlcalc --version``
answer instantly without importing torch.
"""

from __future__ import annotations

import importlib

import click

from mlcalc import __version__

# name -> (module, attribute, one-line help shown by --help without importing)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "fit": ("mlcalc.cli.fit", "fit", "Train a potential from a YAML recipe."),
    "learn": ("mlcalc.cli.learn", "learn",
              "Learning loop: committee, MD exploration, label uncertain frames, retrain."),
    "data": ("mlcalc.cli.data", "data", "Make, convert and inspect data sets."),
    "info": ("mlcalc.cli.info", "info", "Describe a model file: architecture, elements, units."),
    "md": ("mlcalc.cli.md", "md", "Molecular dynamics with ASE's integrators (NVE, NVT, NPT)."),
    "relax": ("mlcalc.cli.relax", "relax", "Relax positions (and the cell) with ASE optimizers."),
    "phonons": ("mlcalc.cli.phonons", "phonons",
                "Phonons with phonopy: bands, DOS, thermal properties."),
    "eval": ("mlcalc.cli.evaluate", "evaluate", "Errors of a model on a labelled data set."),
    "check": ("mlcalc.cli.check", "check", "Physics audit of a model on a structure."),
    "bench": ("mlcalc.cli.bench", "bench", "Benchmark MD and training throughput."),
    "import-schnetpack": ("mlcalc.cli.import_schnetpack", "import_schnetpack",
                          "Convert a SchNetPack 2 model file (best_model) to model.pt."),
    "kernels": ("mlcalc.cli.kernels", "kernels",
                "Build the fused CPU kernels ahead of time (e.g. on a login node)."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUBCOMMANDS:
            return None
        module, attr, _ = SUBCOMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SUBCOMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlcalc")
def cli() -> None:
    """mlcalc: fit machine-learned interatomic potentials and use them from ASE."""
