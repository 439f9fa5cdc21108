"""``restore()`` and ``perceive()``: input handling, intensity scaling, device, tiles, dask.

The two public functions accept numpy arrays (uint8, uint16 and other integers, float32,
float64), dask arrays, zarr arrays or a path (TIFF, zarr, npy, png). An image is seen as a
set of *planes*: each 2D plane (grayscale) or RGB plane is restored on its own, tile by
tile, and written back in place, so the result has the input's shape and dtype.

Axes
----
Letters: ``Y``, ``X`` (the plane), ``C`` (channels; ``S`` is read as ``C``), and any of
``T``, ``Z``, ``Q``, ``I`` for stack axes. When ``axes`` is not given it is taken from the
file's metadata when there is one, otherwise inferred from the shape:

====== =============================== ===========
ndim   last axis of size 3 or 4        otherwise
====== =============================== ===========
2                                      ``YX``
3      ``YXC``                         ``ZYX``
4      ``ZYXC``                        ``TZYX``
5      ``TZYXC``                       ``TCZYX``
====== =============================== ===========

A ``C`` axis of size 3 is restored jointly as RGB by an RGB model; size 4 is RGB plus an
alpha channel that is passed through unchanged; any other channel count (fluorescence
channels) is restored channel by channel. A grayscale plane given to an RGB model is
replicated to three channels and the output averaged back.

Intensities
-----------
``uint8`` is divided by 255. Other integer types are mapped by robust percentiles
(0.1 and 99.9) to [0, 1], with the exact inverse applied afterwards. Floats already in
[0, 1], give or take noise excursions (the 0.1/99.9 percentiles of 8x8 block means, where
noise averages out, inside [-0.05, 1.05]; raw values inside [-1, 2]), are used as they are (noisy values are not clipped before the model sees them); other
floats are percentile-normalised like integers. One scaling is computed per channel for
the whole array (all planes), so tiles, planes and chunks share it. Results are returned
in the input dtype, rounded and clipped to its range for integers, or as float32 with
``out_dtype="float32"``.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from . import io as image_io
from .deblur import MotionEstimate, deconvolve, estimate_motion, margin_for
from .models import TIERS, Condition, QualityPerceiver, Restorer
from .tiling import RowBandAccumulator, Tile, TileGrid
from .zoo import load_perceiver, load_restorer

__all__ = [
    "restore",
    "restore_steps",
    "self_ensemble",
    "condition_windows",
    "perceive",
    "QualityMap",
    "Progress",
    "Cancelled",
    "InputError",
    "IntensityScaling",
    "infer_axes",
    "resolve_device",
]

STACK_AXES = "TZQI"
MIN_SIDE = 4
#: Smallest tile side restore() and perceive() accept.
MIN_TILE_SIZE = 16
PERCENTILES = (0.1, 99.9)
#: Side of the windows from which ``deblur="auto"`` estimates a plane's motion kernel.
DEBLUR_WINDOW = 256
#: self-ensemble sizes -> the dihedral transforms used, as (quarter turns, mirrored)
ENSEMBLES: dict[int, tuple[tuple[int, bool], ...]] = {
    1: ((0, False),),
    2: ((0, False), (0, True)),
    4: tuple((turns, False) for turns in range(4)),
    8: tuple((turns, mirrored) for mirrored in (False, True) for turns in range(4)),
}


class InputError(ValueError):
    """The input image or an argument cannot be used (the message says why)."""


class Cancelled(RuntimeError):
    """The run was cancelled by the caller; nothing was written under the output name."""


@dataclass(frozen=True)
class Progress:
    """Progress event: ``done`` of ``total`` tiles."""

    done: int
    total: int


# --------------------------------------------------------------------------------------
# axes


def infer_axes(shape: Sequence[int]) -> str:
    """Axes string for an array of ``shape`` by the rule in the module docstring."""
    ndim = len(shape)
    if ndim < 2 or ndim > 5:
        raise InputError(f"expected an image with 2 to 5 dimensions, got shape {tuple(shape)}")
    if ndim >= 3 and shape[-1] in (3, 4):
        return {3: "YXC", 4: "ZYXC", 5: "TZYXC"}[ndim]
    return {2: "YX", 3: "ZYX", 4: "TZYX", 5: "TCZYX"}[ndim]


def _normalise_axes(axes: str | None, shape: Sequence[int], file_axes: str | None = None) -> str:
    if axes is None and file_axes:
        candidate = file_axes.upper().replace("S", "C")
        if len(candidate) == len(shape) and "Y" in candidate and "X" in candidate:
            axes = candidate
    if axes is None:
        return infer_axes(shape)
    axes = axes.upper().replace("S", "C")
    if len(axes) != len(shape):
        raise InputError(f"axes {axes!r} has {len(axes)} letters but the image has {len(shape)} dimensions (shape {tuple(shape)})")
    allowed = set("YXC" + STACK_AXES)
    bad = sorted(set(axes) - allowed)
    if bad:
        raise InputError(f"axes {axes!r} contains unknown letters {bad}; use Y, X, C and stack axes {list(STACK_AXES)}")
    if len(set(axes)) != len(axes):
        raise InputError(f"axes {axes!r} repeats a letter")
    if "Y" not in axes or "X" not in axes:
        raise InputError(f"axes {axes!r} must contain both Y and X")
    return axes


# --------------------------------------------------------------------------------------
# intensities


@dataclass(frozen=True)
class IntensityScaling:
    """``normalised = (value - offset) / scale``, and its exact inverse."""

    offset: float
    scale: float

    def forward(self, values: np.ndarray) -> np.ndarray:
        return ((np.asarray(values, dtype=np.float32) - np.float32(self.offset)) / np.float32(self.scale)).astype(np.float32)

    def inverse(self, values: np.ndarray, in_place: bool = False) -> np.ndarray:
        """``values * scale + offset`` as float32; ``in_place`` reuses a float32 ``values`` (no band-sized copy)."""
        if not (in_place and values.dtype == np.float32):
            values = values.astype(np.float32)
        values *= np.float32(self.scale)
        values += np.float32(self.offset)
        return values


def _sample_regions(source: Any, index: Callable[[int, int, int, int], tuple], height: int, width: int,
                    max_blocks: int = 64, block: int = 128) -> list[np.ndarray]:
    """Regions of a plane for intensity statistics: the whole plane when small, else a block grid."""
    if height * width <= 4096 * 4096 and isinstance(source, np.ndarray):
        return [np.asarray(source[index(0, height, 0, width)])]
    per_side = max(1, int(math.sqrt(max_blocks)))
    ys = np.unique(np.linspace(0, max(height - block, 0), per_side).astype(int))
    xs = np.unique(np.linspace(0, max(width - block, 0), per_side).astype(int))
    return [np.asarray(source[index(y, y + block, x, x + block)]) for y in ys for x in xs]


def _block_means(region: np.ndarray, size: int = 8) -> np.ndarray:
    """Means over non-overlapping size x size blocks of a (c, h, w) region (noise averaged out)."""
    c, h, w = region.shape
    hb, wb = h // size, w // size
    if hb == 0 or wb == 0:
        return region.reshape(c, -1).mean(axis=1)
    cropped = region[:, : hb * size, : wb * size].astype(np.float64)
    return cropped.reshape(c, hb, size, wb, size).mean(axis=(2, 4)).ravel()


def _scaling_for(dtype: np.dtype, values: np.ndarray, smoothed: np.ndarray | None = None) -> IntensityScaling:
    """Scaling of one channel group from its sampled ``values`` (and their 8x8 block means).

    Floats count as already in [0, 1] when their block means (noise averaged out) lie in
    [-0.05, 1.05] and the raw values, noise included, within [-1, 2].
    """
    if dtype == np.uint8:
        return IntensityScaling(0.0, 255.0)
    low, high = np.percentile(values.astype(np.float64), PERCENTILES)
    if np.issubdtype(dtype, np.floating):
        smooth = values if smoothed is None else smoothed
        smooth_low, smooth_high = np.percentile(smooth.astype(np.float64), PERCENTILES)
        if smooth_low >= -0.05 and smooth_high <= 1.05 and low >= -1.0 and high <= 2.0:
            return IntensityScaling(0.0, 1.0)
    span = float(high - low)
    if span <= 0:
        span = 1.0 if np.issubdtype(dtype, np.floating) else max(float(np.abs(high)), 1.0)
    return IntensityScaling(float(low), span)


def _check_dtype(dtype: np.dtype) -> None:
    if dtype == np.bool_:
        raise InputError("unsupported dtype bool: convert a mask to uint8 or float first")
    if np.issubdtype(dtype, np.complexfloating):
        raise InputError(f"unsupported dtype {dtype}: complex images are not supported (restore the magnitude)")
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise InputError(f"unsupported dtype {dtype}: expected an integer or floating-point image")


def _to_dtype(values: np.ndarray, dtype: np.dtype, in_place: bool = False) -> np.ndarray:
    """Round and clip to an integer ``dtype``'s range, or cast; ``in_place`` may overwrite a float ``values``."""
    if np.issubdtype(dtype, np.integer):
        floating = np.issubdtype(values.dtype, np.floating) and values.dtype.itemsize >= 4
        if not (in_place and floating):
            values = np.array(values, dtype=values.dtype if floating else np.float64)
        np.rint(values, out=values)
        np.clip(values, *_float_bounds(np.dtype(dtype), values.dtype), out=values)
    return values.astype(dtype, copy=False)


