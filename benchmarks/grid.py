"""Pixels the model processes per image pixel: the current TileGrid vs a "balanced" grid.

Pure arithmetic (no model runs). The balanced grid keeps the tile count of the current grid
and shrinks the (common) tile side to the smallest multiple of ``align`` that still covers
the plane with at least ``overlap`` -- the change proposed in ``benchmarks/README.md``.

    PYTHONPATH=src .venv/bin/python benchmarks/grid.py [--overlap 32] [--align 8]
"""

from __future__ import annotations

import argparse

from perceive_ir.tiling import TileGrid, axis_starts


def current(length: int, tile: int, overlap: int, align: int) -> tuple[int, int, float]:
    """(tiles per axis, tile side, processed px / image px) of TileGrid on a square plane."""
    grid = TileGrid(length, length, tile, overlap, align)
    side = grid.tile_shape[0]
    return len(grid.x_starts), side, len(grid) * side * side / length**2


def balanced(length: int, tile: int, overlap: int, align: int) -> tuple[int, int, float]:
    """Same tile count, smallest aligned side that still covers ``length`` with ``overlap``."""
    count, side, _ = current(length, tile, overlap, align)
    while side - align > overlap and len(axis_starts(length, side - align, overlap, align)) <= count:
        side -= align
    count = len(axis_starts(length, side, overlap, align))
    return count, side, count * count * side * side / length**2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--align", type=int, default=8, help="the backbone's multiple (compact: 8)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--tiles", type=int, nargs="+", default=[256, 512, 960, 1024])
    args = parser.parse_args()
    print(f"overlap {args.overlap}, align {args.align}\n")
    print("| image | tile asked | now: tiles/axis, side, px ratio | balanced: tiles/axis, side, px ratio |")
    print("|---|---|---|---|")
    for length in args.sizes:
        for tile in args.tiles:
            a, b = current(length, tile, args.overlap, args.align), balanced(length, tile, args.overlap, args.align)
            print(f"| {length} | {tile} | {a[0]}, {a[1]}, {a[2]:.2f} | {b[0]}, {b[1]}, {b[2]:.2f} |")


if __name__ == "__main__":
    main()
