"""Fine-tune rounds: corrections in, a fine-tuned copy of the model out (napari glue, no Qt).

:class:`FinetuneRound` builds a round from the review store's corrections (the model
grown by classes the user named when labels the model lacks are painted), turns its
result into what the dock says and does - swap the model in, keep it aside behind
Apply / Discard when the change check flagged it, or keep the parent - and knows which
layers to segment again, how to revert and what the fine-tuned model records about
where it came from. The worker job itself is :func:`finetune_from_sources`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_cryoseg.core.errors import CryoSegError
from napari_cryoseg.engine.device import warm_up_torch
from napari_cryoseg.engine.events import Message
from napari_cryoseg.engine.training.finetune import finetune
from napari_cryoseg.engine.training.memory import fit_patch_to_memory
from napari_cryoseg.model.heads import add_classes
from napari_cryoseg.model.provenance import Provenance
from napari_cryoseg.viewer import layers as L
from napari_cryoseg.viewer.budget import time_split
from napari_cryoseg.viewer.finetune_outcome import Outcome, describe_outcome
from napari_cryoseg.viewer.live_preview import LivePreview, preview_region
from napari_cryoseg.viewer.new_classes import adopt_classes, find_new_labels, show_new_labels
from napari_cryoseg.viewer.session import SegmentationRecord, same_layer
from napari_cryoseg.viewer.training_data import build_training_data, unlabelled_images
from napari_cryoseg.viewer.training_round import RoundRefused, RoundStart, TrainingRound
from napari_cryoseg.viewer.words import finetuned_name


def finetune_from_sources(model: Any, sources: list, band_px: int, config: Any,
                          value_map: dict[int, int] | None = None, preview: Any = None,
                          unlabelled: list | tuple = ()):
    """Worker job: build the training data from the snapshots, warm torch up, fine-tune.

    torch's lazy first-call set-up runs here, on the worker, never on napari's main
    thread (:func:`~napari_cryoseg.engine.device.warm_up_torch`). ``value_map`` turns
    painted label values into the class indices of a model grown by
    new classes (on the copies; the layers are not touched). Returns
    ``(FinetuneResult, TrainingData)``; the masks are derived here, not on the main
    thread (2-3 s for a 2048² corrected image measured before this moved).
    """
    data = build_training_data(sources, band_px)
    for value, index in (value_map or {}).items():
        for mask in data.masks:
            mask[mask == value] = index
    yield Message("preparing torch…")
    warm_up_torch(model)
    result = yield from finetune(model, data.images, data.masks, data.valid_masks, config,
                                 names=data.names, preview=preview, unlabelled=unlabelled)
    return result, data


@dataclass(frozen=True)
class KeptAside:
    """A fine-tuned model the change check kept aside until the user applies it."""

    result: Any  # FinetuneResult
    data: Any  # the TrainingData it learnt from
    parent: Any  # the model it was fine-tuned from
    outcome: Outcome


class FinetuneRound(TrainingRound):
    """The Fine-tune section's state; ``store`` is the session's CorrectionStore."""

    kind = "finetune"
    cancelled_text = "cancelled: the model was not changed"

    def __init__(self, session: Any, store: Any) -> None:
        super().__init__(session)
        self.store = store
        self.own_model: Any = None  # the model this section swapped in or reverted to
        self.added: dict[int, int] = {}  # painted label value -> class index of this run
        self.parent: Any = None  # the model the running round fine-tunes
        self.unknown_labels: list[Any] = []  # painted values the model lacks, as last found

    # --- starting ----------------------------------------------------------------------
    def new_labels(self) -> list[Any]:
        """Painted label values the model has no class for (shown on the layers)."""
        self.unknown_labels = find_new_labels(self.session)
        show_new_labels(self.session, self.unknown_labels)
        return self.unknown_labels

    def config_for(self, images: list[Any], model: Any) -> Any:
        """The session's fine-tune settings for this run on its device, with the patch of
        the one memory policy (:func:`~napari_cryoseg.engine.training.memory.fit_patch_to_memory`:
        at most the largest image; refused if a step cannot fit)."""
        config = dataclasses.replace(self.session.settings.finetune, device=self.session.device)
        return fit_patch_to_memory(
            config, model.config, [np.shape(i) for i in images],
            what="fine-tuning {batch} patches of {patch} px",
            advice="use fewer or smaller corrected images, or another device")

    def prepare(self, viewer: Any, new_class_names: dict[int, str] | None = None
                ) -> tuple[RoundStart, Any]:
        """``(what to start, its live preview)`` for a round on the corrections.

        Raises :class:`RoundRefused` when there is nothing to learn from, or when labels
        the model lacks are painted and ``new_class_names`` (painted value -> the name the
        user gave) does not name them; ``CryoSegError`` when the model or memory refuses.
        """
        if self.session.busy:
            raise RoundRefused(f"wait for {self.session.busy} to finish (or cancel it) first")
        try:
            parent = L.ensure_model(self.session)  # the bundled default when none is loaded
        except CryoSegError as err:
            raise RoundRefused(f"load or train a model first ({err})") from err
        sources = self.store.training_sources()  # copies; masks are built in the worker
        if not sources:
            raise RoundRefused("no corrections yet: edit a CryoSeg labels layer or mark a "
                               "region reviewed, then fine-tune")
        model, value_map = self._grow(parent, self.new_labels(), new_class_names)
        config = self.config_for([source.image for source in sources], model)
        if value_map:
            # A new class needs BatchNorm statistics that include it and the full
            # fine-tuned weights: averaging with the parent (which never predicts it)
            # would dilute the class just learnt.
            config = dataclasses.replace(config, freeze_batchnorm=False, parent_blend=1.0)
        preview = self._make_preview(viewer, model)
        request = None if preview is None else preview.region.request(
            self.session.settings.loop.preview_every_s)
        self.parent, self.added = parent, value_map
        start = RoundStart(
            finetune_from_sources,
            (model, sources, self.store.band_px, config, value_map, request,
             unlabelled_images(self.store, sources)),
            f"Fine-tuning {parent.name}", config.steps, f"{len(sources)} image(s)")
        return start, preview

    def _grow(self, model: Any, new_labels: list[Any], names: dict[int, str] | None
              ) -> tuple[Any, dict[int, int]]:
        """``(model to fine-tune, painted value -> class index of the added classes)``."""
        if not new_labels:
            return model, {}
        if names is None:
            values = ", ".join(str(label.value) for label in new_labels)
            message = (f"label {values} is painted but '{model.name}' has no such class: "
                       "name it below and press 'Add class … and fine-tune', or erase "
                       "those pixels")
            self.changed(status=message)
            raise RoundRefused(message)
        grown = add_classes(model, [names[label.value] for label in new_labels],
                            [label.color for label in new_labels])
        return grown, {label.value: label.index for label in new_labels}

    def _make_preview(self, viewer: Any, model: Any) -> LivePreview | None:
        """The live preview of the selected corrected image (else the first one)."""
        if not self.session.settings.loop.preview:
            return None
        active = viewer.layers.selection.active
        records = [r for r in self.session.live_records() if self.store.is_corrected(r)]
        if not records:
            return None
        record = next((r for r in records if same_layer(active, r.labels_layer)
                       or same_layer(active, r.image_layer)), records[0])
        region = preview_region(viewer, record.image_layer,
                                self.session.settings.loop.preview_edge)
        return LivePreview(viewer, region, list(model.class_names),
                           list(model.class_colors), "fine-tuning")

    def failed(self, message: str) -> None:
        self.changed(status=f"fine-tuning failed: {message}")

    # --- the result --------------------------------------------------------------------
    def on_result(self, result: Any, data: Any) -> Outcome:
        """Swap the fine-tuned model in, keep it aside, or keep the parent (as the engine
        and the change check decided); returns what the dock says about it."""
        self.kept_aside = None
        outcome = describe_outcome(result)
        # where the time went, under the scores
        outcome = dataclasses.replace(
            outcome, metrics=outcome.metrics + "\n" + time_split(result.model.provenance))
        if not outcome.swap:  # the engine kept the parent's weights: nothing to swap
            self.changed(metrics=outcome.metrics, status=outcome.status + (
                "; no class was added: paint more of it and try again" if self.added else ""))
        elif outcome.ask:  # kept aside until the user applies or discards it
            self.kept_aside = KeptAside(result, data, self.parent, outcome)
            self.changed(metrics=outcome.metrics, status=outcome.status)
        else:
            self._swap(KeptAside(result, data, self.parent, outcome))
        return outcome

    def apply_kept_aside(self) -> bool:
        """Swap in the model the change check kept aside; True when it was swapped in
        (then the caller segments the layers again at once)."""
        if self.kept_aside is None or self.session.busy:
            return False
        kept, self.kept_aside = self.kept_aside, None
        self._swap(kept)
        self.segment_after = False
        return True

    def discard_kept_aside(self) -> None:
        """Forget the fine-tuned model the change check kept aside."""
        if self.kept_aside is None:
            return
        self.kept_aside = None
        name = self.session.model.name if self.session.model is not None else "no model"
        self.changed(status=f"discarded the fine-tuned model; {name} stays")

    def _swap(self, kept: KeptAside) -> None:
        new_model = kept.result.model
        new_model.provenance = {**new_model.provenance,
                                **self.dock_provenance(kept.parent, kept.data)}
        self.own_model = new_model
        self.session.set_model(new_model)  # hot-swap on the main thread
        added = ""
        if self.added:
            adopt_classes(self.session, new_model, self.added)
            added = "added class(es) " + ", ".join(
                repr(new_model.class_names[i]) for i in self.added.values()) + "; "
            self.new_labels()
        self.segment_after = True  # started once this job has ended
        self.changed(metrics=kept.outcome.metrics,
                     status=f"{added}{kept.outcome.status}".strip())

    def dock_provenance(self, parent: Any, data: Any) -> dict[str, Any]:
        """What a model fine-tuned in the dock records about its parent and corrections."""
        return {
            **finetuned_name(parent),  # parent + round + time, not "unsaved model"
            "finetuned_in": "napari-cryoseg dock",
            "parent_name": parent.name,
            "corrections": {
                "images": sorted(set(data.names)),
                "planes": len(data),
                "training_pixels": int(sum(int(v.sum()) for v in data.valid_masks)),
                "project_dir": str(self.store.project_dir),
            },
        }

    # --- after a round: segment again, revert ------------------------------------------
    def records_to_resegment(self) -> list[SegmentationRecord]:
        """The layers "Then segment" asks for (corrected pixels keep their labels)."""
        mode = self.session.settings.loop.resegment
        records = self.session.live_records()
        if mode == "none":
            return []
        if mode == "all":
            return records
        return [r for r in records if not self.store.is_corrected(r)]

    def revert(self) -> Any:
        """Go back to the model before the last fine-tune; the model, or RoundRefused."""
        if self.session.busy:
            raise RoundRefused(f"wait for {self.session.busy} to finish (or cancel it) first")
        if not self.session.previous_models:
            raise RoundRefused("no earlier model to revert to")
        self.own_model = self.session.previous_models[-1]
        model = self.session.revert_model()
        self.changed(metrics=f"reverted to {model.name}")
        return model

    def model_changed(self, model: Any) -> None:
        """Another model was loaded: the last fine-tune's numbers no longer apply."""
        if model is not self.own_model:
            self.changed(metrics=f"model: {model.name} ({Provenance.of(model).describe()})"
                         if model else "")
