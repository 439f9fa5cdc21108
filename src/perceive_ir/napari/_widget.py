"""Dock widgets of the napari plugin: restore an image layer, rate its quality per tile.

Both widgets are thin shells over :func:`perceive_ir.api.restore_steps`,
:func:`perceive_ir.api.restore` and :func:`perceive_ir.api.perceive`:

- :class:`RestoreWidget` restores a layer in a napari generator worker that yields once
  per batch of tiles (progress bar, Cancel stops within one batch, the GUI stays
  responsive) and adds ``<name> restored`` with the input's transform and metadata. Dask,
  zarr and multiscale layers give a lazy (dask) result; "visible region only" restores the
  displayed field of view of the current plane.
- :class:`QualityWidget` runs the quality perceiver in a worker and lays a per-tile
  low/medium/high grid (red/yellow/green Labels layer) over the image; "Compare" rates two
  layers (e.g. input and restored) and shows both grids side by side with both summaries.

Models are loaded once per (model, device) and kept in :data:`MODEL_CACHE`. Errors of the
core (bad input, missing weights, cancelled runs) appear as napari notifications.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generator

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSlider, Label, LineEdit, PushButton, SpinBox
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.notifications import notification_manager, show_error, show_info, show_warning
from qtpy.QtCore import QObject, QTimer, Signal

from . import _layers
from ._layers import LayerError

if TYPE_CHECKING:  # pragma: no cover
    import napari
    from napari.layers import Layer
    from superqt.utils import WorkerBase

__all__ = ["RestoreWidget", "QualityWidget", "ModelCache", "MODEL_CACHE"]

logger = logging.getLogger(__name__)

#: Choice of the model combo boxes that enables the weights file field.
WEIGHTS_FILE_CHOICE = "Weights file…"

#: Largest visible region restored in memory, in pixels per plane.
MAX_VISIBLE_PIXELS = 64 * 1024 * 1024


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message is meant for the user (shown as is, without a traceback)."""
    from ..api import Cancelled, InputError
    from ..zoo import WeightsError

    return (LayerError, InputError, WeightsError, FileNotFoundError, KeyError, Cancelled)


def _report_error(error: BaseException) -> None:
    """Show ``error`` as a napari notification: the core's message, or the traceback if unexpected."""
    from ..api import Cancelled

    if isinstance(error, Cancelled):
        show_info(f"perceive-ir: {error}")
    elif isinstance(error, _expected_errors()):
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        show_error(f"perceive-ir: {message}")
    else:  # a bug: keep the traceback for the notification's details
        notification_manager.receive_error(type(error), error, error.__traceback__)


# --------------------------------------------------------------------------------------
# models


def check_llvm_clash() -> None:
    """Refuse to load torch's model stack where it would crash this napari process.

    With software OpenGL (Mesa llvmpipe: Xvfb, remote desktops, CI) and some Mesa GPU
    drivers, Mesa's ``libLLVM`` is loaded by napari's canvas; importing ``triton`` after
    it (torchvision, hence open_clip, imports it) crashes the process with a segmentation
    fault. Importing torchvision *before* the canvas exists avoids the clash, which is what
    ``perceive-ir napari`` does.

    Raises
    ------
    RuntimeError
        Mesa's LLVM is loaded and triton is installed but not yet imported.
    """
    if "triton" in sys.modules or importlib.util.find_spec("triton") is None:
        return
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as handle:
            mapped = handle.read()
    except OSError:  # not Linux
        return
    if "libLLVM" in mapped:
        raise RuntimeError(
            "this napari session renders with Mesa's LLVM (software OpenGL), and loading torch's triton now "
            "would crash it; start napari with `perceive-ir napari` (it loads torch first), or run "
            "`import torchvision` in napari's console before the first viewer opens"
        )


