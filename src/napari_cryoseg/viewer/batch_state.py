"""The Batch section's state: which image layers to segment, and how each one went (no Qt).

:class:`BatchState` (one per session) keeps the user's own checks (a layer the user never
touched is checked unless its labels were corrected or reviewed), the status of every
layer of the last batch job and the layers that job was given, and words the summary.
The Batch panel only shows these as a checklist.
"""

from __future__ import annotations

import weakref
from typing import Any

from napari_cryoseg.viewer import layers as L
from napari_cryoseg.viewer.review import CorrectionStore
from napari_cryoseg.viewer.session import Session, unwrap

#: What a corrected layer's row says when it has no status of its own.
CORRECTED_NOTE = "corrected"

_STATES: weakref.WeakKeyDictionary[Session, BatchState] = weakref.WeakKeyDictionary()


class BatchState:
    """Checks, per-layer status and the summary of the Batch section."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.store = CorrectionStore.for_session(session)
        # keyed by the layer itself (weakly): a closed layer's entries go with it
        self._status: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self._chosen: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
        self.running: list[Any] = []  # the layers of the last batch job

    @classmethod
    def for_session(cls, session: Session) -> BatchState:
        if session not in _STATES:
            _STATES[session] = cls(session)
        return _STATES[session]

    # --- the checklist -----------------------------------------------------------------
    def layers(self, viewer: Any) -> list[Any]:
        """The image layers Batch can segment, in the layer list's order."""
        return [unwrap(layer) for layer in L.segmentable_image_layers(viewer)]

    def is_corrected(self, layer: Any) -> bool:
        record = self.session.record_for_image(layer)
        return record is not None and self.store.is_corrected(record)

    def checked(self, layer: Any) -> bool:
        """The user's check, else checked unless the layer's labels were corrected."""
        return self._chosen.get(unwrap(layer), not self.is_corrected(layer))

    def choose(self, layer: Any, checked: bool) -> None:
        """The user checked or unchecked ``layer``: kept across refreshes."""
        self._chosen[unwrap(layer)] = bool(checked)

    def row_text(self, layer: Any) -> tuple[str, str]:
        """``(text, tooltip)`` of a layer's row: name, shape and status."""
        shape = "multiscale" if layer.multiscale else "×".join(
            str(s) for s in layer.data.shape)
        corrected = self.is_corrected(layer)
        status = self.status(layer) or (CORRECTED_NOTE if corrected else "")
        tooltip = ("You corrected or reviewed this layer's labels: unchecked by default; if "
                   "segmented, your edits and reviewed regions are kept" if corrected else "")
        return f"{layer.name}  ({shape})" + (f"  —  {status}" if status else ""), tooltip

    # --- a batch job -------------------------------------------------------------------
    def status(self, layer: Any) -> str:
        return self._status.get(unwrap(layer), "")

    def started(self, layers: list[Any]) -> None:
        self.running = [unwrap(layer) for layer in layers]

    def on_item(self, outcome: Any) -> Any:
        """Record a :class:`~napari_cryoseg.widgets.segmentation.LayerOutcome`'s status;
        returns its layer (whose row changed)."""
        if outcome.status == "done":
            text = f"done in {outcome.prediction.elapsed_s:.1f} s"
        elif outcome.status == "closed":
            text = "done (layer closed; result discarded)"
        elif outcome.status == "failed":
            text = f"failed: {outcome.message}"
        else:
            text = outcome.status
        self._status[unwrap(outcome.layer)] = text
        return outcome.layer

    def finished(self, cancelled: bool) -> str:
        """The job ended: layers still waiting are marked cancelled; the summary line."""
        if cancelled:
            for layer in self.running:
                if self.status(layer) in {"queued", "running"}:
                    self._status[layer] = "cancelled"
        states = [self.status(layer) for layer in self.running]
        done = sum(s.startswith("done") for s in states)
        failed = sum(s.startswith("failed") for s in states)
        return f"{done} done, {failed} failed" + (" (cancelled)" if cancelled else "") + "."
