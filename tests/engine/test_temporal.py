"""Temporal context (StemNet seed): train on (T, Y, X) series, save/load, segment, dock."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryoseg.core.temporal import stack_context, subtract_temporal_median
from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.inference.predict import segment
from napari_cryoseg.engine.training.sampling import PatchSampler
from napari_cryoseg.engine.training.train import TrainConfig, train
from napari_cryoseg.model.checkpoint import load_model, save_model
from napari_cryoseg.model.config import preset


def moving_blob(n_frames: int = 6, size: int = 48, seed: int = 0):
    """A bright disc moving right over a static gradient background, with noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    background = 40.0 * xx / size
    series = np.empty((n_frames, size, size), np.float32)
    masks = np.zeros((n_frames, size, size), np.uint8)
    for t in range(n_frames):
        cy, cx = size // 2, 10 + 4 * t
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < 36
        masks[t][disc] = 1
        series[t] = background + 60.0 * disc + rng.normal(0, 3, (size, size))
    return series, masks


def test_stack_context_repeats_edges():
    series = np.arange(4)[:, None, None] * np.ones((4, 2, 2))
    assert stack_context(series, 0, 2)[:, 0, 0].tolist() == [0, 0, 0, 1, 2]
    assert stack_context(series, 3, 1)[:, 0, 0].tolist() == [2, 3, 3]
    flat = subtract_temporal_median(series)
    assert flat.dtype == np.float32 and flat.shape == series.shape


def test_sampler_builds_context_channels():
    series, masks = moving_blob()
    sampler = PatchSampler([series], [masks], 2, patch=32, temporal_context=1, seed=0)
    x, y = sampler.sample_numpy(3)
    assert x.shape == (3, 3, 32, 32) and y.shape == (3, 32, 32)
    assert len(sampler.images) == series.shape[0]  # one training image per frame


@pytest.fixture(scope="module")
def temporal_model(tmp_path_factory):
    series, masks = moving_blob()
    config = TrainConfig(
        unet=preset("tiny"), steps=3, batch_size=2, patch=32, val_fraction=0.0,
        device="cpu", temporal_context=1, background_subtraction="median",
    )
    result = drain(train([series], [masks], config))
    path = tmp_path_factory.mktemp("temporal") / "temporal.pt"
    save_model(result.best, path)
    return path, series


def test_train_save_load_keeps_temporal_mode(temporal_model):
    path, series = temporal_model
    model = load_model(path)
    assert model.temporal_context == 1
    assert model.background_subtraction == "median"
    assert model.config.in_channels == 3
    assert model.summary()["temporal context"] == 1
    prediction = drain(segment(series, model, device="cpu"))
    assert prediction.labels.shape == series.shape
    with pytest.raises(Exception, match="time series"):
        drain(segment(series[0], model, device="cpu"))


def test_old_files_default_to_no_background(tiny_model, tmp_path):
    path = save_model(tiny_model, tmp_path / "m.pt")
    assert load_model(path).background_subtraction == "none"


def test_cli_train_temporal(tmp_path):
    import tifffile

    from napari_cryoseg.cli import main

    series, masks = moving_blob()
    (tmp_path / "im").mkdir()
    (tmp_path / "ma").mkdir()
    tifffile.imwrite(tmp_path / "im" / "movie.tif", series)
    tifffile.imwrite(tmp_path / "ma" / "movie.tif", masks)
    out = tmp_path / "t.pt"
    code = main(["train", "--images", str(tmp_path / "im"), "--masks", str(tmp_path / "ma"),
                 "--out", str(out), "--preset", "tiny", "--steps", "2", "--batch-size", "2",
                 "--patch", "32", "--device", "cpu", "--temporal-context", "2",
                 "--background-subtraction", "median"])
    assert code == 0
    model = load_model(out)
    assert model.temporal_context == 2 and model.config.in_channels == 5
    assert model.background_subtraction == "median"


def test_dock_segments_time_series(temporal_model, make_napari_viewer, qtbot):
    from napari_cryoseg.widgets.main import CryoSegWidget

    path, series = temporal_model
    viewer = make_napari_viewer()
    widget = CryoSegWidget(viewer)
    widget.session.set_model(load_model(path))
    layer = viewer.add_image(series, name="movie", axis_labels=("t", "y", "x"))
    panel = widget.segment_panel
    panel.image.select(layer)
    panel.run()
    qtbot.waitUntil(lambda: panel.job is None and panel.run_button.isEnabled(), timeout=30_000)
    labels = viewer.layers["movie labels"]
    assert labels.data.shape == series.shape
