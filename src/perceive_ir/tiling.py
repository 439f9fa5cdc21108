"""Tile grids, overlap blending and bounded-memory accumulation.

Pure numpy; knows nothing about models. A plane of height H and width W is cut into
tiles of a fixed size that overlap by ``overlap`` pixels; the last tile of a row or
column is shifted back inside the image, so every tile has the same size (batches stay
rectangular). Predictions are blended with weights that ramp linearly across the
overlaps, skipping the outer quarter of each (and stay 1 along the image border), then normalised by the summed weights, so
seams do not show.

:class:`RowBandAccumulator` keeps only the rows that tiles still overlap: finished rows
are handed to a sink in row-major order, so memory is one band of tiles, not one image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

__all__ = ["Tile", "TileGrid", "axis_starts", "blend_weights", "RowBandAccumulator"]


def axis_starts(length: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)`` with at least ``overlap``.

    Starts are multiples of ``align``; the last tile may run past ``length`` by less than
    ``align`` pixels (callers pad it), so that a network that downsamples by ``align``
    sees every tile on the same pixel grid as the whole image.

    Raises
    ------
    ValueError
        ``overlap`` is negative or not smaller than ``tile``.
    """
    if tile <= 0 or align <= 0:
        raise ValueError(f"tile size and alignment must be positive, got {tile} and {align}")
    if overlap < 0 or overlap >= tile:
        raise ValueError(f"tile overlap must be in [0, tile size), got overlap {overlap} vs tile size {tile}")
    if length <= tile:
        return [0]
    step = max(align, (tile - overlap - (align - 1)) // align * align)
    starts = list(range(0, length - tile + 1, step))
    if starts[-1] + tile < length:
        starts.append(-(-(length - tile) // align) * align)
    return starts


@dataclass(frozen=True)
class Tile:
    """One tile: the region ``[y0:y1, x0:x1]`` of a plane (overlap included).

    ``y1``/``x1`` may exceed the plane by less than the grid's alignment; ``valid`` gives
    the part inside the plane.
    """

    y0: int
    y1: int
    x0: int
    x1: int
    height: int
    width: int

    @property
    def valid(self) -> tuple[int, int, int, int]:
        """``(y0, y1, x0, x1)`` clipped to the plane."""
        return self.y0, min(self.y1, self.height), self.x0, min(self.x1, self.width)

    @property
    def padding(self) -> tuple[int, int]:
        """Rows and columns past the plane's bottom/right edge."""
        return max(self.y1 - self.height, 0), max(self.x1 - self.width, 0)


@dataclass(frozen=True)
class TileGrid:
    """Tiles of size ``tile_size`` overlapping by ``overlap``, starts aligned to ``align``.

    Attributes
    ----------
    height, width : int
        Plane size.
    tile_size : int
        Largest tile side (rounded down to a multiple of ``align``); tiles are shrunk to the
        smallest aligned side that covers the plane with as many tiles; a plane smaller
        than that is one tile, its size rounded up to ``align``.
    overlap : int
        Minimum overlap between neighbouring tiles.
    align : int
        Tile starts and sizes are multiples of this (the network's downsampling factor).
    """

    height: int
    width: int
    tile_size: int
    overlap: int
    align: int = 1

    def _side(self, length: int) -> int:
        """Tile side along an axis: the requested size, then shrunk to the smallest aligned
        size that still covers ``length`` with the same number of tiles (less redundant work)."""
        tile = max(self.align, self.tile_size // self.align * self.align)
        if length <= tile:
            return -(-length // self.align) * self.align
        count = len(axis_starts(length, tile, min(self.overlap, tile - self.align), self.align))
        side = -(-(length + (count - 1) * self.overlap) // count)
        side = -(-side // self.align) * self.align
        while side < tile and (self.overlap >= side - self.align
                               or len(axis_starts(length, side, self.overlap, self.align)) > count):
            side += self.align
        return min(side, tile)

    @property
    def tile_shape(self) -> tuple[int, int]:
        return self._side(self.height), self._side(self.width)

    def _overlap(self, tile: int) -> int:
        return min(self.overlap, max(tile - self.align, 0))

    @property
    def y_starts(self) -> list[int]:
        th = self.tile_shape[0]
        return axis_starts(self.height, th, self._overlap(th), self.align)

    @property
    def x_starts(self) -> list[int]:
        tw = self.tile_shape[1]
        return axis_starts(self.width, tw, self._overlap(tw), self.align)

    def __len__(self) -> int:
        return len(self.y_starts) * len(self.x_starts)

    def __iter__(self) -> Iterator[Tile]:
        """Tiles in row-major order."""
        th, tw = self.tile_shape
        for y in self.y_starts:
            for x in self.x_starts:
                yield Tile(y, y + th, x, x + tw, self.height, self.width)

    def weights(self, tile: Tile) -> np.ndarray:
        """Blending weights of the valid part of ``tile``: ramps toward inner edges, 1 at plane borders."""
        th, tw = self.tile_shape
        full = blend_weights(
            th, tw, self.overlap,
            top=tile.y0 > 0, bottom=tile.y1 < self.height, left=tile.x0 > 0, right=tile.x1 < self.width,
        )
        y0, y1, x0, x1 = tile.valid
        return full[: y1 - y0, : x1 - x0]


def _ramp(length: int, overlap: int, start: bool, end: bool) -> np.ndarray:
    """1-D weights: 1 inside, a linear ramp across an overlap on flagged ends.

    The outer quarter of each overlap gets (almost) no weight: a network's border effects
    live there, and the neighbouring tile covers those pixels from its interior. Two
    facing ramps sum to 1 across their overlap.
    """
    ramp = np.ones(length, dtype=np.float32)
    overlap = min(overlap, length // 2)
    if overlap > 0:
        margin = overlap // 4
        positions = np.arange(overlap, dtype=np.float32) + 0.5 - margin
        rising = np.clip(positions / max(overlap - 2 * margin, 1), 1e-3, 1.0).astype(np.float32)
        if start:
            ramp[:overlap] = np.minimum(ramp[:overlap], rising)
        if end:
            ramp[-overlap:] = np.minimum(ramp[-overlap:], rising[::-1])
    return ramp


def blend_weights(height: int, width: int, overlap: int, *, top: bool, bottom: bool, left: bool, right: bool) -> np.ndarray:
    """Separable linear-ramp weights of a tile; sides flagged True have a neighbour."""
    return np.outer(_ramp(height, overlap, top, bottom), _ramp(width, overlap, left, right))


class RowBandAccumulator:
    """Weighted accumulation of tile predictions over a band of rows.

    Tiles must arrive in row-major order (as :class:`TileGrid` yields them). When a tile
    starts below rows that no later tile can touch, those rows are normalised by their
    summed weights and passed to ``sink(y0, y1, block)`` with ``block`` of shape
    (channels, y1 - y0, width). Call :meth:`finish` after the last tile.

    Parameters
    ----------
    grid : TileGrid
        The grid the tiles come from.
    channels : int
        Channels of each prediction.
    sink : callable
        Receives finished row ranges.
    """

    def __init__(self, grid: TileGrid, channels: int, sink: Callable[[int, int, np.ndarray], None]) -> None:
        self.grid = grid
        self.sink = sink
        self.channels = channels
        self._origin = 0  # first row held in the buffers
        band = min(grid.tile_shape[0], grid.height)
        self._values = np.zeros((channels, band, grid.width), dtype=np.float32)
        self._weights = np.zeros((band, grid.width), dtype=np.float32)

    def add(self, tile: Tile, prediction: np.ndarray) -> None:
        """Add one prediction (channels, h, w) for ``tile`` (the part past the plane is dropped)."""
        if tile.y0 > self._origin:
            self._flush(tile.y0)
        weights = self.grid.weights(tile)
        ty0, ty1, x0, x1 = tile.valid
        y0, y1 = ty0 - self._origin, ty1 - self._origin
        self._values[:, y0:y1, x0:x1] += prediction[:, : ty1 - ty0, : x1 - x0] * weights
        self._weights[y0:y1, x0:x1] += weights

    def _flush(self, until: int) -> None:
        rows = until - self._origin
        weights = self._weights[:rows]
        np.maximum(weights, 1e-12, out=weights)  # these rows are cleared below: no copy needed
        block = self._values[:, :rows] / weights  # the one new band-sized array; the sink may keep or change it
        self.sink(self._origin, until, block)
        # shift the band up and clear the freed rows
        self._values[:, :-rows] = self._values[:, rows:].copy()
        self._values[:, -rows:] = 0
        self._weights[:-rows] = self._weights[rows:].copy()
        self._weights[-rows:] = 0
        self._origin = until

    def finish(self) -> None:
        """Flush the remaining rows."""
        if self._origin < self.grid.height:
            self._flush(self.grid.height)
