"""Pure helpers of the napari plugin: axes, heatmap placement and colours, summaries, views.

Nothing here imports napari, Qt or torch: the functions take and return numbers and numpy
arrays, so they are tested without a viewer. Conventions of napari that matter here: a
layer's data pixel ``i`` is centred on world coordinate ``translate + i * scale`` and
covers ``[i - 0.5, i + 0.5)`` in data coordinates; the last two data axes of an image
layer are displayed as (Y, X); an RGB layer's colour axis is not a layer dimension.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "LayerError",
    "TIER_NAMES",
    "TIER_COLORS",
    "HEATMAP_OPACITY",
    "MAX_HEATMAP_SIDE",
    "layer_axes",
    "resolve_axes",
    "heatmap_transform",
    "heatmap_labels",
    "heatmap_cell",
    "tier_color_dict",
    "choose_level",
    "level_downsample",
    "summary_text",
    "compare_text",
    "legend_html",
    "view_box",
    "visible_region",
]

#: Tier names by tier index (0, 1, 2), as in :data:`perceive_ir.models.TIERS`.
TIER_NAMES: tuple[str, str, str] = ("low", "medium", "high")

#: RGBA colour per heatmap label value; label ``tier + 1`` (napari shows label 0 as empty).
TIER_COLORS: dict[int, tuple[float, float, float, float]] = {
    1: (0.86, 0.13, 0.15, 1.0),  # low: red
    2: (0.99, 0.80, 0.11, 1.0),  # medium: yellow
    3: (0.10, 0.66, 0.29, 1.0),  # high: green
}

#: Default opacity of heatmap layers.
HEATMAP_OPACITY = 0.4

#: The heatmap of a multiscale layer is computed on the finest level with both sides at most this.
MAX_HEATMAP_SIDE = 4096

_STACK_LETTERS = "IQTZ"  # leading stack axes, outermost first: ZYX, TZYX, QTZYX, IQTZYX


class LayerError(ValueError):
    """A layer cannot be used by a widget (the message says why and what is expected)."""


# --------------------------------------------------------------------------------------
# axes


def layer_axes(ndim: int, rgb: bool = False) -> str:
    """Axes letters of a napari image layer's data: stack axes, then ``YX`` (then ``C`` if RGB).

    Parameters
    ----------
    ndim : int
        Number of dimensions of the layer's data array (for RGB layers including the
        colour axis).
    rgb : bool
        Whether the last axis holds RGB(A) colours.

    Returns
    -------
    str
        e.g. ``"YX"``, ``"ZYX"``, ``"TZYX"``, ``"YXC"`` (RGB), ``"ZYXC"`` (RGB stack).

    Raises
    ------
    LayerError
        Fewer than 2 spatial dimensions, or more stack axes than perceive-ir knows.

    Examples
    --------
    >>> layer_axes(3)
    'ZYX'
    >>> layer_axes(3, rgb=True)
    'YXC'
    """
    spatial = ndim - 1 if rgb else ndim
    if spatial < 2:
        raise LayerError(f"expected an image with at least 2 spatial dimensions, got {ndim} dimensions (rgb={rgb})")
    stack = spatial - 2
    if stack > len(_STACK_LETTERS):
        raise LayerError(f"expected at most {len(_STACK_LETTERS) + 2} spatial dimensions, got {spatial}")
    return _STACK_LETTERS[len(_STACK_LETTERS) - stack:] + "YX" + ("C" if rgb else "")


def resolve_axes(text: str, ndim: int, rgb: bool = False) -> str:
    """The axes to use: ``text`` (upper-cased) when given, else :func:`layer_axes`.

    An empty text or ``"auto"`` selects the automatic axes. The letters themselves are
    validated by :mod:`perceive_ir.api`; only the count is checked here.

    Raises
    ------
    LayerError
        ``text`` has a different number of letters than the data has dimensions.
    """
    cleaned = "".join(text.split()).upper()
    if cleaned in ("", "AUTO"):
        return layer_axes(ndim, rgb)
    if len(cleaned) != ndim:
        raise LayerError(f"axes {cleaned!r} has {len(cleaned)} letters but the layer data has {ndim} dimensions")
    return cleaned


# --------------------------------------------------------------------------------------
# heatmap


def heatmap_transform(
    tile_size: int,
    layer_scale: Sequence[float],
    layer_translate: Sequence[float],
    downsample: Sequence[float] = (1.0, 1.0),
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Scale and translate of a per-tile grid layer laid over an image layer.

    Cell ``(i, j)`` of the grid covers the image's pixels ``[i*T, (i+1)*T)`` by
    ``[j*T, (j+1)*T)`` with ``T = tile_size * downsample`` (the tile in full-resolution
    pixels). The last two axes are Y and X; leading axes keep the layer's scale and
    translate.

    Parameters
    ----------
    tile_size : int
        Tile side in pixels of the level the quality map was computed on.
    layer_scale, layer_translate : sequence of float
        The image layer's ``scale`` and ``translate`` (one value per layer dimension).
    downsample : pair of float
        (Y, X) downsampling of that level relative to the layer's data (1 for a plain
        layer; ``layer.downsample_factors[level][-2:]`` for a multiscale one).

    Returns
    -------
    scale, translate : tuple of float
        For the grid layer, same length as ``layer_scale``.

    Raises
    ------
    LayerError
        Fewer than two axes, mismatched lengths, or a tile size below 1.

    Examples
    --------
    >>> heatmap_transform(64, (1.0, 1.0), (0.0, 0.0))
    ((64.0, 64.0), (31.5, 31.5))
    """
    scale = [float(value) for value in layer_scale]
    translate = [float(value) for value in layer_translate]
    if len(scale) < 2 or len(scale) != len(translate):
        raise LayerError(f"expected scale and translate with the same length >= 2, got {len(scale)} and {len(translate)}")
    if tile_size < 1:
        raise LayerError(f"tile_size must be >= 1, got {tile_size}")
    if len(downsample) != 2:
        raise LayerError(f"downsample must hold (Y, X) factors, got {tuple(downsample)}")
    for axis, factor in zip((-2, -1), downsample):
        cell = tile_size * float(factor)  # full-resolution pixels per cell
        translate[axis] = translate[axis] + (cell - 1.0) / 2.0 * scale[axis]
        scale[axis] = cell * scale[axis]
    return tuple(scale), tuple(translate)


