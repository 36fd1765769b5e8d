"""The training-round controllers without Qt: a real napari ViewerModel, real layers,
real (tiny) torch training driven to its end in this thread, real files."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from napari.components import ViewerModel

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.core.synthetic import SampleConfig, make_sample
from napari_cryoseg.engine.events import Message, Preview, TrainStep, drain
from napari_cryoseg.engine.inference.predict import segment
from napari_cryoseg.engine.training.finetune import FinetuneConfig, finetune
from napari_cryoseg.engine.training.fitting import model_from_state
from napari_cryoseg.model.checkpoint import ModelFile
from napari_cryoseg.model.config import preset
from napari_cryoseg.viewer.annotations import AnnotationStore
from napari_cryoseg.viewer.finetune_round import FinetuneRound
from napari_cryoseg.viewer.layers import record_for_image, show_prediction
from napari_cryoseg.viewer.review import CorrectionStore
from napari_cryoseg.viewer.session import Session
from napari_cryoseg.viewer.train_round import TrainRound
from napari_cryoseg.viewer.training_round import RoundRefused

QUICK_FINETUNE = {"finetune.time_budget_s": None, "finetune.steps": 4,
                  "finetune.batch_size": 2, "finetune.patch": 48,
                  "finetune.holdout_fraction": 0.0, "finetune.adapt_batchnorm": "never",
                  "loop.preview": False}
QUICK_TRAIN = {"train.preset": "tiny", "train.batch_size": 2, "train.patch": 48,
               "train.time_budget_s": None, "train.steps": 4, "loop.preview": False}


class Handle:
    """What the job runner hands back for a started job: cancel, and whether it was."""

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def run_to_end(start) -> object:
    """Run a round's worker job in this thread; what it returned."""
    return drain(start.job(*start.args))


