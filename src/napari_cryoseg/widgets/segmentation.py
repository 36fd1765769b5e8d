"""Segment image layers as one job: the single path for Run, Batch, re-segment, Revert.

:func:`segment_layers` snapshots the layers on the main thread, runs
:func:`~napari_cryoseg.engine.jobs.segment_many` through the session's
:class:`~napari_cryoseg.widgets.job_runner.JobRunner` with the session's segment settings and
device, and shows each result as it arrives (:func:`~napari_cryoseg.viewer.layers.show_prediction`
keeps the user's corrections and reviewed marks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from napari.utils.notifications import show_warning

from napari_cryoseg.core.errors import CryoSegError
from napari_cryoseg.engine.jobs import BatchItem, segment_many, total_tiles
from napari_cryoseg.viewer import layers as L
from napari_cryoseg.viewer.fit_warnings import fit_warning
from napari_cryoseg.widgets.job_runner import Job, JobRunner


@dataclass
class LayerOutcome:
    """What happened to one layer of a segmentation job (passed to ``on_item``).

    ``status`` is ``"queued"``, ``"running"``, ``"done"``, ``"failed"`` or ``"closed"``
    (the layer was removed before its result arrived); ``labels_layer`` and
    ``prediction`` are set when done; ``updated`` when an existing labels layer was
    updated rather than a new one added; ``message`` holds a failure's reason.
    """

    layer: Any
    status: str
    prediction: Any = None
    labels_layer: Any = None
    updated: bool = False
    message: str = ""


def _segment_job(*args: Any, **kwargs: Any):
    """:func:`segment_many`, after importing what showing its results will need.

    The first labels layer of a process makes napari import pandas (its ``features``
    table), scikit-image's colour module and scipy.linalg (its default label colormap):
    3.2 s + 0.4 s + 0.3 s on the main thread after the last tile, measured on the 2-core
    machine. Importing them here, in the worker, first moves that off the main thread.
    """
    import pandas  # noqa: F401 - napari's dependencies, imported for their side effect
    import scipy.linalg  # noqa: F401
    import skimage.color  # noqa: F401

    return (yield from segment_many(*args, **kwargs))


def segment_layers(
    viewer: Any,
    session: Any,
    layers: Sequence[Any],
    *,
    kind: str = "segment",
    desc: str,
    on_item: Callable[[LayerOutcome], None] | None = None,
    on_progress: Callable[[Any], None] | None = None,
    on_error: Callable[[str], None] | None = None,
    on_finish: Callable[[Job], None] | None = None,
) -> Job:
    """Start segmenting ``layers`` with the session's model, settings and device.

    Loads the bundled default model when none is loaded yet (its tiling hint fills only
    the settings the user has not set). Raises :class:`CryoSegError` before anything
    starts when no layer can be snapshotted, the model is missing or a job runs.
    """
    model = L.ensure_model(session)
    settings = session.settings.segment
    items: list[tuple[Any, Any]] = []
    for layer in layers:
        try:
            items.append((layer, L.snapshot(layer)))
        except CryoSegError as err:
            if on_item is not None:
                on_item(LayerOutcome(layer, "failed", message=str(err)))
            if len(layers) == 1:
                raise
    if not items:
        raise CryoSegError("nothing to segment: no usable image layer")
    for layer, _ in items:
        if on_item is not None:
            on_item(LayerOutcome(layer, "queued"))
    binary = model.config.n_classes == 2
    keep_probabilities = binary or settings.probabilities

    def on_event(event: Any) -> None:
        if not isinstance(event, BatchItem):
            if on_progress is not None:
                on_progress(event)
            return
        layer, snap = items[event.index]
        outcome = LayerOutcome(layer, event.status)
        if event.status == "done":
            if not session.has_layer(layer):
                outcome.status = "closed"
            else:
                before = session.record_for_image(layer)
                outcome.labels_layer = L.show_prediction(
                    viewer, session, layer, event.result,
                    show_probabilities=settings.probabilities, image=snap)
                outcome.updated = before is not None and before.labels_layer is \
                    outcome.labels_layer
                outcome.prediction = event.result
                warning = fit_warning(session, layer, event.result, snap)
                if warning is not None:  # once per image and model
                    show_warning(f"CryoSeg: {warning}")
        elif event.status == "failed":
            outcome.message = str(event.result)
        if on_item is not None:
            on_item(outcome)

    runner = JobRunner.for_session(session)
    return runner.start(
        kind, _segment_job, [snap.data for _, snap in items], model, settings, session.device,
        probabilities=keep_probabilities,
        desc=desc,
        total=total_tiles([snap.data.shape for _, snap in items], settings, model.config.stride),
        on_event=on_event, on_error=on_error, on_finish=on_finish,
    )
