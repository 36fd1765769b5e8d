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
from skimage.draw import polygon as draw_polygon

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

BACKGROUND, CELL, ICE, GRID_BAR = 0, 1, 2, 3

_SUPPORTED_DTYPES = ("uint8", "uint16", "float32")
_REFERENCE_AREA = 512 * 512  # object counts in SampleConfig are given per this many pixels


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
# random fields
# ----------------------------------------------------------------------------------------


def _interp_matrix(n: int, scale: float, n_coarse: int, pad: int) -> np.ndarray:
    """Gaussian interpolation weights from a coarse grid (spacing ``scale``) to ``n`` pixels."""
    pos = np.arange(n, dtype=np.float32) / np.float32(scale) + np.float32(pad)
    diff = pos[:, None] - np.arange(n_coarse, dtype=np.float32)[None, :]
    weights = np.exp(np.float32(-0.5 / 0.7**2) * diff * diff)
    return weights / weights.sum(axis=1, keepdims=True)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field with correlation length ~``scale`` pixels.

    White noise on a coarse grid (spacing ``scale``) is interpolated with separable Gaussian
    weights (two small matrix products), which is much faster than a wide Gaussian filter or
    a spline zoom on the full-resolution grid.
    """
    scale = max(float(scale), 1.0)
    pad = 3
    ly = int(math.ceil(shape[0] / scale)) + 2 * pad
    lx = int(math.ceil(shape[1] / scale)) + 2 * pad
    coarse = rng.standard_normal((ly, lx), dtype=np.float32)
    wy = _interp_matrix(shape[0], scale, ly, pad)
    wx = _interp_matrix(shape[1], scale, lx, pad)
    out = wy @ (coarse @ wx.T)
    out -= out.mean()
    std = float(out.std())
    return out / std if std > 0 else out


def _grain(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std fine-grained texture (Gaussian-filtered white noise)."""
    g = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, truncate=3.0)
    std = float(g.std())
    return g / std if std > 0 else g


def _scaled_count(n: int, shape: tuple[int, int]) -> int:
    if n <= 0:
        return 0
    return max(1, int(round(n * shape[0] * shape[1] / _REFERENCE_AREA)))


# ----------------------------------------------------------------------------------------
# grid bars
# ----------------------------------------------------------------------------------------


