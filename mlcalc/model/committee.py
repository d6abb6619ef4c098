"""A committee folder: several model files of one recipe, loaded together as an ensemble.

``mlcalc fit recipe.yaml --committee N`` writes ``<dir>/member_0/model.pt`` ...
``<dir>/member_<N-1>/model.pt`` and ``<dir>/committee.json`` naming them;
``MLCalculator("<dir>")`` (``-m <dir>`` on the command line) loads the members
as one :class:`~mlcalc.model.ensemble.EnsemblePotential`: the mean prediction
and the spread (``energy_std``, ``forces_std``, ``stress_std``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mlcalc.exceptions import ModelFileError
from mlcalc.files import written_whole

COMMITTEE_FILE = "committee.json"


def committee_members(path: str | os.PathLike) -> list[Path] | None:
    """The model files of the committee folder ``path``; None if it is not one.

    Raises:
        ModelFileError: the folder's committee.json is unreadable or names a
            missing model file.
    """
    folder = Path(path)
    index = folder / COMMITTEE_FILE
    if not (folder.is_dir() and index.is_file()):
        return None
    try:
        members = [folder / m for m in json.loads(index.read_text())["members"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"{index} is not a committee index ({exc})") from None
    missing = [str(p) for p in members if not p.is_file()]
    if missing:
        raise ModelFileError(f"committee {folder} lacks {', '.join(missing)}")
    return members


def write_committee(folder: str | os.PathLike, members: list[str | os.PathLike],
                    seeds: list[int]) -> Path:
    """Write ``committee.json`` (member paths relative to ``folder``), whole or not at all."""
    folder = Path(folder)
    index = folder / COMMITTEE_FILE
    names = [str(Path(m).resolve().relative_to(folder.resolve())) for m in members]
    with written_whole(index) as tmp:
        tmp.write_text(json.dumps({"members": names, "seeds": seeds}, indent=2) + "\n")
    return index
