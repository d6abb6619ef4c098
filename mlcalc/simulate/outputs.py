"""Output safety for simulations: nothing already written is lost.

- :func:`refuse_existing`: a run never overwrites an earlier run's files unless
  asked (``overwrite=True`` / ``--overwrite``).
- :func:`output_lock`: one run at a time per output prefix. The lock is an
  ``flock`` on a hidden file beside the outputs (``.<prefix>.lock``); the
  operating system releases it when the process ends, however it ends
  (Ctrl-C, a crash, ``kill -9``), so a stale lock never blocks a later run.
- :func:`keep_damaged`: before a damaged file is repaired for a restart, its
  bytes are kept beside it (``<file>.damaged``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from mlcalc.exceptions import OutputExistsError, OutputLockedError

_held: set[Path] = set()  # locks this process holds (taking one again is a no-op)


def refuse_existing(paths: Iterable[str | os.PathLike], overwrite: bool,
                    hint: str = "--overwrite (overwrite=True) or another output name") -> None:
    """Raise :class:`OutputExistsError` naming the first of ``paths`` that exists.

    Args:
        paths: the files a run would write.
        overwrite: allow it (the check passes).
        hint: how to allow it, for the message.
    """
    if overwrite:
        return
    for path in map(Path, paths):
        if path.exists():
            raise OutputExistsError(f"{path} exists (an earlier run's output); refusing to "
                                    f"overwrite it: use {hint}")


@contextlib.contextmanager
def output_lock(prefix: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of the outputs named by ``prefix`` (a path without extension).

    Re-entrant within a process (the command line takes it before loading the
    model, :func:`~mlcalc.simulate.md.run_md` again around the run).

    Raises:
        OutputLockedError: another process holds it.
    """
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    lock_path = (prefix.parent / f".{prefix.name}.lock").resolve()
    try:
        import fcntl
    except ImportError:  # no flock (Windows): no protection, but no failure either
        yield lock_path
        return
    if lock_path in _held:
        yield lock_path
        return
    with open(lock_path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            owner = fh.read().strip() or "another process"
            raise OutputLockedError(f"another run ({owner}) is writing {prefix}.*; wait for it "
                                    "or choose another output name") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        _held.add(lock_path)
        try:
            yield lock_path
        finally:
            _held.discard(lock_path)
            fcntl.flock(fh, fcntl.LOCK_UN)


def keep_damaged(path: str | os.PathLike) -> Path:
    """Copy ``path`` to ``<path>.damaged`` (numbered if that exists) before it is repaired."""
    path = Path(path)
    target = path.with_name(path.name + ".damaged")
    k = 1
    while target.exists():
        target = path.with_name(f"{path.name}.damaged{k}")
        k += 1
    shutil.copy2(path, target)
    return target