def _grid_signed_distance(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Signed distance (pixels) to the edge of the grid square: > 0 on the film, < 0 on bars."""
    h, w = shape
    angle = math.radians(rng.uniform(-8.0, 8.0))
    ca, sa = math.cos(angle), math.sin(angle)
    y = (np.arange(h, dtype=np.float32) - (h - 1) / 2)[:, None]
    x = (np.arange(w, dtype=np.float32) - (w - 1) / 2)[None, :]
    u = x * ca + y * sa  # ~x in the grid frame
    v = -x * sa + y * ca  # ~y in the grid frame

    def side(k: int, width: float) -> np.ndarray:
        # distance from the inner edge of a bar along side k (0 left, 1 right, 2 top, 3 bottom)
        if k == 0:
            return u - (-w / 2 + width)
        if k == 1:
            return (w / 2 - width) - u
        if k == 2:
            return v - (-h / 2 + width)
        return (h / 2 - width) - v

    mode = rng.choice(["edge", "corner", "band"], p=[0.35, 0.45, 0.20])
    if mode == "edge":
        k = int(rng.integers(4))
        extent = w if k < 2 else h
        return side(k, rng.uniform(0.07, 0.18) * extent)
    if mode == "corner":
        kx, ky = int(rng.integers(2)), 2 + int(rng.integers(2))
        d1 = side(kx, rng.uniform(0.06, 0.16) * w)
        d2 = side(ky, rng.uniform(0.06, 0.16) * h)
        radius = rng.uniform(0.08, 0.25) * min(h, w)
        a = radius - d1
        b = radius - d2
        outside = np.hypot(np.maximum(a, 0), np.maximum(b, 0))
        inside = np.minimum(np.maximum(a, b), 0)
        return -(outside + inside - radius)
    # a bar crossing the whole field of view, between two grid squares
    vertical = bool(rng.integers(2))
    coord, extent = (u, w) if vertical else (v, h)
    centre = rng.uniform(-0.25, 0.25) * extent
    width = rng.uniform(0.10, 0.20) * extent
    return np.abs(coord - centre) - width / 2


# ----------------------------------------------------------------------------------------
# cells
# ----------------------------------------------------------------------------------------


@dataclass
class _Cell:
    y: float
    x: float
    r: float


def _place_cells(
    rng: np.random.Generator,
    shape: tuple[int, int],
    n_single: int,
    n_clusters: int,
    r_range: tuple[float, float],
    film: np.ndarray,
) -> list[_Cell]:
    """Choose cell centres and radii: clusters of touching cells first, then isolated ones."""
    h, w = shape
    cells: list[_Cell] = []

    def on_film(y: float, x: float) -> bool:
        yi = min(max(int(y), 0), h - 1)
        xi = min(max(int(x), 0), w - 1)
        return bool(film[yi, xi])

    def free(y: float, x: float, r: float, others: list[_Cell], factor: float) -> bool:
        return all((c.y - y) ** 2 + (c.x - x) ** 2 > (factor * (c.r + r)) ** 2 for c in others)

    for _ in range(n_clusters):
        members: list[_Cell] = []
        for _try in range(40):
            r = rng.uniform(*r_range)
            y, x = rng.uniform(0, h), rng.uniform(0, w)
            if on_film(y, x) and free(y, x, 2.5 * r, cells, 1.0):
                members.append(_Cell(y, x, r))
                break
        if not members:
            continue
        n_members = int(rng.integers(3, 7))
        for _try in range(60):
            if len(members) >= n_members:
                break
            anchor = members[int(rng.integers(len(members)))]
            r = rng.uniform(r_range[0], 0.5 * (r_range[0] + r_range[1]) + 0.25 * r_range[1])
            r = min(r, r_range[1])
            phi = rng.uniform(0, 2 * math.pi)
            dist = (anchor.r + r) * rng.uniform(0.80, 0.95)  # touching, slightly pressed
            y, x = anchor.y + dist * math.sin(phi), anchor.x + dist * math.cos(phi)
            if (
                on_film(y, x)
                and free(y, x, r, [m for m in members if m is not anchor], 0.78)
                and free(y, x, r, cells, 1.05)
            ):
                members.append(_Cell(y, x, r))
        cells.extend(members)

    for _ in range(n_single):
        for _try in range(40):
            r = rng.uniform(*r_range)
            y, x = rng.uniform(0, h), rng.uniform(0, w)
            if on_film(y, x) and free(y, x, r, cells, 1.15):
                cells.append(_Cell(y, x, r))
                break
    return cells


def _paint_cell(
    rng: np.random.Generator,
    img: np.ndarray,
    labels: np.ndarray,
    cell: _Cell,
    texture: np.ndarray,
    bg_level: float,
    light: tuple[float, float],
) -> None:
    """Draw one cell (in place) into ``img`` and mark it in ``labels``."""
    h, w = img.shape
    r0 = cell.r
    # radius perturbation by a few Fourier harmonics: ellipticity + lumpiness
    harmonics = [(2, rng.uniform(0.03, 0.28))]
    harmonics += [(k, rng.uniform(0.0, 0.10) / (k - 1)) for k in (3, 4, 5)]
    phases = rng.uniform(0, 2 * math.pi, size=len(harmonics))
    r_max = r0 * (1 + sum(a for _, a in harmonics))
    halo = 0.45
    reach = r_max * (1 + halo) + 2
    y0, y1 = max(int(cell.y - reach), 0), min(int(cell.y + reach) + 1, h)
    x0, x1 = max(int(cell.x - reach), 0), min(int(cell.x + reach) + 1, w)
    # draw the per-cell appearance parameters unconditionally (keeps the stream aligned)
    contrast = rng.uniform(0.03, 0.17)
    rim_amp = rng.uniform(0.07, 0.24)
    shade_amp = rng.uniform(0.03, 0.07)
    tex_amp = rng.uniform(0.035, 0.065)
    n_spots = int(rng.integers(0, 4))
    spots = [
        (
            rng.uniform(0, 0.55 * r0),
            rng.uniform(0, 2 * math.pi),
            rng.uniform(0.12, 0.28) * r0,
            rng.uniform(0.03, 0.08),
        )
        for _ in range(n_spots)
    ]
    if y0 >= y1 or x0 >= x1:
        return

    yy = (np.arange(y0, y1, dtype=np.float32) - cell.y)[:, None]
    xx = (np.arange(x0, x1, dtype=np.float32) - cell.x)[None, :]
    rho = np.hypot(yy, xx)
    theta = np.arctan2(yy, xx)
    r_theta = np.full(theta.shape, r0, dtype=np.float32)
    for (k, a), ph in zip(harmonics, phases):
        r_theta += r0 * a * np.cos(k * theta + ph)
    d = rho / r_theta  # normalised radius: 1 on the boundary

    inside = d < 1.0
    alpha = np.clip((1.0 - d) * r_theta + 0.5, 0.0, 1.0)  # ~1 px anti-aliased edge
    towards_light = np.clip((xx * light[1] + yy * light[0]) / r0, -1.5, 1.5)

    rim = np.clip((d - 0.55) / 0.45, 0.0, 1.0) ** 3
    value = (
        bg_level
        + contrast
        + rim_amp * rim
        + shade_amp * towards_light
        + tex_amp * texture[y0:y1, x0:x1]
    )
    for s_rho, s_phi, s_r, s_amp in spots:
        sy, sx = s_rho * math.sin(s_phi), s_rho * math.cos(s_phi)
        dist2 = ((yy - sy) ** 2 + (xx - sx) ** 2) / (s_r * s_r)
        value -= s_amp * np.exp(-dist2 * dist2)  # flat-topped dark organelle-like spot

    box = img[y0:y1, x0:x1]
    lab = labels[y0:y1, x0:x1]
    # thin shadow / thicker ice skirt around the cell, strongest away from the detector
    ring = (d >= 1.0) & (d < 1.0 + halo) & (lab == BACKGROUND)
    fall = (1.0 - (d - 1.0) / halo) ** 2
    shadow = (0.025 + 0.05 * np.clip(-towards_light, 0, 1)) * fall
    box[ring] -= shadow[ring]
    box[:] = box * (1 - alpha) + value * alpha
    lab[inside] = CELL


# ----------------------------------------------------------------------------------------
# ice
# ----------------------------------------------------------------------------------------


def _paint_crystal(
    rng: np.random.Generator,
    img: np.ndarray,
    labels: np.ndarray,
    cy: float,
    cx: float,
    radius: float,
    light_angle: float,
) -> None:
    """Draw one faceted (pyramid-shaded polygonal) ice crystal."""
    n_v = int(rng.integers(5, 9))
    base_angle = rng.uniform(0, 2 * math.pi)
    step = 2 * math.pi / n_v
    angles = base_angle + step * np.arange(n_v) + rng.uniform(-0.25, 0.25, n_v) * step
    radii = radius * rng.uniform(0.7, 1.1, n_v)
    elong = rng.uniform(0.7, 1.0)  # slightly flattened crystals
    vy = cy + radii * np.sin(angles) * elong
    vx = cx + radii * np.cos(angles)
    apex_y = cy + rng.uniform(-0.3, 0.3) * radius
    apex_x = cx + rng.uniform(-0.3, 0.3) * radius
    dark = rng.random() < 0.2
    base = rng.uniform(0.10, 0.18) if dark else rng.uniform(0.78, 0.92)
    facet_amp = rng.uniform(0.06, 0.14)
    facet_jit = rng.uniform(-0.03, 0.03, n_v)

    rr, cc = draw_polygon(vy, vx, shape=img.shape)
    if rr.size == 0:
        return
    img[rr, cc] = base
    labels[rr, cc] = ICE
    for i in range(n_v):
        j = (i + 1) % n_v
        mid = 0.5 * (angles[i] + angles[j] + (2 * math.pi if j == 0 else 0.0))
        val = base + facet_amp * math.cos(mid - light_angle) + facet_jit[i]
        tr, tc = draw_polygon(
            np.array([apex_y, vy[i], vy[j]]), np.array([apex_x, vx[i], vx[j]]), shape=img.shape
        )
        img[tr, tc] = val
    # bright crystal edges (SEM edge effect), also on dark particles
    y0, y1, x0, x1 = rr.min(), rr.max() + 1, cc.min(), cc.max() + 1
    sub = np.zeros((y1 - y0 + 2, x1 - x0 + 2), dtype=bool)
    sub[rr - y0 + 1, cc - x0 + 1] = True
    ring = (sub & ~ndi.binary_erosion(sub))[1:-1, 1:-1]
    img[y0:y1, x0:x1][ring] += rng.uniform(0.05, 0.12)


def _paint_ice(
    rng: np.random.Generator,
    img: np.ndarray,
    labels: np.ndarray,
    n_ice: int,
    cells: list[_Cell],
    film: np.ndarray,
    light_angle: float,
) -> None:
    h, w = img.shape
    for _ in range(n_ice):
        radius = rng.uniform(4.0, 14.0)
        on_cell = bool(cells) and rng.random() < 0.35
        cy = cx = 0.0
        for _try in range(20):
            if on_cell:
                c = cells[int(rng.integers(len(cells)))]
                phi = rng.uniform(0, 2 * math.pi)
                rho = rng.uniform(0, 0.7) * c.r
                cy, cx = c.y + rho * math.sin(phi), c.x + rho * math.cos(phi)
            else:
                cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            if 0 <= cy < h and 0 <= cx < w and film[int(cy), int(cx)]:
                break
        _paint_crystal(rng, img, labels, cy, cx, radius, light_angle)
        # occasional small satellite crystals (frost clumps)
        for _s in range(int(rng.integers(0, 3)) if rng.random() < 0.4 else 0):
            phi = rng.uniform(0, 2 * math.pi)
            sr = rng.uniform(2.0, 0.6 * radius + 2.0)
            dist = radius + sr * rng.uniform(0.6, 1.2)
            _paint_crystal(
                rng,
                img,
                labels,
                cy + dist * math.sin(phi),
                cx + dist * math.cos(phi),
                sr,
                light_angle,
            )


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
    img += rng.uniform(0.02, 0.04) * _smooth_field(rng, shape, 64.0)
    img += 0.012 * _smooth_field(rng, shape, 12.0)
    img += 0.015 * _grain(rng, shape, 1.0)

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
        sd = _grid_signed_distance(rng, shape)
        film = sd > 4.0
    else:
        sd = None
        film = np.ones(shape, dtype=bool)

    # --- cells -------------------------------------------------------------------------
    cell_texture = 0.65 * _grain(rng, shape, 1.2) + 0.55 * _smooth_field(rng, shape, 5.0)
    cells = _place_cells(
        rng,
        shape,
        _scaled_count(config.n_cells, shape),
        _scaled_count(config.n_clusters, shape),
        (float(config.cell_radius_px[0]), float(config.cell_radius_px[1])),
        film,
    )
    for cell in cells:
        _paint_cell(rng, img, labels, cell, cell_texture, bg_level, light)
    del cell_texture

    # --- ice crystals / contamination ---------------------------------------------------
    _paint_ice(rng, img, labels, _scaled_count(config.n_ice, shape), cells, film, light_angle)

    # --- grid bars ---------------------------------------------------------------------
    if sd is not None:
        bar_level = rng.uniform(0.62, 0.76)
        depth = -sd
        bar = (
            bar_level
            + 0.05 * (1.0 - np.exp(-np.maximum(depth, 0) / 20.0))  # rounded bar profile
            + 0.16 * np.exp(-np.abs(depth) / 2.0)  # bright edge
            + 0.025 * _smooth_field(rng, shape, 24.0)  # uneven metal surface
            + 0.02 * _smooth_field(rng, shape, 4.0)
            + 0.025 * _grain(rng, shape, 0.8)
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
        field = field + 0.25 * _smooth_field(rng, shape, 0.5 * min(h, w))
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
