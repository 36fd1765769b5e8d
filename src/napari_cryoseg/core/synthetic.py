"""Seeded procedural generator of cryo-SEM-like "cells on a grid square" images.

The generator produces an image together with a ground-truth semantic label map. It is
used as napari sample data, in the test-suite, to train the bundled default model and for
the README demo. Everything is derived from a single integer seed, so the same seed (and
configuration) always gives byte-identical output.

The scene imitates a scanning-electron-microscope overview of one EM grid square before
FIB milling:

* **background** - the support film (holey carbon or plain film under vitreous ice) with a
  low-frequency thickness texture, fine grain and, optionally, a faint regular hole lattice;
* **cell** - irregular, slightly elongated blobs (radius perturbed by a few Fourier
  harmonics) with granular internal texture, darker organelle-like spots, a bright rim
  (SEM edge effect), directional shading and a thin shadow, isolated or in clusters of
  touching cells;
* **ice** - small faceted (polygonal, pyramid-shaded) crystals / contamination, mostly
  bright, a few dark, some sitting on cells;
* **grid bar** - thick, bright, textured metal bars of the grid mesh along one edge, at a
  (rounded) corner of the square, or crossing the field of view.

A smooth charging / illumination gradient, a slight probe blur, shot noise, read noise and
scan-line jitter are added on top. Label priority is grid bar > ice > cell > background.

Only numpy, scipy and scikit-image are used (this module belongs to the ``core`` layer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from napari_cryoseg.core.synthetic_parts import (
    GRID_BAR,
    grain,
    grid_signed_distance,
    paint_cell,
    paint_ice,
    place_cells,
    scaled_count,
    smooth_field,
)

__all__ = [
    "CLASS_COLORS",
    "CLASS_NAMES",
    "SampleConfig",
    "make_sample",
    "make_sample_stack",
]

CLASS_NAMES: tuple[str, ...] = ("background", "cell", "ice", "grid bar")
"""Class names; the index of a name is its label value (0, 1, 2, 3)."""

CLASS_COLORS: tuple[str, ...] = ("#000000", "#33cc66", "#3399ff", "#ff8833")
"""Hex display colour of each class, in the order of :data:`CLASS_NAMES`."""

_SUPPORTED_DTYPES = ("uint8", "uint16", "float32")


@dataclass(frozen=True)
class SampleConfig:
    """Parameters of a synthetic cryo-SEM grid-square image.

    Object counts are given per 512 x 512 pixels and are scaled with the image area (at
    least one object of a kind is drawn when its count is positive), so a larger image
    shows a larger field of view at the same object density and size.

    Attributes
    ----------
    shape : tuple of int
        Image shape ``(Y, X)`` in pixels.
    pixel_size_nm : float
        Pixel size in nanometres. Sets the physical scale of the holey-film lattice and is
        meant to be used as the layer scale by callers.
    n_cells : int
        Number of isolated cells (per 512 x 512 pixels).
    n_clusters : int
        Number of clusters of 3-6 touching cells (per 512 x 512 pixels).
    cell_radius_px : tuple of float
        Range ``(min, max)`` of the mean cell radius in pixels.
    n_ice : int
        Number of ice crystals / contamination particles (per 512 x 512 pixels); small
        satellite crystals may be added next to them.
    grid_bars : bool
        Whether to draw grid bars (the metal mesh around the grid square).
    noise : float
        Strength of the shot noise (signal-dependent) and read noise (constant); ``0``
        disables all noise.
    charging : float
        Peak-to-peak amplitude of the smooth charging / illumination gradient, in units of
        the full intensity range ``[0, 1]``.
    dtype : str
        Output image dtype: ``"uint8"``, ``"uint16"`` (full range used) or ``"float32"``
        (values in ``[0, 1]``).
    """

    shape: tuple[int, int] = (512, 512)
    pixel_size_nm: float = 50.0
    n_cells: int = 14
    n_clusters: int = 3
    cell_radius_px: tuple[float, float] = (14, 30)
    n_ice: int = 6
    grid_bars: bool = True
    noise: float = 0.08
    charging: float = 0.25
    dtype: str = "uint16"

    def __post_init__(self) -> None:
        if len(self.shape) != 2 or min(self.shape) < 16:
            raise ValueError(f"shape must be 2-D with both sides >= 16, got {self.shape}")
        if self.pixel_size_nm <= 0:
            raise ValueError("pixel_size_nm must be positive")
        if min(self.n_cells, self.n_clusters, self.n_ice) < 0:
            raise ValueError("object counts must be >= 0")
        r_min, r_max = self.cell_radius_px
        if not 0 < r_min <= r_max:
            raise ValueError(
                f"cell_radius_px must satisfy 0 < min <= max, got {self.cell_radius_px}"
            )
        if self.noise < 0 or self.charging < 0:
            raise ValueError("noise and charging must be >= 0")
        if self.dtype not in _SUPPORTED_DTYPES:
            raise ValueError(f"dtype must be one of {_SUPPORTED_DTYPES}, got {self.dtype!r}")


# ----------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------


def _to_dtype(img: np.ndarray, dtype: str) -> np.ndarray:
    img = np.clip(img, 0.0, 1.0)
    if dtype == "float32":
        return img.astype(np.float32, copy=False)
    info = np.iinfo(np.dtype(dtype))
    return np.rint(img * info.max).astype(dtype)


def make_sample(
    seed: int = 0, config: SampleConfig = SampleConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """Generate a synthetic cryo-SEM image of cells on a grid square, with labels.

    Parameters
    ----------
    seed : int, optional
        Seed of the random generator (``>= 0``). The same seed and configuration always
        give byte-identical output.
    config : SampleConfig, optional
        Scene parameters; see :class:`SampleConfig`.

    Returns
    -------
    image : numpy.ndarray
        Image of shape ``config.shape`` and dtype ``config.dtype``.
    labels : numpy.ndarray
        ``uint8`` semantic labels of the same shape, with values 0 (background), 1 (cell),
        2 (ice) and 3 (grid bar); see :data:`CLASS_NAMES`.

    Examples
    --------
    >>> image, labels = make_sample(seed=3, config=SampleConfig(shape=(256, 256)))
    >>> image.shape, image.dtype.name, labels.dtype.name
    ((256, 256), 'uint16', 'uint8')
    """
    rng = np.random.default_rng(seed)
    shape = (int(config.shape[0]), int(config.shape[1]))
    h, w = shape
    labels = np.zeros(shape, dtype=np.uint8)

    # global imaging geometry: direction of the secondary-electron detector
    light_angle = rng.uniform(0, 2 * math.pi)
    light = (math.sin(light_angle), math.cos(light_angle))
    bg_level = rng.uniform(0.28, 0.38)

    # --- support film ------------------------------------------------------------------
    img = np.full(shape, bg_level, dtype=np.float32)
    img += rng.uniform(0.02, 0.04) * smooth_field(rng, shape, 64.0)
    img += 0.012 * smooth_field(rng, shape, 12.0)
    img += 0.015 * grain(rng, shape, 1.0)

    # faint holey-film lattice (e.g. Quantifoil R2/2) under the ice, not always visible
    hole_um = rng.choice([1.2, 2.0, 2.0, 3.5])
    pitch_um = hole_um * rng.uniform(1.6, 2.2)
    hole_contrast = rng.uniform(0.0, 0.05) if rng.random() < 0.7 else 0.0
    if hole_contrast > 0:
        pitch = pitch_um * 1000.0 / config.pixel_size_nm
        r_hole = 0.5 * hole_um * 1000.0 / config.pixel_size_nm
        if r_hole >= 2.0:
            ang = rng.uniform(0, math.pi / 2)
            ph_u, ph_v = rng.uniform(0, pitch, 2)
            yv = np.arange(h, dtype=np.float32)[:, None]
            xv = np.arange(w, dtype=np.float32)[None, :]
            fu = np.mod(xv * math.cos(ang) + yv * math.sin(ang) + ph_u, pitch) - pitch / 2
            fv = np.mod(-xv * math.sin(ang) + yv * math.cos(ang) + ph_v, pitch) - pitch / 2
            rr = np.hypot(fu, fv)
            inner = np.clip(r_hole - rr + 0.5, 0, 1)
            edge = np.exp(-(((rr - r_hole) / 1.5) ** 2))
            img -= hole_contrast * inner
            img += 0.6 * hole_contrast * edge

    # --- grid geometry (needed to keep cells and ice on the film) -----------------------
    if config.grid_bars:
        sd = grid_signed_distance(rng, shape)
        film = sd > 4.0
    else:
        sd = None
        film = np.ones(shape, dtype=bool)

    # --- cells -------------------------------------------------------------------------
    cell_texture = 0.65 * grain(rng, shape, 1.2) + 0.55 * smooth_field(rng, shape, 5.0)
    cells = place_cells(
        rng,
        shape,
        scaled_count(config.n_cells, shape),
        scaled_count(config.n_clusters, shape),
        (float(config.cell_radius_px[0]), float(config.cell_radius_px[1])),
        film,
    )
    for cell in cells:
        paint_cell(rng, img, labels, cell, cell_texture, bg_level, light)
    del cell_texture

    # --- ice crystals / contamination ---------------------------------------------------
    paint_ice(rng, img, labels, scaled_count(config.n_ice, shape), cells, film, light_angle)

    # --- grid bars ---------------------------------------------------------------------
    if sd is not None:
        bar_level = rng.uniform(0.62, 0.76)
        depth = -sd
        bar = (
            bar_level
            + 0.05 * (1.0 - np.exp(-np.maximum(depth, 0) / 20.0))  # rounded bar profile
            + 0.16 * np.exp(-np.abs(depth) / 2.0)  # bright edge
            + 0.025 * smooth_field(rng, shape, 24.0)  # uneven metal surface
            + 0.02 * smooth_field(rng, shape, 4.0)
            + 0.025 * grain(rng, shape, 0.8)
        )
        # film next to the bar: thicker ice meniscus and a thin dark gap
        near = np.maximum(sd, 0)
        img -= (0.05 * np.exp(-near / 15.0) + 0.05 * np.exp(-near / 2.5)) * (sd > 0)
        alpha = np.clip(0.5 - sd, 0.0, 1.0)
        img = img * (1 - alpha) + bar * alpha
        labels[sd < 0] = GRID_BAR
        del bar, depth, near, alpha

    # --- imaging: probe blur, charging, noise --------------------------------------------
    img = ndi.gaussian_filter(img, 0.7, truncate=3.0)
    if config.charging > 0:
        ramp_angle = rng.uniform(0, 2 * math.pi)
        yv = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None]
        xv = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
        field = xv * math.cos(ramp_angle) + yv * math.sin(ramp_angle)
        field = field + 0.25 * smooth_field(rng, shape, 0.5 * min(h, w))
        hy, hx = rng.uniform(0, 1, 2)  # a charging hot spot
        spot_sigma = rng.uniform(0.15, 0.35)
        field = field + rng.uniform(0.3, 0.8) * np.exp(
            -((yv + 0.5 - hy) ** 2 + (xv + 0.5 - hx) ** 2) / (2 * spot_sigma**2)
        )
        lo, hi = float(field.min()), float(field.max())
        if hi > lo:
            img += config.charging * ((field - lo) / (hi - lo) - 0.5)
    if config.noise > 0:
        signal = np.clip(img, 0.0, None)
        shot = rng.standard_normal(shape, dtype=np.float32)
        shot *= np.sqrt(signal) * config.noise
        img += shot
        img += 0.3 * config.noise * rng.standard_normal(shape, dtype=np.float32)
        img += 0.15 * config.noise * rng.standard_normal((h, 1), dtype=np.float32)  # scan lines

    return _to_dtype(img, config.dtype), labels


def make_sample_stack(
    n: int, seed: int = 0, config: SampleConfig = SampleConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """Generate a stack of independent synthetic samples.

    Parameters
    ----------
    n : int
        Number of slices (``>= 0``).
    seed : int, optional
        Seed of the first slice; slice ``i`` is ``make_sample(seed + i, config)``.
    config : SampleConfig, optional
        Scene parameters shared by all slices.

    Returns
    -------
    images : numpy.ndarray
        Array of shape ``(n, Y, X)`` and dtype ``config.dtype``.
    labels : numpy.ndarray
        ``uint8`` array of shape ``(n, Y, X)``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    images = np.empty((n, *config.shape), dtype=np.dtype(config.dtype))
    labels = np.empty((n, *config.shape), dtype=np.uint8)
    for i in range(n):
        images[i], labels[i] = make_sample(seed + i, config)
    return images, labels
