"""ObjectsState without Qt: measure, remove smaller, tags that follow their objects,
the classifier through a file, the CSV with tags, one minimum size for dock and CLI."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.core.measure import read_csv
from napari_cryoseg.core.object_settings import ObjectSettings
from napari_cryoseg.viewer.objects_state import (
    ObjectsState,
    measurable_layers,
    source_image_name,
)

_spec = importlib.util.spec_from_file_location(
    "_measure_data", Path(__file__).parents[1] / "core" / "test_measure.py")
_data = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_data)
kinds_by_row, two_kinds = _data.kinds_by_row, _data.two_kinds

#: (top, left, edge) of square objects of class 1: areas 4, 9, 36, 100, 64 pixels.
SQUARES = ((2, 2, 2), (2, 30, 3), (20, 4, 6), (20, 30, 10), (44, 10, 8))


def _squares(shape=(60, 60)) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    for top, left, edge in SQUARES:
        labels[top:top + edge, left:left + edge] = 1
    return labels


def _label_at(state: ObjectsState, y: int, x: int) -> int:
    return int(state.result.instances[y, x])


@pytest.fixture
def squares(viewer, session):
    labels = viewer.add_labels(_squares(), name="cells labels")
    state = ObjectsState.for_session(session)
    state.update_settings(min_size=0)
    return state, labels


def test_one_minimum_size_for_the_dock_and_the_command_line(viewer, session, tmp_path):
    from napari_cryoseg.cli import build_parser

    args = build_parser().parse_args(["measure", "--labels", str(tmp_path / "l.tif")])
    state = ObjectsState.for_session(session)
    assert state.settings.min_size == args.min_size == ObjectSettings().min_size
    assert ObjectsState.for_session(session) is state  # one per viewer
    viewer.add_labels(_squares(), name="cells labels")
    result = state.measure(viewer.layers["cells labels"])
    # the default skips the 4 and 9 px specks and keeps 36, 64 and 100 px objects
    assert sorted(result.table["area_px"].tolist()) == [36, 64, 100]
    assert result.layer.name == "cells labels objects"


def test_refused_settings_leave_the_old_ones(squares):
    state, _labels = squares
    seen = []
    state.on_change(seen.append)
    with pytest.raises(InputError, match="at least 0"):
        state.update_settings(min_size=-1)
    with pytest.raises(InputError, match="without commas"):
        state.update_settings(tags=("a,b",))
    assert state.settings.min_size == 0 and state.settings.tags == ObjectSettings().tags
    assert seen == []
    state.update_settings(min_size=5)
    assert seen == ["settings"]
    state.update_settings(tags=("vesicle",))  # the tag column's choices change too
    assert seen == ["settings", "settings", "tags"]


def test_remove_smaller_removes_exactly_the_small_objects(squares):
    state, labels = squares
    result = state.measure(labels)
    assert result.n_objects == 5
    small = [_label_at(state, 2, 2), _label_at(state, 2, 30)]
    big = _label_at(state, 20, 30)
    state.set_tag(small[0], "type A")
    state.set_tag(big, "type B")
    before = np.asarray(labels.data).copy()

    state.update_settings(min_size=10)
    assert state.remove_smaller() == 2
    expected = before.copy()
    expected[2:4, 2:4] = 0
    expected[2:5, 30:33] = 0
    np.testing.assert_array_equal(labels.data, expected)  # the rest untouched
    assert sorted(state.result.table["area_px"].tolist()) == [36, 64, 100]
    assert not np.isin(state.result.instances, small).any()
    assert set(state.labels()) == set(np.unique(state.result.instances)) - {0}
    assert state.tags == {big: "type B"}  # the removed object's tag went with it
    assert state.remove_smaller() == 0  # nothing left below the minimum
    labels.undo()
    np.testing.assert_array_equal(labels.data, before)


def test_tags_follow_their_objects_when_measured_again(viewer, squares):
    state, labels = squares
    state.measure(labels)
    state.set_tag(_label_at(state, 20, 4), "type A")  # the 36 px square
    state.set_tag(_label_at(state, 44, 10), "type B")  # the 64 px square
    state.set_tag(_label_at(state, 20, 30), "vesicle")  # a new tag joins the vocabulary
    assert state.settings.tags == ("type A", "type B", "vesicle")
    assert state.tag_column().count("") == 2

    edited = np.asarray(labels.data).copy()
    edited[2:4, 2:4] = 0  # the first object goes: the others are numbered anew
    labels.data = edited
    state.measure(labels)
    assert state.result.n_objects == 4
    assert {state.tags[_label_at(state, y, x)] for y, x in ((20, 4), (44, 10), (20, 30))} \
        == {"type A", "type B", "vesicle"}
    assert state.tags[_label_at(state, 20, 4)] == "type A"
    assert state.tags[_label_at(state, 44, 10)] == "type B"
    assert state.tags[_label_at(state, 20, 30)] == "vesicle"
    assert _label_at(state, 2, 30) not in state.tags

    state.set_tag(_label_at(state, 20, 30), "")  # untag
    assert len(state.tags) == 2
    with pytest.raises(InputError, match="no object 999"):
        state.set_tag(999, "type A")

    other = viewer.add_labels(_squares(), name="other labels")
    state.measure(other)
    assert state.tags == {}  # another layer's objects start untagged


def test_measurable_layers_and_the_segmented_image(viewer, squares):
    state, labels = squares
    image = viewer.add_image(np.zeros((60, 60), np.float32), name="cells")
    viewer.add_image(np.zeros((60, 60, 3), np.uint8), name="photo", rgb=True)
    labels.metadata = {"cryoseg": {"source": "cells"}}
    state.measure(labels)
    found_labels, found_images = measurable_layers(viewer)
    assert found_labels == [labels]  # not "cells labels objects"
    assert found_images == [image]  # not the RGB photo
    assert source_image_name(labels) == "cells"


def test_select_centres_on_the_object(viewer, squares):
    from napari_cryoseg.viewer.camera import camera_of

    state, labels = squares
    with pytest.raises(InputError, match="measure objects first"):
        state.select(0)
    state.measure(labels)
    row = state.labels().index(_label_at(state, 20, 30))
    assert state.select(row) == _label_at(state, 20, 30)
    assert state.result.layer.selected_label == _label_at(state, 20, 30)
    assert tuple(camera_of(viewer).center)[-2:] == pytest.approx((24.5, 34.5))


@pytest.fixture
def two_kinds_state(viewer, session):
    pytest.importorskip("sklearn")
    labels, image, kinds, centres = two_kinds(seed=2, n=24, size=300)
    img = viewer.add_image(image, name="cells")
    lab = viewer.add_labels(labels, name="cells labels")
    state = ObjectsState.for_session(session)
    state.measure(lab, img)
    truth = kinds_by_row(state.result.table, kinds, centres)
    return state, lab, img, truth


def _tag_four_of_each(state, truth):
    state.update_settings(tags=("round", "long"))
    for kind in ("round", "long"):
        for row in [i for i, t in enumerate(truth) if t == kind][:4]:
            state.set_tag(state.labels()[row], kind)


def test_classifier_saved_and_loaded_predicts_the_same(viewer, two_kinds_state, tmp_path):
    from napari.utils.colormaps import CyclicLabelColormap, DirectLabelColormap

    from napari_cryoseg.viewer.session import Session

    state, lab, img, truth = two_kinds_state
    with pytest.raises(InputError, match="train a classifier first"):
        state.save_classifier(tmp_path / "none.npz")
    state.set_tag(state.labels()[0], "type A")
    with pytest.raises(InputError, match="at least two classes"):
        state.train_classifier()
    state.set_tag(state.labels()[0], "")
    _tag_four_of_each(state, truth)
    state.train_classifier()
    predicted = state.predicted()
    assert len(predicted) == state.result.n_objects
    assert np.mean([p == t for p, t in zip(predicted, truth)]) >= 0.9
    assert list(state.result.layer.features["predicted class"]) == predicted
    assert isinstance(state.result.layer.colormap, DirectLabelColormap)  # colour by class
    state.update_settings(color_by_class=False)
    assert isinstance(state.result.layer.colormap, CyclicLabelColormap)

    path = state.save_classifier(tmp_path / "clf.npz")
    with pytest.raises(InputError):
        state.save_classifier(path)  # never replaced
    from napari.components import ViewerModel

    other_viewer = ViewerModel()
    other = ObjectsState.for_session(Session.for_viewer(other_viewer))
    other.measure(other_viewer.add_labels(np.asarray(lab.data), name="copy"),
                  other_viewer.add_image(np.asarray(img.data), name="copy image"))
    assert other.predicted() == []
    other.load_classifier(path)
    assert other.predicted() == predicted

    # measuring again predicts the new table at once
    state.measure(lab, img)
    assert state.predicted() == predicted


def test_csv_has_the_tags_and_predictions(two_kinds_state, tmp_path):
    state, _lab, _img, truth = two_kinds_state
    _tag_four_of_each(state, truth)
    state.train_classifier()
    first = state.export_csv(tmp_path)
    second = state.export_csv(tmp_path)
    assert first != second and first.exists() and second.exists()  # never overwritten
    table = read_csv(first)
    assert [int(v) for v in table["label"]] == state.labels()
    assert list(table["tag"]) == state.tag_column()
    assert sum(1 for t in table["tag"] if t) == 8
    assert list(table["predicted class"]) == state.predicted()
    assert "tag" not in state.result.extra  # the export adds the column, the table stays
