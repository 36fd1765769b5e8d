"""The review record: corrections, reviewed marks, autosave folder, fine-tuning data.

napari model glue (no Qt): a :class:`CorrectionStore` lives in
``session.extensions["corrections"]`` (get it with :meth:`CorrectionStore.for_session`).
It compares each plugin-made labels layer with ``record.predicted`` (paint/data events
only mark a layer dirty), keeps the "reviewed" masks, writes everything to a project
folder and restores it after a crash or restart::

    <project>/project.json
    <project>/<name>_image.tif       the image (written once)
    <project>/<name>_predicted.tif   the model's labels (baseline of the comparison)
    <project>/<name>_corrected.tif   the layer's labels as edited
    <project>/<name>_reviewed.tif    uint8 mask of reviewed pixels

Only images with corrections or reviewed pixels are written (segmenting alone saves
nothing). Every file is written atomically (temp file + rename), ``project.json`` last.
The default project folder is ``$CRYOSEG_PROJECT_DIR`` or
``~/.napari-cryoseg/projects/<YYYY-MM-DD>``. Debouncing the autosave is the caller's job
(the dock uses a Qt single-shot timer and calls :meth:`CorrectionStore.autosave`).
"""

from __future__ import annotations

import json
import os
import re
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from napari_cryoseg.core.atomic import atomic_write
from napari_cryoseg.core.corrections import CorrectionSummary, summarize
from napari_cryoseg.core.errors import InputError
from napari_cryoseg.viewer.camera import view_region
from napari_cryoseg.viewer.session import SegmentationRecord, Session
from napari_cryoseg.viewer.training_data import TrainingData, TrainingSource, build_training_data

__all__ = ["CorrectionStore", "TrainingData", "TrainingSource", "build_training_data",
           "default_project_dir", "restore"]

PROJECT_FILE = "project.json"
PROJECT_VERSION = 1
EXTENSION_KEY = "corrections"
#: How many "mark reviewed" steps can be undone.
REVIEW_UNDO_DEPTH = 20