#: A tile is drawn as at most this many grid cells per side (see :func:`heatmap_cell`).
MAX_CELLS_PER_TILE = 16
#: Finer cells are used only while the heatmap holds at most this many labels.
MAX_HEATMAP_LABELS = 2**24


def _cells(side: int, cell: int) -> int:
    """Cells of side ``cell`` that start inside ``side`` pixels (ceiling division)."""
    return -(-int(side) // cell)


def heatmap_cell(tile_size: int, image_shape: Sequence[int], planes: int = 1) -> int:
    """Side (pixels of the rated level) of the cells the heatmap is drawn with.

    A tile that the image border cuts covers only the pixels inside the image, but a grid of
    whole tiles would draw it full size, overhanging the image by up to a tile. Drawing each
    tile as ``k x k`` cells of side ``tile_size / k`` (``k`` up to :data:`MAX_CELLS_PER_TILE`,
    dividing ``tile_size``) cuts the overhang below one cell: the cell is the largest divisor
    whose grid leaves the least overhang, so whole-tile images keep one cell per tile.
    Cells that would make the heatmap (``planes`` grids) hold more than
    :data:`MAX_HEATMAP_LABELS` labels are not considered.

    Examples
    --------
    >>> heatmap_cell(64, (128, 192))
    64
    >>> heatmap_cell(224, (512, 512))  # 224 / 7 = 32 divides 512: no overhang
    32
    """
    if tile_size < 1:
        raise LayerError(f"tile_size must be >= 1, got {tile_size}")
    sides = [int(side) for side in image_shape[-2:]]

    def labels(cell: int) -> int:
        return max(1, planes) * _cells(sides[0], cell) * _cells(sides[1], cell)

    candidates = [tile_size // k for k in range(1, MAX_CELLS_PER_TILE + 1)
                  if tile_size % k == 0 and (k == 1 or labels(tile_size // k) <= MAX_HEATMAP_LABELS)]
    return min(candidates, key=lambda cell: (max(-side % cell for side in sides), -cell))


def heatmap_labels(tiers: np.ndarray, axes: str, layer_shape: Sequence[int], rgb: bool = False,
                   tile_size: int | None = None, cell: int | None = None) -> np.ndarray:
    """Per-tile labels (``tier + 1``: 1 low, 2 medium, 3 high) with the layer's dimensions.

    ``tiers`` is :attr:`perceive_ir.api.QualityMap.tiers`: the stack axes of ``axes`` in
    order, then one axis per channel when channels were rated separately, then the grid
    (tiles_y, tiles_x). The result has one axis per layer dimension (the colour axis of an
    RGB layer excluded), so that it can be shown over the layer with the transform of
    :func:`heatmap_transform`. Channels rated jointly (3 or 4 channels of a non-RGB layer)
    get the same labels on every channel.

    Parameters
    ----------
    tiers : ndarray of int
        Tier per tile, 0 = low, 1 = medium, 2 = high.
    axes : str
        Axes letters of the layer data (as passed to :func:`perceive_ir.api.perceive`).
    layer_shape : sequence of int
        Shape of the layer data (of the level rated, for multiscale layers).
    rgb : bool
        Whether the layer is RGB (its last axis is colour, not a layer dimension).
    tile_size, cell : int, optional
        With both, each tile is drawn as ``tile_size // cell`` cells of side ``cell`` per
        side (``cell`` from :func:`heatmap_cell`), and only the cells that start inside the
        image are kept; without, one label per tile.

    Returns
    -------
    ndarray of uint8

    Raises
    ------
    LayerError
        Y and X are not the last spatial axes, or ``tiers`` does not fit ``axes``.
    """
    axes = axes.upper().replace("S", "C")
    spatial = axes[:-1] if rgb and axes.endswith("C") else axes
    if not spatial.endswith("YX"):
        raise LayerError(f"the heatmap needs Y and X as the last (displayed) axes of the layer, got axes {axes!r}")
    labels = np.asarray(tiers).astype(np.uint8) + 1
    stack_letters = [letter for letter in spatial[:-2] if letter != "C"]
    if "C" in spatial:
        channel_count = int(layer_shape[axes.index("C")])
        position = spatial.index("C")
        if channel_count in (3, 4):  # rated jointly as RGB: repeat over the channels
            labels = np.repeat(np.expand_dims(labels, position), channel_count, axis=position)
        else:  # a separate channel axis after the stack axes: move it to its place
            labels = np.moveaxis(labels, len(stack_letters), position)
    expected = len(spatial)
    if labels.ndim != expected:
        raise LayerError(f"quality map with {labels.ndim} axes does not fit axes {axes!r} ({expected} layer dimensions)")
    if cell is not None:
        if tile_size is None or cell < 1 or tile_size % cell:
            raise LayerError(f"cell must divide tile_size, got cell {cell} and tile_size {tile_size}")
        per_tile = tile_size // cell
        y_cells, x_cells = _cells(layer_shape[axes.index("Y")], cell), _cells(layer_shape[axes.index("X")], cell)
        labels = labels.repeat(per_tile, axis=-2)[..., :y_cells, :].repeat(per_tile, axis=-1)[..., :x_cells]
    return labels


def tier_color_dict() -> dict[Any, tuple[float, float, float, float]]:
    """Colour per label value for a napari ``DirectLabelColormap`` (``None``: anything else)."""
    colors: dict[Any, tuple[float, float, float, float]] = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0)}
    colors.update(TIER_COLORS)
    return colors


def choose_level(shapes: Sequence[Sequence[int]], max_side: int = MAX_HEATMAP_SIDE) -> int:
    """Finest level of a multiscale image whose plane (last two sides) fits ``max_side``.

    Levels are ordered finest first (napari's convention). When none fits, the coarsest
    level is returned.

    Examples
    --------
    >>> choose_level([(16384, 16384), (8192, 8192), (4096, 4096), (2048, 2048)])
    2
    """
    if not shapes:
        raise LayerError("a multiscale layer without levels")
    for index, shape in enumerate(shapes):
        if max(int(side) for side in tuple(shape)[-2:]) <= max_side:
            return index
    return len(shapes) - 1


def level_downsample(base_shape: Sequence[int], level_shape: Sequence[int]) -> tuple[float, float]:
    """(Y, X) downsampling of a level relative to the base: ``base side / level side``."""
    return (float(base_shape[-2]) / float(level_shape[-2]), float(base_shape[-1]) / float(level_shape[-1]))


# --------------------------------------------------------------------------------------
# text


def summary_text(summary: Mapping[str, Any], title: str | None = None) -> str:
    """One line per quality map: fraction of tiles per tier and the mean score.

    Parameters
    ----------
    summary : mapping
        :attr:`perceive_ir.api.QualityMap.summary` (``tiles``, ``fraction``,
        ``mean_score``, ``tile_size``).
    title : str, optional
        Prefix, e.g. the layer name.

    Examples
    --------
    >>> summary_text({"tiles": 4, "fraction": {"low": 0.25, "medium": 0.25, "high": 0.5},
    ...               "mean_score": 0.625, "tile_size": 64})
    'low 25% | medium 25% | high 50% | mean score 0.62 (4 tiles of 64 px)'
    """
    fraction = summary["fraction"]
    parts = " | ".join(f"{name} {100 * float(fraction.get(name, 0.0)):.0f}%" for name in TIER_NAMES)
    text = f"{parts} | mean score {float(summary['mean_score']):.2f} ({int(summary['tiles'])} tiles of {int(summary['tile_size'])} px)"
    return f"{title}: {text}" if title else text


def legend_html() -> str:
    """Rich-text legend of the heatmap colours: a coloured square and the tier name each.

    Examples
    --------
    >>> legend_html().count("&#9632;")
    3
    """
    items = []
    for label, name in enumerate(TIER_NAMES, start=1):
        red, green, blue, _alpha = (int(round(255 * value)) for value in TIER_COLORS[label])
        items.append(f'<span style="color: #{red:02x}{green:02x}{blue:02x}">&#9632;</span> {name}')
    return "&nbsp;&nbsp;".join(items)


def compare_text(before: Mapping[str, Any], after: Mapping[str, Any], names: tuple[str, str]) -> str:
    """Both summaries and the change of the mean score and of the share of high-quality tiles."""
    score_change = float(after["mean_score"]) - float(before["mean_score"])
    high_change = 100 * (float(after["fraction"]["high"]) - float(before["fraction"]["high"]))
    return "\n".join([
        summary_text(before, names[0]),
        summary_text(after, names[1]),
        f"change: mean score {score_change:+.2f}, high-quality tiles {high_change:+.0f} points",
    ])


# --------------------------------------------------------------------------------------
# field of view


def view_box(center: Sequence[float], zoom: float, canvas_size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """World (Y, X) corners of a 2D view: ``center -/+ canvas_size / (2 * zoom)``.

    Parameters
    ----------
    center : sequence of float
        Camera centre; the last two values are (Y, X) in world units.
    zoom : float
        Screen pixels per world unit.
    canvas_size : pair of int
        (height, width) of the canvas in screen pixels.
    """
    if zoom <= 0 or not math.isfinite(zoom):
        raise LayerError(f"camera zoom must be a positive number, got {zoom}")
    middle = np.asarray(center, dtype=float)[-2:]
    half = np.asarray(canvas_size, dtype=float)[-2:] / (2.0 * zoom)
    return middle - half, middle + half


def visible_region(data_corners: np.ndarray, plane_shape: Sequence[int], multiple: int = 1) -> tuple[int, int, int, int]:
    """Pixel rows and columns ``(y0, y1, x0, x1)`` of a plane inside a view.

    Parameters
    ----------
    data_corners : ndarray
        (2, 2) or (N, 2): (Y, X) data coordinates of the view corners (any order).
    plane_shape : pair of int
        (height, width) of the plane.
    multiple : int
        Grow the region outward so that its start is a multiple of this (keeps tiles on
        the image's pixel grid); the end is clipped to the plane.

    Raises
    ------
    LayerError
        The view does not overlap the plane, or holds fewer than 4 pixels per side.
    """
    corners = np.asarray(data_corners, dtype=float).reshape(-1, 2)
    low = np.floor(corners.min(axis=0) + 0.5).astype(int)
    high = np.ceil(corners.max(axis=0) + 0.5).astype(int)
    height, width = (int(side) for side in plane_shape[-2:])
    y0, x0 = max(int(low[0]), 0), max(int(low[1]), 0)
    y1, x1 = min(int(high[0]), height), min(int(high[1]), width)
    if multiple > 1:
        y0 -= y0 % multiple
        x0 -= x0 % multiple
    if y1 - y0 < 4 or x1 - x0 < 4:
        raise LayerError(
            f"the visible part of the layer is {max(y1 - y0, 0)}x{max(x1 - x0, 0)} pixels; "
            "move the layer into view (at least 4x4 pixels) or turn off 'visible region only'"
        )
    return y0, y1, x0, x1
