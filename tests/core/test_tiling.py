"""Tile planning: balanced tiles keep the tile count and overlap but compute fewer pixels."""

import pytest

from napari_cryoseg.core.tiling import TileGrid, padded_shape_for, plan_tiles


@pytest.mark.parametrize(
    ("shape", "tile", "overlap", "expected_tile", "expected_overlap"),
    [
        ((4096, 4096), 1024, 0.0625, (880, 880), 64),  # 5 tiles of 880, not 5 of 1024
        ((2048, 2048), 512, 0.125, (464, 464), 64),  # 5 tiles of 464, not 5 of 512
        ((4096, 4096), 512, 0.125, (512, 512), 64),  # already balanced: unchanged
        ((300, 5000), 512, 0.125, (304, 480), 64),  # short axis: one tile just covering it
        ((100, 100), 512, 0.125, (112, 112), 64),  # smaller than a tile: one tile
    ],
)
def test_plan_tiles_exact(shape, tile, overlap, expected_tile, expected_overlap):
    tiles, overlap_px = plan_tiles(shape, tile, overlap, stride=16)
    assert tiles == expected_tile
    assert overlap_px == expected_overlap


def test_balanced_tiles_compute_fewer_pixels_with_the_same_tile_count():
    shape, stride = (4096, 4096), 16
    padded = padded_shape_for(shape, stride)
    balanced, overlap_px = plan_tiles(shape, 1024, 0.0625, stride)
    plain = TileGrid(padded, (1024, 1024), overlap_px, stride)
    grid = TileGrid(padded, balanced, overlap_px, stride)
    assert len(grid) == len(plain) == 25
    computed = len(grid) * balanced[0] * balanced[1] / (shape[0] * shape[1])
    assert computed == pytest.approx(1.154, abs=0.01)  # was 1.5625 with 1024-pixel tiles
    # Neighbouring tiles still overlap by at least the asked overlap minus the alignment.
    starts = grid.row_starts
    assert min(balanced[0] - (b - a) for a, b in zip(starts, starts[1:])) >= overlap_px - stride
