"""Building blocks of the synthetic grid-square scenes: random fields, grid bars, cells,
ice crystals (see :mod:`napari_cryoseg.core.synthetic`, which composes them)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import polygon as draw_polygon

BACKGROUND, CELL, ICE, GRID_BAR = 0, 1, 2, 3
_REFERENCE_AREA = 512 * 512  # object counts in SampleConfig are given per this many pixels

# ----------------------------------------------------------------------------------------
# random fields
# ----------------------------------------------------------------------------------------


def _interp_matrix(n: int, scale: float, n_coarse: int, pad: int) -> np.ndarray:
    """Gaussian interpolation weights from a coarse grid (spacing ``scale``) to ``n`` pixels."""
    pos = np.arange(n, dtype=np.float32) / np.float32(scale) + np.float32(pad)
    diff = pos[:, None] - np.arange(n_coarse, dtype=np.float32)[None, :]
    weights = np.exp(np.float32(-0.5 / 0.7**2) * diff * diff)
    return weights / weights.sum(axis=1, keepdims=True)


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
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


def grain(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std fine-grained texture (Gaussian-filtered white noise)."""
    g = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, truncate=3.0)
    std = float(g.std())
    return g / std if std > 0 else g


def scaled_count(n: int, shape: tuple[int, int]) -> int:
    if n <= 0:
        return 0
    return max(1, int(round(n * shape[0] * shape[1] / _REFERENCE_AREA)))


# ----------------------------------------------------------------------------------------
# grid bars
# ----------------------------------------------------------------------------------------


def grid_signed_distance(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
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


def place_cells(
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


def paint_cell(
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


def paint_ice(
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
