"""Does a model fit an image? Cheap signals that its labels should not be trusted as-is.

After a model segments an image the dock compares, without running anything again:

- **intensities**: the image's raw intensity statistics against those of the model's
  training images (recorded in the model file at training time, when present);
- **prediction entropy**: how unsure the model is over the image (from the
  probabilities the segmentation kept, when it kept them);
- **class fractions**: the share of the image each class takes against its share of the
  training pixels (the synthetic grid-square default labels 55 % of a brain-EM section
  "cell" and 38 % "ice");
- **pixel size**: the image's against the one the model was trained at, or missing.

Each finding is one sentence with what to do. None of this proves the labels wrong; it
says where to look first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["class_fractions", "fit_findings", "intensity_stats"]

#: Intensity statistics use at most this many pixels (a strided subsample).
SAMPLE_PIXELS = 65_536
#: Image mean this many training standard deviations from the training mean: unusual.
INTENSITY_Z = 3.0
#: Image contrast (std) this many times larger or smaller than in training: unusual.
CONTRAST_RATIO = 3.0
#: Mean normalised entropy (0 sure, 1 uniform) above this: the model is unsure.
ENTROPY_LIMIT = 0.5
#: A class taking this much more of the image than of the training pixels (and at least
#: :data:`FRACTION_MIN` of the image) is suspicious.
FRACTION_RATIO = 3.0
FRACTION_MIN = 0.2
#: Pixel sizes further apart than this factor: the structures look another size.
PIXEL_RATIO = 1.5


def _sample(image: np.ndarray) -> np.ndarray:
    flat = np.asarray(image).reshape(-1)
    stride = max(1, flat.size // SAMPLE_PIXELS)
    return flat[::stride].astype(np.float64)


def intensity_stats(images: Sequence[np.ndarray]) -> dict[str, float]:
    """Raw intensity mean, std and 1st/99th percentiles over ``images`` (subsampled)."""
    values = np.concatenate([_sample(im) for im in images]) if images else np.zeros(1)
    p1, p99 = np.percentile(values, [1, 99])
    return {"mean": float(values.mean()), "std": float(values.std()), "p1": float(p1),
            "p99": float(p99)}


def class_fractions(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Share of the pixels of each class 0..n_classes-1 in ``labels``."""
    counts = np.bincount(np.asarray(labels).reshape(-1).astype(np.int64).clip(0, n_classes),
                         minlength=n_classes + 1)[:n_classes]
    return counts / max(int(counts.sum()), 1)


def _entropy(probabilities: np.ndarray | None, n_classes: int) -> float | None:
    """Mean normalised entropy of (K, ...) probabilities (K = 1: binary foreground)."""
    if probabilities is None:
        return None
    p = np.asarray(probabilities, dtype=np.float32)
    if p.ndim >= 3 and p.shape[0] == 1 or n_classes == 2 and p.ndim == 2:
        q = np.clip(p.reshape(-1), 1e-6, 1 - 1e-6)[:: max(1, p.size // SAMPLE_PIXELS)]
        h = -(q * np.log(q) + (1 - q) * np.log(1 - q))
        return float(h.mean() / math.log(2))
    if p.ndim < 3 or p.shape[0] != n_classes:
        return None
    flat = p.reshape(n_classes, -1)[:, :: max(1, p[0].size // SAMPLE_PIXELS)]
    flat = np.clip(flat, 1e-6, 1.0)
    h = -(flat * np.log(flat)).sum(axis=0)
    return float(h.mean() / math.log(n_classes))


def _training_fractions(provenance: dict[str, Any], names: Sequence[str]) -> dict | None:
    counts = (provenance.get("training_data") or {}).get("pixel_counts")
    if not isinstance(counts, dict) or not counts:
        return None
    total = float(sum(float(v) for v in counts.values()))
    if total <= 0 or not all(n in counts for n in names):
        return None
    return {n: float(counts[n]) / total for n in names}


def fit_findings(model: Any, image: np.ndarray, labels: np.ndarray,
                 probabilities: np.ndarray | None = None,
                 pixel_size_nm: float | None = None) -> list[str]:
    """Sentences on how ``model`` may not fit ``image`` (empty: nothing unusual)."""
    names = list(model.class_names)
    provenance = model.provenance or {}
    found = []
    trained = (provenance.get("training_data") or {}).get("intensity")
    if isinstance(trained, dict) and trained.get("std"):
        now = intensity_stats([image])
        z = abs(now["mean"] - trained["mean"]) / max(trained["std"], 1e-6)
        ratio = (now["std"] + 1e-6) / (trained["std"] + 1e-6)
        if z > INTENSITY_Z or not 1 / CONTRAST_RATIO <= ratio <= CONTRAST_RATIO:
            found.append(f"its intensities (mean {now['mean']:.3g}, spread {now['std']:.3g}) "
                         f"are unlike the training images' ({trained['mean']:.3g}, "
                         f"{trained['std']:.3g}): another microscope or settings? Correct "
                         "a few regions and Fine-tune, or train a new model")
    entropy = _entropy(probabilities, len(names))
    if entropy is not None and entropy > ENTROPY_LIMIT:
        found.append(f"the model is unsure over most of the image (entropy {entropy:.2f} of "
                     "1): look at the Uncertainty map, correct there and Fine-tune")
    fractions = class_fractions(labels, len(names))
    training = _training_fractions(provenance, names)
    if training is not None:
        for c, name in enumerate(names[1:], start=1):
            share, usual = float(fractions[c]), training[name]
            if share >= FRACTION_MIN and share > FRACTION_RATIO * usual:
                found.append(f"it labels {share:.0%} of the image '{name}' (its training "
                             f"data had {usual:.0%}): check a few regions; if they are "
                             "wrong, correct them and Fine-tune")
    model_px = getattr(model, "pixel_size_nm", None)
    if model_px:
        if pixel_size_nm is None:
            found.append(f"the image has no pixel size and the model was trained at "
                         f"{model_px:g} nm/px: set the layer's scale (or open a file that "
                         "stores it) so sizes can be compared")
        elif not 1 / PIXEL_RATIO <= pixel_size_nm / model_px <= PIXEL_RATIO:
            found.append(f"the image is at {pixel_size_nm:g} nm/px and the model was trained "
                         f"at {model_px:g} nm/px: structures look {model_px / pixel_size_nm:.2g}"
                         "x their trained size; bin or resample the image, or train on "
                         "images of this pixel size")
    return found
