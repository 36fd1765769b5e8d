"""Settings of a segmentation job, declared once (engine layer, no napari).

:class:`SegmentSettings` is what :func:`napari_cryoseg.engine.inference.predict.segment` takes and
what every path of the dock that segments reads from the session (Run, Batch,
re-segmentation after fine-tuning, Revert, the uncertainty map). The CLI builds one
from its flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.core.setting import check_bounds, setting
from napari_cryoseg.core.tiling import TilingConfig
from napari_cryoseg.engine.device import resolve_device

#: Test-time augmentation copies the engine supports (1 = off).
TTA_CHOICES = (1, 2, 4, 8)


@dataclass(frozen=True)
class SegmentSettings:
    """How to segment: the one declaration of the segmentation settings and defaults.

    Every path that segments (the dock's Run, Batch, re-segmentation after fine-tuning,
    Revert, the uncertainty map) reads one instance of this class, and :func:`segment`
    takes it as ``settings``.

    Attributes
    ----------
    tiling : TilingConfig
        Tile edge, overlap and tiles per network call (defaults in
        :class:`~napari_cryoseg.core.tiling.TilingConfig`; a model file's tiling hint
        replaces them until the user sets their own).
    threshold : float or None
        Foreground probability cut-off for binary models; None = the model file's own
        (tuned on its validation images when it was trained).
    tta : int
        Test-time augmentation copies averaged per tile (:data:`TTA_CHOICES`; 1 = off).
    probabilities : bool
        Also keep the class probabilities for display (binary models always keep them,
        for re-thresholding without re-running the network).
    """

    tiling: TilingConfig = TilingConfig()
    # Open (0, 1), as a model file's own tuned threshold is checked (model/file_checks.py):
    # any threshold a model brings can be shown and set again; the dock's box runs from
    # the first value its decimals show above 0 to the last below 1.
    threshold: float | None = setting(
        None, label="Threshold:", flag="--threshold", name="threshold",
        what="a probability threshold", min=0.0, min_open=True, max=1.0, max_open=True,
        step=0.025, decimals=3,
        help="Foreground probability cut-off for binary models (default: the model's own, "
        "tuned on its validation images when it was trained; 0.5 for older model files)")
    tta: int = setting(
        1, label="Test-time aug.:", flag="--tta", name="test-time augmentation",
        choices=TTA_CHOICES,
        help="Test-time augmentation: average the predictions of this many flipped/rotated "
        "copies of every tile (1 = off; as many times slower, usually a little more "
        "accurate)")
    probabilities: bool = setting(
        False, label="Also show probabilities layer", flag="--probabilities",
        name="probabilities",
        help="Also keep the class probabilities (float32, one channel per class): an image "
        "layer next to the labels in napari, a probabilities file next to each label file "
        "from cryoseg segment")

    def __post_init__(self) -> None:
        check_bounds(self)


def check_segmenter_options(
    segmenter: Any, device: Any, mixed_precision: bool, tta: int, *, tta_given: bool = False
) -> None:
    """Refuse options that a ready-made ``Segmenter`` cannot honour (one-line error).

    ``tta_given``: the caller asked for exactly ``tta`` copies (a :class:`SegmentSettings`),
    so 1 (off) on a segmenter that averages several copies is a conflict too.
    """
    problems = []
    if str(device) != "auto" and resolve_device(device) != segmenter.device:
        problems.append(f"device {device} (the segmenter runs on {segmenter.device})")
    if not mixed_precision and segmenter.amp_dtype is not None:
        problems.append("mixed_precision=False (the segmenter uses mixed precision)")
    if (tta_given or tta != 1) and tta != segmenter.tta:
        problems.append(f"tta={tta} (the segmenter averages {segmenter.tta} copies)")
    if problems:
        raise InputError(
            "segment() was given a Segmenter but also " + "; ".join(problems)
            + "; build the Segmenter with these options instead"
        )
