"""Options and error handling shared by the simulation commands.

Every command takes ``-m/--model`` (a model file or a bundled name),
``--device`` and ``--dtype``, reads any structure ``ase.io`` reads, and turns
expected errors into one line on stderr with a non-zero exit code.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

model_option = click.option(
    "-m", "--model", "model", required=True,
    help="Model file (model.pt) or the name of a bundled model (e.g. cu-emt).")
optional_model_option = click.option(
    "-m", "--model", "model", default=None,
    help="Model file (model.pt) or bundled model name; or give it as the first argument.")
device_option = click.option(
    "--device", default="auto", show_default=True,
    help="auto (CUDA when present), cpu or cuda.")
dtype_option = click.option(
    "--dtype", type=click.Choice(["float32", "float64"]), default=None,
    help="Network precision (default: the model file's).")
threads_option = click.option(
    "--threads", type=int, default=None,
    help="Torch threads (default: OMP_NUM_THREADS, else half the CPUs).")


def model_and_argument(args: tuple[str, ...], model: str | None, name: str) -> tuple[str, str]:
    """``MODEL NAME`` as two arguments, or ``-m MODEL NAME``: the same everywhere.

    Raises:
        click.UsageError: not exactly one model and one ``name``.
    """
    if model is not None and len(args) == 1:
        return model, args[0]
    if model is None and len(args) == 2:
        return args[0], args[1]
    raise click.UsageError(f"give the model and {name}: 'MODEL {name}' or '-m MODEL {name}'")


def model_options(func: Callable) -> Callable:
    """Add --model, --device, --dtype and --threads to a command."""
    for option in (threads_option, dtype_option, device_option, model_option):
        func = option(func)
    return func


def one_line_errors(func: Callable) -> Callable:
    """Turn mlcalc's errors (and unreadable files) into ``Error: <one line>``, exit 1,
    and its warnings into ``Warning: <one line>`` on stderr."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import warnings

        from mlcalc.exceptions import MlcalcError, MlcalcWarning

        default_show = warnings.showwarning

        def show(message, category, *rest, **kw) -> None:
            if issubclass(category, MlcalcWarning):
                click.echo(f"Warning: {str(message).strip().splitlines()[0]}", err=True)
            else:
                default_show(message, category, *rest, **kw)

        warnings.showwarning = show
        try:
            return func(*args, **kwargs)
        except (MlcalcError, FileNotFoundError, ValueError) as err:
            message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise click.ClickException(message) from None
        finally:
            warnings.showwarning = default_show

    return wrapper


def make_calculator(model: str, device: str, dtype: str | None, threads: int | None, **kwargs):
    """MLCalculator from the common options."""
    from mlcalc.calculator import MLCalculator

    return MLCalculator(model, device=device, dtype=dtype, threads=threads, **kwargs)


def read_structure(path: str, index: str | int = -1):
    """One structure from any file ``ase.io`` reads, with a clear error otherwise."""
    from pathlib import Path

    from mlcalc.data.convert import read_frames
    from mlcalc.exceptions import InvalidStructureError

    if not Path(path).is_file():
        raise FileNotFoundError(f"structure file not found: {path}")
    atoms = read_frames(path, index)[-1]
    if len(atoms) == 0:
        raise InvalidStructureError(f"{path}: empty structure: it has no atoms")
    return atoms
