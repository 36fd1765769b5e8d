"""CorrectionStore: summaries from layer data, reviewed regions, autosave + restore."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.viewer.review import CorrectionStore, default_project_dir, restore
from napari_cryoseg.viewer.session import SegmentationRecord, Session


def _add_record(viewer, name="cells", shape=(48, 64), seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 4000, size=shape, dtype=np.uint16)
    predicted = np.zeros(shape, dtype=np.uint8)
    predicted[5:15, 5:20] = 1
    image_layer = viewer.add_image(image, name=name, scale=(2.0, 2.0))
    labels_layer = viewer.add_labels(predicted.copy(), name=f"{name} labels", scale=(2.0, 2.0))
    record = SegmentationRecord(image_layer, labels_layer, predicted, model_name="tiny")
    Session.for_viewer(viewer).add_record(record)
    return record


def test_summary_follows_layer_data(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    record = _add_record(viewer)
    store = CorrectionStore.for_session(Session.for_viewer(viewer), project_dir=tmp_path)
    assert store.summary(record.labels_layer).is_empty
    edited = np.array(record.labels_layer.data)
    edited[30:35, 30:40] = 1
    record.labels_layer.data = edited  # data event -> dirty
    assert store.summary(record.labels_layer).changed_pixels == 50
    # painting through the layer API (as the brush does) is seen too
    store.watch(record)
    record.labels_layer.paint((40, 60), 1, refresh=True)
    summary = store.summary(record.labels_layer)
    assert summary.changed_pixels > 50
    assert summary.added[1] == summary.changed_pixels
    data = store.training_data()
    assert len(data) == 1
    assert data.valid_masks[0][30:35, 30:40].all()
    assert data.masks[0] is not record.labels_layer.data  # a snapshot, not the layer array


def test_mark_reviewed_regions(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    record = _add_record(viewer)
    store = CorrectionStore.for_session(Session.for_viewer(viewer), project_dir=tmp_path)
    assert store.mark_reviewed(record.labels_layer, (slice(0, 10), slice(0, 10))) == 100
    viewer.reset_view()
    n = store.mark_view_reviewed(viewer, record.labels_layer)
    assert n == record.predicted.size - 100  # the whole (small) image is in view
    shapes = viewer.add_shapes([[[0, 0], [4, 4]]], shape_type="rectangle")
    assert store.mark_shapes_reviewed(shapes, record.labels_layer) == 0  # already reviewed
    assert store.summary(record).reviewed_pixels == record.predicted.size
    with pytest.raises(InputError, match="not made by CryoSeg"):
        store.mark_reviewed(viewer.add_labels(np.zeros((4, 4), np.uint8)))


def test_autosave_then_restore_in_new_viewer(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    rec_a = _add_record(viewer, "grid A", seed=1)
    _add_record(viewer, "grid B", shape=(32, 32), seed=2)
    store = CorrectionStore.for_session(Session.for_viewer(viewer), project_dir=tmp_path)
    edited = np.array(rec_a.labels_layer.data)
    edited[20:30, 20:30] = 1
    rec_a.labels_layer.data = edited
    store.mark_reviewed(rec_a, (slice(0, 4), slice(0, 4)))
    assert store.autosave() == tmp_path
    assert store.autosave() is None  # nothing changed since
    names = sorted(p.name for p in tmp_path.iterdir())
    # only the corrected image is copied; "grid B" exists elsewhere as it was
    assert names == sorted(
        [f"grid_A_{kind}.tif" for kind in ("image", "predicted", "corrected", "reviewed")]
        + ["project.json"])
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    project = json.loads((tmp_path / "project.json").read_text())
    assert project["images"][0]["changed_pixels"] == 100

    viewer2 = make_napari_viewer()
    records = restore(viewer2, tmp_path)
    assert [r.image_layer.name for r in records] == ["grid A"]
    for old, new in zip(Session.for_viewer(viewer).live_records(), records, strict=False):
        np.testing.assert_array_equal(new.image_layer.data, old.image_layer.data)
        np.testing.assert_array_equal(new.labels_layer.data, old.labels_layer.data)
        np.testing.assert_array_equal(new.predicted, old.predicted)
        assert tuple(new.image_layer.scale) == (2.0, 2.0)
    np.testing.assert_array_equal(records[0].reviewed, rec_a.reviewed)
    store2 = CorrectionStore.for_session(Session.for_viewer(viewer2))
    assert store2.summary(records[0]).changed_pixels == 100
    assert store2.project_dir == tmp_path


def test_failed_write_keeps_previous_files(make_napari_viewer, tmp_path, monkeypatch):
    viewer = make_napari_viewer()
    record = _add_record(viewer)
    store = CorrectionStore.for_session(Session.for_viewer(viewer), project_dir=tmp_path)
    store.mark_reviewed(record, (slice(0, 2), slice(0, 2)))  # something worth saving
    store.save()
    before = (tmp_path / "cells_corrected.tif").read_bytes()
    edited = np.array(record.labels_layer.data)
    edited[:] = 1
    record.labels_layer.data = edited

    import tifffile

    def broken(*args, **kwargs):
        raise OSError("simulated crash while writing")

    monkeypatch.setattr(tifffile, "imwrite", broken)
    with pytest.raises(OSError, match="simulated"):
        store.save()
    assert (tmp_path / "cells_corrected.tif").read_bytes() == before
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert store.has_unsaved


def test_default_project_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("CRYOSEG_PROJECT_DIR", str(tmp_path / "p"))
    assert default_project_dir() == tmp_path / "p"
    monkeypatch.delenv("CRYOSEG_PROJECT_DIR")
    assert default_project_dir().parent.name == "projects"


def test_restore_rejects_non_project(make_napari_viewer, tmp_path):
    with pytest.raises(InputError, match="not a CryoSeg project"):
        restore(make_napari_viewer(), tmp_path)


def test_autosave_waits_for_a_correction(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    record = _add_record(viewer)
    store = CorrectionStore.for_session(Session.for_viewer(viewer), project_dir=tmp_path / "p")
    assert store.autosave() is None
    assert not (tmp_path / "p").exists()  # segmenting alone writes nothing
    store.mark_reviewed(record, (slice(0, 2), slice(0, 2)))
    assert store.autosave() == tmp_path / "p"


def test_default_folder_is_not_shared_between_sessions(make_napari_viewer, tmp_path,
                                                       monkeypatch):
    monkeypatch.setenv("CRYOSEG_PROJECT_DIR", str(tmp_path / "today"))
    folders = []
    for seed in (1, 2):
        viewer = make_napari_viewer()
        record = _add_record(viewer, "same name", seed=seed)
        store = CorrectionStore.for_session(Session.for_viewer(viewer))
        store.mark_reviewed(record)
        folders.append(store.autosave())
    assert folders == [tmp_path / "today", tmp_path / "today_2"]
    import tifffile

    assert not np.array_equal(tifffile.imread(folders[0] / "same_name_image.tif"),
                              tifffile.imread(folders[1] / "same_name_image.tif"))
