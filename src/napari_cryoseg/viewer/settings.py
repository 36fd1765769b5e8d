"""The dock's settings: one object per job, defaults declared once (napari glue, no Qt).

A :class:`DockSettings` lives on the :class:`~napari_cryoseg.viewer.session.Session`.
Widgets only read and write it (:meth:`DockSettings.set`); every job reads it when it
starts:

* ``segment`` - :class:`~napari_cryoseg.engine.settings.SegmentSettings` (tiling,
  threshold, test-time augmentation, probabilities layer) for Run, Batch,
  re-segmentation after fine-tuning, Revert and the uncertainty map;
* ``finetune`` - :class:`~napari_cryoseg.engine.finetune.FinetuneConfig`;
* ``loop`` - :class:`LoopSettings`: what to re-segment after fine-tuning, the tile
  size of "Go to uncertain tile".

A model's hints (its tiling hint and tuned threshold) fill in the settings the user
has not set; a value the user typed is never replaced by loading a model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.engine.finetune_settings import FinetuneConfig
from napari_cryoseg.engine.settings import SegmentSettings

#: What to segment again after fine-tuning (corrections are kept in every case).
RESEGMENT_CHOICES = ("uncorrected layers", "all", "none")
#: The dock caps a fine-tuning run at this many seconds unless the user changes it:
#: the interactive loop is about quick rounds (the engine alone runs a fixed step count).
DOCK_FINETUNE_BUDGET_S = 60.0


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
    """

    resegment: str = RESEGMENT_CHOICES[0]
    uncertain_tile: int = 128

    def __post_init__(self) -> None:
        if self.resegment not in RESEGMENT_CHOICES:
            raise InputError(f"re-segment {self.resegment!r} must be one of "
                             f"{', '.join(RESEGMENT_CHOICES)}")
        if not isinstance(self.uncertain_tile, int) or isinstance(self.uncertain_tile, bool) \
                or self.uncertain_tile < 8:
            raise InputError(f"uncertain tile {self.uncertain_tile!r} must be a whole number "
                             "of pixels >= 8")


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
    segment, finetune, loop
        The current settings objects (frozen; replaced as a whole on every change).
    edited : set of str
        ``"<job>.<field path>"`` of each value the user set; model hints leave them.
    """

    segment: SegmentSettings = field(default_factory=SegmentSettings)
    finetune: FinetuneConfig = field(
        default_factory=lambda: FinetuneConfig(time_budget_s=DOCK_FINETUNE_BUDGET_S))
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
        """Call ``callback(job)`` after ``segment``, ``finetune`` or ``loop`` changed."""
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