class ModelCache:
    """Loaded models by (kind, name or file, device), reused across runs and widgets.

    A weights file is reloaded when its modification time changes (e.g. retrained).
    Thread-safe: models are loaded in worker threads.
    """

    def __init__(self, max_models: int = 4) -> None:
        self.max_models = max_models
        self._models: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # number of models built (for tests and diagnostics)

    def get(self, kind: str, spec: str | os.PathLike, device: Any) -> Any:
        """The model ``spec`` (zoo name or weights file) of ``kind`` on ``device``, loaded once.

        Raises
        ------
        KeyError, FileNotFoundError, WeightsError
            As :func:`perceive_ir.zoo.load_restorer` / :func:`~perceive_ir.zoo.load_perceiver`.
        """
        from .. import zoo

        check_llvm_clash()
        text = str(spec)
        path = Path(text)
        stamp = path.stat().st_mtime_ns if path.is_file() else None
        key = (kind, text, str(device), stamp)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            loader = zoo.load_restorer if kind == "restorer" else zoo.load_perceiver
            model = loader(text, device=device)
            self.loads += 1
            self._models[key] = model
            while len(self._models) > self.max_models:
                self._models.popitem(last=False)
            return model

    def clear(self) -> None:
        """Forget every loaded model."""
        with self._lock:
            self._models.clear()


#: Shared by every widget of the process.
MODEL_CACHE = ModelCache()


class ModelChooser(Container):
    """A zoo model name, or a weights file chosen with ``Weights file…``.

    Parameters
    ----------
    kind : str
        ``"restorer"`` or ``"perceiver"``.
    """

    def __init__(self, kind: str, label: str = "model") -> None:
        from .. import zoo

        self.kind = kind
        entries = zoo.list_models(kind)
        choices: list[tuple[str, str]] = [
            (entry.name if entry.available else f"{entry.name} (not bundled)", entry.name) for entry in entries
        ]
        choices.append((WEIGHTS_FILE_CHOICE, WEIGHTS_FILE_CHOICE))
        default = zoo.DEFAULT_RESTORER if kind == "restorer" else zoo.DEFAULT_PERCEIVER
        values = [value for _, value in choices]
        self.choice = ComboBox(label=label, choices=choices, value=default if default in values else values[0],
                             tooltip="Registered model, or 'Weights file…' to pick a .safetensors file")
        self.file = FileEdit(label="weights file", mode="r", filter="*.safetensors", visible=False,
                             tooltip=f"A perceive-ir {kind} weights file (.safetensors)")
        super().__init__(widgets=[self.choice, self.file], labels=True, layout="vertical")
        self.margins = (0, 0, 0, 0)
        self.choice.changed.connect(self._on_choice)
        self._on_choice(self.choice.value)

    def _on_choice(self, value: str) -> None:
        self.file.visible = value == WEIGHTS_FILE_CHOICE

    def set_model(self, model: str | os.PathLike) -> None:
        """Select a zoo name (``"default"``: the default of this kind), or a weights file path (anything else)."""
        from .. import zoo

        names = [value for value in self.choice.choices if value != WEIGHTS_FILE_CHOICE]
        if str(model) == "default":
            model = zoo.DEFAULT_RESTORER if self.kind == "restorer" else zoo.DEFAULT_PERCEIVER
        if str(model) in names:
            self.choice.value = str(model)
        else:
            self.choice.value = WEIGHTS_FILE_CHOICE
            self.file.value = Path(model)

    @property
    def model(self) -> str:
        """The zoo name or the weights file path to load.

        Raises
        ------
        LayerError
            ``Weights file…`` is chosen but no file is given.
        """
        if self.choice.value != WEIGHTS_FILE_CHOICE:
            return str(self.choice.value)
        value = self.file.value
        if value is None or str(value) in ("", "."):
            raise LayerError(f"choose a {self.kind} weights file (.safetensors) or a registered model")
        return str(value)


# --------------------------------------------------------------------------------------
# shared helpers


def _image_layers(viewer: napari.viewer.Viewer) -> list[tuple[str, Layer]]:
    return [(layer.name, layer) for layer in viewer.layers if isinstance(layer, Image)]


def _check_image_layer(layer: Any) -> Image:
    if layer is None:
        raise LayerError("choose an image layer (open an image or File > Open Sample > perceive-ir)")
    if not isinstance(layer, Image):
        raise LayerError(f"layer {layer.name!r} is a {type(layer).__name__} layer; choose an Image layer")
    return layer


def _is_dask(array: Any) -> bool:
    return type(array).__module__.startswith("dask.")


def _as_dask(array: Any) -> Any:
    """A dask view of a dask/zarr/array-like layer's data (nothing is read)."""
    import dask.array as da

    if _is_dask(array):
        return array
    chunks = getattr(array, "chunks", None)
    if not (isinstance(chunks, tuple) and len(chunks) == array.ndim and all(isinstance(c, int) for c in chunks)):
        chunks = "auto"
    return da.from_array(array, chunks=chunks)


