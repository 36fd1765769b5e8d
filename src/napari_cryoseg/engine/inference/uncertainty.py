"""Test-time-augmentation (TTA) uncertainty: where is the model unsure?

The whole image is segmented under each of the 8 symmetries of the square (or a
subset: flips and rotations by 90 degrees of the last two axes), each result is mapped
back, and per pixel we measure either

* ``"entropy"`` - the entropy of the mean class distribution, divided by ``log(K)`` so it
  lies in [0, 1] (0 = all runs sure of one class, 1 = uniform), or
* ``"disagreement"`` - the fraction of runs whose label differs from the majority label.

:func:`most_uncertain_tile` then picks the tile to correct next, ignoring pixels the
user already corrected or reviewed.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from typing import Any

import numpy as np

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.core.tiling import TilingConfig
from napari_cryoseg.engine.events import Progress, relay
from napari_cryoseg.engine.inference.predict import TRANSFORMS, Segmenter, count_tiles, segment
from napari_cryoseg.model.checkpoint import ModelFile

__all__ = ["TRANSFORMS", "most_uncertain_tile", "tta_uncertainty"]

DEFAULT_TRANSFORMS = ("identity", "flip_x", "rot90", "rot180_flip")


def _forward(array: np.ndarray, k: int, flip: bool) -> np.ndarray:
    out = np.rot90(array, k, axes=(-2, -1)) if k else array
    if flip:
        out = out[..., ::-1]
    return np.ascontiguousarray(out)


def _inverse(array: np.ndarray, k: int, flip: bool) -> np.ndarray:
    out = array[..., ::-1] if flip else array
    return np.rot90(out, -k, axes=(-2, -1)) if k else out


def tta_uncertainty(
    image: Any,
    model: ModelFile | Segmenter,
    *,
    transforms: Sequence[str] = DEFAULT_TRANSFORMS,
    measure: str = "entropy",
    tiling: TilingConfig | None = None,
    device: str = "auto",
) -> Generator[Progress, None, np.ndarray]:
    """Per-pixel uncertainty of ``model`` on ``image`` from test-time augmentation.

    Parameters
    ----------
    image : numpy.ndarray
        2D (Y, X) or 3D (Z/T, Y, X) image, as for
        :func:`~napari_cryoseg.engine.inference.predict.segment`.
    model : ModelFile or Segmenter
        The model (one segmenter is built and reused for all runs).
    transforms : sequence of str
        Names from :data:`TRANSFORMS` (at least 2).
    measure : {"entropy", "disagreement"}
    tiling, device
        As for ``segment``.

    Yields
    ------
    Progress
        Stage ``"uncertainty"``, counting tiles over all runs.

    Returns
    -------
    numpy.ndarray
        float32 map of the image's shape, values in [0, 1].
    """
    if measure not in ("entropy", "disagreement"):
        raise InputError(f"measure {measure!r} must be 'entropy' or 'disagreement'")
    unknown = [t for t in transforms if t not in TRANSFORMS]
    if unknown:
        raise InputError(f"unknown transforms {unknown}; choose from {', '.join(TRANSFORMS)}")
    if len(transforms) < 2:
        raise InputError("test-time augmentation needs at least 2 transforms")
    started = time.perf_counter()
    segmenter = model if isinstance(model, Segmenter) else Segmenter(model, device)
    image = np.asarray(image)
    n_classes = segmenter.model.config.n_classes
    tiling = tiling or segmenter.model.tiling
    per_run = count_tiles(image.shape, tiling.tile, tiling.overlap, segmenter.config.stride)
    total = per_run * len(transforms)
    mean_probs: np.ndarray | None = None
    votes: np.ndarray | None = None
    for run, name in enumerate(transforms):
        k, flip = TRANSFORMS[name]
        gen = segment(_forward(image, k, flip), segmenter, tiling, return_probabilities=True)
        prediction = yield from relay(gen, lambda event, run=run, name=name: Progress(
            "uncertainty", run * per_run + event.done, total,
            f"{name}: {event.done}/{event.total} tiles", time.perf_counter() - started,
        ))
        probs = _inverse(prediction.probabilities, k, flip)  # (..., K', Y, X)
        if probs.shape[-3] == 1:  # binary: p(foreground) -> [1 - p, p]
            probs = np.concatenate([1.0 - probs, probs], axis=-3)
        labels = _inverse(prediction.labels, k, flip)
        if mean_probs is None:
            mean_probs = np.zeros(probs.shape, dtype=np.float64)
            votes = np.zeros((n_classes, *labels.shape), dtype=np.int32)
        mean_probs += probs
        for c in range(n_classes):
            votes[c] += labels == c
    assert mean_probs is not None
    assert votes is not None
    if measure == "entropy":
        p = np.clip(mean_probs / len(transforms), 1e-12, 1.0)
        entropy = -(p * np.log(p)).sum(axis=-3)
        result = entropy / np.log(max(p.shape[-3], 2))
    else:
        result = 1.0 - votes.max(axis=0) / len(transforms)
    yield Progress("uncertainty", total, total, "done", time.perf_counter() - started)
    return np.clip(result, 0.0, 1.0).astype(np.float32)


def most_uncertain_tile(
    uncertainty: np.ndarray,
    tile: int | tuple[int, int],
    exclude_mask: np.ndarray | None = None,
) -> tuple[int, int]:
    """Top-left corner ``(y, x)`` of the tile with the highest mean uncertainty.

    Pixels in ``exclude_mask`` (already corrected or reviewed) count as certain (0), so
    tiles the user has already handled lose. Every tile position is scored (summed-area
    table, O(pixels)); the tile is clipped to the image when the image is smaller.

    Parameters
    ----------
    uncertainty : numpy.ndarray
        2D float map.
    tile : int or (int, int)
        Tile size (rows, columns).
    exclude_mask : numpy.ndarray, optional
        bool mask of the map's shape.
    """
    u = np.asarray(uncertainty, dtype=np.float64)
    if u.ndim != 2:
        raise InputError(f"uncertainty map must be 2D, got shape {u.shape}")
    th, tw = (tile, tile) if isinstance(tile, int) else tile
    th, tw = max(1, min(int(th), u.shape[0])), max(1, min(int(tw), u.shape[1]))
    u = np.nan_to_num(u, nan=0.0)
    if exclude_mask is not None:
        exclude_mask = np.asarray(exclude_mask, dtype=bool)
        if exclude_mask.shape != u.shape:
            raise InputError(f"exclude mask shape {exclude_mask.shape} != map shape {u.shape}")
        u = np.where(exclude_mask, 0.0, u)
    sat = np.zeros((u.shape[0] + 1, u.shape[1] + 1))
    sat[1:, 1:] = u.cumsum(0).cumsum(1)
    sums = sat[th:, tw:] - sat[:-th, tw:] - sat[th:, :-tw] + sat[:-th, :-tw]
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(y), int(x)