@functools.lru_cache(maxsize=None)
def _float_bounds(dtype: np.dtype, float_dtype: np.dtype) -> tuple[np.floating, np.floating]:
    """The integer ``dtype``'s range as ``float_dtype`` values that cast back without wrapping.

    ``float32(2**31 - 1)`` rounds up to ``2**31``, which an int32 cast wraps to its minimum:
    each bound steps toward zero until it lies inside the range.
    """
    info = np.iinfo(dtype)
    bounds = []
    for bound in (info.min, info.max):
        value = np.array(bound, dtype=float_dtype)
        while abs(int(value)) > abs(bound):
            value = np.nextafter(value, float_dtype.type(0))
        bounds.append(value)
    return bounds[0], bounds[1]


# --------------------------------------------------------------------------------------
# device


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA, then Apple MPS, then CPU; other names are checked for availability."""
    if isinstance(device, torch.device):
        return device
    name = str(device).lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available on this machine; use 'cpu' or 'auto'")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError("device 'mps' requested but Apple MPS is not available; use 'cpu' or 'auto'")
    try:
        return torch.device(name)
    except RuntimeError as error:
        raise InputError(f"unknown device {device!r}: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from error


def _autocast(device: torch.device):
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


@functools.lru_cache(maxsize=4)
def _cached_restorer(name: str, device: str) -> Restorer:
    """One model per (name, device) per process (dask workers load it once)."""
    return load_restorer(name, device=device)


@functools.lru_cache(maxsize=4)
def _cached_perceiver(name: str, device: str) -> QualityPerceiver:
    return load_perceiver(name, device=device)


def _get_restorer(model: str | os.PathLike | Restorer, device: torch.device) -> Restorer:
    restorer = model.eval().to(device) if isinstance(model, Restorer) else _cached_restorer(str(model), str(device))
    # channels_last: faster convolutions on CPUs (+23%, benchmarks/speed.py) and GPUs, same results
    return set_memory_format(restorer, torch.channels_last)


def set_memory_format(model: torch.nn.Module, memory_format: torch.memory_format) -> torch.nn.Module:
    """Store every 4-D parameter and buffer of ``model`` in ``memory_format``, in place.

    ``Module.to(memory_format=...)`` raises on a model with 5-D tensors (the expert kernels of
    :class:`~perceive_ir.models.compact.ExpertConv2d`).
    """
    with torch.no_grad():
        for tensor in itertools.chain(model.parameters(), model.buffers()):
            if tensor.ndim == 4:
                tensor.data = tensor.data.contiguous(memory_format=memory_format)
    return model


#: compiled twins, dropped with their source model (an id() key could be reused after GC)
_COMPILED: "weakref.WeakKeyDictionary[Restorer, Restorer]" = weakref.WeakKeyDictionary()


def _compiled(restorer: Restorer) -> Restorer:
    """A copy of ``restorer`` whose backbone runs through ``torch.compile`` (cached per model)."""
    import copy

    if restorer not in _COMPILED:
        twin = copy.deepcopy(restorer)
        twin.backbone = torch.compile(twin.backbone, dynamic=False)
        twin.backbone.multiple = restorer.backbone.multiple
        _COMPILED[restorer] = twin
    return _COMPILED[restorer]


def _get_perceiver(model: str | os.PathLike | QualityPerceiver, device: torch.device) -> QualityPerceiver:
    if isinstance(model, QualityPerceiver):
        return model.eval().to(device)
    return _cached_perceiver(str(model), str(device))


#: On CPUs the compact model runs fastest with about this many pixels per forward call
#: (larger calls fall out of cache: ~1.2 MP/s at 0.26 MP per call, ~0.7 MP/s at 1 MP;
#: ``python benchmarks/speed.py``, table e).
CPU_PIXELS_PER_CALL = 512 * 512


def choose_tile_size(device: torch.device, batch_size: int, bytes_per_pixel: int = 1200,
                     minimum: int = 128, maximum: int = 1024) -> int:
    """Tile side for ``device``: 512 on CPUs; on GPUs the largest side (multiple of 64)
    whose batch of activations fits a quarter of free memory.

    ``bytes_per_pixel`` is the measured peak activation memory of the compact model per input
    pixel (float32, inference), rounded up.
    """
    if device.type != "cuda":
        return 512
    free, _total = torch.cuda.mem_get_info(device)
    side = int(math.sqrt(free / 4 / (max(batch_size, 1) * bytes_per_pixel)))
    side = max(minimum, min(maximum, side))
    return side - side % 64 if side >= 128 else side


def choose_batch_size(device: torch.device, tile_size: int) -> int:
    """Tiles per forward call: about :data:`CPU_PIXELS_PER_CALL` pixels on CPUs, 4 on GPUs."""
    if device.type == "cuda":
        return 4
    return max(1, round(CPU_PIXELS_PER_CALL / (tile_size * tile_size)))


# --------------------------------------------------------------------------------------
# planes


@dataclass(frozen=True)
class _Plane:
    """One unit of work: fixed indices of the stack axes and which channels."""

    stack_index: tuple[int, ...]  # index per stack axis, in axes order
    channels: tuple[int, ...] | None  # channel indices (None: no C axis)
    group: int  # which intensity scaling (channel group)


@dataclass
class _Layout:
    shape: tuple[int, ...]
    axes: str
    model_channels: int

    def __post_init__(self) -> None:
        self.y_axis = self.axes.index("Y")
        self.x_axis = self.axes.index("X")
        self.c_axis = self.axes.index("C") if "C" in self.axes else None
        self.stack_axes = [i for i, a in enumerate(self.axes) if a not in "YXC"]
        self.height = self.shape[self.y_axis]
        self.width = self.shape[self.x_axis]
        channels = self.shape[self.c_axis] if self.c_axis is not None else 1
        if self.c_axis is None:
            self.groups: list[tuple[int, ...] | None] = [None]
        elif channels in (3, 4) and self.model_channels == 3:
            self.groups = [(0, 1, 2)]  # RGB jointly; alpha (if any) passed through
        else:
            self.groups = [(c,) for c in range(channels if channels != 4 or self.model_channels == 3 else 4)]
        self.passthrough = (3,) if (self.c_axis is not None and channels == 4 and self.model_channels == 3) else ()

    def planes(self) -> list[_Plane]:
        ranges = [range(self.shape[i]) for i in self.stack_axes]
        out = []
        for stack_index in np.ndindex(*[len(r) for r in ranges]) if ranges else [()]:
            for group, channels in enumerate(self.groups):
                out.append(_Plane(tuple(stack_index), channels, group))
        return out

    def index(self, plane: _Plane | None, y0: int, y1: int, x0: int, x1: int, channels=None) -> tuple:
        """numpy index of a region of a plane (stack indices fixed, channels selected)."""
        index: list[Any] = [slice(None)] * len(self.shape)
        if plane is not None:
            for axis, value in zip(self.stack_axes, plane.stack_index):
                index[axis] = value
        index[self.y_axis] = slice(y0, y1)
        index[self.x_axis] = slice(x0, x1)
        chosen = channels if channels is not None else (plane.channels if plane is not None else None)
        if self.c_axis is not None and chosen is not None:
            # channel groups are consecutive: a slice keeps numpy from moving advanced-index axes
            index[self.c_axis] = slice(chosen[0], chosen[-1] + 1) if len(chosen) > 1 else chosen[0]
        return tuple(index)

    def to_cyx(self, region: np.ndarray, plane: _Plane) -> np.ndarray:
        """A region read with :meth:`index` -> (channels, h, w)."""
        kept = [a for i, a in enumerate(self.axes) if i not in self.stack_axes]
        if self.c_axis is not None and plane.channels is not None and len(plane.channels) == 1:
            kept.remove("C")
        if "C" in kept:
            return np.moveaxis(region, [kept.index("C"), kept.index("Y"), kept.index("X")], [0, 1, 2])
        order = [kept.index("Y"), kept.index("X")]
        return np.transpose(region, order)[None]

    def from_cyx(self, block: np.ndarray, plane: _Plane) -> np.ndarray:
        """Inverse of :meth:`to_cyx` for writing back."""
        kept = [a for i, a in enumerate(self.axes) if i not in self.stack_axes]
        if self.c_axis is not None and plane.channels is not None and len(plane.channels) == 1:
            kept.remove("C")
        if "C" in kept:
            return np.moveaxis(block, [0, 1, 2], [kept.index("C"), kept.index("Y"), kept.index("X")])
        yx = block[0]
        return yx if kept.index("Y") < kept.index("X") else yx.T


def _validate_source(source: Any) -> None:
    shape = tuple(source.shape)
    _check_dtype(np.dtype(source.dtype))
    if any(s == 0 for s in shape):
        raise InputError(f"the image is empty (shape {shape})")


def _check_plane_size(layout: _Layout) -> None:
    if layout.height < MIN_SIDE or layout.width < MIN_SIDE:
        raise InputError(
            f"the image plane is {layout.height}x{layout.width} pixels (axes {layout.axes}, shape {layout.shape}); "
            f"need at least {MIN_SIDE}x{MIN_SIDE}"
        )


def _check_finite(values: np.ndarray, where: str) -> None:
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        raise InputError(f"the image contains NaN or infinite values ({where}); replace them before restoring")


def _scalings(source: Any, layout: _Layout) -> list[IntensityScaling]:
    """One intensity scaling per channel group, from samples of up to 8 planes of the group."""
    scalings = []
    dtype = np.dtype(source.dtype)
    for channels in layout.groups:
        planes = [p for p in layout.planes() if p.channels == channels]
        picks = planes if len(planes) <= 8 else [planes[i] for i in np.linspace(0, len(planes) - 1, 8).astype(int)]
        regions = [
            layout.to_cyx(region, plane)
            for plane in picks
            for region in _sample_regions(source, functools.partial(layout.index, plane), layout.height, layout.width)
        ]
        values = np.concatenate([r.ravel() for r in regions])
        _check_finite(values, "found while sampling intensities")
        smoothed = np.concatenate([_block_means(r) for r in regions]) if dtype.kind == "f" else None
        scalings.append(_scaling_for(dtype, values, smoothed))
    return scalings


# --------------------------------------------------------------------------------------
# restore


def condition_windows(height: int, width: int, crop: int, count: int = 8) -> list[tuple[int, int, int, int]]:
    """The crop windows ``(y0, y1, x0, x1)`` spread over a ``height`` x ``width`` plane whose mean
    condition restore() uses for the whole plane (deterministic)."""
    ch, cw = min(crop, height), min(crop, width)
    side = max(1, int(math.ceil(math.sqrt(count))))
    ys = np.unique(np.linspace(0, height - ch, side).astype(int))
    xs = np.unique(np.linspace(0, width - cw, side).astype(int))
    windows = [(y, y + ch, x, x + cw) for y in ys for x in xs]
    if len(windows) > count:
        windows = [windows[i] for i in np.linspace(0, len(windows) - 1, count).astype(int)]
    return windows


def _model_input(block: np.ndarray, model_channels: int) -> np.ndarray:
    if block.shape[0] == 1 and model_channels == 3:
        return np.repeat(block, 3, axis=0)
    return block


def _model_output(output: np.ndarray, plane_channels: int) -> np.ndarray:
    if plane_channels == 1 and output.shape[0] == 3:
        return output.mean(axis=0, keepdims=True)
    return output


@dataclass
class _RestoreJob:
    source: Any
    layout: _Layout
    scalings: list[IntensityScaling]
    model: Restorer
    device: torch.device
    tile_size: int
    tile_overlap: int
    batch_size: int
    out_dtype: np.dtype
    ensemble: int = 1
    deblur: str | MotionEstimate = "off"
    conditions: dict[_Plane, Condition | None] = field(default_factory=dict)
    motions: dict[_Plane, MotionEstimate | None] = field(default_factory=dict)

    def read(self, plane: _Plane, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Normalised (channels, y1 - y0, x1 - x0) region; rows/columns past the plane are reflected."""
        vy1, vx1 = min(y1, self.layout.height), min(x1, self.layout.width)
        region = np.asarray(self.source[self.layout.index(plane, y0, vy1, x0, vx1)])
        _check_finite(region, f"plane {plane.stack_index}, rows {y0}-{vy1}, columns {x0}-{vx1}")
        values = self.scalings[plane.group].forward(self.layout.to_cyx(region, plane))
        if vy1 < y1 or vx1 < x1:
            values = np.pad(values, ((0, 0), (0, y1 - vy1), (0, x1 - vx1)), mode="reflect")
        return values

    def motion(self, plane: _Plane) -> MotionEstimate | None:
        """The motion kernel deconvolved before the network on ``plane`` (None: no deblurring)."""
        if isinstance(self.deblur, MotionEstimate):
            return self.deblur
        if self.deblur == "off":
            return None
        if plane not in self.motions:
            windows = [self.read(plane, *window).mean(axis=0)
                       for window in condition_windows(self.layout.height, self.layout.width, DEBLUR_WINDOW, count=4)]
            estimate = estimate_motion(windows)
            self.motions[plane] = estimate if estimate.detected() else None
        return self.motions[plane]

    def read_input(self, plane: _Plane, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """:meth:`read`, then deconvolved by the plane's motion kernel if there is one (read with a
        margin around the region, which absorbs the deconvolution's border error)."""
        estimate = self.motion(plane)
        if estimate is None:
            return self.read(plane, y0, y1, x0, x1)
        margin = margin_for(estimate)
        height, width = self.layout.height, self.layout.width
        ry0, rx0 = max(0, y0 - margin), max(0, x0 - margin)
        ry1, rx1 = max(y1, min(height, y1 + margin)), max(x1, min(width, x1 + margin))
        region = deconvolve(self.read(plane, ry0, ry1, rx0, rx1), estimate.kernel())
        return region[:, y0 - ry0 : y1 - ry0, x0 - rx0 : x1 - rx0]

    @torch.inference_mode()
    def condition(self, plane: _Plane) -> Condition | None:
        if plane not in self.conditions:
            crops = [
                _model_input(self.read(plane, *window), self.model.in_channels)
                for window in condition_windows(self.layout.height, self.layout.width, self.model.config.condition_crop)
            ]
            tensor = torch.from_numpy(np.stack(crops)).to(self.device)
            self.conditions[plane] = self.model.condition_from_crops(tensor)
        return self.conditions[plane]

    @torch.inference_mode()
    def launch(self, items: list[tuple[_Plane, Tile]]) -> tuple[torch.Tensor, int]:
        """Read the tiles of ``items`` and start the model on them (asynchronous on CUDA)."""
        tiles = [self.read_input(plane, t.y0, t.y1, t.x0, t.x1) for plane, t in items]
        channels = tiles[0].shape[0]
        batch = torch.from_numpy(np.stack([_model_input(t, self.model.in_channels) for t in tiles]))
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        batch = batch.to(self.device).contiguous(memory_format=torch.channels_last)
        planes = [plane for plane, _ in items]
        # a deconvolved tile is the result: the network, never trained on deconvolved input, wrecks
        # some of them (training/README.md, *Kernel-aware motion deblurring*)
        deblurred = torch.tensor([self.motion(plane) is not None for plane in planes], device=batch.device)
        if bool(deblurred.all()):
            return batch.float(), channels
        if all(p == planes[0] for p in planes):
            condition = self.condition(planes[0])
        else:
            condition = Condition.cat([self.condition(p) for p in planes])
        with _autocast(self.device):
            output = self_ensemble(self.model, batch, condition, self.ensemble)
        if bool(deblurred.any()):
            output = output.float()
            output[deblurred] = batch[deblurred].float()
        return output, channels

    def grid(self) -> TileGrid:
        return TileGrid(self.layout.height, self.layout.width, self.tile_size, self.tile_overlap,
                        align=self.model.backbone.multiple)

    def _sink(self, plane: _Plane, write: Callable[[tuple, np.ndarray], None]) -> Callable[[int, int, np.ndarray], None]:
        layout = self.layout
        scaling = self.scalings[plane.group]

        def sink(y0: int, y1: int, block: np.ndarray) -> None:
            # the accumulator hands over a fresh block: scale, round and clip it in place (bounded memory
            # on wide images), so the only other band-sized array is the cast to the output dtype
            values = layout.from_cyx(scaling.inverse(block, in_place=True), plane)
            write(layout.index(plane, y0, y1, 0, layout.width), _to_dtype(values, self.out_dtype, in_place=True))
            if layout.passthrough:  # alpha rows copied band by band
                alpha = _Plane(plane.stack_index, layout.passthrough, plane.group)
                index = layout.index(alpha, y0, y1, 0, layout.width)
                write(index, _to_dtype(np.asarray(self.source[index]), self.out_dtype))

        return sink

    def run(self, write: Callable[[tuple, np.ndarray], None]) -> Iterator[Progress]:
        """Restore every plane; ``write(index, values)`` receives finished row bands.

        Tiles of all planes form one stream cut into batches (small planes of a stack share
        a batch). While the model runs on one batch, the next batch is read from the source,
        so disk reads overlap GPU compute.
        """
        grid = self.grid()
        tiles = list(grid)
        items = [(plane, tile) for plane in self.layout.planes() for tile in tiles]
        total = len(items)
        accumulators: dict[_Plane, RowBandAccumulator] = {}
        added: dict[_Plane, int] = {}
        done = 0
        pending: tuple[list[tuple[_Plane, Tile]], torch.Tensor, int] | None = None
        batches = [items[i : i + self.batch_size] for i in range(0, total, self.batch_size)]
        for batch in batches + [None]:
            launched = None
            if batch is not None:
                output, channels = self.launch(batch)
                launched = (batch, output, channels)
            if pending is not None:
                finished, output, channels = pending
                predictions = output.float().cpu().numpy()
                for (plane, tile), prediction in zip(finished, predictions):
                    if plane not in accumulators:
                        accumulators[plane] = RowBandAccumulator(grid, channels, self._sink(plane, write))
                        added[plane] = 0
                    accumulators[plane].add(tile, _model_output(prediction, channels))
                    added[plane] += 1
                    if added[plane] == len(tiles):
                        accumulators.pop(plane).finish()
                done += len(finished)
                yield Progress(done, total)
            pending = launched


def _check_deblur(deblur: Any) -> str | MotionEstimate:
    """``"auto"``, ``"off"``, or a known kernel as a MotionEstimate / ``(length, angle)``."""
    if isinstance(deblur, str) and deblur in ("auto", "off"):
        return deblur
    if deblur is None or deblur is False:
        return "off"
    if isinstance(deblur, MotionEstimate):
        return deblur
    if isinstance(deblur, (tuple, list)) and len(deblur) == 2:
        try:
            length, angle = float(deblur[0]), float(deblur[1])
        except (TypeError, ValueError):
            length = angle = math.nan
        if math.isfinite(length) and math.isfinite(angle) and length >= 1:
            return MotionEstimate(length, angle % 180.0, math.inf)
    raise InputError(f"deblur must be 'auto', 'off' or a motion kernel (length >= 1 pixels, angle in degrees), "
                     f"got {deblur!r}")


def _check_ensemble(size: Any) -> None:
    if size not in ENSEMBLES:
        raise InputError(f"ensemble must be one of {sorted(ENSEMBLES)}, got {size!r}")


def self_ensemble(model: Restorer, batch: torch.Tensor, condition: Condition | None, size: int = 1) -> torch.Tensor:
    """Mean of the model's outputs over ``size`` rotated / mirrored copies of ``batch``.

    Each copy is turned back before averaging, so a model that were exactly equivariant
    would give its plain output; a trained one gives a slightly better estimate (its
    errors differ between orientations) for ``size`` times the compute. The per-image
    ``condition`` is shared by all copies. ``size`` is 1, 2 (mirror), 4 (quarter turns)
    or 8 (both).
    """
    _check_ensemble(size)
    if size == 1:
        return model(batch, condition)
    total = None
    for turns, mirrored in ENSEMBLES[size]:
        view = torch.rot90(batch, turns, dims=(-2, -1))
        if mirrored:
            view = view.flip(-1)
        output = model(view.contiguous(memory_format=torch.channels_last), condition).float()
        if mirrored:
            output = output.flip(-1)
        output = torch.rot90(output, -turns, dims=(-2, -1))
        total = output if total is None else total + output
    return total / size


def _open_input(image: Any) -> tuple[Any, str | None, Path | None]:
    """Array-like source, axes from file metadata, and the input path (if any)."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        source, info = image_io.open_image(path, lazy=True)
        return source, info.axes, path
    if hasattr(image, "shape") and hasattr(image, "dtype") and hasattr(image, "__getitem__"):
        return image, None, None
    raise InputError(
        f"unsupported input of type {type(image).__name__}: expected a numpy/dask/zarr array or a file path"
    )


def _is_dask(array: Any) -> bool:
    return type(array).__module__.startswith("dask.")


def _prepare(image: Any, model: Any, axes: str | None, tile_size: int | None, tile_overlap: int, batch_size: int | None,
             device: str | torch.device, out_dtype: Any, compile: bool = False,
             ensemble: int = 1, deblur: Any = "auto") -> tuple[_RestoreJob, Path | None]:
    _check_ensemble(ensemble)  # before any input is opened
    deblur = _check_deblur(deblur)
    source, file_axes, path = _open_input(image)
    _validate_source(source)
    if batch_size is not None and batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if tile_overlap < 0:
        raise InputError(f"tile_overlap must be >= 0, got {tile_overlap}")
    device = resolve_device(device)
    restorer = _get_restorer(model, device)
    if compile:
        restorer = _compiled(restorer)
    layout = _Layout(tuple(int(s) for s in source.shape), _normalise_axes(axes, source.shape, file_axes),
                     restorer.in_channels)
    _check_plane_size(layout)
    if tile_size is None:
        tile_size = choose_tile_size(device, batch_size or 4)
    if tile_size < MIN_TILE_SIZE:
        raise InputError(f"tile_size must be >= {MIN_TILE_SIZE}, got {tile_size}")
    if tile_overlap >= tile_size:
        raise InputError(f"tile_overlap must be smaller than tile_size, got {tile_overlap} vs {tile_size}")
    if out_dtype is None:
        result_dtype = np.dtype(source.dtype)
    else:
        result_dtype = np.dtype(out_dtype)
        if result_dtype != np.float32:
            raise InputError(f"out_dtype must be None (input dtype) or 'float32', got {out_dtype!r}")
    job = _RestoreJob(
        source=source, layout=layout, scalings=_scalings(source, layout), model=restorer, device=device,
        tile_size=int(tile_size), tile_overlap=int(tile_overlap),
        batch_size=int(batch_size) if batch_size is not None else choose_batch_size(device, int(tile_size)),
        out_dtype=result_dtype, ensemble=int(ensemble), deblur=deblur,
    )
    return job, path


def restore_steps(
    image: Any,
    *,
    model: str | os.PathLike | Restorer = "default",
    axes: str | None = None,
    tile_size: int | None = None,
    tile_overlap: int = 32,
    batch_size: int | None = None,
    device: str | torch.device = "auto",
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    out_dtype: Any = None,
    compile: bool = False,
    ensemble: int = 1,
    deblur: Any = "auto",
) -> Iterator[Progress | np.ndarray | Path]:
    """Generator form of :func:`restore`: yields :class:`Progress` per batch of tiles, then the result.

    Closing the generator early (e.g. a GUI worker that is quit) stops within one batch;
    a partially written output file is removed. Arguments as :func:`restore`.
    """
    if _is_dask(image):
        raise InputError("restore_steps does not take dask arrays; call restore(), which returns a lazy dask array")
    if out is not None:
        image_io.check_output_path(out, overwrite=overwrite,
                                   input_path=image if isinstance(image, (str, os.PathLike)) else None)
    job, _path = _prepare(image, model, axes, tile_size, tile_overlap, batch_size, device, out_dtype, compile, ensemble,
                          deblur)
    if out is None:
        result = np.empty(job.layout.shape, dtype=job.out_dtype)

        def write(index: tuple, values: np.ndarray) -> None:
            result[index] = values

        yield from job.run(write)
        yield result
        return
    with image_io.open_output(out, job.layout.shape, job.out_dtype, overwrite=overwrite,
                              axes=job.layout.axes) as output:

        def write_out(index: tuple, values: np.ndarray) -> None:
            output[index] = values

        yield from job.run(write_out)
    yield Path(out)


def restore(
    image: Any,
    *,
    model: str | os.PathLike | Restorer = "default",
    axes: str | None = None,
    tile_size: int | None = None,
    tile_overlap: int = 32,
    batch_size: int | None = None,
    device: str | torch.device = "auto",
    progress: Callable[[int, int], Any] | None = None,
    cancel: threading.Event | Callable[[], bool] | None = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    out_dtype: Any = None,
    compile: bool = False,
    ensemble: int = 1,
    deblur: Any = "auto",
) -> Any:
    """Restore an image (denoise, deblur, dehaze, derain, brighten) with an all-in-one model.

    Parameters
    ----------
    image : ndarray, dask array, zarr array or path
        The image; axes per the module docstring (YX, YXC, CYX, ZYX, TZYX, TCZYX...).
    model : str, path or Restorer
        Registered model name (``"default"``), a weights file, or a loaded model.
    axes : str, optional
        Axes letters of ``image`` (e.g. ``"CYX"``); inferred when omitted.
    tile_size : int, optional
        Tile side in pixels; 512 on CPUs, chosen from free memory on GPUs, when omitted.
        Tiles are then shrunk to the smallest aligned size that covers the plane with
        the same number of tiles.
    tile_overlap : int
        Overlap between tiles (also the dask halo), blended with linear ramps.
    batch_size : int, optional
        Tiles per forward pass; by default about 0.26 megapixels per call on CPUs (where
        larger calls run slower) and 4 on GPUs.
    device : str
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
    progress : callable, optional
        Called as ``progress(tiles_done, tiles_total)`` after each batch.
    cancel : threading.Event or callable, optional
        Checked before each batch; when set (or returning True) the run stops and
        :class:`Cancelled` is raised.
    out : path, optional
        Write the result to this TIFF/zarr/npy file tile band by tile band (atomically)
        and return its path instead of an array.
    overwrite : bool
        Allow ``out`` to replace an existing file.
    out_dtype : None or "float32"
        Result dtype: the input's (default) or float32 (normalised intensities scaled back).
    compile : bool
        Run the backbone through ``torch.compile`` (worth it for large images on a GPU;
        the first call pays the compilation).
    ensemble : {1, 2, 4, 8}
        Self-ensemble: restore this many rotated / mirrored copies of every tile and
        average them (:func:`self_ensemble`). Slightly better results for that many times
        the compute (Set12 sigma 15 / 25 / 50: +0.09 / +0.09 / +0.10 dB with 8 for
        ``compact-allinone.v10``, ``training/evaluate.py --ensemble 8``).
    deblur : "auto", "off" or (length, angle)
        Kernel-aware motion deblurring before the network (:mod:`perceive_ir.deblur`).
        ``"auto"``: estimate a linear motion kernel per plane from its cepstrum and, where
        the estimate is confident, deconvolve every tile by it (total-variation prior):
        the deconvolution is that plane's result (the network, not trained on deconvolved
        input, is not run on it); planes without such blur are restored by the network.
        ``(length, angle)``: a known kernel (pixels, degrees counter-clockwise from +x),
        deconvolved on every plane. ``"off"``: the network alone.

    Returns
    -------
    ndarray, dask array or Path
        Same shape as the input; a lazy dask array for dask input; the output path when
        ``out`` is given.

    Raises
    ------
    InputError
        Bad shape, axes, dtype, NaN/inf values, plane smaller than 4x4, bad arguments.
    FileNotFoundError, FileExistsError
        Missing input; existing output without ``overwrite``.
    Cancelled
        ``cancel`` was set.

    Examples
    --------
    >>> from perceive_ir import restore
    >>> clean = restore(noisy_uint16_stack, axes="ZYX")  # doctest: +SKIP
    >>> restore("big.tif", out="big_restored.tif", tile_size=512)  # doctest: +SKIP
    """
    if _is_dask(image):
        if out is not None:
            raise InputError("for dask input, write the returned lazy array yourself (e.g. result.to_zarr(path))")
        return _restore_dask(image, model=model, axes=axes, tile_size=tile_size, tile_overlap=tile_overlap,
                             batch_size=batch_size, device=device, out_dtype=out_dtype, ensemble=ensemble,
                             deblur=deblur)
    should_stop = cancel.is_set if isinstance(cancel, threading.Event) else cancel
    steps = restore_steps(image, model=model, axes=axes, tile_size=tile_size, tile_overlap=tile_overlap,
                          batch_size=batch_size, device=device, out=out, overwrite=overwrite, out_dtype=out_dtype,
                          compile=compile, ensemble=ensemble, deblur=deblur)
    try:
        for step in steps:
            if isinstance(step, Progress):
                if progress is not None:
                    progress(step.done, step.total)
                if should_stop is not None and should_stop():
                    raise Cancelled(f"cancelled after {step.done} of {step.total} tiles")
            else:
                return step
    finally:
        steps.close()
    raise RuntimeError("restore produced no result")  # pragma: no cover


def _restore_dask(image: Any, *, model: Any, axes: str | None, tile_size: int | None, tile_overlap: int,
                  batch_size: int | None, device: Any, out_dtype: Any, ensemble: int = 1,
                  deblur: Any = "auto") -> Any:
    """Lazy restore of a dask array: ``map_overlap`` with the tile overlap as halo.

    Intensity scaling, per-plane conditions and motion kernels are computed once, up front,
    from small samples of the array, so every block is restored as it would be in memory
    (a deblurred plane widens the halo by the deconvolution margin).
    """
    import dask.array as da

    job, _ = _prepare(image, model, axes, tile_size, tile_overlap, batch_size, device, out_dtype, ensemble=ensemble,
                      deblur=deblur)
    layout = job.layout
    # whole channels and whole stack positions per block; Y/X chunks rounded to the model's
    # alignment so that every block (and so every tile) sits on the whole image's pixel grid
    align = job.model.backbone.multiple
    chunks: dict[int, Any] = {i: 1 for i in layout.stack_axes}
    if layout.c_axis is not None:
        chunks[layout.c_axis] = -1
    motions = {plane: job.motion(plane) for plane in layout.planes()}
    margin = max([margin_for(m) for m in motions.values() if m is not None], default=0)
    halo = -(-(tile_overlap + margin) // align) * align
    for axis in (layout.y_axis, layout.x_axis):
        chunks[axis] = _aligned_chunks(image.shape[axis], image.chunks[axis][0], align, halo)
    array = image.rechunk(chunks)
    conditions = {plane: job.condition(plane) for plane in layout.planes()}
    depth = {i: 0 for i in range(array.ndim)}
    depth[layout.y_axis] = halo
    depth[layout.x_axis] = halo
    model_ref = model if isinstance(model, Restorer) else str(model)
    settings = dict(axes=layout.axes, tile_size=job.tile_size, tile_overlap=tile_overlap, batch_size=job.batch_size,
                    device=str(job.device), out_dtype=job.out_dtype, scalings=job.scalings, conditions=conditions,
                    model=model_ref, ensemble=job.ensemble, deblur=job.deblur, motions=motions)
    return da.map_overlap(
        _restore_block, array, depth=depth, boundary="none", trim=True, dtype=job.out_dtype,
        meta=np.empty((0,) * array.ndim, dtype=job.out_dtype), block_info=True, settings=settings,
    )


def _aligned_chunks(length: int, preferred: int, align: int, halo: int) -> tuple[int, ...]:
    """Chunk sizes along one axis: multiples of ``align`` (the last takes the remainder),
    none smaller than the halo, so dask need not rechunk and blocks stay on the pixel grid."""
    size = max(-(-max(preferred, 2 * halo, align) // align) * align, align)
    if size >= length:
        return (length,)
    sizes = [size] * (length // size)
    remainder = length - sum(sizes)
    if remainder:
        if remainder < max(halo, 1):
            sizes[-1] += remainder
        else:
            sizes.append(remainder)
    return tuple(sizes)


def _restore_block(block: np.ndarray, block_info: dict | None = None, *, settings: dict) -> np.ndarray:
    """Restore one dask block (with halo) under the array-wide scaling and conditions."""
    device = torch.device(settings["device"])
    model = _get_restorer(settings["model"], device)
    layout = _Layout(block.shape, settings["axes"], model.in_channels)
    location = block_info[0]["array-location"] if block_info else [(0, s) for s in block.shape]
    job = _RestoreJob(source=block, layout=layout, scalings=settings["scalings"], model=model, device=device,
                      tile_size=min(settings["tile_size"], max(layout.height, layout.width)),
                      tile_overlap=settings["tile_overlap"], batch_size=settings["batch_size"],
                      out_dtype=settings["out_dtype"], ensemble=settings["ensemble"], deblur=settings["deblur"])
    for plane in layout.planes():
        global_index = tuple(location[axis][0] + i for axis, i in zip(layout.stack_axes, plane.stack_index))
        whole = _Plane(global_index, plane.channels, plane.group)
        job.conditions[plane] = settings["conditions"][whole]
        job.motions[plane] = settings["motions"][whole]
    result = np.empty(block.shape, dtype=settings["out_dtype"])

    def write(index: tuple, values: np.ndarray) -> None:
        result[index] = values

    for _ in job.run(write):
        pass
    return result


# --------------------------------------------------------------------------------------
# perceive


@dataclass
class QualityMap:
    """Per-tile quality tiers of an image.

    Attributes
    ----------
    probabilities : ndarray
        (..., tiles_y, tiles_x, 3) float32: probabilities of (low, medium, high); leading
        axes are the image's stack axes (and channels restored separately), if any.
    tile_size : int
        Side of the grid cells in image pixels; cell (i, j) covers rows
        ``i*tile_size:(i+1)*tile_size`` and the matching columns (the last ones may be
        cut by the image border; they are evaluated on the window shifted inside).
    image_shape : tuple of int
        (height, width) of the image plane.
    """

    probabilities: np.ndarray
    tile_size: int
    image_shape: tuple[int, int]

    @property
    def tiers(self) -> np.ndarray:
        """Most likely tier per tile: 0 = low, 1 = medium, 2 = high."""
        return self.probabilities.argmax(axis=-1)

    @property
    def scores(self) -> np.ndarray:
        """Quality score per tile in [0, 1]: P(medium) / 2 + P(high)."""
        return self.probabilities[..., 1] * 0.5 + self.probabilities[..., 2]

    @property
    def summary(self) -> dict[str, Any]:
        """Fraction of tiles per tier, mean score, tile count."""
        tiers = self.tiers.ravel()
        count = int(tiers.size)
        return {
            "tiles": count,
            "fraction": {name: float((tiers == i).sum() / count) for i, name in enumerate(TIERS)},
            "mean_score": float(self.scores.mean()),
            "tile_size": self.tile_size,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report (summary plus the per-tile probabilities)."""
        return {**self.summary, "image_shape": list(self.image_shape), "tiers": list(TIERS),
                "probabilities": np.round(self.probabilities, 4).tolist()}


