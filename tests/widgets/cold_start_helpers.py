"""A synthetic lift-out-like scene and brush strokes painted as a user paints them."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from napari_cryoseg.core.metrics import dice


def scene(seed: int, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Mid-grey background (0), bright disks (1), light squares (2) and dark bars (3),
    with noise. The bars are the class a user adds later, to a trained model."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    truth = np.zeros((size, size), np.uint8)
    for _ in range(4):
        cy, cx = rng.integers(14, size - 14, 2)
        truth[(yy - cy) ** 2 + (xx - cx) ** 2 < int(rng.integers(8, 12)) ** 2] = 1
    for _ in range(3):
        y, x = rng.integers(4, size - 18, 2)
        truth[y:y + 14, x:x + 14] = 2
    for _ in range(2):
        y, x = rng.integers(4, size - 44, 2)
        truth[y:y + 40, x:x + 6] = 3
    image = (90 + 120 * (truth == 1) + 60 * (truth == 2) - 80 * (truth == 3)
             + rng.normal(0, 15, truth.shape))
    return image.clip(0, 255).astype(np.uint8), truth


def strokes(truth: np.ndarray, values: dict[int, int]) -> dict[int, tuple[np.ndarray, ...]]:
    """Pixels a user paints for each truth class: the eroded core of every object and
    background scribbles; ``values`` maps truth class -> painted label value.
    Returns painted value -> indices for ``Labels.data_setitem``. Under 20 % of the
    image is painted."""
    painted: dict[int, tuple[np.ndarray, ...]] = {}
    for cls in sorted(set(values) - {0}):
        core = ndimage.binary_erosion(truth == cls, iterations=2 if cls < 3 else 1)
        painted[values[cls]] = np.nonzero(core)
    if 0 not in values:
        return painted
    background = ndimage.binary_erosion(truth == 0, iterations=3)
    lines = np.zeros_like(background)
    for at in np.linspace(0, truth.shape[0], 6)[1:-1].astype(int):
        lines[at:at + 2] = True  # four scribbles across the image and four down it
        lines[:, at:at + 2] = True
    # and a line traced around the objects, a few pixels outside: where classes meet is
    # what sparse strokes teach worst
    objects = truth > 0
    around = (ndimage.binary_dilation(objects, iterations=4)
              & ~ndimage.binary_dilation(objects, iterations=2) & (truth == 0))
    painted[values[0]] = np.nonzero((background & lines) | around)
    return painted


def paint(layer, painted: dict[int, tuple[np.ndarray, ...]]) -> None:
    """Write strokes through the public Labels API, as the brush does (undo history)."""
    for value, indices in painted.items():
        layer.data_setitem(indices, value)


def class_dice(labels: np.ndarray, truth: np.ndarray, cls: int) -> float:
    return dice(np.asarray(labels), truth, cls)
