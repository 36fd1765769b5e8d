"""Model files: round trip, safe loading (no code runs), clear errors, atomic saves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cryoseg.core.errors import InputError, ModelFileError
from napari_cryoseg.model import checkpoint
from napari_cryoseg.model.checkpoint import FORMAT_VERSION, ModelFile, load_model, save_model
from napari_cryoseg.model.config import preset


@pytest.fixture
def saved(tmp_path, tiny_model):
    path = tmp_path / "tiny.pt"
    save_model(tiny_model, path)
    return path


def _perturb_bn(model: ModelFile) -> None:
    # Non-default BN statistics, so a round trip that dropped buffers would be caught.
    for key, value in model.state_dict.items():
        if key.endswith("running_mean"):
            value.normal_()
        elif key.endswith("running_var"):
            value.uniform_(0.5, 2.0)


def test_round_trip_equal_tensors_and_outputs(tmp_path):
    model = ModelFile.new(preset("tiny", n_classes=3), class_names=["bg", "a", "b"],
                          pixel_size_nm=4.2, seed=3)
    _perturb_bn(model)
    path = save_model(model, tmp_path / "m.pt")
    loaded = load_model(path)
    assert loaded.config == model.config
    assert loaded.class_names == ["bg", "a", "b"]
    assert loaded.pixel_size_nm == pytest.approx(4.2)
    assert loaded.source_path == path
    assert set(loaded.state_dict) == set(model.state_dict)
    for key, value in model.state_dict.items():
        assert torch.equal(loaded.state_dict[key], value), key
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.build()(x), loaded.build()(x))


def test_threshold_round_trip_old_files_and_bad_values(tmp_path):
    model = ModelFile.new(preset("tiny"), seed=0)
    assert model.threshold == 0.5
    model.threshold = 0.425
    loaded = load_model(save_model(model, tmp_path / "t.pt"))
    assert loaded.threshold == pytest.approx(0.425)
    assert loaded.summary()["threshold"] == pytest.approx(0.425)
    payload = torch.load(tmp_path / "t.pt", weights_only=True)
    del payload["threshold"]  # a file written before thresholds were stored
    torch.save(payload, tmp_path / "old.pt")
    assert load_model(tmp_path / "old.pt").threshold == 0.5
    with pytest.raises(ModelFileError, match="threshold 1.5 must be between 0 and 1"):
        ModelFile.new(preset("tiny"), threshold=1.5)


def test_file_loads_with_plain_weights_only_torch_load(saved):
    payload = torch.load(saved, weights_only=True)
    assert payload["format"] == checkpoint.FORMAT_NAME
    assert payload["format_version"] == FORMAT_VERSION
    assert "encoders.0.conv.0.weight" in payload["state_dict"]


def test_provenance_round_trip(tmp_path, tiny_model):
    tiny_model.provenance.update(
        {"training_data": {"images": ["a.tif", "b.tif"], "pixels": 123},
         "metrics": {"dice": 0.91}, "history": [{"step": 1, "loss": 0.5}], "steps": 800}
    )
    loaded = load_model(save_model(tiny_model, tmp_path / "p.pt"))
    assert loaded.provenance["training_data"] == {"images": ["a.tif", "b.tif"], "pixels": 123}
    assert loaded.provenance["metrics"] == {"dice": 0.91}
    assert loaded.provenance["history"] == [{"step": 1, "loss": 0.5}]
    assert loaded.provenance["steps"] == 800


class _CreatesFile:
    """Unpickling this would open (create) a file: the classic pickle code-execution."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_crafted_pickle_is_refused_and_runs_no_code(tmp_path, tiny_model):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pt"
    payload = tiny_model.to_payload()
    payload["provenance"] = {"x": _CreatesFile(str(marker))}
    torch.save(payload, path)
    assert not marker.exists()
    with pytest.raises(ModelFileError, match="refused"):
        load_model(path)
    assert not marker.exists()


def test_corrupt_file_is_a_model_file_error(tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(np.random.default_rng(0).bytes(10_000))
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_corrupt_file_is_called_corrupt_not_dangerous(tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(np.random.default_rng(0).bytes(10_000))
    with pytest.raises(ModelFileError, match="not a readable PyTorch file"):
        load_model(path)


def test_truncated_file(tmp_path, saved):
    data = saved.read_bytes()
    cut = tmp_path / "half.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError) as info:
        load_model(cut)
    assert "\n" not in str(info.value)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.touch()
    with pytest.raises(ModelFileError, match="empty"):
        load_model(path)


def test_plain_state_dict_suggests_import_weights(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save({"w": torch.zeros(3), "b": torch.ones(2)}, path)
    with pytest.raises(ModelFileError, match="import-weights"):
        load_model(path)


def test_newer_format_version_says_upgrade(tmp_path, tiny_model):
    payload = tiny_model.to_payload()
    payload["format_version"] = FORMAT_VERSION + 1
    path = tmp_path / "future.pt"
    torch.save(payload, path)
    with pytest.raises(ModelFileError, match="upgrade"):
        load_model(path)


def test_foreign_dict(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"epoch": 3, "name": "something else"}, path)
    with pytest.raises(ModelFileError, match="not a napari-cryoseg model file") as info:
        load_model(path)
    assert "import-weights" not in str(info.value)


def test_folder_path(tmp_path):
    with pytest.raises(ModelFileError, match="folder"):
        load_model(tmp_path)


def test_missing_path(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "nope.pt")


def test_save_refuses_overwrite_and_keeps_old_file(saved, tiny_model):
    before = saved.read_bytes()
    other = ModelFile.new(preset("tiny"), seed=7)
    with pytest.raises(InputError, match="already exists"):
        save_model(other, saved)
    assert saved.read_bytes() == before
    save_model(other, saved, overwrite=True)
    assert saved.read_bytes() != before
    assert torch.equal(load_model(saved).state_dict["head.weight"], other.state_dict["head.weight"])


def test_failed_save_leaves_previous_file_intact(saved, monkeypatch):
    before = saved.read_bytes()

    class DiskFailure(OSError):
        pass

    def failing_atomic_write(path, write_fn, *, overwrite):
        # Run the real atomic writer with a write function that dies half-way.
        from napari_cryoseg.core.atomic import atomic_write

        def half_then_fail(fileobj):
            fileobj.write(b"PK\x03\x04 half a file")
            raise DiskFailure("simulated I/O error")

        return atomic_write(path, half_then_fail, overwrite=overwrite)

    monkeypatch.setattr(checkpoint, "atomic_write", failing_atomic_write)
    with pytest.raises(DiskFailure):
        save_model(ModelFile.new(preset("tiny"), seed=9), saved, overwrite=True)
    assert saved.read_bytes() == before
    assert sorted(p.name for p in saved.parent.iterdir()) == [saved.name]  # no temp left
    load_model(saved)
