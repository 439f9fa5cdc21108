"""Tests of the napari plugin: manifest, widgets through a viewer, sample data, pure helpers.

Tiny random models are saved once per session and passed to the widgets as weights files
(fast, and independent of which trained weights are bundled). Images are at most 128x128.
Run: ``QT_QPA_PLATFORM=offscreen pytest tests/test_napari_plugin.py`` (or under xvfb-run).
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from perceive_ir.napari import _layers  # noqa: E402
from perceive_ir.napari._layers import LayerError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "perceive-ir"
RESTORE_WIDGET = "Restore"
QUALITY_WIDGET = "Quality heatmap"
TIMEOUT_MS = 120_000


# --------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="session", autouse=True)
def virtual_display():
    """An X display for OpenGL when there is none (napari's canvas needs GL, even offscreen).

    Qt's ``offscreen`` platform renders OpenGL through GLX when ``DISPLAY`` is set, so
    without a display (plain ``QT_QPA_PLATFORM=offscreen``) an Xvfb server is started for
    these tests, as pytest-xvfb would; under ``xvfb-run`` the existing display is used.
    """
    if os.environ.get("DISPLAY") or os.name != "posix" or not shutil.which("Xvfb"):
        yield None
        return
    read_end, write_end = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write_end), "-screen", "0", "1600x1200x24", "-nolisten", "tcp"],
                              pass_fds=(write_end,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        number = reader.readline().strip()
    if not number:
        server.terminate()
        yield None
        return
    # Qt stays connected to the display until the process ends: stop the server only then
    subprocess.Popen(["sh", "-c", f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; kill {server.pid}"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    os.environ["DISPLAY"] = f":{number}"
    yield os.environ["DISPLAY"]


@pytest.fixture
def make_napari_viewer(make_napari_viewer):
    """napari's fixture, skipped where there is no OpenGL (offscreen without an X display)."""
    if os.environ.get("QT_QPA_PLATFORM") == "offscreen" and not os.environ.get("DISPLAY"):
        pytest.skip("napari's canvas needs OpenGL: run under xvfb-run or install Xvfb")
    return make_napari_viewer


@pytest.fixture(scope="session")
def restorer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random RGB restorer saved as a perceive-ir weights file."""
    import torch

    from perceive_ir.models import Restorer, RestorerConfig
    from perceive_ir.zoo import save_weights

    torch.manual_seed(0)
    config = RestorerConfig(in_channels=3, embed_dim=16,
                            backbone_args=dict(width=8, encoder_blocks=(1, 1), latent_blocks=1, decoder_blocks=(1, 1)))
    path = tmp_path_factory.mktemp("weights") / "restorer.safetensors"
    save_weights(Restorer(config), path)
    return path


@pytest.fixture(scope="session")
def perceiver_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random quality perceiver saved as a perceive-ir weights file."""
    import torch

    from perceive_ir.models import PerceiverConfig, QualityPerceiver, tiny_clip_config
    from perceive_ir.zoo import save_weights

    torch.manual_seed(0)
    clip = tiny_clip_config(image_size=64, patch_size=16, vision_width=32, vision_layers=1, text_width=32, text_layers=1)
    path = tmp_path_factory.mktemp("weights") / "perceiver.safetensors"
    save_weights(QualityPerceiver(PerceiverConfig(clip_config=clip)), path)
    return path


@pytest.fixture
def notifications(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """Messages the widgets show (errors, infos, warnings, unexpected exceptions)."""
    from perceive_ir.napari import _widget

    shown: dict[str, list] = {"error": [], "info": [], "warning": [], "unexpected": []}
    monkeypatch.setattr(_widget, "show_error", lambda message: shown["error"].append(message))
    monkeypatch.setattr(_widget, "show_info", lambda message: shown["info"].append(message))
    monkeypatch.setattr(_widget, "show_warning", lambda message: shown["warning"].append(message))
    monkeypatch.setattr(_widget.notification_manager, "receive_error",
                        lambda kind, error, traceback: shown["unexpected"].append(error))
    return shown


def _dock(viewer, name: str):
    _dock_widget, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


@pytest.fixture
def restore_widget(make_napari_viewer, restorer_file):
    viewer = make_napari_viewer()
    widget = _dock(viewer, RESTORE_WIDGET)
    widget.model.set_model(restorer_file)
    widget.device.value = "cpu"
    widget.tile_size.value = 64
    widget.tile_overlap.value = 8
    return viewer, widget


@pytest.fixture
def quality_widget(make_napari_viewer, perceiver_file):
    viewer = make_napari_viewer()
    widget = _dock(viewer, QUALITY_WIDGET)
    widget.model.set_model(perceiver_file)
    widget.device.value = "cpu"
    widget.tile_size.value = 32
    return viewer, widget


def _wait(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)


def _noisy_uint16(shape=(96, 80), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (1000 + 300 * rng.standard_normal(shape)).clip(0, 65535).astype(np.uint16)


# --------------------------------------------------------------------------------------
# manifest and discovery


def test_manifest_is_packaged_and_registered():
    packaged = importlib.resources.files("perceive_ir").joinpath("napari.yaml")
    assert packaged.is_file()
    assert packaged.read_text(encoding="utf-8") == (ROOT / "napari.yaml").read_text(encoding="utf-8")
    points = {point.name: point.value for point in importlib.metadata.entry_points(group="napari.manifest")}
    assert points.get(PLUGIN) == "perceive_ir:napari.yaml"


def test_npe2_discovers_and_validates_the_plugin():
    from npe2 import PluginManager, PluginManifest

    manifest = PluginManifest.from_distribution(PLUGIN)
    manifest.validate_imports()  # what `npe2 validate perceive-ir --imports` runs
    manager = PluginManager.instance()
    manager.discover()
    discovered = manager.get_manifest(PLUGIN)
    commands = {command.id for command in discovered.contributions.commands}
    assert manager.get_command("perceive-ir.make_restore_widget").python_name.endswith("_widget:RestoreWidget")
    assert {"perceive-ir.make_restore_widget", "perceive-ir.make_quality_widget",
            "perceive-ir.sample_fluorescence", "perceive-ir.sample_hazy_astronaut"} <= commands
    menus = manifest.contributions.menus
    assert [item.command for item in menus["napari/layers/filter"]] == ["perceive-ir.make_restore_widget"]
    assert [item.command for item in menus["napari/layers/visualize"]] == ["perceive-ir.make_quality_widget"]
    assert {widget.display_name for widget in manifest.contributions.widgets} == {RESTORE_WIDGET, QUALITY_WIDGET}


def test_npe2_cli_validates_with_imports():
    import sys

    executable = Path(sys.executable).parent / "npe2"
    command = [str(executable)] if executable.exists() else [shutil.which("npe2") or "npe2"]
    result = subprocess.run([*command, "validate", PLUGIN, "--imports"], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


@pytest.mark.parametrize("name", [RESTORE_WIDGET, QUALITY_WIDGET])
def test_widgets_dock(make_napari_viewer, name):
    from perceive_ir.napari._widget import QualityWidget, RestoreWidget

    viewer = make_napari_viewer()
    widget = _dock(viewer, name)
    assert isinstance(widget, RestoreWidget if name == RESTORE_WIDGET else QualityWidget)
    viewer.add_image(np.zeros((16, 16), dtype=np.uint8), name="image")
    assert widget.image_layer.choices == (viewer.layers["image"],)
    assert widget.image_layer.value is viewer.layers["image"]


# --------------------------------------------------------------------------------------
# restore


def test_restore_adds_an_aligned_layer_and_reuses_the_model(restore_widget, qtbot, notifications):
    from perceive_ir.napari._widget import MODEL_CACHE

    viewer, widget = restore_widget
    data = _noisy_uint16()
    original = data.copy()
    layer = viewer.add_image(data, name="cells", scale=(0.5, 2.0), translate=(10.0, -3.0),
                             metadata={"pixel_size": 0.5}, colormap="magma", contrast_limits=(500, 1500))
    loads = MODEL_CACHE.loads
    assert widget.start(layer) is not None
    _wait(qtbot, widget)
    assert not notifications["error"] and not notifications["unexpected"]
    result = viewer.layers["cells restored"]
    assert result == widget.result_layer  # (plugins get a proxy of the viewer and its layers)
    assert result.data.shape == data.shape and result.data.dtype == np.uint16
    np.testing.assert_allclose(result.scale, layer.scale)
    np.testing.assert_allclose(result.translate, layer.translate)
    assert result.metadata["pixel_size"] == 0.5
    assert result.metadata["perceive_ir"]["restored_from"] == "cells"
    assert tuple(result.contrast_limits) == (500, 1500) and result.colormap.name == "magma"
    np.testing.assert_array_equal(layer.data, original)  # the input is never changed
    # a second run reuses the cached model
    assert widget.start(layer) is not None
    _wait(qtbot, widget)
    assert MODEL_CACHE.loads - loads <= 1
    assert "cells restored [1]" in viewer.layers


def test_restore_rgb_layer_keeps_rgb(restore_widget, qtbot, notifications, monkeypatch):
    viewer, widget = restore_widget
    rgb = np.random.default_rng(1).integers(0, 255, (64, 72, 3), dtype=np.uint8)
    layer = viewer.add_image(rgb, name="photo", rgb=True)
    widget.start(layer)
    _wait(qtbot, widget)
    result = viewer.layers["photo restored"]
    assert result.rgb and result.data.shape == rgb.shape and result.data.dtype == np.uint8
    assert not notifications["error"]
    # the ensemble setting reaches the API (this test's model is the untrained identity: count the copies)
    from perceive_ir import api

    sizes: list[int] = []
    original = api.self_ensemble

    def spy(model, batch, condition, size=1):
        sizes.append(size)
        return original(model, batch, condition, size)

    monkeypatch.setattr(api, "self_ensemble", spy)
    widget.ensemble.value = 4
    widget.start(layer)
    _wait(qtbot, widget)
    assert "photo restored [1]" in viewer.layers and sizes and set(sizes) == {4}


def test_deblur_setting_reaches_the_api(restore_widget, qtbot, notifications, identity_restorer_file):
    # an untrained restorer is the identity: only the deblurring changes the layer
    from skimage import data as skdata

    from perceive_ir import degrade as D

    viewer, widget = restore_widget
    widget.model.set_model(identity_restorer_file)
    clean = skdata.astronaut()[:256, 128:384]
    blurred = np.round(np.clip(D.motion_blur(clean.astype(np.float32) / 255, 11.0, 60.0), 0, 1) * 255).astype(np.uint8)
    layer = viewer.add_image(blurred, name="shaken", rgb=True)
    assert widget.deblur.value == "auto"
    widget.deblur.value = "off"
    widget.start(layer)
    _wait(qtbot, widget)
    widget.deblur.value = "auto"
    widget.start(layer)
    _wait(qtbot, widget)
    error = lambda data: np.mean((np.asarray(data).astype(float) - clean) ** 2)  # noqa: E731
    off, auto = viewer.layers["shaken restored"].data, viewer.layers["shaken restored [1]"].data
    assert np.abs(np.asarray(off).astype(int) - blurred).max() <= 1
    assert error(auto) < 0.6 * error(off)
    assert not notifications["error"]


def test_cancel_stops_the_worker_without_a_layer(restore_widget, qtbot, notifications, monkeypatch):
    from perceive_ir.models import Restorer

    viewer, widget = restore_widget
    original_forward = Restorer.forward

    def slow_forward(self, *args, **kwargs):  # make each batch take a while, so the run is long
        time.sleep(0.05)
        return original_forward(self, *args, **kwargs)

    monkeypatch.setattr(Restorer, "forward", slow_forward)
    widget.tile_size.value = 32
    widget.tile_overlap.value = 0
    widget.batch_size.value = 1
    layer = viewer.add_image(_noisy_uint16((128, 128)), name="big")
    worker = widget.start(layer)
    yields: list = []
    worker.yielded.connect(yields.append)
    qtbot.waitUntil(lambda: len(yields) >= 1, timeout=TIMEOUT_MS)
    total = yields[0].total
    widget.cancel()
    _wait(qtbot, widget)
    assert total >= 16
    assert len(yields) < total
    assert "big restored" not in viewer.layers
    assert widget.worker is None and widget.cancel_button.enabled is False
    assert widget.status.value == "cancelled"
    assert not notifications["error"] and not notifications["unexpected"]


def test_visible_region_restores_the_field_of_view_of_the_current_plane(restore_widget, qtbot, notifications):
    viewer, widget = restore_widget
    stack = np.stack([_noisy_uint16((128, 128), seed=s) for s in range(3)])
    layer = viewer.add_image(stack, name="stack", scale=(2.0, 1.0, 1.0), translate=(0.0, 5.0, 7.0))
    viewer.dims.set_point(0, 2.0)  # world z = 2 -> plane 1
    viewer.camera.center = (40.0 + 5.0, 50.0 + 7.0)
    viewer.camera.zoom = 1.0
    height, width = viewer.canvas.size
    viewer.camera.zoom = max(height, width) / 32.0  # about 32 pixels visible
    widget.visible_only.value = True
    widget.start(layer)
    _wait(qtbot, widget)
    assert not notifications["error"], notifications["error"]
    result = viewer.layers["stack restored (region)"]
    region = result.metadata["perceive_ir"]["region"]
    assert region["plane"] == [1]
    (y0, y1), (x0, x1) = region["rows"], region["columns"]
    assert result.data.shape == (1, y1 - y0, x1 - x0)
    assert 0 < y1 - y0 < 64 and 0 < x1 - x0 < 64 and y0 <= 40 <= y1 and x0 <= 50 <= x1
    np.testing.assert_allclose(result.data_to_world((0, 0, 0)), layer.data_to_world((1, y0, x0)))


def test_dask_layer_gives_a_lazy_result(restore_widget, qtbot, notifications):
    da = pytest.importorskip("dask.array")
    viewer, widget = restore_widget
    lazy = da.from_array(_noisy_uint16((96, 96)), chunks=(48, 48))
    layer = viewer.add_image(lazy, name="lazy", contrast_limits=(0, 2000))
    widget.start(layer)
    _wait(qtbot, widget)
    assert not notifications["error"], notifications["error"]
    result = viewer.layers["lazy restored"]
    assert type(result.data).__module__.startswith("dask")
    values = np.asarray(result.data[:16, :16])
    assert values.dtype == np.uint16 and values.shape == (16, 16)


def test_multiscale_layer_gives_a_lazy_multiscale_result(restore_widget, qtbot, notifications):
    viewer, widget = restore_widget
    base = _noisy_uint16((128, 128))
    layer = viewer.add_image([base, base[::2, ::2]], name="pyramid", multiscale=True, contrast_limits=(0, 2000))
    widget.start(layer)
    _wait(qtbot, widget)
    assert not notifications["error"], notifications["error"]
    result = viewer.layers["pyramid restored"]
    assert result.multiscale and [level.shape for level in result.data] == [(128, 128), (64, 64)]
    assert type(result.data[1]).__module__.startswith("dask")


# --------------------------------------------------------------------------------------
# errors


def test_labels_layer_and_tiny_image_give_notifications(restore_widget, qtbot, notifications):
    viewer, widget = restore_widget
    labels = viewer.add_labels(np.zeros((32, 32), dtype=np.uint8), name="mask")
    assert widget.start(labels) is None
    assert "Labels layer" in notifications["error"][-1]
    tiny = viewer.add_image(np.zeros((1, 1), dtype=np.float32), name="dot")
    widget.start(tiny)
    _wait(qtbot, widget)
    assert "dot restored" not in viewer.layers
    assert len(notifications["error"]) == 2 and "1x1" in notifications["error"][-1]
    assert widget.status.value.startswith("failed")
    assert not notifications["unexpected"]


def test_missing_weights_file_and_unbundled_model_give_notifications(restore_widget, qtbot, notifications, tmp_path):
    from perceive_ir import zoo

    viewer, widget = restore_widget
    layer = viewer.add_image(_noisy_uint16((32, 32)), name="small")
    widget.model.set_model(tmp_path / "missing.safetensors")
    widget.start(layer)
    _wait(qtbot, widget)
    assert "not found" in notifications["error"][-1]
    missing = [entry.name for entry in zoo.list_models("restorer") if not entry.available]
    if missing:
        widget.model.set_model(missing[0])
        widget.start(layer)
        _wait(qtbot, widget)
        assert "not bundled" in notifications["error"][-1]
    assert not notifications["unexpected"]


def test_default_alias_selects_the_default_model_of_each_kind(restore_widget, quality_widget):
    from perceive_ir import zoo

    for (_viewer, widget), default in ((restore_widget, zoo.DEFAULT_RESTORER), (quality_widget, zoo.DEFAULT_PERCEIVER)):
        widget.model.set_model("default")
        assert widget.model.model == default and not widget.model.file.visible


def test_heatmap_of_a_labels_layer_gives_a_notification(quality_widget, notifications):
    viewer, widget = quality_widget
    labels = viewer.add_labels(np.zeros((32, 32), dtype=np.uint8), name="mask")
    assert widget.start(labels) is None
    assert "Labels layer" in notifications["error"][-1]


# --------------------------------------------------------------------------------------
# quality heatmap


def test_heatmap_lines_up_with_the_image(quality_widget, qtbot, notifications):
    viewer, widget = quality_widget
    image = np.random.default_rng(2).integers(0, 255, (128, 96), dtype=np.uint8)
    layer = viewer.add_image(image, name="photo", scale=(2.0, 3.0), translate=(5.0, 7.0))
    widget.start(layer)
    _wait(qtbot, widget)
    assert not notifications["error"] and not notifications["unexpected"]
    heatmap = viewer.layers["photo quality"]
    assert heatmap.data.shape == (4, 3) and set(np.unique(heatmap.data)) <= {1, 2, 3}
    tile = 32
    for cell_corner, pixel_corner in [((-0.5, -0.5), (-0.5, -0.5)), ((0.5, 0.5), (tile - 0.5, tile - 0.5)),
                                      ((2.5, 1.5), (3 * tile - 0.5, 2 * tile - 0.5))]:
        np.testing.assert_allclose(heatmap.data_to_world(cell_corner), layer.data_to_world(pixel_corner))
    assert heatmap.opacity == pytest.approx(_layers.HEATMAP_OPACITY)
    colors = heatmap.colormap.map(np.array([1, 2, 3]))
    assert len({tuple(np.round(color, 3)) for color in colors}) == 3
    assert "mean score" in widget.summary.value and "photo" in widget.summary.value
    widget.opacity.value = 0.8
    assert heatmap.opacity == pytest.approx(0.8)
    assert widget.quality_maps[0].tiers.shape == (4, 3)
    # a side that is not a multiple of the tile: the grid ends at the image border
    odd = viewer.add_image(image[:100, :90], name="odd", scale=(2.0, 3.0), translate=(5.0, 7.0))
    widget.start(odd)
    _wait(qtbot, widget)
    grid = viewer.layers["odd quality"]
    assert grid.scale[-1] / 3.0 == 2  # 32 px tiles drawn as 2 px cells: 2 divides 100 and 90
    np.testing.assert_allclose(grid.data_to_world(np.array(grid.data.shape) - 0.5), odd.data_to_world((99.5, 89.5)))
    np.testing.assert_allclose(grid.data_to_world((-0.5, -0.5)), odd.data_to_world((-0.5, -0.5)))


def test_heatmap_tile_size_zero_uses_the_perceivers_own(make_napari_viewer, tiny_perceiver, tmp_path, qtbot,
                                                         notifications):
    from dataclasses import replace

    from perceive_ir.models import QualityPerceiver
    from perceive_ir.zoo import save_weights

    trained_at_96 = QualityPerceiver(replace(tiny_perceiver.config, tile_size=96))
    trained_at_96.load_state_dict(tiny_perceiver.state_dict())
    save_weights(trained_at_96, tmp_path / "p96.safetensors")
    viewer = make_napari_viewer()
    widget = _dock(viewer, QUALITY_WIDGET)
    assert widget.tile_size.value == 0  # the default: the side the perceiver was trained to rate
    assert widget.tile_size.label == "tile size (0: auto)"
    widget.tile_size.value = 5  # below restore()'s smallest tile: raised to it, not refused at run time
    assert widget.tile_size.value == 16
    from qtpy.QtCore import Qt

    editor = widget.tile_size.native.lineEdit()  # typed digits are taken together, not "1" first
    editor.selectAll()
    qtbot.keyClicks(editor, "112")
    qtbot.keyClick(editor, Qt.Key.Key_Return)
    assert widget.tile_size.value == 112
    widget.tile_size.value = 0
    widget.model.set_model(str(tmp_path / "p96.safetensors"))
    widget.device.value = "cpu"
    layer = viewer.add_image(np.random.default_rng(3).integers(0, 255, (300, 250), dtype=np.uint8), name="photo")
    widget.start(layer)
    _wait(qtbot, widget)
    assert not notifications["error"] and not notifications["unexpected"]
    assert widget.quality_maps[0].tile_size == 96 and widget.quality_maps[0].tiers.shape == (4, 3)


def test_heatmap_of_a_stack_and_of_an_rgb_layer(quality_widget, qtbot, notifications):
    viewer, widget = quality_widget
    rng = np.random.default_rng(5)
    stack = viewer.add_image(rng.integers(0, 4000, (3, 64, 96), dtype=np.uint16), name="stack", scale=(4.0, 1.0, 1.0))
    widget.start(stack)
    _wait(qtbot, widget)
    heatmap = viewer.layers["stack quality"]
    assert heatmap.data.shape == (3, 2, 3)
    np.testing.assert_allclose(heatmap.scale, (4.0, 32.0, 32.0))
    np.testing.assert_allclose(heatmap.data_to_world((2, -0.5, -0.5)), stack.data_to_world((2, -0.5, -0.5)))
    photo = viewer.add_image(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), name="photo", rgb=True)
    widget.start(photo)
    _wait(qtbot, widget)
    assert viewer.layers["photo quality"].data.shape == (2, 2)
    assert not notifications["error"] and not notifications["unexpected"]


def test_heatmap_of_a_multiscale_layer_uses_a_level_that_fits(quality_widget, qtbot, notifications, monkeypatch):
    viewer, widget = quality_widget
    monkeypatch.setattr(_layers, "MAX_HEATMAP_SIDE", 64)
    base = np.random.default_rng(3).integers(0, 255, (128, 128), dtype=np.uint8)
    layer = viewer.add_image([base, base[::2, ::2]], name="pyramid", multiscale=True, contrast_limits=(0, 255))
    widget.start(layer)
    _wait(qtbot, widget)
    assert not notifications["error"], notifications["error"]
    heatmap = viewer.layers["pyramid quality"]
    assert heatmap.metadata["perceive_ir"]["level"] == 1
    assert heatmap.data.shape == (2, 2)  # 64x64 level, 32 px tiles
    np.testing.assert_allclose(heatmap.data_to_world((0.5, 0.5)), layer.data_to_world((63.5, 63.5)))


def test_compare_shows_two_heatmaps_and_both_summaries(quality_widget, qtbot, notifications):
    viewer, widget = quality_widget
    rng = np.random.default_rng(4)
    clean = rng.integers(0, 255, (64, 64), dtype=np.uint8)
    first = viewer.add_image(clean, name="input")
    second = viewer.add_image(np.clip(clean.astype(int) + 20, 0, 255).astype(np.uint8), name="restored")
    widget.compare(first, second)
    _wait(qtbot, widget)
    assert not notifications["error"] and not notifications["unexpected"]
    assert "input quality" in viewer.layers and "restored quality" in viewer.layers
    lines = widget.summary.value.splitlines()
    assert lines[0].startswith("input:") and lines[1].startswith("restored:") and lines[2].startswith("change:")
    assert viewer.grid.enabled
    names = [layer.name for layer in viewer.layers][-4:]
    assert names == ["input", "input quality", "restored", "restored quality"]
    assert viewer.grid.position(len(viewer.layers) - 1, viewer.layers) != viewer.grid.position(
        len(viewer.layers) - 3, viewer.layers)


# --------------------------------------------------------------------------------------
# sample data


@pytest.mark.parametrize(("key", "names"), [
    ("fluorescence", ["fluorescence (clean)", "fluorescence (degraded)"]),
    ("hazy_astronaut", ["astronaut (clean)", "astronaut (hazy)"]),
])
def test_sample_data_loads(make_napari_viewer, key, names):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, key)
    assert [layer.name for layer in viewer.layers] == names
    degraded, clean = viewer.layers[names[1]], viewer.layers[names[0]]
    assert degraded.data.shape == clean.data.shape and degraded.data.dtype == clean.data.dtype
    assert not np.array_equal(degraded.data, clean.data)


def test_sample_generation_is_deterministic_and_matches_the_shipped_files():
    # the generator is perceive_ir.synthetic (tests/test_synthetic.py tests it in depth)
    tifffile = pytest.importorskip("tifffile")
    from perceive_ir import synthetic

    start = time.perf_counter()
    degraded, clean = synthetic.make_fluorescence_pair()
    hazy, astronaut = synthetic.make_hazy_astronaut_pair()
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0  # < 1 s on an idle machine
    assert degraded.dtype == np.uint16 and degraded.shape == (512, 512)
    assert hazy.dtype == np.uint8 and hazy.shape == (512, 512, 3)
    np.testing.assert_array_equal(synthetic.make_fluorescence_pair()[0], degraded)
    files = {"fluorescence_degraded.tif": degraded, "fluorescence_clean.tif": clean,
             "astronaut_hazy.tif": hazy, "astronaut_clean.tif": astronaut}
    for name, expected in files.items():
        path = ROOT / "sample_data" / name
        if not path.exists():
            pytest.skip(f"{path} not generated (run sample_data/make_samples.py)")
        np.testing.assert_array_equal(tifffile.imread(path), expected)


# --------------------------------------------------------------------------------------
# pure helpers (no viewer)


def test_layer_axes():
    assert _layers.layer_axes(2) == "YX"
    assert _layers.layer_axes(3) == "ZYX"
    assert _layers.layer_axes(4) == "TZYX"
    assert _layers.layer_axes(3, rgb=True) == "YXC"
    assert _layers.layer_axes(4, rgb=True) == "ZYXC"
    with pytest.raises(LayerError, match="at least 2 spatial"):
        _layers.layer_axes(2, rgb=True)
    assert _layers.resolve_axes("", 3) == "ZYX"
    assert _layers.resolve_axes(" cyx ", 3) == "CYX"
    with pytest.raises(LayerError, match="has 2 letters but the layer data has 3"):
        _layers.resolve_axes("YX", 3)


def test_heatmap_transform_maps_cells_onto_tiles():
    scale, translate = _layers.heatmap_transform(64, (1.0, 1.0), (0.0, 0.0))
    assert scale == (64.0, 64.0) and translate == (31.5, 31.5)
    scale, translate = _layers.heatmap_transform(32, (4.0, 2.0, 3.0), (1.0, 5.0, 7.0), downsample=(2.0, 4.0))
    assert scale == (4.0, 128.0, 384.0)
    # cell edge -0.5 lands on the image's pixel edge -0.5
    assert translate[1] - 0.5 * scale[1] == pytest.approx(5.0 - 0.5 * 2.0)
    assert translate[2] - 0.5 * scale[2] == pytest.approx(7.0 - 0.5 * 3.0)
    with pytest.raises(LayerError):
        _layers.heatmap_transform(0, (1.0, 1.0), (0.0, 0.0))


def test_heatmap_labels_follow_the_layer_axes():
    tiers = np.array([[0, 1], [2, 2]])
    np.testing.assert_array_equal(_layers.heatmap_labels(tiers, "YX", (64, 64)), tiers + 1)
    assert _layers.heatmap_labels(tiers, "YXC", (64, 64, 3), rgb=True).shape == (2, 2)
    # channels rated separately come after the stack axes; moved back to the C position
    separate = np.zeros((5, 2, 3, 4), dtype=int)  # Z, C, tiles_y, tiles_x
    separate[:, 1] = 2
    moved = _layers.heatmap_labels(separate, "CZYX", (2, 5, 96, 128))
    assert moved.shape == (2, 5, 3, 4) and (moved[1] == 3).all() and (moved[0] == 1).all()
    # three channels rated jointly: the same grid on every channel
    assert _layers.heatmap_labels(np.zeros((3, 4), dtype=int), "CYX", (3, 96, 128)).shape == (3, 3, 4)
    with pytest.raises(LayerError, match="last"):
        _layers.heatmap_labels(tiers, "XY", (64, 64))


def test_heatmap_cells_stop_at_the_image_border():
    assert _layers.heatmap_cell(64, (128, 192)) == 64  # whole tiles: one cell per tile
    assert _layers.heatmap_cell(224, (512, 512)) == 32  # 224 / 7 divides 512
    assert _layers.heatmap_cell(224, (500, 300)) == 28  # 4 px and 8 px over, as with 14 px cells: the larger cell
    assert _layers.heatmap_cell(224, (500, 300), planes=10**7) == 224  # too many labels: whole tiles
    tiers = np.array([[0, 1, 2], [2, 1, 0]])  # a 2 x 3 grid of 64 px tiles over 100 x 150 pixels
    labels = _layers.heatmap_labels(tiers, "YX", (100, 150), tile_size=64, cell=_layers.heatmap_cell(64, (100, 150)))
    cell = _layers.heatmap_cell(64, (100, 150))
    assert labels.shape == (-(-100 // cell), -(-150 // cell)) and labels.shape[0] * cell - 100 < cell
    # every pixel's cell carries the tier of the tile that holds the pixel
    for y, x in [(0, 0), (63, 63), (64, 64), (99, 149), (70, 130)]:
        assert labels[y // cell, x // cell] == tiers[y // 64, x // 64] + 1
    stacked = _layers.heatmap_labels(np.stack([tiers, tiers]), "ZYX", (2, 100, 150), tile_size=64, cell=cell)
    assert stacked.shape == (2, *labels.shape)
    with pytest.raises(LayerError, match="must divide"):
        _layers.heatmap_labels(tiers, "YX", (100, 150), tile_size=64, cell=24)
    # an RGB layer (colour axis not a layer dimension) and channels rated separately (CZYX)
    assert _layers.heatmap_labels(tiers, "YXC", (100, 150, 3), rgb=True, tile_size=64, cell=4).shape == (25, 38)
    separate = np.zeros((5, 2, 2, 3), dtype=int)  # Z, C, tiles_y, tiles_x
    separate[:, 1] = 2
    moved = _layers.heatmap_labels(separate, "CZYX", (2, 5, 100, 150), tile_size=64, cell=4)
    assert moved.shape == (2, 5, 25, 38) and (moved[1] == 3).all() and (moved[0] == 1).all()


def test_colours_levels_and_text():
    colors = _layers.tier_color_dict()
    assert len({colors[label] for label in (1, 2, 3)}) == 3 and colors[0][3] == 0
    assert _layers.choose_level([(8192, 8192), (4096, 4096), (2048, 2048)]) == 1
    assert _layers.choose_level([(9000, 9000), (5000, 5000)]) == 1
    assert _layers.choose_level([(3, 100, 100)]) == 0
    assert _layers.level_downsample((128, 96), (64, 24)) == (2.0, 4.0)
    before = {"tiles": 4, "fraction": {"low": 0.5, "medium": 0.5, "high": 0.0}, "mean_score": 0.25, "tile_size": 224}
    after = {"tiles": 4, "fraction": {"low": 0.0, "medium": 0.25, "high": 0.75}, "mean_score": 0.875, "tile_size": 224}
    assert _layers.summary_text(before) == "low 50% | medium 50% | high 0% | mean score 0.25 (4 tiles of 224 px)"
    assert _layers.legend_html().count("&#9632;") == 3 and "medium" in _layers.legend_html()
    text = _layers.compare_text(before, after, ("noisy", "restored"))
    assert text.splitlines()[-1] == "change: mean score +0.62, high-quality tiles +75 points"


def test_view_box_and_visible_region():
    low, high = _layers.view_box((10.0, 50.0, 60.0), zoom=2.0, canvas_size=(100, 200))
    np.testing.assert_allclose(low, (25.0, 10.0))
    np.testing.assert_allclose(high, (75.0, 110.0))
    assert _layers.visible_region(np.array([[25.0, 10.0], [75.0, 110.0]]), (64, 64)) == (25, 64, 10, 64)
    assert _layers.visible_region(np.array([[25.0, 10.0], [75.0, 110.0]]), (64, 64), multiple=8) == (24, 64, 8, 64)
    with pytest.raises(LayerError, match="visible part"):
        _layers.visible_region(np.array([[100.0, 100.0], [200.0, 200.0]]), (64, 64))
    with pytest.raises(LayerError):
        _layers.view_box((0.0, 0.0), zoom=0.0, canvas_size=(10, 10))
