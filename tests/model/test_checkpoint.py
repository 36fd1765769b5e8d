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


# --------------------------------------------------------------------------- untrusted files


@pytest.mark.parametrize("name", ["tiny", "small", "thesis"])
@pytest.mark.parametrize("upsampling", ["transpose", "bilinear"])
@pytest.mark.parametrize(("batch_norm", "skip"), [(True, True), (False, False)])
def test_state_shapes_and_parameter_count_match_the_network(name, upsampling, batch_norm, skip):
    """The config predicts every weight's name and shape without building the network."""
    from napari_cryoseg.model.unet import UNet, count_parameters

    config = preset(name, upsampling=upsampling, batch_norm=batch_norm, skip_connections=skip,
                    n_classes=3, in_channels=5)
    net = UNet(config)
    assert config.state_shapes() == {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert config.parameter_count() == count_parameters(net)


def _payload_file(tmp_path, tiny_model, name="edited.pt", **changes):
    """Save ``tiny_model``'s payload with dotted fields (``config.base_channels``) changed."""
    payload = tiny_model.to_payload()
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        target = payload
        for key in parents:
            target = target[key]
        target[leaf] = value
    path = tmp_path / name
    torch.save(payload, path)
    return path


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test if a network is built (the checks must come first)."""
    def refuse(*args, **kwargs):
        raise AssertionError("a network was built before the file was checked")

    monkeypatch.setattr(checkpoint, "UNet", refuse)


@pytest.mark.parametrize(("changes", "phrase"), [
    # 1.4 TB of weights if built: must be refused from the config alone.
    ({"config__base_channels": 100_000}, "base_channels=100000 must be between 1 and 1024"),
    ({"config__base_channels": 1024, "config__depth": 6}, "is more than the 500,000,000"),
    ({"config__base_channels": 64}, "needs (64, 1, 3, 3)"),  # config and weights disagree
    ({"config__depth": 3, "config__upsampling": "nearest"}, "do not match the stored config"),
])
def test_absurd_or_mismatched_config_is_refused_before_building(
        tmp_path, tiny_model, no_network, changes, phrase):
    import time

    path = _payload_file(tmp_path, tiny_model, **changes)
    started = time.perf_counter()
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    assert time.perf_counter() - started < 5
    message = str(info.value)
    assert "\n" not in message and phrase in message, message


@pytest.mark.parametrize(("field", "value", "phrase"), [
    ("config__base_channels", 16.0, "base_channels=16.0 must be a whole number, not float"),
    ("config__in_channels", "1", "in_channels='1' must be a whole number, not str"),
    ("config__n_classes", True, "n_classes=True must be a whole number, not bool"),
    ("config__batch_norm", "yes", "batch_norm='yes' must be true or false"),
    ("config__dropout", float("nan"), "dropout=nan must be a finite number"),
    ("config__upsampling", 2, "upsampling=2 must be text"),
    ("config", [1, 2], "U-Net config is a list"),
    ("class_names", [0, 1], "field class_names holds 0, 1, which are not text"),
    ("class_names", ["background"], "class_names has 1 entries but the network has 2"),
    ("class_names", "background,cell", "field class_names is a str"),
    ("class_colors", ["#000000", 5], "field class_colors holds 5"),
    ("class_colors", ["#000000", "url(javascript:x)"], "field class_colors holds"),
    ("tiling__batch_size", 4.0, "field tiling.batch_size is 4.0 (float); expected a whole"),
    ("tiling__tile", 10**9, "field tiling.tile is 1000000000; expected a whole number in"),
    ("tiling__overlap", "0.1", "field tiling.overlap is '0.1' (str)"),
    ("tiling", 512, "field tiling is a int; expected a dict"),
    ("pixel_size_nm", "50", "field pixel_size_nm is '50' (str); expected a number"),
    ("pixel_size_nm", -5.0, "field pixel_size_nm is -5.0; expected a number in (0, inf]"),
    ("pixel_size_nm", float("inf"), "field pixel_size_nm is inf; expected a finite number"),
    ("normalization__clip", float("nan"), "field normalization.clip is nan; expected a finite"),
    ("normalization__clip", -1.0, "field normalization.clip is -1.0"),
    ("normalization__low", "1", "field normalization.low is '1' (str)"),
    ("normalization__high", float("inf"), "field normalization.high is inf"),
    ("threshold", "0.5", "field threshold is '0.5' (str)"),
    ("threshold", float("nan"), "field threshold is nan"),
    ("input_mode__temporal_context", 1.5, "field input_mode.temporal_context is 1.5 (float)"),
    ("input_mode__temporal_context", 2, "but the network has 1 input channels"),
    ("input_mode__background_subtraction", 0, "input_mode.background_subtraction is 0"),
    ("provenance", [], "field provenance is a list"),
    ("state_dict", [], "field state_dict is a list"),
])
def test_wrongly_typed_field_is_one_line_naming_it(tmp_path, tiny_model, field, value, phrase):
    path = _payload_file(tmp_path, tiny_model, **{field: value})
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    message = str(info.value)
    assert "\n" not in message and phrase in message, message
    assert message.startswith(str(path))


@pytest.mark.parametrize(("bad", "phrase"), [
    ("nan", "holds NaN or infinite values"),
    ("inf", "holds NaN or infinite values"),
    ("negative-variance", "holds negative variances"),
    ("int8-weights", "has dtype torch.int8"),
    ("float-counter", "num_batches_tracked has dtype torch.float32"),
    ("string-weight", "is a str, not a tensor"),
])
def test_broken_weights_are_refused(tmp_path, tiny_model, bad, phrase):
    """NaN/inf weights give NaN probabilities, i.e. an all-background result, silently."""
    state = dict(tiny_model.state_dict)
    if bad in ("nan", "inf"):
        weight = state["decoders.0.conv.0.weight"].clone()
        weight[0, 0, 0, 0] = float(bad)
        state["decoders.0.conv.0.weight"] = weight
    elif bad == "negative-variance":
        state["encoders.1.conv.1.running_var"] = -torch.ones_like(
            state["encoders.1.conv.1.running_var"])
    elif bad == "int8-weights":
        state["head.weight"] = state["head.weight"].to(torch.int8)
    elif bad == "float-counter":
        state["encoders.0.conv.1.num_batches_tracked"] = torch.tensor(0.0)
    else:
        state["head.bias"] = "zeros"
    path = _payload_file(tmp_path, tiny_model, state_dict=state)
    with pytest.raises(ModelFileError, match=phrase):
        load_model(path)
    model = ModelFile(config=tiny_model.config, state_dict=state)  # built in memory
    with pytest.raises(ModelFileError, match=phrase):
        model.build()


def test_nan_weights_refused_by_the_cli_instead_of_an_all_background_result(
        tmp_path, tiny_model, capsys):
    import tifffile

    from napari_cryoseg.cli import main

    state = {k: v.clone() for k, v in tiny_model.state_dict.items()}
    state["head.bias"].fill_(float("nan"))
    path = _payload_file(tmp_path, tiny_model, state_dict=state)
    image = tmp_path / "img.tif"
    tifffile.imwrite(image, (np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8))
    code = main(["segment", str(image), "--model", str(path), "--out", str(tmp_path / "out"),
                 "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "head.bias holds NaN or infinite values" in err
    assert not (tmp_path / "out").exists()


def test_nan_clip_refused_by_the_cli(tmp_path, tiny_model, capsys):
    from napari_cryoseg.cli import main

    path = _payload_file(tmp_path, tiny_model, normalization__clip=float("nan"))
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "normalization.clip is nan" in err
