"""Time-lapse preprocessing shared by training and inference (numpy only).

* Temporal context: the network input for frame ``t`` of a ``(T, Y, X)`` series is the
  stack of frames ``t-k .. t+k`` (indices clamped at the ends, i.e. edge frames repeated).
* Background subtraction ``"median"``: the per-pixel temporal median of the series is
  subtracted from every frame (static background and fixed-pattern noise vanish, moving
  objects remain). Training and inference apply it identically, before normalisation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_cryoseg.core.errors import InputError

#: Values of ``background_subtraction`` in model files and ``cryoseg train``.
BACKGROUND_MODES = ("none", "median")


def check_background_mode(mode: str) -> str:
    """Return ``mode`` or raise :class:`InputError` naming the valid choices."""
    if mode not in BACKGROUND_MODES:
        raise InputError(
            f"background subtraction {mode!r} must be one of {', '.join(BACKGROUND_MODES)}"
        )
    return mode


def context_indices(t: int, n_frames: int, context: int) -> list[int]:
    """Frame indices ``t-k .. t+k`` clamped to ``[0, n_frames - 1]``."""
    return [min(max(i, 0), n_frames - 1) for i in range(t - context, t + context + 1)]


def stack_context(series: np.ndarray, t: int, context: int) -> np.ndarray:
    """``(2k+1, Y, X)`` input channels of frame ``t`` of a ``(T, Y, X)`` series."""
    return np.stack([series[i] for i in context_indices(t, series.shape[0], context)])


def subtract_temporal_median(series: Any) -> np.ndarray:
    """``series - median(series, axis=0)`` as float32 (a ``(T, Y, X)`` numpy/dask array)."""
    data = np.asarray(series)
    if data.ndim != 3:
        raise InputError(
            f"temporal-median background subtraction needs a (T, Y, X) series, got shape "
            f"{tuple(data.shape)}"
        )
    data = data.astype(np.float32, copy=False)
    return (data - np.median(data, axis=0, keepdims=True)).astype(np.float32, copy=False)


def preprocess_series(series: Any, background_subtraction: str) -> Any:
    """Apply the model file's background subtraction (``"none"`` returns ``series``)."""
    if check_background_mode(background_subtraction) == "median":
        return subtract_temporal_median(series)
    return series