def perceive(
    image: Any,
    *,
    model: str | os.PathLike | QualityPerceiver = "default",
    axes: str | None = None,
    tile_size: int | None = None,
    batch_size: int = 16,
    device: str | torch.device = "auto",
    progress: Callable[[int, int], Any] | None = None,
    cancel: threading.Event | Callable[[], bool] | None = None,
) -> QualityMap:
    """Quality tier (low / medium / high) of each ``tile_size`` square of an image.

    Parameters
    ----------
    image : ndarray, dask/zarr array or path
        As for :func:`restore`; RGB planes are seen in colour, other planes in grayscale.
    model : str, path or QualityPerceiver
        Registered perceiver name, weights file or loaded model.
    tile_size : int, optional
        Side of the square cells; each is resized to the perceiver's input size. Default
        (None): the side the perceiver was trained to rate (``model.config.tile_size``, its
        largest training crop; see its model card). Other sides show noise and structures
        to it at another scale, and its verdicts drift.

    Returns
    -------
    QualityMap
        Probabilities per tile, the grid, and a summary.

    Raises
    ------
    InputError
        As for :func:`restore`.
    Cancelled
        ``cancel`` was set.
    """
    source, file_axes, _path = _open_input(image)
    _validate_source(source)
    if tile_size is not None and tile_size < MIN_TILE_SIZE:
        raise InputError(f"tile_size must be >= {MIN_TILE_SIZE}, got {tile_size}")
    device = resolve_device(device)
    perceiver = _get_perceiver(model, device)
    tile_size = perceiver.config.tile_size if tile_size is None else tile_size
    layout = _Layout(tuple(int(s) for s in source.shape), _normalise_axes(axes, source.shape, file_axes), 3)
    _check_plane_size(layout)
    scalings = _scalings(source, layout)
    should_stop = cancel.is_set if isinstance(cancel, threading.Event) else cancel
    ty = math.ceil(layout.height / tile_size)
    tx = math.ceil(layout.width / tile_size)
    side_y, side_x = min(tile_size, layout.height), min(tile_size, layout.width)
    planes = layout.planes()
    cells = [(i, j) for i in range(ty) for j in range(tx)]
    total = len(planes) * len(cells)
    probabilities = np.zeros((len(planes), ty, tx, 3), dtype=np.float32)
    done = 0
    for p, plane in enumerate(planes):
        for start in range(0, len(cells), batch_size):
            chunk = cells[start : start + batch_size]
            crops = []
            for i, j in chunk:
                y0 = min(i * tile_size, layout.height - side_y)
                x0 = min(j * tile_size, layout.width - side_x)
                region = np.asarray(source[layout.index(plane, y0, y0 + side_y, x0, x0 + side_x)])
                _check_finite(region, f"tile ({i}, {j})")
                crops.append(np.clip(scalings[plane.group].forward(layout.to_cyx(region, plane)), 0, 1))
            batch = torch.from_numpy(np.stack(crops)).to(device)
            with torch.inference_mode():
                probs = perceiver.probabilities(batch).float().cpu().numpy()
            for (i, j), prob in zip(chunk, probs):
                probabilities[p, i, j] = prob
            done += len(chunk)
            if progress is not None:
                progress(done, total)
            if should_stop is not None and should_stop():
                raise Cancelled(f"cancelled after {done} of {total} tiles")
    lead = [layout.shape[i] for i in layout.stack_axes]
    if len(layout.groups) > 1:
        lead.append(len(layout.groups))
    probabilities = probabilities.reshape(*lead, ty, tx, 3)
    return QualityMap(probabilities=probabilities, tile_size=tile_size, image_shape=(layout.height, layout.width))
