"""Tile grids and blending, on arrays (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from perceive_ir.tiling import RowBandAccumulator, TileGrid, axis_starts, blend_weights


@pytest.mark.parametrize("length,tile,overlap,align", [(100, 32, 8, 1), (257, 64, 16, 8), (64, 64, 8, 8),
                                                        (65, 64, 8, 8), (10, 64, 8, 8), (1000, 128, 32, 8)])
def test_axis_starts_cover_and_align(length, tile, overlap, align) -> None:
    starts = axis_starts(length, tile, overlap, align)
    assert starts[0] == 0
    assert all(s % align == 0 for s in starts)
    assert starts[-1] + tile >= length and starts[-1] + tile - length < max(align, 1) + (tile if length <= tile else 0)
    for a, b in zip(starts, starts[1:]):
        assert a + tile - b >= overlap  # at least the requested overlap


def test_axis_starts_rejects_bad_overlap() -> None:
    with pytest.raises(ValueError, match="got overlap 64 vs tile size 64"):
        axis_starts(100, 64, 64)


def test_blend_weights_sum_to_one_across_an_overlap() -> None:
    left = blend_weights(1, 32, 16, top=False, bottom=False, left=False, right=True)[0]
    right = blend_weights(1, 32, 16, top=False, bottom=False, left=True, right=False)[0]
    np.testing.assert_allclose(left[-16:] + right[:16], 1.0, atol=2e-3)
    assert left[0] == 1.0 and right[-1] == 1.0  # image borders keep full weight
    assert left[-1] < 0.01  # a tile's inner edge gets (almost) no weight


@pytest.mark.parametrize("shape,tile,overlap,align", [((100, 130), 32, 8, 1), ((150, 170), 64, 16, 8),
                                                       ((5, 5), 32, 8, 8), ((300, 41), 64, 24, 8)])
def test_accumulator_reassembles_exactly(shape, tile, overlap, align) -> None:
    rng = np.random.default_rng(0)
    height, width = shape
    image = rng.random((2, height + align, width + align)).astype(np.float32)
    grid = TileGrid(height, width, tile, overlap, align)
    out = np.full((2, height, width), np.nan, dtype=np.float32)
    bands = []

    def sink(y0, y1, block):
        bands.append((y0, y1))
        out[:, y0:y1] = block

    accumulator = RowBandAccumulator(grid, 2, sink)
    for t in grid:
        accumulator.add(t, image[:, t.y0 : t.y1, t.x0 : t.x1])
    accumulator.finish()
    np.testing.assert_allclose(out, image[:, :height, :width], atol=1e-6)
    # bands arrive in order and cover the plane once
    assert bands[0][0] == 0 and bands[-1][1] == height
    assert all(a[1] == b[0] for a, b in zip(bands, bands[1:]))
    # memory: the accumulator holds one tile height of rows, not the plane
    assert accumulator._values.shape[1] <= grid.tile_shape[0]


def test_tiles_shrink_to_cover_with_the_same_count() -> None:
    """1024 px at tile 512 needs 3 tiles per axis; 368 px tiles cover it (1.16x, not 2.25x, the pixels)."""
    grid = TileGrid(1024, 1024, 512, 32, align=8)
    assert grid.tile_shape == (368, 368)
    assert len(grid) == 9
    assert grid.y_starts[-1] + 368 == 1024
    # never larger than requested, always aligned, and still at least the requested overlap
    for length in (100, 513, 777, 2048, 3001):
        g = TileGrid(length, length, 256, 32, align=8)
        side = g.tile_shape[0]
        assert side <= 256 and side % 8 == 0
        starts = g.y_starts
        assert all(a + side - b >= 32 for a, b in zip(starts, starts[1:]))
        assert starts[-1] + side >= length
