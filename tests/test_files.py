"""written_whole: a file is absent, as it was, or complete."""

from __future__ import annotations

import pytest

from mlcalc.files import written_whole


def test_the_file_appears_whole_and_a_failure_leaves_the_old_one(tmp_path):
    path = tmp_path / "table.csv"
    with written_whole(path) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".csv" and tmp != path
        tmp.write_text("a,b\n")
    assert path.read_text() == "a,b\n"
    with pytest.raises(KeyboardInterrupt), written_whole(path) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert path.read_text() == "a,b\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]  # no leftovers