def _transform_kwargs(layer: Image) -> dict[str, Any]:
    """The layer's data-to-world transform as ``add_image`` keyword arguments."""
    kwargs: dict[str, Any] = {
        "scale": tuple(layer.scale), "translate": tuple(layer.translate), "rotate": layer.rotate,
        "shear": layer.shear, "affine": layer.affine,
    }
    for name in ("units", "axis_labels"):  # napari >= 0.6
        if hasattr(layer, name):
            kwargs[name] = getattr(layer, name)
    return kwargs


class _Throttle:
    """At most one GUI progress update per ``interval`` seconds (napari's progress bar
    processes pending events on every update, which is costly at hundreds of tiles/s)."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self._last = -math.inf

    def ready(self, force: bool = False) -> bool:
        now = time.monotonic()
        if force or now - self._last >= self.interval:
            self._last = now
            return True
        return False


def _close_later(bar: progress | None) -> None:
    """Close a napari progress bar once control is back in the event loop.

    napari's progress bar processes pending events while it updates, so a worker's
    ``finished`` signal can arrive *inside* ``bar.update()``; closing the bar right there
    deletes its Qt widget under its own call and crashes the process.
    """
    if bar is not None:
        QTimer.singleShot(0, bar.close)


class _ProgressRelay(QObject):
    """Carries progress from a worker thread to the GUI thread (queued signal)."""

    advanced = Signal(int, int, int)  # job index, done, total


# --------------------------------------------------------------------------------------
# restore


@dataclass
class RestorePlan:
    """What one restore run reads and where its result goes (made in the GUI thread).

    Attributes
    ----------
    data : array or list of arrays
        numpy array (restored tile by tile with progress), or dask arrays (one per
        multiscale level) restored lazily.
    axes : str
        Axes letters of ``data``.
    lazy : bool
        Restore with :func:`perceive_ir.api.restore` (dask in, lazy dask out).
    layer_kwargs : dict
        ``add_image`` keyword arguments of the result layer (without ``data``).
    expand : tuple of int
        Axes to re-insert (size 1) into the result (the current plane's stack axes of a
        visible-region run).
    source_name : str
        Name of the input layer (for the progress bar).
    """

    data: Any
    axes: str
    lazy: bool
    layer_kwargs: dict[str, Any]
    expand: tuple[int, ...] = ()
    source_name: str = ""


def _restore_run(plan: RestorePlan, model_spec: str, device: str, tile_size: int, tile_overlap: int,
                 batch_size: int, ensemble: int = 1, deblur: str = "auto") -> Generator[Any, None, Any]:
    """Worker body: yield :class:`~perceive_ir.api.Progress` per batch, return the result.

    Driven by a napari generator worker: quitting the worker stops it at the next yield,
    i.e. within one batch of tiles, and closes :func:`~perceive_ir.api.restore_steps`.
    """
    from .. import api

    torch_device = api.resolve_device(device)
    model = MODEL_CACHE.get("restorer", model_spec, torch_device)
    settings = dict(model=model, axes=plan.axes, tile_size=tile_size, tile_overlap=tile_overlap,
                    batch_size=batch_size, device=torch_device, ensemble=ensemble, deblur=deblur)
    if plan.lazy:
        levels = [api.restore(level, **settings) for level in plan.data]
        yield api.Progress(1, 1)
        return levels
    steps = api.restore_steps(plan.data, **settings)
    try:
        for step in steps:
            if isinstance(step, api.Progress):
                yield step
            else:
                return step
    finally:
        steps.close()
    return None


class RestoreWidget(Container):
    """Restore an image layer (denoise, deblur, dehaze, derain, brighten) into a new layer.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (injected by napari).

    Attributes
    ----------
    worker : WorkerBase or None
        The running worker, if any.
    result_layer : Image or None
        The layer added by the last finished run.

    Examples
    --------
    >>> widget = RestoreWidget(viewer)  # doctest: +SKIP
    >>> viewer.window.add_dock_widget(widget)  # doctest: +SKIP
    >>> widget.model.set_model("restorer.safetensors"); widget.start()  # doctest: +SKIP
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        self.viewer = napari_viewer
        self.image_layer = ComboBox(label="image", choices=self._layer_choices, nullable=False,
                                    tooltip="Image layer to restore (it is never changed)")
        self.model = ModelChooser("restorer")
        self.axes = LineEdit(label="axes", value="",
                             tooltip="Axes letters of the layer data (Y, X, C, T, Z), e.g. CYX; empty = auto")
        self.axes_hint = Label(label="", value="")
        self.axes_hint.native.setWordWrap(True)
        self.tile_size = SpinBox(label="tile size", min=32, max=4096, step=32, value=256,
                                 tooltip="Tile side in pixels; smaller tiles use less memory")
        self.tile_overlap = SpinBox(label="tile overlap", min=0, max=512, step=8, value=32,
                                    tooltip="Overlap between tiles, blended to hide seams")
        self.batch_size = SpinBox(label="batch size", min=1, max=64, value=4, tooltip="Tiles per forward pass")
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda", "mps"], value="auto",
                               tooltip="auto: CUDA, then Apple MPS, then CPU")
        self.ensemble = ComboBox(label="ensemble", choices=[1, 2, 4, 8], value=1,
                                 tooltip="Average this many rotated / mirrored copies of each tile: "
                                         "slightly better, that many times slower")
        self.deblur = ComboBox(label="deblur", choices=["auto", "off"], value="auto",
                               tooltip="auto: where a linear motion blur is detected, deconvolve it before the network")
        self.visible_only = CheckBox(text="visible region only (current plane)", value=False,
                                     tooltip="Restore only the displayed field of view of the current plane (huge layers)")
        self.run_button = PushButton(text="Restore")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(label="", value="")
        self.status.native.setWordWrap(True)
        super().__init__(widgets=[
            self.image_layer, self.model, self.axes, self.axes_hint, self.tile_size, self.tile_overlap,
            self.batch_size, self.device, self.ensemble, self.deblur, self.visible_only, self.run_button, self.cancel_button, self.status,
        ], labels=True)
        self.worker: WorkerBase | None = None
        self.result_layer: Image | None = None
        self.progress_bar: progress | None = None
        self._plan: RestorePlan | None = None
        self._throttle = _Throttle()
        self.run_button.clicked.connect(lambda *_: self.start())
        self.cancel_button.clicked.connect(lambda *_: self.cancel())
        self.image_layer.changed.connect(self._update_axes_hint)
        self.axes.changed.connect(self._update_axes_hint)
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self._on_layers_changed)
        self._update_axes_hint()

    # ---- choices
    def _layer_choices(self, _widget: Any = None) -> list[tuple[str, Layer]]:
        return _image_layers(self.viewer)

    def _on_layers_changed(self, _event: Any = None) -> None:
        self.reset_choices()

    def _update_axes_hint(self, *_: Any) -> None:
        layer = self.image_layer.value
        if layer is None:
            self.axes_hint.value = ""
            return
        try:
            axes = _layers.resolve_axes(self.axes.value, layer.data.ndim if not layer.multiscale else layer.data[0].ndim,
                                        layer.rgb)
            self.axes_hint.value = f"axes used: {axes}  shape {tuple(layer.data.shape)}"
        except LayerError as error:
            self.axes_hint.value = str(error)

    # ---- running
    @property
    def running(self) -> bool:
        """Whether a restore is in progress."""
        return self.worker is not None

    def start(self, layer: Any = None) -> WorkerBase | None:
        """Restore ``layer`` (default: the chosen one) in a worker thread.

        Returns the started worker, or None when the inputs are invalid (a notification
        says why) or a run is already in progress.
        """
        if self.running:
            show_warning("perceive-ir: a restore is already running; cancel it first")
            return None
        try:
            layer = _check_image_layer(self.image_layer.value if layer is None else layer)
            model_spec = self.model.model
            plan = self.plan(layer)
        except _expected_errors() as error:
            _report_error(error)
            return None
        self._plan = plan
        self.status.value = f"restoring {layer.name!r}…"
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.worker = create_worker(
            _restore_run, plan, model_spec, self.device.value, int(self.tile_size.value),
            int(self.tile_overlap.value), int(self.batch_size.value), int(self.ensemble.value), str(self.deblur.value),
            _connect={"yielded": self._on_progress, "returned": self._on_result, "errored": self._on_error,
                      "aborted": self._on_aborted, "finished": self._on_finished},
        )
        return self.worker

    def cancel(self) -> None:
        """Stop the running restore after the current batch of tiles; no layer is added."""
        if self.worker is not None:
            self.status.value = "cancelling after the current batch of tiles…"
            self.worker.quit()

    def plan(self, layer: Image) -> RestorePlan:
        """What to restore for ``layer`` under the current settings.

        Raises
        ------
        LayerError
            Wrong axes, nothing visible, a visible region that is too large.
        """
        kwargs: dict[str, Any] = {
            "name": f"{layer.name} restored",
            "metadata": {**dict(layer.metadata), "perceive_ir": {"restored_from": layer.name, "model": self.model.model}},
            "rgb": layer.rgb,
            "blending": layer.blending,
            **_transform_kwargs(layer),
        }
        if not layer.rgb:
            kwargs["colormap"] = layer.colormap
            kwargs["contrast_limits"] = tuple(layer.contrast_limits)  # same intensity scale as the input
        if self.visible_only.value:
            return self._visible_plan(layer, kwargs)
        levels = list(layer.data) if layer.multiscale else [layer.data]
        axes = _layers.resolve_axes(self.axes.value, levels[0].ndim, layer.rgb)
        if layer.multiscale or not isinstance(levels[0], np.ndarray):
            if layer.multiscale:
                kwargs["multiscale"] = True
            return RestorePlan(data=[_as_dask(level) for level in levels], axes=axes, lazy=True,
                               layer_kwargs=kwargs, source_name=layer.name)
        return RestorePlan(data=levels[0], axes=axes, lazy=False, layer_kwargs=kwargs, source_name=layer.name)

    def _visible_plan(self, layer: Image, kwargs: dict[str, Any]) -> RestorePlan:
        viewer = self.viewer
        if viewer.dims.ndisplay != 2:
            raise LayerError("'visible region only' needs the 2D view; switch off 3D or turn the option off")
        world_ndim = viewer.dims.ndim
        if tuple(viewer.dims.displayed) != (world_ndim - 2, world_ndim - 1):
            raise LayerError("'visible region only' needs the last two axes (Y, X) displayed; reset the axis order")
        base = layer.data[0] if layer.multiscale else layer.data
        spatial_ndim = layer.ndim
        corners_world = _layers.view_box(viewer.camera.center, viewer.camera.zoom, viewer.canvas.size)
        point = np.asarray(viewer.dims.point, dtype=float)
        data_corners = []
        for y in (corners_world[0][0], corners_world[1][0]):
            for x in (corners_world[0][1], corners_world[1][1]):
                world = point.copy()
                world[-2:] = (y, x)
                data_corners.append(np.asarray(layer.world_to_data(world))[-2:])
        plane_shape = base.shape[spatial_ndim - 2:spatial_ndim]
        y0, y1, x0, x1 = _layers.visible_region(np.asarray(data_corners), plane_shape)
        if (y1 - y0) * (x1 - x0) > MAX_VISIBLE_PIXELS:
            raise LayerError(f"the visible region is {y1 - y0}x{x1 - x0} pixels (more than {MAX_VISIBLE_PIXELS} "
                             "pixels); zoom in, or turn 'visible region only' off for a lazy whole-layer result")
        data_point = np.asarray(layer.world_to_data(point))
        lead = [int(np.clip(np.round(data_point[axis]), 0, base.shape[axis] - 1)) for axis in range(spatial_ndim - 2)]
        crop = np.asarray(base[tuple(lead) + (slice(y0, y1), slice(x0, x1))])
        offset = np.array(lead + [y0, x0], dtype=float)
        # shift the result by the crop offset through the layer's own (scale, rotate, shear) part
        world_shift = np.asarray(layer.data_to_world(offset)) - np.asarray(layer.data_to_world(np.zeros(spatial_ndim)))
        physical_shift = np.linalg.solve(np.asarray(layer.affine.linear_matrix, dtype=float), world_shift)
        kwargs["translate"] = tuple(np.asarray(layer.translate, dtype=float) + physical_shift)
        kwargs["name"] = f"{layer.name} restored (region)"
        kwargs["metadata"]["perceive_ir"]["region"] = {"plane": lead, "rows": [y0, y1], "columns": [x0, x1]}
        return RestorePlan(data=crop, axes="YXC" if layer.rgb else "YX", lazy=False, layer_kwargs=kwargs,
                           expand=tuple(range(len(lead))), source_name=layer.name)

    # ---- worker callbacks (GUI thread)
    def _on_progress(self, step: Any) -> None:
        plan = self._plan
        if plan is None or plan.lazy or self.worker is None:
            return
        if not self._throttle.ready(step.done >= step.total):
            return
        if self.progress_bar is None:
            self.progress_bar = progress(total=step.total, desc=f"perceive-ir: restoring {plan.source_name!r}")
        self.progress_bar.update(step.done - self.progress_bar.n)
        if self.worker is not None:  # napari's progress bar processes events: the run may have ended meanwhile
            self.status.value = f"{step.done} / {step.total} tiles"

    def _on_result(self, result: Any) -> None:
        plan = self._plan
        if result is None or plan is None:  # aborted
            return
        data = result
        if plan.lazy:
            data = result if plan.layer_kwargs.get("multiscale") else result[0]
        elif plan.expand:
            data = np.expand_dims(result, plan.expand)
        self.result_layer = self.viewer.add_image(data, **plan.layer_kwargs)
        self.status.value = (f"added {self.result_layer.name!r}" +
                             (" (lazy: tiles are restored when displayed)" if plan.lazy else ""))

    def _on_aborted(self) -> None:
        self.status.value = "cancelled"
        show_info("perceive-ir: restore cancelled")

    def _on_error(self, error: BaseException) -> None:
        self.status.value = "failed (see the notification)"
        _report_error(error)

    def _on_finished(self) -> None:
        _close_later(self.progress_bar)
        self.progress_bar = None
        if self.status.value.startswith("cancelling"):
            self.status.value = "cancelled"
        self.worker = None
        self._plan = None
        self.run_button.enabled = True
        self.cancel_button.enabled = False


