"""UncertaintyMaps without Qt: the job's arguments, one map per image layer (through
napari's proxies), the next tile avoids what the user corrected or reviewed."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.inference.uncertainty import tta_uncertainty
from napari_cryoseg.viewer.session import SegmentationRecord
from napari_cryoseg.viewer.uncertainty_state import UncertaintyMaps

SHAPE = (64, 96)


def _segmented(viewer, session, name: str, seed: int = 0) -> SegmentationRecord:
    image = np.random.default_rng(seed).normal(100, 10, SHAPE).astype(np.float32)
    predicted = np.zeros(SHAPE, np.uint8)
    predicted[10:30, 10:40] = 1
    record = SegmentationRecord(viewer.add_image(image, name=name),
                                viewer.add_labels(predicted.copy(), name=f"{name} labels"),
                                predicted)
    session.add_record(record)
    return record


def test_maps_are_kept_per_image_layer(viewer, session):
    from napari.utils._proxies import PublicOnlyProxy

    maps = UncertaintyMaps.for_session(session)
    assert UncertaintyMaps.for_session(session) is maps
    a = _segmented(viewer, session, "a", seed=1)
    b = _segmented(viewer, session, "b", seed=2)
    assert not maps.has_maps
    proxy_a = PublicOnlyProxy(viewer).layers["a"]  # what a dock opened from a menu sees
    map_a = np.full(SHAPE, 0.25, np.float32)
    shown = maps.receive(proxy_a, map_a)
    assert shown.name == "a uncertainty" and shown.data.shape == SHAPE
    assert maps.map_of(a.image_layer) is map_a
    assert maps.map_of(PublicOnlyProxy(viewer).layers["a"]) is map_a
    assert maps.map_of(b.image_layer) is None
    maps.receive(b.image_layer, np.full(SHAPE, 0.5, np.float32))
    again = maps.receive(a.image_layer, np.full(SHAPE, 0.75, np.float32))
    assert again is shown and float(shown.data.mean()) == 0.75  # updated, not a new layer
    assert [ly.name for ly in viewer.layers].count("a uncertainty") == 1

    viewer.layers.remove(b.image_layer)
    assert maps.map_of(b.image_layer) is None  # a closed layer's map is dropped
    with pytest.raises(InputError, match="closed"):
        maps.receive(b.image_layer, np.zeros(SHAPE, np.float32))

    session.set_model(None)  # maps belong to the model that made them
    assert not maps.has_maps and maps.map_of(a.image_layer) is None


def test_job_arguments_and_result(viewer, session, tiny_model):
    maps = UncertaintyMaps.for_session(session)
    with pytest.raises(InputError, match="select an image"):
        maps.job()
    session.set_model(tiny_model, keep_previous=False)
    session.device = "cpu"
    session.settings.set("segment.tiling.tile", 64)
    record = _segmented(viewer, session, "img")
    viewer.layers.selection.active = record.labels_layer  # its image is meant
    job = maps.job()
    assert job.image_layer is record.image_layer
    image, model = job.args
    np.testing.assert_array_equal(image, record.image_layer.data)
    assert model is tiny_model
    assert job.kwargs == {"tiling": session.settings.segment.tiling, "device": "cpu"}
    assert job.kwargs["tiling"].tile == 64
    result = drain(tta_uncertainty(*job.args, **job.kwargs))
    maps.receive(job.image_layer, result)
    assert maps.map_of(record.image_layer) is not None
    assert viewer.layers["img uncertainty"].data.dtype == np.float32


def test_next_tile_avoids_corrected_and_reviewed_pixels(viewer, session):
    from napari_cryoseg.viewer.camera import camera_of

    maps = UncertaintyMaps.for_session(session)
    session.settings.set("loop.uncertain_tile", 16)
    record = _segmented(viewer, session, "img")
    umap = np.zeros(SHAPE, np.float32)
    umap[0:16, 0:16] = 0.9  # the most uncertain: corrected below
    umap[0:16, 48:64] = 0.8  # reviewed below
    umap[40:56, 70:86] = 0.5  # left to look at
    umap[40:56, 8:24] = 0.3
    maps.receive(record.image_layer, umap)
    with pytest.raises(InputError):
        maps.next_tile(viewer.add_image(np.zeros(SHAPE), name="no map"))

    assert maps.next_tile(record.image_layer)[1].y == 0  # nothing checked yet: the 0.9 tile
    edited = np.asarray(record.labels_layer.data).copy()
    edited[0:16, 0:16] = 1  # the user corrected it
    record.labels_layer.data = edited
    record.reviewed = np.zeros(SHAPE, bool)
    record.reviewed[0:16, 48:64] = True  # and marked this one right as it is
    layer, tile = maps.next_tile(record.image_layer)
    assert layer is record.image_layer
    assert (tile.y, tile.x, tile.size) == (40, 70, (16, 16))
    assert tile.describe() == "most uncertain tile: rows 40-56, cols 70-86"

    viewer.layers.selection.active = viewer.layers["no map"]
    assert maps.go_to_next_tile() == tile  # the only image with a map
    assert tuple(camera_of(viewer).center)[-2:] == pytest.approx((47.5, 77.5))
    assert viewer.layers.selection.active is record.labels_layer
