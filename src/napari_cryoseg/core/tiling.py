"""Tile grids with overlap and smooth blending windows for seam-free tiled inference.

A 2D image is covered by square tiles of ``tile`` pixels that overlap by ``overlap``
pixels. Each tile's prediction is multiplied by a window that ramps smoothly from a
small value at an *interior* tile edge to 1 over the overlap width, and stays 1 along
edges that touch the image border (no other tile covers those pixels). Accumulating
``window * prediction`` and ``window`` and dividing gives a weighted average in which
tile borders, where a CNN sees truncated context, count least.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from napari_cryoseg.core.setting import check_bounds, setting


@dataclass(frozen=True)
class TilingConfig:
    """How an image is cut into tiles for inference.

    Attributes
    ----------
    tile : int
        Tile edge in pixels; rounded up to the network's stride (``2**depth``).
    overlap : float
        Fraction of the tile shared with each neighbour, in [0, 0.5].
    batch_size : int
        Tiles sent to the network at once; GPU memory scales with this, not the image.
    """

    tile: int = setting(
        512, label="Tile:", flag="--tile", name="tile size",
        what="a tile edge in pixels", min=16, max=65536, step=64,
        help="Tile edge sent to the network, in pixels (rounded up to the model's stride)")
    overlap: float = setting(
        0.125, label="Overlap:", flag="--overlap", name="overlap",
        what="an overlap fraction", min=0.0, max=0.5,
        step=0.025, decimals=3,
        help="Fraction of a tile shared with each neighbour, 0-0.5 (seams blend)")
    batch_size: int = setting(
        4, label="Batch size:", flag="--batch-size", name="batch size",
        what="a batch size", min=1, max=65536,
        help="Tiles per network call; lower it if the GPU runs out of memory")

    def __post_init__(self) -> None:
        check_bounds(self)


def round_up(value: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``value``."""
    return -(-value // multiple) * multiple


def tile_starts(length: int, tile: int, overlap_px: int, align: int = 1) -> list[int]:
    """Start offsets of tiles covering ``[0, length)`` with about ``overlap_px`` overlap.

    Starts are multiples of ``align`` (the network's stride: a U-Net is only shift
    equivariant for shifts that are multiples of ``2**depth``, so unaligned tiles
    would disagree with each other). The last tile is flush with the end.

    Parameters
    ----------
    length : int
        Axis length in pixels, a multiple of ``align`` and >= ``tile``.
    tile : int
        Tile length, a multiple of ``align``.
    overlap_px : int
        Wanted overlap between neighbouring tiles.
    align : int
        Starts are multiples of this.

    Returns
    -------
    list of int
        Sorted, unique start offsets; the first is 0 and the last is ``length - tile``.
    """
    if length < tile:
        raise ValueError(f"axis length {length} is smaller than the tile {tile}; pad first")
    if length % align or tile % align:
        raise ValueError(f"length {length} and tile {tile} must be multiples of {align}")
    if length == tile:
        return [0]
    stride = max(tile - overlap_px, align)
    n_tiles = -(-(length - tile) // stride) + 1
    # Spread the tiles evenly (no tiny last step), then snap to the alignment grid.
    starts = np.linspace(0, (length - tile) / align, n_tiles).round().astype(int) * align
    return sorted({int(s) for s in starts})


def ramp(length: int, overlap_px: int, taper_start: bool, taper_end: bool) -> np.ndarray:
    """1D blending weights: a raised-cosine ramp over ``overlap_px`` at tapered ends.

    Weights never reach 0 (minimum 1e-3) so a pixel covered by a single tapered
    tile still gets a defined value.
    """
    weights = np.ones(length, dtype=np.float32)
    if overlap_px <= 0:
        return weights
    width = min(overlap_px, length // 2)
    # Half-pixel centred positions: symmetric, strictly inside (0, 1).
    positions = (np.arange(width, dtype=np.float32) + 0.5) / width
    rise = np.maximum(0.5 - 0.5 * np.cos(np.pi * positions), 1e-3).astype(np.float32)
    if taper_start:
        weights[:width] = rise
    if taper_end:
        weights[length - width :] = rise[::-1]
    return weights


@lru_cache(maxsize=64)
def _window(
    tile: tuple[int, int], overlap_px: int, edges: tuple[bool, bool, bool, bool]
) -> np.ndarray:
    top, bottom, left, right = edges
    wy = ramp(tile[0], overlap_px, taper_start=not top, taper_end=not bottom)
    wx = ramp(tile[1], overlap_px, taper_start=not left, taper_end=not right)
    window = np.outer(wy, wx)
    window.flags.writeable = False
    return window


@dataclass(frozen=True)
class Tile:
    """One tile of a grid: its top-left corner and which image borders it touches."""

    y: int
    x: int
    row: int
    at_top: bool
    at_bottom: bool
    at_left: bool
    at_right: bool


class TileGrid:
    """The tiles covering a (padded) 2D image, in row-major order.

    Parameters
    ----------
    shape : tuple of int
        (Y, X) of the padded image the tiles cover; multiples of ``align``, >= ``tile``.
    tile : tuple of int
        (height, width) of a tile, multiples of ``align``.
    overlap_px : int
        Wanted overlap of neighbouring tiles in pixels.
    align : int
        Tile starts are multiples of this (the network stride).
    """

    def __init__(
        self, shape: tuple[int, int], tile: tuple[int, int], overlap_px: int, align: int = 1
    ) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.tile = (int(tile[0]), int(tile[1]))
        self.overlap_px = int(overlap_px)
        self.row_starts = tile_starts(self.shape[0], self.tile[0], self.overlap_px, align)
        self.col_starts = tile_starts(self.shape[1], self.tile[1], self.overlap_px, align)
        last_y, last_x = self.row_starts[-1], self.col_starts[-1]
        self.tiles = [
            Tile(y, x, row, y == 0, y == last_y, x == 0, x == last_x)
            for row, y in enumerate(self.row_starts)
            for x in self.col_starts
        ]

    def __len__(self) -> int:
        return len(self.tiles)

    @property
    def n_rows(self) -> int:
        """Number of tile rows."""
        return len(self.row_starts)

    def window(self, tile: Tile) -> np.ndarray:
        """Blending weights (tile_h, tile_w) float32 for ``tile`` (read-only, cached)."""
        edges = (tile.at_top, tile.at_bottom, tile.at_left, tile.at_right)
        return _window(self.tile, self.overlap_px, edges)

    def strip_bounds(self, row: int) -> tuple[int, int]:
        """Image rows ``[start, stop)`` that become final once tile row ``row`` is done.

        Tile row ``r`` is the last one to touch image rows below the next row's start,
        so strips partition the image and can be emitted (and freed) in order.
        """
        start = 0 if row == 0 else self.row_starts[row]
        stop = self.row_starts[row + 1] if row + 1 < self.n_rows else self.shape[0]
        return start, stop


def plan_tiles(
    shape: tuple[int, int], tile: int, overlap: float, stride: int
) -> tuple[tuple[int, int], int]:
    """Tile (height, width) and overlap in pixels for a plane of ``shape``.

    The overlap is ``overlap`` times the requested tile (rounded up to ``stride``). Along
    each axis the plane needs ``n`` tiles of the requested size; those ``n`` tiles are
    then shrunk to the smallest multiple of ``stride`` that still covers the axis with
    that overlap. Same tile count, same overlap, fewer redundant pixels: a 4096-pixel
    axis with 1024-pixel tiles and a 64-pixel overlap needs 5 tiles, and 5 tiles of 880
    compute 1.07x the axis instead of 1.25x with 1024. An axis shorter than the tile
    gets one tile just covering it.

    Parameters
    ----------
    shape : tuple of int
        (Y, X) of the plane (before padding to the stride).
    tile : int
        Requested (largest) tile edge.
    overlap : float
        Overlap as a fraction of the requested tile.
    stride : int
        The network stride: tile sizes are multiples of it.

    Returns
    -------
    tile_shape : tuple of int
        (height, width), multiples of ``stride``, each at most the requested tile.
    overlap_px : int
        Overlap between neighbouring tiles in pixels.
    """
    requested = round_up(tile, stride)
    overlap_px = int(round(requested * overlap))
    sizes = []
    for length in padded_shape_for(shape, stride):
        size = min(requested, length)
        if size < length:
            n_tiles = -(-(length - size) // max(size - overlap_px, stride)) + 1
            balanced = round_up(-(-(length + (n_tiles - 1) * overlap_px) // n_tiles), stride)
            size = min(size, balanced)
        sizes.append(size)
    return (sizes[0], sizes[1]), overlap_px


def padded_shape_for(shape: tuple[int, int], stride: int) -> tuple[int, int]:
    """The image shape rounded up to multiples of ``stride`` (padding goes bottom/right)."""
    return round_up(shape[0], stride), round_up(shape[1], stride)