def default_project_dir() -> Path:
    """``$CRYOSEG_PROJECT_DIR`` or ``~/.napari-cryoseg/projects/<today>``."""
    env = os.environ.get("CRYOSEG_PROJECT_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".napari-cryoseg" / "projects" / date.today().isoformat()


def _safe_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")
    return cleaned[:80] or "image"


def _write_tiff(path: Path, data: np.ndarray) -> None:
    array = np.ascontiguousarray(data)
    atomic_write(path, lambda f: tifffile.imwrite(f, array), overwrite=True)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    text = json.dumps(payload, indent=2).encode()
    atomic_write(path, lambda f: f.write(text), overwrite=True)


class CorrectionStore:
    """Corrections of all plugin-made labels layers of one session.

    Parameters
    ----------
    session : Session
        Its records (image layer, labels layer, ``predicted``, ``reviewed``) are the
        data; the store adds no copies of the layers, only caches.
    project_dir : path, optional
        Where to autosave (default :func:`default_project_dir`, created on first save).
    band_px : int
        Width of the band around corrected pixels that also counts as training data.
    """

    def __init__(
        self, session: Session, project_dir: str | os.PathLike | None = None, *, band_px: int = 4
    ) -> None:
        self.session = session
        self._project_dir = Path(project_dir) if project_dir is not None else None
        self.band_px = band_px
        self._summaries: dict[int, CorrectionSummary] = {}
        self._dirty: set[int] = set()  # layers whose summary must be recomputed
        self._unsaved: set[int] = set()  # layers changed since the last save
        self._watched: dict[int, Any] = {}  # id(labels layer) -> (layer, callback)
        self._saved_predicted: dict[str, int] = {}  # file name -> id(record.predicted)
        self._saved_images: dict[str, Any] = {}  # file name -> image layer written
        self._names: dict[int, str] = {}  # id(labels layer) -> file name stem
        self.listeners: list[Any] = []  # callables(layer) told when a layer got dirty
        #: (record, reviewed mask before the mark) of the last marks, newest last.
        self._review_undo: list[tuple[SegmentationRecord, np.ndarray | None]] = []

    # --- access ------------------------------------------------------------------------
    @classmethod
    def for_session(cls, session: Session, **kwargs: Any) -> CorrectionStore:
        """The session's store (created on first use, kept in ``session.extensions``)."""
        store = session.extensions.get(EXTENSION_KEY)
        if store is None:
            store = cls(session, **kwargs)
            session.extensions[EXTENSION_KEY] = store
        return store

    @property
    def project_dir(self) -> Path:
        """The autosave folder (not created until something is saved)."""
        if self._project_dir is None:
            # never mix two sessions in one folder: <date>, else <date>_2, <date>_3, ...
            base = default_project_dir()
            folder, i = base, 1
            while (folder / PROJECT_FILE).exists():
                i += 1
                folder = base.with_name(f"{base.name}_{i}")
            self._project_dir = folder
        return self._project_dir

    @project_dir.setter
    def project_dir(self, folder: str | os.PathLike) -> None:
        self._project_dir = Path(folder)
        self._saved_predicted.clear()
        self._saved_images.clear()
        self._unsaved.update(id(r.labels_layer) for r in self.session.live_records())

    # --- dirty tracking ----------------------------------------------------------------
    def watch(self, record: SegmentationRecord) -> None:
        """Connect the labels layer's ``paint``/``data`` events as a dirty trigger."""
        layer = record.labels_layer
        key = id(layer)
        if key in self._watched and self._watched[key][0] is layer:
            return

        def on_event(event: Any = None, _layer: Any = layer) -> None:
            self.mark_dirty(_layer)

        for name in ("paint", "data"):
            emitter = getattr(layer.events, name, None)
            if emitter is not None:
                emitter.connect(on_event)
        self._watched[key] = (layer, on_event)
        self._unsaved.add(key)
        self._dirty.add(key)

    def watch_all(self) -> list[SegmentationRecord]:
        """Watch every live record (new ones get connected); returns the records."""
        records = self.session.live_records()
        for record in records:
            self.watch(record)
        alive = {id(r.labels_layer) for r in records}
        for key in list(self._watched):
            if key not in alive:
                layer, callback = self._watched.pop(key)
                for name in ("paint", "data"):
                    emitter = getattr(layer.events, name, None)
                    if emitter is not None:
                        emitter.disconnect(callback)
        return records

    def mark_dirty(self, labels_layer: Any) -> None:
        """Note that ``labels_layer`` changed (recompute its summary, save it again)."""
        self._dirty.add(id(labels_layer))
        self._unsaved.add(id(labels_layer))
        for listener in list(self.listeners):
            listener(labels_layer)

    @property
    def has_unsaved(self) -> bool:
        """True when something changed since the last save."""
        return bool(self._unsaved)

    # --- summaries ---------------------------------------------------------------------
    def summary(self, record_or_layer: Any) -> CorrectionSummary | None:
        """Correction summary of a record or labels layer (None if not plugin-made)."""
        record = self._record(record_or_layer)
        if record is None:
            return None
        key = id(record.labels_layer)
        self.watch(record)
        if key in self._dirty or key not in self._summaries:
            edited = np.asarray(record.labels_layer.data)
            self._summaries[key] = summarize(record.predicted, edited, record.reviewed)
            self._dirty.discard(key)
        return self._summaries[key]

    def summaries(self) -> list[tuple[SegmentationRecord, CorrectionSummary]]:
        """(record, summary) for every live record."""
        out = []
        for record in self.watch_all():
            summary = self.summary(record)
            if summary is not None:
                out.append((record, summary))
        return out

    def is_corrected(self, record: SegmentationRecord) -> bool:
        """True when the layer has changed or reviewed pixels."""
        summary = self.summary(record)
        return summary is not None and not summary.is_empty

    def _record(self, record_or_layer: Any) -> SegmentationRecord | None:
        if isinstance(record_or_layer, SegmentationRecord):
            return record_or_layer
        return self.session.record_for(record_or_layer)

    # --- reviewed regions --------------------------------------------------------------
    def mark_reviewed(self, record_or_layer: Any, region: Any = None) -> int:
        """Mark pixels of a labels layer as reviewed (their labels are taken as right).

        Parameters
        ----------
        region : None, tuple of slices, or bool array
            None: the whole layer; slices: a box in data coordinates; a bool mask of the
            layer's shape.

        Returns
        -------
        int
            Number of pixels newly marked.
        """
        record = self._record(record_or_layer)
        if record is None:
            raise InputError(
                "this labels layer was not made by CryoSeg; segment the image first, then "
                "correct the result"
            )
        shape = np.shape(record.predicted)
        previous = None if record.reviewed is None else record.reviewed.copy()
        if record.reviewed is None:
            record.reviewed = np.zeros(shape, dtype=bool)
        before = int(np.count_nonzero(record.reviewed))
        if region is None:
            record.reviewed[...] = True
        elif isinstance(region, np.ndarray):
            if region.shape != shape:
                raise InputError(f"reviewed mask shape {region.shape} != labels shape {shape}")
            record.reviewed |= region.astype(bool)
        else:
            record.reviewed[tuple(region)] = True
        added = int(np.count_nonzero(record.reviewed)) - before
        if added:
            self._review_undo.append((record, previous))
            del self._review_undo[:-REVIEW_UNDO_DEPTH]
        self.mark_dirty(record.labels_layer)
        return added

    @property
    def can_undo_review(self) -> bool:
        """True when a "mark reviewed" of a layer still in the viewer can be undone."""
        live = {id(r.labels_layer) for r in self.session.live_records()}
        return any(id(r.labels_layer) in live for r, _ in self._review_undo)

    def undo_review(self) -> tuple[SegmentationRecord, int] | None:
        """Undo the last "mark reviewed"; returns (record, pixels unmarked) or None."""
        live = {id(r.labels_layer) for r in self.session.live_records()}
        while self._review_undo:
            record, previous = self._review_undo.pop()
            if id(record.labels_layer) not in live:
                continue
            now = int(np.count_nonzero(record.reviewed)) if record.reviewed is not None else 0
            record.reviewed = previous
            after = int(np.count_nonzero(previous)) if previous is not None else 0
            self.mark_dirty(record.labels_layer)
            return record, now - after
        return None

    def mark_view_reviewed(self, viewer: Any, labels_layer: Any) -> int:
        """Mark what the canvas shows of ``labels_layer`` as reviewed."""
        return self.mark_reviewed(labels_layer, view_region(viewer, labels_layer))

    def mark_shapes_reviewed(self, shapes_layer: Any, labels_layer: Any) -> int:
        """Mark the inside of every shape (rectangles, polygons) as reviewed."""
        shape = np.shape(labels_layer.data)
        masks = shapes_layer.to_masks(mask_shape=shape[-2:])
        mask2d = np.any(np.asarray(masks, dtype=bool), axis=0) if len(masks) else None
        if mask2d is None:
            return 0
        region = np.broadcast_to(mask2d, shape).copy()
        return self.mark_reviewed(labels_layer, region)

    # --- training data -----------------------------------------------------------------
    def training_sources(self) -> list[TrainingSource]:
        """Copies of what fine-tuning needs from each corrected layer (main thread, cheap).

        The valid masks are derived later, off the main thread
        (:func:`build_training_data`).
        """
        sources = []
        for record in self.session.live_records():
            edited = np.array(record.labels_layer.data, copy=True)
            predicted = np.asarray(record.predicted)
            reviewed = None if record.reviewed is None else record.reviewed.copy()
            touched = (reviewed is not None and reviewed.any()) or (
                predicted.shape == edited.shape and bool(np.any(predicted != edited)))
            if touched:
                sources.append(TrainingSource(
                    self.name_of(record), np.array(record.image_layer.data, copy=True),
                    edited, predicted.copy(), reviewed))
        return sources

    def training_data(self) -> TrainingData:
        """Copies of (image, corrected labels, valid mask) of every corrected layer."""
        return build_training_data(self.training_sources(), self.band_px)

    # --- saving ------------------------------------------------------------------------
    def name_of(self, record: SegmentationRecord) -> str:
        """File name stem of a record (from its image layer name, unique in the project)."""
        key = id(record.labels_layer)
        if key not in self._names:
            base = _safe_name(record.image_layer.name)
            taken = set(self._names.values())
            name, i = base, 1
            while name in taken:
                i += 1
                name = f"{base}_{i}"
            self._names[key] = name
        return self._names[key]

    def save(self, folder: str | os.PathLike | None = None) -> Path:
        """Write every corrected or reviewed record to the project folder; returns it.

        Images the user has not touched are not copied: the project is for the work
        that exists nowhere else.
        """
        if folder is not None and Path(folder) != self._project_dir:
            self.project_dir = folder
        folder = self.project_dir
        folder.mkdir(parents=True, exist_ok=True)
        entries = []
        records = [r for r in self.watch_all() if self.is_corrected(r)]
        for record in records:
            name = self.name_of(record)
            key = id(record.labels_layer)
            image_path = folder / f"{name}_image.tif"
            if self._saved_images.get(name) is not record.image_layer or not image_path.exists():
                _write_tiff(image_path, np.asarray(record.image_layer.data))
                self._saved_images[name] = record.image_layer
            if self._saved_predicted.get(name) != id(record.predicted) or not (
                folder / f"{name}_predicted.tif"
            ).exists():
                _write_tiff(folder / f"{name}_predicted.tif", record.predicted)
                self._saved_predicted[name] = id(record.predicted)
                self._unsaved.add(key)
            if key in self._unsaved or not (folder / f"{name}_corrected.tif").exists():
                _write_tiff(folder / f"{name}_corrected.tif", np.asarray(record.labels_layer.data))
                reviewed = record.reviewed
                if reviewed is None:
                    reviewed = np.zeros(np.shape(record.predicted), dtype=bool)
                _write_tiff(folder / f"{name}_reviewed.tif", reviewed.astype(np.uint8))
            summary = self.summary(record)
            entries.append({
                "name": name,
                "image_layer": str(record.image_layer.name),
                "labels_layer": str(record.labels_layer.name),
                "scale": [float(s) for s in record.image_layer.scale],
                "translate": [float(t) for t in record.image_layer.translate],
                "model_name": record.model_name,
                "changed_pixels": summary.changed_pixels if summary else 0,
                "reviewed_pixels": summary.reviewed_pixels if summary else 0,
            })
        model = self.session.model
        _write_json(folder / PROJECT_FILE, {
            "format": "napari-cryoseg-project",
            "version": PROJECT_VERSION,
            "saved": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
            "model_name": model.name if model is not None else None,
            "images": entries,
        })
        self._unsaved.clear()
        return folder

    def autosave(self) -> Path | None:
        """Save if anything changed since the last save (call it debounced).

        Nothing is written until the user has corrected or reviewed something, so merely
        segmenting images never creates a project folder.
        """
        records = [r for r in self.session.live_records() if self.is_corrected(r)]
        if not records:
            return None
        if not self._unsaved and all(
            self._saved_predicted.get(self.name_of(r)) == id(r.predicted) for r in records
        ):
            return None
        return self.save()


def restore(viewer: Any, folder: str | os.PathLike) -> list[SegmentationRecord]:
    """Re-create image + labels layers and session records from a project folder.

    The store of the viewer's session is pointed at ``folder``, so later autosaves go
    on in the same project.
    """
    folder = Path(folder)
    project_file = folder / PROJECT_FILE
    if not project_file.is_file():
        raise InputError(f"'{folder}' is not a CryoSeg project folder (no {PROJECT_FILE})")
    try:
        project = json.loads(project_file.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{project_file} is damaged ({err}); restore it from a backup") from None
    session = Session.for_viewer(viewer)
    store = CorrectionStore.for_session(session)
    records = []
    for entry in project.get("images", []):
        name = entry["name"]
        image = tifffile.imread(folder / f"{name}_image.tif")
        predicted = tifffile.imread(folder / f"{name}_predicted.tif")
        corrected = tifffile.imread(folder / f"{name}_corrected.tif")
        reviewed_path = folder / f"{name}_reviewed.tif"
        reviewed = tifffile.imread(reviewed_path).astype(bool) if reviewed_path.exists() else None
        scale = entry.get("scale") or None
        translate = entry.get("translate") or None
        image_layer = viewer.add_image(
            image, name=entry.get("image_layer", name), scale=scale, translate=translate
        )
        labels_layer = viewer.add_labels(
            corrected, name=entry.get("labels_layer", f"{name} labels"),
            scale=scale, translate=translate,
        )
        record = SegmentationRecord(
            image_layer=image_layer,
            labels_layer=labels_layer,
            predicted=predicted,
            reviewed=reviewed if reviewed is not None and reviewed.any() else None,
            model_name=entry.get("model_name", ""),
        )
        session.add_record(record)
        store._names[id(labels_layer)] = name
        store._saved_predicted[name] = id(record.predicted)
        store._saved_images[name] = image_layer
        records.append(record)
    store._project_dir = folder
    store.watch_all()
    store._unsaved.clear()
    return records
