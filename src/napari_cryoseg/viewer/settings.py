"""The dock's settings: one object per job, defaults declared once (napari glue, no Qt).

A :class:`DockSettings` lives on the :class:`~napari_cryoseg.viewer.session.Session`.
Widgets only read and write it (:meth:`DockSettings.set`); every job reads it when it
starts:

* ``segment`` - :class:`~napari_cryoseg.engine.inference.settings.SegmentSettings` (tiling,
  threshold, test-time augmentation, probabilities layer) for Run, Batch,
  re-segmentation after fine-tuning, Revert and the uncertainty map;
* ``finetune`` - :class:`~napari_cryoseg.engine.training.finetune.FinetuneConfig`;
* ``train`` - :class:`~napari_cryoseg.engine.training.train.TrainConfig` of a new model trained
  from painted annotations (preset, time budget);
* ``loop`` - :class:`LoopSettings`: what to re-segment after fine-tuning, the tile
  size of "Go to uncertain tile", the live preview while training or fine-tuning.

A model's hints (its tiling hint and tuned threshold) fill in the settings the user
has not set; a value the user typed is never replaced by loading a model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.core.setting import about, check_bounds, setting
from napari_cryoseg.engine.inference.settings import SegmentSettings
from napari_cryoseg.engine.training.finetune_settings import FinetuneConfig
from napari_cryoseg.engine.training.preview import MAX_PREVIEW_EDGE, PreviewRequest
from napari_cryoseg.engine.training.train_settings import TrainConfig
from napari_cryoseg.model.config import UNetConfig, preset

#: What to segment again after fine-tuning (corrections are kept in every case).
RESEGMENT_CHOICES = ("uncorrected layers", "all", "none")
#: The dock caps a fine-tuning run at this many seconds unless the user changes it:
#: the interactive loop is about quick rounds (the engine alone runs a fixed step count).
DOCK_FINETUNE_BUDGET_S = 60.0
#: A new model trained from annotations in the dock: the cheapest preset that learns from
#: a few strokes. Not in a minute on a CPU: a 2-core CPU makes a step in seconds and a
#: useful model needs tens of steps, so the dock measures the step time and proposes a
#: budget (engine/training/step_time.py); the 60 s default suits a GPU.
DOCK_TRAIN_PRESET = "small"
DOCK_TRAIN_BUDGET_S = 60.0
#: Longest edge of the live preview region the dock asks for. Predicting it takes time
#: from training (the engine keeps previews within 10 % of it), so on a CPU a smaller
#: region is shown more often; the engine accepts up to ``MAX_PREVIEW_EDGE``.
DOCK_PREVIEW_EDGE = 512


@dataclass(frozen=True)
class LoopSettings:
    """Settings of the correct / fine-tune loop that are not the engine's.

    Attributes
    ----------
    resegment : str
        After fine-tuning, segment again ``"uncorrected layers"``, ``"all"`` layers or
        ``"none"``; corrected and reviewed pixels keep their labels either way.
    uncertain_tile : int
        Edge in pixels of the tile "Go to uncertain tile" looks for and zooms to.
    preview : bool
        While training or fine-tuning, show a live prediction of the region in view
        made with the weights of the moment.
    preview_every_s : float
        Seconds between two previews (at least; the engine spaces them further when a
        preview would take more than its share of the training time).
    preview_edge : int
        Longest edge in pixels of the preview region; a larger view is downsampled.
    """

    resegment: str = setting(
        RESEGMENT_CHOICES[0], label="Then segment:", name="re-segment",
        choices=RESEGMENT_CHOICES,
        help="Layers to segment again with the new model; corrected and reviewed pixels "
        "keep their labels in every case")
    uncertain_tile: int = setting(
        128, label="Tile:", name="uncertain tile", what="a tile edge in pixels",
        min=16, max=2048, step=16,
        help="Size of the region 'Go to uncertain tile' looks for and zooms to")
    preview: bool = setting(
        True, label="Live preview", name="live preview",
        help="While training or fine-tuning, show now and then what the model of the "
        "moment makes of the region in view (Train new model and Fine-tune share it)")
    preview_every_s: float = setting(
        PreviewRequest.every_s, label="Preview every:", name="preview interval",
        what="a time in seconds", min=0.1, max=600.0, step=0.5, decimals=1,
        help="Seconds between previews, at least; they are spaced further when predicting "
        "would take more than a tenth of the training time")
    preview_edge: int = setting(
        DOCK_PREVIEW_EDGE, label="Preview edge:", name="preview edge",
        what="an edge in pixels", min=16, max=MAX_PREVIEW_EDGE,
        help="Longest edge in pixels of the preview region; a larger view is downsampled")

    def __post_init__(self) -> None:
        for name in ("uncertain_tile", "preview_edge"):  # pixels: whole numbers only
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise InputError(f"{about(LoopSettings, name).name} {value!r} must be a "
                                 "whole number of pixels")
        check_bounds(self)


def macs_per_pixel(config: UNetConfig) -> float:
    """Multiply-adds of one forward pass per input pixel (convolutions only).

    The cost of a training step grows with it (backward is about twice the forward);
    used to compare presets without running them.
    """
    depth = config.depth
    total = 0.0
    for name, shape in config.state_shapes().items():
        if len(shape) != 4 or not name.endswith(".weight"):
            continue
        parts = name.split(".")
        if parts[0] == "encoders":
            level = int(parts[1])
        elif parts[0] in ("ups", "decoders"):
            level = depth - 1 - int(parts[1])  # decoder j = 0 is the deepest
        else:  # the 1x1 head at full resolution
            level = 0
        per_output = float(np.prod(shape))
        if parts[0] == "ups" and config.upsampling == "transpose":
            per_output /= 4  # a 2x2 transposed conv: each output pixel gets one tap
        total += per_output / 4**level
    return total


def preset_hint(name: str) -> str:
    """One line on what a preset costs, relative to :data:`DOCK_TRAIN_PRESET`."""
    config = preset(name)
    reference = macs_per_pixel(preset(DOCK_TRAIN_PRESET))
    ratio = macs_per_pixel(config) / reference
    size = f"{name}: {config.parameter_count() / 1e6:.2f} M parameters"
    if name == DOCK_TRAIN_PRESET:
        return f"{size}; the default for a first model"
    if ratio < 1:
        return (f"{size}, {ratio:.2f}x the computation of {DOCK_TRAIN_PRESET} per step: "
                "more steps in the same time, less capacity")
    return (f"{size}, {ratio:.0f}x the computation of {DOCK_TRAIN_PRESET} per step: "
            "give it a GPU or a longer time budget")


def _replace_path(obj: Any, path: str, value: Any) -> Any:
    """``dataclasses.replace`` along a dotted path (``"tiling.tile"``)."""
    head, _, rest = path.partition(".")
    if rest:
        value = _replace_path(getattr(obj, head), rest, value)
    return dataclasses.replace(obj, **{head: value})


def _get_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass
class DockSettings:
    """The settings of one viewer's dock (see the module docstring).

    Attributes
    ----------
    segment, finetune, train, loop
        The current settings objects (frozen; replaced as a whole on every change).
    edited : set of str
        ``"<job>.<field path>"`` of each value the user set; model hints leave them.
    """

    segment: SegmentSettings = field(default_factory=SegmentSettings)
    finetune: FinetuneConfig = field(
        default_factory=lambda: FinetuneConfig(time_budget_s=DOCK_FINETUNE_BUDGET_S))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        preset=DOCK_TRAIN_PRESET, time_budget_s=DOCK_TRAIN_BUDGET_S))
    loop: LoopSettings = field(default_factory=LoopSettings)
    edited: set[str] = field(default_factory=set)
    _listeners: list[Callable[[str], None]] = field(default_factory=list, repr=False)

    def get(self, key: str) -> Any:
        """The value at ``"<job>.<field path>"``, e.g. ``"segment.tiling.tile"``."""
        job, _, path = key.partition(".")
        return _get_path(getattr(self, job), path)

    def set(self, key: str, value: Any, *, by_user: bool = True) -> None:
        """Set one value (validated by the settings class); listeners are told the job.

        Raises :class:`InputError` for a value the settings class refuses; the old
        settings then stay.
        """
        job, _, path = key.partition(".")
        current = getattr(self, job)
        try:
            updated = _replace_path(current, path, value)
        except (TypeError, ValueError) as err:
            raise InputError(f"{key.replace('.', ' ')} {value!r}: {err}") from None
        if by_user:
            self.edited.add(key)
        if updated != current:
            setattr(self, job, updated)
            self._notify(job)

    def on_change(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(job)`` after ``segment``, ``finetune``, ``train`` or ``loop``
        changed."""
        self._listeners.append(callback)

    def _notify(self, job: str) -> None:
        for callback in list(self._listeners):
            callback(job)

    def adopt_model_hints(self, model: Any) -> None:
        """Take ``model``'s tiling hint and threshold for the values the user has not set."""
        if model is None:
            return
        hints = {
            "segment.tiling.tile": int(model.tiling.tile),
            "segment.tiling.overlap": float(model.tiling.overlap),
            "segment.tiling.batch_size": int(model.tiling.batch_size),
            # None = "the model's own": a new model brings its own tuned threshold
            "segment.threshold": None,
        }
        for key, value in hints.items():
            if key not in self.edited:
                self.set(key, value, by_user=False)
