"""The Batch section's state without Qt: checks, per-layer status and the summary."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Any

import numpy as np
from napari.components import ViewerModel

from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.inference.predict import segment
from napari_cryoseg.model.checkpoint import ModelFile
from napari_cryoseg.model.config import preset
from napari_cryoseg.viewer.batch_state import BatchState
from napari_cryoseg.viewer.layers import record_for_image, show_prediction
from napari_cryoseg.viewer.session import Session


@dataclass
class Outcome:
    """What the dock's segmentation path reports per layer (LayerOutcome's fields)."""

    layer: Any
    status: str
    prediction: Any = None
    message: str = ""


def _viewer_with_a_corrected_layer():
    viewer = ViewerModel()
    session = Session.for_viewer(viewer)
    model = ModelFile.new(preset("tiny"), seed=0)
    session.set_model(model, keep_previous=False)
    rng = np.random.default_rng(0)
    images = {name: viewer.add_image(rng.random((40, 48)).astype(np.float32), name=name)
              for name in ("fixed", "plain", "rgb-free")}
    show_prediction(viewer, session, images["fixed"],
                    drain(segment(images["fixed"].data, model, device="cpu")))
    record = record_for_image(session, images["fixed"])
    labels = np.array(record.labels_layer.data)
    labels[:5, :5] = 1 - labels[:5, :5]
    record.labels_layer.data = labels  # the user corrected this one
    return viewer, session, images


def test_corrected_layers_start_unchecked_and_the_users_checks_stay():
    viewer, session, images = _viewer_with_a_corrected_layer()
    state = BatchState.for_session(session)
    assert BatchState.for_session(session) is state
    assert [layer.name for layer in state.layers(viewer)] == ["fixed", "plain", "rgb-free"]
    assert not state.checked(images["fixed"]) and state.checked(images["plain"])
    text, tooltip = state.row_text(images["fixed"])
    assert text == "fixed  (40×48)  —  corrected" and "kept" in tooltip
    assert state.row_text(images["plain"]) == ("plain  (40×48)", "")
    state.choose(images["fixed"], True)
    state.choose(images["plain"], False)
    assert state.checked(images["fixed"]) and not state.checked(images["plain"])


def test_statuses_and_the_summary_of_a_cancelled_job():
    viewer, session, images = _viewer_with_a_corrected_layer()
    state = BatchState.for_session(session)
    layers = [images["plain"], images["rgb-free"], images["fixed"]]
    state.started(layers)
    done = drain(segment(images["plain"].data, session.model, device="cpu"))
    assert state.on_item(Outcome(images["plain"], "done", done)) is images["plain"]
    state.on_item(Outcome(images["rgb-free"], "failed", message="out of memory"))
    state.on_item(Outcome(images["fixed"], "queued"))
    assert state.status(images["plain"]).startswith("done in ")
    assert state.row_text(images["rgb-free"])[0].endswith("—  failed: out of memory")
    assert state.finished(cancelled=True) == "1 done, 1 failed (cancelled)."
    assert state.status(images["fixed"]) == "cancelled"
    # a closed layer's status and check go with it
    closed = images.pop("rgb-free")
    viewer.layers.remove(closed)
    state.started([])
    del closed, layers
    gc.collect()
    assert len(state._status) == 2
