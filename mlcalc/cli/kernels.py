"""``mlcalc kernels build``: compile the fused CPU kernels ahead of time.

Useful on an HPC login node (compute nodes may lack a compiler or should not
spend their time on it) and in container builds. The build is cached per
environment (see :mod:`mlcalc.kernels.build`); a second call only reports it.
"""

from __future__ import annotations

import click

from mlcalc.cli.common import one_line_errors


@click.group("kernels")
def kernels() -> None:
    """The compiled message kernels (CPU)."""


@kernels.command("build")
@click.option("-v", "--verbose", is_flag=True, help="Show the compiler's output.")
@one_line_errors
def build(verbose: bool) -> None:
    """Compile the kernels for this environment (or find the cached build)."""
    from mlcalc import kernels as K
    from mlcalc.kernels.build import build_dir

    try:
        K.load(verbose=verbose)
    except K.KernelBuildError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"mlcalc kernels ready in {build_dir()}")
