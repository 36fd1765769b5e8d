"""Intensity normalization: any numeric dtype and range to finite float32."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from napari_cryoseg.core.errors import InputError

#: Above this many pixels, percentiles are estimated from a strided subsample.
_MAX_PERCENTILE_SAMPLES = 4_000_000


@dataclass(frozen=True)
class NormalizationConfig:
    """Percentile normalization stored in each model file.

    ``(x - p_low) / (p_high - p_low)`` maps the ``low``-th percentile to 0 and the
    ``high``-th to 1; values outside are clipped to ``[-clip, 1 + clip]`` so outliers
    (ice, charging spots) cannot dominate.
    """

    low: float = 1.0
    high: float = 99.0
    clip: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.low < self.high <= 100.0:
            raise InputError(
                f"normalization percentiles must satisfy 0 <= low < high <= 100, "
                f"got low={self.low}, high={self.high}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for model files."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NormalizationConfig:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        return cls(**{k: float(v) for k, v in data.items() if k in {"low", "high", "clip"}})


def check_numeric(image: Any) -> None:
    """Raise :class:`InputError` unless ``image`` has a real numeric or bool dtype."""
    dtype = np.dtype(image.dtype)
    if dtype.kind not in "biuf":
        raise InputError(
            f"image dtype {dtype} is not supported; convert to an integer or float grayscale image"
        )


def _sample(image: Any) -> np.ndarray:
    """A strided subsample (a view for numpy, a small compute for dask) for percentiles."""
    size = int(np.prod(image.shape))
    step = 1
    while size // (step * step) > _MAX_PERCENTILE_SAMPLES:
        step *= 2
    sample = image[..., ::step, ::step] if image.ndim >= 2 else image[::step]
    return np.asarray(sample)


def percentile_range(image: Any, config: NormalizationConfig) -> tuple[float, float]:
    """``(p_low, p_high)`` of the finite pixels of ``image`` (numpy or dask).

    Returns a range with ``p_high > p_low`` even for constant images, so the
    normalization never divides by zero.
    """
    check_numeric(image)
    values = _sample(image).astype(np.float32, copy=False).ravel()
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(finite, [config.low, config.high])
    low, high = float(low), float(high)
    if not high > low:
        # Constant (or nearly) image: centre it at 0.5 rather than divide by zero.
        # The spread grows with the value: ±0.5 vanishes in rounding for |x| >~ 1e15.
        spread = max(0.5, abs(low) * 1e-6)
        low, high = low - spread, low + spread
    return low, high


def normalize(
    image: np.ndarray, value_range: tuple[float, float], clip: float = 0.5
) -> np.ndarray:
    """Map ``image`` to float32 with ``value_range`` -> [0, 1]; NaN -> 0, ±Inf clipped.

    Parameters
    ----------
    image : numpy.ndarray
        Any numeric or bool dtype.
    value_range : tuple of float
        ``(low, high)`` as returned by :func:`percentile_range`.
    clip : float
        Output is clipped to ``[-clip, 1 + clip]``.

    Returns
    -------
    numpy.ndarray
        float32, same shape, all finite.
    """
    low, high = value_range
    out = np.asarray(image, dtype=np.float32)
    out = (out - np.float32(low)) * np.float32(1.0 / (high - low))
    np.nan_to_num(out, copy=False, nan=0.0, posinf=1.0 + clip, neginf=-clip)
    np.clip(out, -clip, 1.0 + clip, out=out)
    return out