def cell_image(seed: int, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    image, labels = make_sample(seed, SampleConfig(shape=(size, size), n_cells=30))
    return image, (labels == 1).astype(np.uint8)


@pytest.fixture(scope="module")
def over_predicting() -> ModelFile:
    """A tiny cell model trained for real (sure of what it says), biased towards cells."""
    pairs = [cell_image(seed, size=128) for seed in (11, 12)]
    model = ModelFile.new(preset("tiny"), class_names=["background", "cell"], seed=0)
    config = FinetuneConfig(steps=40, lr=3e-3, batch_size=4, patch=64, seed=0, device="cpu",
                            holdout_fraction=0.0, freeze_batchnorm=False, check_beyond=False)
    model = drain(finetune(model, [p[0] for p in pairs], [p[1] for p in pairs], None,
                           config)).model
    state = {k: v.clone() for k, v in model.state_dict.items()}
    state["head.bias"] += 2.0  # cells grow into their surroundings
    return model_from_state(model, state, {"name": "over-predicting"})


@pytest.fixture
def corrected(tmp_path, over_predicting):
    """A viewer with one segmented image whose labels the user changed in one corner."""
    viewer = ViewerModel()
    session = Session.for_viewer(viewer)
    session.device = "cpu"
    model = over_predicting
    session.set_model(model, keep_previous=False)
    for key, value in QUICK_FINETUNE.items():
        session.settings.set(key, value)
    store = CorrectionStore.for_session(session)
    store.project_dir = tmp_path / "project"
    image, truth = cell_image(1)
    layer = viewer.add_image(image, name="section")
    show_prediction(viewer, session, layer, drain(segment(image, model, device="cpu")))
    record = record_for_image(session, layer)
    labels = np.array(record.labels_layer.data)
    labels[:48, :48] = truth[:48, :48]  # the user fixed the top-left corner
    labels[0, 0] = 1 - labels[0, 0]  # at least one pixel differs from the prediction
    record.labels_layer.data = labels
    return viewer, session, store, record


def test_nothing_to_learn_from_is_refused_in_one_line():
    viewer = ViewerModel()
    session = Session.for_viewer(viewer)
    session.set_model(ModelFile.new(preset("tiny"), seed=0), keep_previous=False)
    round_ = FinetuneRound(session, CorrectionStore.for_session(session))
    with pytest.raises(RoundRefused, match="no corrections yet") as refused:
        round_.prepare(viewer)
    assert "\n" not in str(refused.value)
    session.begin("segment")
    with pytest.raises(RoundRefused, match="wait for segment"):
        round_.prepare(viewer)


def test_a_finetune_round_swaps_the_model_in_then_segments_once_and_reverts(corrected):
    viewer, session, store, record = corrected
    parent = session.model
    round_ = FinetuneRound(session, store)
    seen: list[str] = []
    round_.on_change(lambda: seen.append(round_.status))
    start, preview = round_.prepare(viewer)
    assert preview is None and start.total_steps == 4 and start.title == "1 image(s)"
    assert start.desc == f"Fine-tuning {parent.name}"
    handle = Handle()
    round_.started(handle, preview)
    assert round_.running and round_.status == "starting…"
    round_.on_event(TrainStep(step=2, total_steps=4, loss=0.25, lr=1e-3, elapsed_s=1.0))
    assert round_.status.startswith("step 2: loss 0.2500")
    result, data = run_to_end(start)
    outcome = round_.on_result(result, data)
    assert outcome.swap and not outcome.ask, outcome.status  # no holdout: nothing refuses
    assert session.model is result.model and round_.own_model is result.model
    provenance = session.model.provenance
    assert provenance["parent_name"] == parent.name
    assert provenance["corrections"]["images"] == ["section"]
    assert round_.segment_after
    assert round_.finished(handle) is True  # segment now, once
    assert not round_.running and round_.finished(handle) is False
    assert seen and seen[0] == "starting…"
    # "Then segment": corrected layers keep their corrections and are not re-run
    assert round_.records_to_resegment() == []
    session.settings.set("loop.resegment", "all")
    assert round_.records_to_resegment() == [record]
    # another model was loaded: the fine-tune's numbers no longer describe it
    assert round_.revert() is parent and session.model is parent
    assert round_.metrics == f"reverted to {parent.name}"
    with pytest.raises(RoundRefused, match="no earlier model"):
        round_.revert()


def test_a_flagged_result_waits_until_applied_or_discarded(corrected, monkeypatch):
    from napari_cryoseg.engine.training import change_check

    # a check that tolerates no change flags every fine-tuned model
    monkeypatch.setattr(change_check, "FREE_CHANGE", 0.0)
    monkeypatch.setattr(change_check, "FOLLOW_FACTOR", 0.0)
    viewer, session, store, _record = corrected
    session.settings.set("finetune.lr", 3e-3)
    session.settings.set("finetune.steps", 20)
    parent = session.model
    other, _truth = cell_image(5, size=288)  # nobody corrected it: what the check sees
    show_prediction(viewer, session, viewer.add_image(other, name="other"),
                    drain(segment(other, parent, device="cpu")))
    round_ = FinetuneRound(session, store)
    for answer in ("discard", "apply"):
        start, _preview = round_.prepare(viewer)
        round_.started(Handle())
        result, data = run_to_end(start)
        outcome = round_.on_result(result, data)
        assert outcome.swap and outcome.ask, outcome.status
        assert round_.kept_aside is not None and round_.kept_aside.result is result
        assert session.model is parent and not round_.segment_after
        if answer == "discard":
            round_.discard_kept_aside()
            assert round_.kept_aside is None and session.model is parent
            assert round_.status == f"discarded the fine-tuned model; {parent.name} stays"
        else:
            assert round_.apply_kept_aside() is True
            assert session.model is result.model and session.previous_models[-1] is parent
            assert round_.kept_aside is None and not round_.segment_after
            assert round_.apply_kept_aside() is False  # nothing left to apply


def test_a_painted_value_the_model_lacks_needs_a_name(corrected):
    viewer, session, store, record = corrected
    labels = np.array(record.labels_layer.data)
    labels[60:70, 60:70] = 3
    record.labels_layer.data = labels
    round_ = FinetuneRound(session, store)
    with pytest.raises(RoundRefused, match="label 3 is painted but") as refused:
        round_.prepare(viewer)
    assert round_.status == str(refused.value)
    assert [label.value for label in round_.unknown_labels] == [3]
    start, _preview = round_.prepare(viewer, {3: "bar"})
    grown = start.args[0]
    assert grown.class_names[-1] == "bar" and round_.added == {3: len(grown.class_names) - 1}


def test_cancel_drops_the_preview_and_keeps_the_model(corrected):
    viewer, session, store, record = corrected
    session.settings.set("loop.preview", True)
    parent = session.model
    round_ = FinetuneRound(session, store)
    viewer.layers.selection.active = record.labels_layer
    start, preview = round_.prepare(viewer)
    assert preview is not None and start.args[5] is not None  # the preview request
    handle = Handle()
    round_.started(handle, preview)
    shown = round_.on_event(Preview(step=3, labels=np.ones(preview.region.pixels.shape, np.uint8)))
    assert shown == 3 and any("preview" in layer.name for layer in viewer.layers)
    round_.cancel()
    assert handle.cancelled and round_.status == "cancelling…"
    assert round_.finished(handle) is False
    assert round_.status == "cancelled: the model was not changed"
    assert not any("preview" in layer.name for layer in viewer.layers)
    assert session.model is parent and not round_.running


def quick_train_round() -> tuple[ViewerModel, Session, AnnotationStore, TrainRound]:
    """A viewer, its session set for a quick CPU training run, and its Train round."""
    viewer = ViewerModel()
    session = Session.for_viewer(viewer)
    session.device = "cpu"
    for key, value in QUICK_TRAIN.items():
        session.settings.set(key, value)
    store = AnnotationStore.for_session(session)
    return viewer, session, store, TrainRound(session, store)


def test_a_train_round_from_strokes_keeps_a_useless_model_aside():
    viewer, session, store, round_ = quick_train_round()
    with pytest.raises(RoundRefused, match="open an image first"):
        round_.annotate_selection(viewer)
    image, truth = cell_image(2)
    viewer.add_image(image, name="section")
    store.classes.add()  # "class 1" next to background
    (annotations,) = round_.annotate_selection(viewer)  # the only image
    with pytest.raises(InputError, match="nothing painted yet"):
        round_.prepare(viewer)
    background, cell = store.classes.values
    annotations.data_setitem(np.nonzero(truth[:, :40] == 0), background)
    annotations.data_setitem(np.nonzero(truth[:, :40] == 1), cell)
    start, _preview = round_.prepare(viewer)
    handle = Handle()
    round_.started(handle)
    round_.on_event(Message("WARNING: stopped after 4 steps, use a longer Time budget",
                            level="warning"))
    assert "longer Time budget" in round_.warning and "WARNING" not in round_.warning
    before = session.model
    result = run_to_end(start)
    assert round_.on_result(result) is None  # 4 steps: too few to be useful
    assert session.model is before and round_.kept_aside is result.best
    assert round_.warning.startswith("kept aside, not applied: only 4 training steps")
    assert "4 steps" in round_.metrics
    assert round_.finished(handle) is False  # nothing to segment with
    assert round_.apply_kept_aside() is result.best and session.model is result.best
    assert round_.images_to_segment(viewer) == [viewer.layers["section"]]
    assert np.array_equal(np.unique(annotations.data), [0, background, cell])  # unchanged


def test_the_round_controllers_import_no_qt():
    code = ("import sys; import napari_cryoseg.viewer.finetune_round, "
            "napari_cryoseg.viewer.train_round; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_score_after_training_from_strokes_says_whole_images_score_lower():
    """Held-out strokes are where the user chose to paint; the round says that whole
    images score lower instead of showing the number alone."""
    from scipy import ndimage
    from skimage.morphology import skeletonize

    image, truth = cell_image(3, size=128)
    viewer, session, store, round_ = quick_train_round()
    viewer.add_image(image, name="section")
    store.classes.add()
    (annotations,) = round_.annotate_selection(viewer)
    background, cell = store.classes.values
    cells = truth == 1
    far = ~ndimage.binary_dilation(cells, iterations=6)
    annotations.data_setitem(np.nonzero(ndimage.binary_dilation(skeletonize(far)) & far),
                             background)
    annotations.data_setitem(np.nonzero(skeletonize(cells) & cells), cell)
    start, _preview = round_.prepare(viewer)
    round_.started(Handle())
    result = run_to_end(start)
    assert result.best_dice is not None  # part of the strokes was held out and scored
    round_.on_result(result)
    assert f"Dice on held-out strokes {result.best_dice:.3f}" in round_.metrics
    assert "whole images score lower" in round_.metrics, round_.metrics
    assert "labels layer" in round_.metrics
