"""The model file: contents, safety and clear errors."""

from __future__ import annotations

import pytest
import torch

from mlcalc import load_model, save_model
from mlcalc.exceptions import ModelFileError
from mlcalc.model.io import FORMAT_VERSION, read_model_file
from tests.conftest import tiny_model


@pytest.fixture
def saved(tmp_path):
    model = tiny_model("painn", torch.float32)
    path = save_model(model, tmp_path / "model.pt", metadata={"note": "test", "epochs": 3})
    return model, path


def test_file_holds_plain_data_and_loads_weights_only(saved):
    model, path = saved
    content = torch.load(path, weights_only=True)
    assert content["format"] == "mlcalc-model"
    assert content["format_version"] == FORMAT_VERSION
    config = content["config"]
    assert config["representation"]["name"] == "painn"
    assert config["representation"]["cutoff"] == model.cutoff
    assert config["dtype"] == "float32"
    for duplicate in ("cutoff", "dtype", "elements", "offsets"):  # each number stored once
        assert duplicate not in content
    assert content["neighbor_list"] == {"cpu": "matscipy", "cuda": "torch", "training": None}
    assert content["metadata"] == {"note": "test", "epochs": 3}
    assert set(content["state_dict"]) == set(model.state_dict())
    assert isinstance(content["mlcalc_version"], str)


def test_load_restores_dtype_and_allows_override(saved):
    _, path = saved
    assert load_model(path).dtype == torch.float32
    assert load_model(path, dtype="float64").dtype == torch.float64
    assert load_model(path).metadata["epochs"] == 3


def test_format_1_files_still_load_with_the_same_numbers(tmp_path):
    """Format 1 repeated cutoff, elements, offsets and dtype at the top level and kept
    other neighbor-list keys; such a file still loads, to the same numbers."""
    from ase.build import bulk

    from mlcalc.model import predict

    model = tiny_model("painn", torch.float32)
    content = torch.load(save_model(model, tmp_path / "v2.pt", metadata={"epochs": 7}),
                         weights_only=True)
    config = content["config"]
    content.update(format_version=1, cutoff=config["representation"]["cutoff"],
                   elements=config["elements"], dtype=config["dtype"],
                   offsets={"mean_per_atom": 0.0, "atomrefs": {}},
                   neighbor_list={"cutoff": 4.0, "full_list": True, "cpu": "matscipy",
                                  "cuda": "torch"})
    torch.save(content, tmp_path / "v1.pt")
    assert read_model_file(tmp_path / "v1.pt")["format_version"] == 1
    old, new = load_model(tmp_path / "v1.pt"), load_model(tmp_path / "v2.pt")
    assert old.neighbor_list == new.neighbor_list and old.metadata == {"epochs": 7}
    atoms = bulk("Cu", cubic=True) * (2, 2, 2)
    atoms.rattle(0.05, seed=0)
    a, b = (predict(m, atoms, ["energy", "forces"])[0] for m in (old, new))
    assert a["energy"] == b["energy"] and (a["forces"] == b["forces"]).all()


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="model file not found"):
        load_model(tmp_path / "nope.pt")


def test_corrupt_file(saved):
    _, path = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="corrupt or truncated"):
        load_model(path)


def test_text_file_is_not_a_model(tmp_path):
    path = tmp_path / "model.pt"
    path.write_text("hello")
    with pytest.raises(ModelFileError, match="not a model file"):
        load_model(path)


class _Payload:
    """Unpickling this would run code: the loader must never do it."""

    ran = False

    def __reduce__(self):
        return (_mark_ran, ())


def _mark_ran():
    _Payload.ran = True
    return "boom"


def test_pickled_object_is_refused_without_running_code(tmp_path, saved):
    _, good = saved
    content = torch.load(good, weights_only=True)
    content["metadata"] = {"evil": _Payload()}
    path = tmp_path / "evil.pt"
    torch.save(content, path)
    with pytest.raises(ModelFileError, match="refusing to load"):
        load_model(path)
    assert _Payload.ran is False
    # a whole pickled module (the format mlcalc never writes) is refused too
    module_path = tmp_path / "module.pt"
    torch.save(tiny_model("schnet"), module_path)
    with pytest.raises(ModelFileError, match="refusing to load"):
        load_model(module_path)


def test_newer_format_version_is_refused(tmp_path, saved):
    _, good = saved
    content = torch.load(good, weights_only=True)
    content["format_version"] = FORMAT_VERSION + 1
    path = tmp_path / "future.pt"
    torch.save(content, path)
    with pytest.raises(ModelFileError, match="newer than this mlcalc reads.*upgrade mlcalc"):
        read_model_file(path)


def test_not_an_mlcalc_file(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ModelFileError, match="not an mlcalc model file"):
        load_model(path)


def test_weights_that_do_not_match_the_config(tmp_path, saved):
    _, good = saved
    content = torch.load(good, weights_only=True)
    content["config"]["representation"]["n_atom_basis"] = 8
    path = tmp_path / "mismatch.pt"
    torch.save(content, path)
    with pytest.raises(ModelFileError, match="does not match its architecture"):
        load_model(path)


def test_metadata_must_be_plain_data(tmp_path):
    model = tiny_model("schnet")
    with pytest.raises(TypeError, match="not plain data"):
        save_model(model, tmp_path / "m.pt", metadata={"obj": object()})
    assert not (tmp_path / "m.pt").exists()


def test_failed_save_keeps_the_previous_file(tmp_path, saved):
    _, path = saved
    before = path.read_bytes()
    with pytest.raises(TypeError):
        save_model(tiny_model("schnet"), path, metadata={"obj": object()})
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]