# --------------------------------------------------------------------------------------
# quality heatmap


@dataclass
class HeatmapJob:
    """One layer to rate: the array (a multiscale level) and how to lay the grid over it."""

    layer: Image
    data: Any
    axes: str
    level: int = 0
    downsample: tuple[float, ...] = field(default_factory=tuple)


def _perceive_run(jobs: list[HeatmapJob], model_spec: str, device: str, tile_size: int | None, batch_size: int,
                  relay: _ProgressRelay, cancel: threading.Event) -> list[Any]:
    """Worker body: one :class:`~perceive_ir.api.QualityMap` per job."""
    from .. import api

    torch_device = api.resolve_device(device)
    model = MODEL_CACHE.get("perceiver", model_spec, torch_device)
    maps = []
    for index, job in enumerate(jobs):
        def report(done: int, total: int, index: int = index) -> None:
            relay.advanced.emit(index, done, total)

        maps.append(api.perceive(job.data, model=model, axes=job.axes, tile_size=tile_size, batch_size=batch_size,
                                 device=torch_device, progress=report, cancel=cancel))
    return maps


class QualityWidget(Container):
    """Per-tile quality (low / medium / high) of image layers as a heatmap over the image.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (injected by napari).

    Attributes
    ----------
    heatmap_layers : list of Labels
        Layers added by the last run (one, or two for a comparison).
    quality_maps : list of QualityMap
        Their quality maps.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        self.viewer = napari_viewer
        self.image_layer = ComboBox(label="image", choices=self._layer_choices, nullable=False)
        self.compare_layer = ComboBox(label="compare with", choices=self._layer_choices, nullable=False,
                                      tooltip="Second layer for 'Compare' (e.g. the restored one)")
        self.model = ModelChooser("perceiver", label="perceiver")
        self.tile_size = SpinBox(label="tile size (0: auto)", min=0, max=2048, step=16, value=0,
                                 tooltip="Side of the rated squares in pixels; 0: the side the perceiver was trained "
                                         "to rate (other sides show it noise and structures at another scale)")
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda", "mps"], value="auto")
        self.opacity = FloatSlider(label="opacity", min=0.0, max=1.0, step=0.05, value=_layers.HEATMAP_OPACITY)
        self.legend = Label(label="tiers", value=_layers.legend_html())
        self.side_by_side = CheckBox(text="compare side by side (grid view)", value=True)
        self.run_button = PushButton(text="Heatmap")
        self.compare_button = PushButton(text="Compare")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.summary = Label(label="", value="")
        self.summary.native.setWordWrap(True)
        super().__init__(widgets=[
            self.image_layer, self.model, self.tile_size, self.device, self.opacity, self.legend, self.run_button,
            self.compare_layer, self.side_by_side, self.compare_button, self.cancel_button, self.summary,
        ], labels=True)
        self.worker: WorkerBase | None = None
        self.heatmap_layers: list[Any] = []
        self.quality_maps: list[Any] = []
        self.progress_bar: progress | None = None
        self._jobs: list[HeatmapJob] = []
        self._throttle = _Throttle()
        self._cancel = threading.Event()
        self._relay = _ProgressRelay()
        self._relay.advanced.connect(self._on_progress)
        self.run_button.clicked.connect(lambda *_: self.start())
        self.compare_button.clicked.connect(lambda *_: self.compare())
        self.cancel_button.clicked.connect(lambda *_: self.cancel())
        self.opacity.changed.connect(self._on_opacity)
        # typed sides are taken when the edit ends (Enter, focus out), not per keystroke: "112"
        # would otherwise pass through 1, which _on_tile_size raises to 16
        self.tile_size.native.setKeyboardTracking(False)
        self.tile_size.changed.connect(self._on_tile_size)
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self._on_layers_changed)

    def _layer_choices(self, _widget: Any = None) -> list[tuple[str, Layer]]:
        return [(name, layer) for name, layer in _image_layers(self.viewer)
                if not layer.metadata.get("perceive_ir", {}).get("heatmap")]

    def _on_layers_changed(self, _event: Any = None) -> None:
        self.reset_choices()

    def _on_tile_size(self, value: int) -> None:
        # 0 means auto; sides between it and the smallest tile the core accepts are raised to that
        from ..api import MIN_TILE_SIZE

        if 0 < value < MIN_TILE_SIZE:
            self.tile_size.value = MIN_TILE_SIZE

    def _on_opacity(self, value: float) -> None:
        for layer in self.heatmap_layers:
            if layer in self.viewer.layers:
                layer.opacity = float(value)

    @property
    def running(self) -> bool:
        """Whether a rating is in progress."""
        return self.worker is not None

    def job(self, layer: Any) -> HeatmapJob:
        """What to rate for ``layer``: the finest multiscale level under 4096x4096.

        Raises
        ------
        LayerError
            Not an image layer, or Y and X are not its last axes.
        """
        layer = _check_image_layer(layer)
        if layer.multiscale:
            levels = list(layer.data)
            level = _layers.choose_level([level_data.shape[: layer.ndim] for level_data in levels],
                                         max_side=_layers.MAX_HEATMAP_SIDE)
            data = levels[level]
            factors = tuple(float(f) for f in np.asarray(layer.downsample_factors)[level][: layer.ndim])
        else:
            level, data, factors = 0, layer.data, (1.0,) * layer.ndim
        axes = _layers.layer_axes(data.ndim, layer.rgb)
        return HeatmapJob(layer=layer, data=data, axes=axes, level=level, downsample=factors)

    def start(self, layer: Any = None) -> WorkerBase | None:
        """Rate ``layer`` (default: the chosen one) and lay its heatmap over it."""
        return self._run([self.image_layer.value if layer is None else layer])

    def compare(self, first: Any = None, second: Any = None) -> WorkerBase | None:
        """Rate two layers (e.g. degraded and restored) and show both heatmaps and summaries."""
        first = self.image_layer.value if first is None else first
        second = self.compare_layer.value if second is None else second
        if first is not None and first is second:
            show_error("perceive-ir: choose two different layers to compare")
            return None
        return self._run([first, second])

    def cancel(self) -> None:
        """Stop the running rating after the current batch of tiles."""
        if self.worker is not None:
            self._cancel.set()
            self.worker.quit()

    def _run(self, layers: list[Any]) -> WorkerBase | None:
        if self.running:
            show_warning("perceive-ir: a quality rating is already running; cancel it first")
            return None
        try:
            jobs = [self.job(layer) for layer in layers]
            model_spec = self.model.model
        except _expected_errors() as error:
            _report_error(error)
            return None
        self._jobs = jobs
        self._cancel = threading.Event()
        self.summary.value = "rating tiles…"
        self.run_button.enabled = self.compare_button.enabled = False
        self.cancel_button.enabled = True
        self.worker = create_worker(
            _perceive_run, jobs, model_spec, self.device.value, int(self.tile_size.value) or None, 16, self._relay,
            self._cancel,
            _connect={"returned": self._on_result, "errored": self._on_error, "finished": self._on_finished},
        )
        return self.worker

    # ---- callbacks (GUI thread)
    def _on_progress(self, index: int, done: int, total: int) -> None:
        if self.worker is None or not self._throttle.ready(done >= total):
            return
        if self.progress_bar is None or self.progress_bar.total != total:
            _close_later(self.progress_bar)
            name = self._jobs[index].layer.name if index < len(self._jobs) else ""
            self.progress_bar = progress(total=total, desc=f"perceive-ir: rating {name!r}")
        self.progress_bar.update(done - self.progress_bar.n)

    def _on_error(self, error: BaseException) -> None:
        self.summary.value = "cancelled" if self._cancel.is_set() else "failed (see the notification)"
        _report_error(error)

    def _on_result(self, maps: list[Any]) -> None:
        if maps is None:
            return
        try:
            layers = [self._show_heatmap(job, quality_map) for job, quality_map in zip(self._jobs, maps)]
        except LayerError as error:
            _report_error(error)
            return
        self.heatmap_layers, self.quality_maps = layers, list(maps)
        if len(maps) == 1:
            self.summary.value = _layers.summary_text(maps[0].summary, self._jobs[0].layer.name)
        else:
            names = (self._jobs[0].layer.name, self._jobs[1].layer.name)
            self.summary.value = _layers.compare_text(maps[0].summary, maps[1].summary, names)
            if self.side_by_side.value:
                self._arrange_side_by_side()

    def _show_heatmap(self, job: HeatmapJob, quality_map: Any) -> Any:
        layer = job.layer
        tiers, tile = quality_map.tiers, quality_map.tile_size
        spatial_shape = job.data.shape[:-1] if layer.rgb else job.data.shape
        planes = int(np.prod(spatial_shape[:-2], dtype=np.int64))  # label grids the heatmap holds
        cell = _layers.heatmap_cell(tile, quality_map.image_shape, planes=planes)
        labels = _layers.heatmap_labels(tiers, job.axes, job.data.shape, layer.rgb, tile_size=tile, cell=cell)
        scale, translate = _layers.heatmap_transform(cell, layer.scale, layer.translate, job.downsample[-2:])
        scale = tuple(s * f for s, f in zip(scale[:-2], job.downsample[:-2])) + scale[-2:]
        name = f"{layer.name} quality"
        metadata = {"perceive_ir": {"heatmap": True, "source": layer.name, "summary": quality_map.summary,
                                    "level": job.level}}
        kwargs = dict(scale=scale, translate=translate, rotate=layer.rotate, shear=layer.shear, affine=layer.affine,
                      opacity=float(self.opacity.value), metadata=metadata,
                      colormap=DirectLabelColormap(color_dict=_layers.tier_color_dict()),
                      features={"index": [0, 1, 2, 3], "tier": ["none", *_layers.TIER_NAMES]})
        existing = next((item for item in self.viewer.layers if item.name == name
                         and item.metadata.get("perceive_ir", {}).get("heatmap")), None)
        if existing is not None:
            self.viewer.layers.remove(existing)
        return self.viewer.add_labels(labels, name=name, **kwargs)

    def _arrange_side_by_side(self) -> None:
        """Put each image with its heatmap on top, the two pairs in neighbouring grid cells."""
        layer_list = self.viewer.layers
        order = []
        for job, heatmap in zip(self._jobs, self.heatmap_layers):
            order += [job.layer, heatmap]
        for item in order:  # move each to the top, in order: image, heatmap, image, heatmap
            layer_list.move(layer_list.index(item), len(layer_list))
        self.viewer.grid.stride = -2  # groups of two counted from the top layer
        self.viewer.grid.enabled = True

    def _on_finished(self) -> None:
        _close_later(self.progress_bar)
        self.progress_bar = None
        self.worker = None
        self.run_button.enabled = self.compare_button.enabled = True
        self.cancel_button.enabled = False
