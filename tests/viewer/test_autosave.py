"""Autosave without Qt: a save 2 s after the last change, only when a correction is
unsaved, only the corrected images, a failure as one line (a test clock, real files)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryoseg.viewer.autosave import AUTOSAVE_DELAY_S, Autosave
from napari_cryoseg.viewer.review import CorrectionStore
from napari_cryoseg.viewer.session import SegmentationRecord

SHAPE = (32, 48)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _segmented(viewer, session, name: str) -> SegmentationRecord:
    image = np.random.default_rng(len(name)).integers(0, 4000, SHAPE, dtype=np.uint16)
    predicted = np.zeros(SHAPE, np.uint8)
    predicted[4:12, 4:20] = 1
    record = SegmentationRecord(viewer.add_image(image, name=name),
                                viewer.add_labels(predicted.copy(), name=f"{name} labels"),
                                predicted)
    session.add_record(record)
    return record


def _correct(record: SegmentationRecord, rows: slice) -> None:
    edited = np.asarray(record.labels_layer.data).copy()
    edited[rows, 30:40] = 1
    record.labels_layer.data = edited  # a data event, as the brush gives


@pytest.fixture
def saver(session, tmp_path):
    store = CorrectionStore.for_session(session, project_dir=tmp_path / "project")
    return Autosave(store, clock=(clock := Clock())), clock


def test_saves_once_the_user_pauses_and_only_corrected_images(viewer, session, saver, tmp_path):
    saver, clock = saver
    folder = tmp_path / "project"
    corrected = _segmented(viewer, session, "grid 1")
    _segmented(viewer, session, "untouched")
    saver.store.watch_all()
    assert saver.store.has_unsaved  # new layers are unsaved ...
    clock.now += AUTOSAVE_DELAY_S
    assert saver.tick().folder is None
    assert not folder.exists()  # ... but segmenting alone writes nothing

    _correct(corrected, slice(20, 24))
    assert saver.wait_s() == pytest.approx(AUTOSAVE_DELAY_S)
    clock.now += 1.5
    _correct(corrected, slice(24, 28))  # another stroke: the wait starts again
    clock.now += 1.5
    early = saver.tick()
    assert early.wait_s == pytest.approx(0.5) and early.folder is None
    assert not folder.exists()
    clock.now += 0.5
    done = saver.tick()
    assert done.folder == folder and done.error is None
    assert done.message.startswith(f"corrections saved in {folder} (")
    assert sorted(p.name for p in folder.glob("*.tif")) == [
        "grid_1_corrected.tif", "grid_1_image.tif", "grid_1_predicted.tif",
        "grid_1_reviewed.tif"]
    assert not saver.store.has_unsaved
    assert saver.wait_s() is None
    assert saver.tick().folder is None  # nothing new: nothing written
    assert saver.flush().folder is None

    _correct(corrected, slice(28, 30))
    stamp = (folder / "project.json").stat().st_mtime_ns
    flushed = saver.flush()  # the dock closes: no waiting
    assert flushed.folder == folder
    assert (folder / "project.json").stat().st_mtime_ns >= stamp
    import tifffile

    np.testing.assert_array_equal(tifffile.imread(folder / "grid_1_corrected.tif"),
                                  corrected.labels_layer.data)


def test_a_failed_save_is_one_line_and_stays_unsaved(viewer, session, saver, monkeypatch):
    import tifffile

    saver, clock = saver
    record = _segmented(viewer, session, "grid")
    saver.store.mark_reviewed(record, (slice(0, 4), slice(0, 4)))

    def broken(*args, **kwargs):
        raise OSError("No space left on device\nwhile writing grid_image.tif")

    monkeypatch.setattr(tifffile, "imwrite", broken)
    clock.now += AUTOSAVE_DELAY_S
    failed = saver.tick()
    assert failed.folder is None
    assert failed.error == ("autosave failed: No space left on device while writing "
                            "grid_image.tif")
    assert failed.message == failed.error and "\n" not in failed.message
    assert saver.store.has_unsaved  # tried again later
    assert saver.wait_s() == pytest.approx(AUTOSAVE_DELAY_S)

    monkeypatch.undo()
    clock.now += AUTOSAVE_DELAY_S
    assert saver.tick().folder is not None


def test_docks_of_one_viewer_share_one_autosave(session):
    store = CorrectionStore.for_session(session)
    first = Autosave.for_store(store)
    assert Autosave.for_store(store) is first
    assert store.listeners.count(first.note_change) == 1
