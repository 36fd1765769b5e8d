"""Train-new-model rounds: painted strokes in, a new model out (napari glue, no Qt).

:class:`TrainRound` snapshots the annotation layers, starts
:func:`~napari_cryoseg.engine.training.train.train` on the painted pixels, judges the result
(:func:`~napari_cryoseg.engine.training.verdict.judge`): a model that learned too little is kept
aside with its report until the user applies it; a useful one becomes the session's
model and the open images are segmented with it once the job has ended. The annotation
layers are only read.
"""

from __future__ import annotations

from typing import Any

from napari.utils.notifications import show_warning

from napari_cryoseg.engine.events import Message
from napari_cryoseg.engine.training.train import train
from napari_cryoseg.engine.training.verdict import held_out_score_text, judge
from napari_cryoseg.viewer import layers as L
from napari_cryoseg.viewer.annotations import fit_to_memory
from napari_cryoseg.viewer.budget import time_split
from napari_cryoseg.viewer.live_preview import LivePreview, preview_region
from napari_cryoseg.viewer.session import same_layer
from napari_cryoseg.viewer.training_round import RoundRefused, RoundStart, TrainingRound
from napari_cryoseg.viewer.words import dock_words


def train_from_annotations(images: list, masks: list, valid_masks: list, config: Any,
                           mapping: Any, names: list, colors: list, preview: Any,
                           model_name: str, pixel_size_nm: float | None):
    """Worker job: :func:`~napari_cryoseg.engine.training.train.train` on the painted pixels."""
    yield Message(f"training on {len(images)} annotated image(s)…")
    return (yield from train(images, masks, config, mapping, names=names,
                             class_colors=colors, valid_masks=valid_masks, preview=preview,
                             model_name=model_name, pixel_size_nm=pixel_size_nm))


class TrainRound(TrainingRound):
    """The Train new model section's state; ``store`` is the session's AnnotationStore."""

    kind = "train"
    cancelled_text = "cancelled: no model was made; your annotations are unchanged"

    def __init__(self, session: Any, store: Any) -> None:
        super().__init__(session)
        self.store = store
        self.verdict: Any = None  # the judgement of the last result
        self.annotations: Any = None  # the snapshot the running round learns from

    def annotate_selection(self, viewer: Any) -> list[Any]:
        """Annotation layers for the selected image layers (or the only image), painting
        with the first class; RoundRefused when nothing usable is selected."""
        images = L.segmentable_image_layers(viewer)
        selected = [layer for layer in images if layer in viewer.layers.selection]
        unusable = [(layer, reason) for layer, reason in L.unusable_image_layers(viewer)
                    if layer in viewer.layers.selection]
        if not selected and len(images) == 1 and not unusable:
            selected = images
        if not selected and unusable:
            layer, reason = unusable[0]
            raise RoundRefused(f"layer '{layer.name}' cannot be annotated: {reason}")
        if not selected:
            raise RoundRefused("select the image layer(s) to annotate in the layer list"
                               if images else
                               "open an image first: there is nothing to annotate")
        made = [self.store.annotate(layer) for layer in selected]
        spec = (self.store.classes.foreground or self.store.classes.classes)[0]
        self.store.paint_with(spec.value, made[-1])
        return made

    def prepare(self, viewer: Any) -> tuple[RoundStart, Any]:
        """``(what to start, its live preview)``; ``CryoSegError`` (one line) when the
        annotations or the memory refuse."""
        if self.session.busy:
            raise RoundRefused(f"wait for {self.session.busy} to finish (or cancel it) first")
        annotations = self.store.snapshot()
        config = fit_to_memory(self.session.settings.train, annotations, self.session.device)
        preview = self._make_preview(viewer, annotations)
        names = list(annotations.mapping.names)
        self.annotations = annotations
        start = RoundStart(
            train_from_annotations,
            (annotations.images, annotations.masks, annotations.valid_masks, config,
             annotations.mapping, annotations.names, annotations.class_colors,
             None if preview is None else preview.region.request(
                 self.session.settings.loop.preview_every_s),
             "trained: " + ", ".join(names[1:]), L.pixel_size_nm(annotations.image_layers[0])),
            f"Training a {config.preset} model", config.steps,
            f"{len(annotations.images)} image(s)")
        return start, preview

    def _make_preview(self, viewer: Any, annotations: Any) -> LivePreview | None:
        """The live preview of the selected annotated image (else the first one)."""
        settings = self.session.settings.loop
        if not settings.preview:
            return None
        active = viewer.layers.selection.active
        image = next((image for image, labels in self.store.links()
                      if (same_layer(active, image) or same_layer(active, labels))
                      and any(same_layer(image, used) for used in annotations.image_layers)),
                     annotations.image_layers[0])
        region = preview_region(viewer, image, settings.preview_edge)
        return LivePreview(viewer, region, list(annotations.mapping.names),
                           list(annotations.class_colors), "training")

    def on_message(self, event: Message) -> None:
        if event.level == "warning":
            text = dock_words(event.text.removeprefix("WARNING: "))
            show_warning(f"CryoSeg: {text}")
            self.changed(warning="\n".join(filter(None, [self.warning, text])))
        else:
            super().on_message(event)

    def failed(self, message: str) -> None:
        self.changed(status=f"training failed: {message} (your annotations are unchanged)")

    def on_result(self, result: Any) -> Any:
        """The new model when it became the session's model; None when it was kept
        aside (the verdict says why; :meth:`apply_kept_aside` applies it anyway)."""
        model = result.best
        model.provenance = {**model.provenance, **self.annotations.provenance()}
        dice = ("; " + held_out_score_text(result.best_dice, result.best_step)
                if result.best_dice is not None else "")
        metrics = f"{result.steps} steps ({result.stop_reason}){dice}\n" + time_split(
            model.provenance)
        self.verdict = judge("train", result.steps, model.class_names,
                             after=model.provenance.get("metrics", {}).get("validation"),
                             pretrained=model.provenance.get("parent") is not None)
        if not self.verdict.apply:
            self.kept_aside = model
            self.changed(metrics=metrics, warning=self.verdict.text(), status=(
                f"the new model '{model.name}' was kept aside; the current model is "
                "unchanged. Apply it anyway, or train longer"))
            return None
        self.metrics = metrics
        return self._apply(model)

    def apply_kept_aside(self) -> Any:
        """Make the model kept aside the session's model (the user's choice); the model,
        or None when there is none or a job runs. The caller segments at once."""
        if self.kept_aside is None or self.session.busy:
            return None
        model, self.kept_aside = self.kept_aside, None
        self._apply(model)
        self.segment_after = False
        return model

    def _apply(self, model: Any) -> Any:
        self.session.set_model(model)
        self.segment_after = True  # started once this job has ended
        self.changed(status=f"new model '{model.name}' is the current model; segmenting "
                            "the open images…")
        return model

    def images_to_segment(self, viewer: Any) -> list[Any]:
        """Every open image the new model can segment."""
        return L.segmentable_image_layers(viewer) if self.session.model is not None else []

    @staticmethod
    def segmented_text(count: int, name: str, cancelled: bool) -> str:
        return (f"segmented {count} image(s) with the new model '{name}'"
                + (" (cancelled)" if cancelled else "")
                + "; correct the results and fine-tune, or Save model… in Fine-tune")
