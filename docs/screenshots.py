"""Take the screenshots of the napari widgets: ``docs/restore_widget.png`` and ``docs/heatmap_widget.png``.

Opens napari, loads the plugin's fluorescence sample, restores the degraded image with the
Restore widget, then compares degraded and restored with the Quality heatmap widget, and
saves a screenshot of the whole window after each step. Run from the repository root,
headless under Xvfb::

    xvfb-run -a python docs/screenshots.py --model restorer.safetensors --perceiver perceiver.safetensors

Without ``--model`` / ``--perceiver`` tiny random models are used, which only shows the
layout (do not publish those images); retake the screenshots with trained weights.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _tiny_models(directory: Path) -> tuple[str, str]:
    """Random tiny restorer and perceiver weights files (layout checks only)."""
    import torch

    from perceive_ir.models import PerceiverConfig, QualityPerceiver, Restorer, RestorerConfig, tiny_clip_config
    from perceive_ir.zoo import save_weights

    torch.manual_seed(0)
    restorer = Restorer(RestorerConfig(in_channels=3, embed_dim=16, backbone_args=dict(
        width=8, encoder_blocks=(1, 1), latent_blocks=1, decoder_blocks=(1, 1))))
    perceiver = QualityPerceiver(PerceiverConfig(clip_config=tiny_clip_config(
        image_size=64, patch_size=16, vision_width=32, vision_layers=1, text_width=32, text_layers=1)))
    save_weights(restorer, directory / "tiny_restorer.safetensors")
    save_weights(perceiver, directory / "tiny_perceiver.safetensors")
    return str(directory / "tiny_restorer.safetensors"), str(directory / "tiny_perceiver.safetensors")


def _wait(app, widget, timeout: float = 600.0) -> None:
    end = time.monotonic() + timeout
    while widget.running:
        if time.monotonic() > end:
            raise TimeoutError(f"{type(widget).__name__} did not finish within {timeout:.0f} s")
        app.processEvents()
        time.sleep(0.01)
    _settle(app)


def _settle(app) -> None:
    """Process pending events so that the canvas and widgets are drawn."""
    for _ in range(30):
        app.processEvents()
        time.sleep(0.01)


def take(model: str, perceiver: str, out: Path, tile_size: int, device: str, size: tuple[int, int]) -> list[Path]:
    """Run both widgets on the fluorescence sample and save the two screenshots."""
    import torchvision  # noqa: F401  # torch's stack before napari's OpenGL canvas (see check_llvm_clash)

    import napari
    from napari.settings import get_settings
    from qtpy.QtWidgets import QApplication

    from perceive_ir.napari._widget import QualityWidget, RestoreWidget

    get_settings().application.gui_notification_level = "error"  # no toasts over the canvas
    viewer = napari.Viewer(title="perceive-ir", show=True)
    viewer.window.resize(*size)
    app = QApplication.instance()
    _settle(app)
    viewer.open_sample("perceive-ir", "fluorescence")
    degraded = viewer.layers["fluorescence (degraded)"]

    restore = RestoreWidget(viewer)
    viewer.window.add_dock_widget(restore, name="Restore (perceive-ir)", area="right")
    restore.model.set_model(model)
    restore.device.value = device
    restore.image_layer.value = degraded
    restore.start()
    _wait(app, restore)
    viewer.grid.enabled = True  # degraded | restored
    _settle(app)
    viewer.reset_view()
    _settle(app)
    out.mkdir(parents=True, exist_ok=True)
    restore_png = out / "restore_widget.png"
    viewer.screenshot(str(restore_png), canvas_only=False, flash=False)

    quality = QualityWidget(viewer)
    viewer.window.add_dock_widget(quality, name="Quality heatmap (perceive-ir)", area="right", tabify=True)
    quality.model.set_model(perceiver)
    quality.device.value = device
    quality.tile_size.value = tile_size
    quality.image_layer.value = degraded
    quality.compare_layer.value = restore.result_layer
    quality.compare()
    _wait(app, quality)
    viewer.reset_view()
    _settle(app)
    heatmap_png = out / "heatmap_widget.png"
    viewer.screenshot(str(heatmap_png), canvas_only=False, flash=False)
    viewer.close()
    return [restore_png, heatmap_png]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="restorer weights file or zoo name (default: tiny random)")
    parser.add_argument("--perceiver", default=None, help="perceiver weights file or zoo name (default: tiny random)")
    parser.add_argument("--out", type=Path, default=HERE, help="folder for the PNGs (default: docs/)")
    parser.add_argument("--tile-size", type=int, default=0,
                        help="heatmap tile size in pixels (0, the widget's default: the side the perceiver was "
                             "trained to rate; see benchmarks/perceiver_tiles.py)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, nargs=2, default=(1500, 900), metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="OMP_NUM_THREADS (1 avoids a crash of software OpenGL with torch threads; see tests/gui_timing.py)")
    args = parser.parse_args()
    if args.torch_threads > 0:
        os.environ["OMP_NUM_THREADS"] = str(args.torch_threads)  # before torch is imported
    with tempfile.TemporaryDirectory() as folder:
        os.environ["NAPARI_CONFIG"] = str(Path(folder) / "settings.yaml")  # leave the user's settings alone
        model, perceiver = args.model, args.perceiver
        if model is None or perceiver is None:
            tiny_model, tiny_perceiver = _tiny_models(Path(folder))
            model, perceiver = model or tiny_model, perceiver or tiny_perceiver
        for path in take(model, perceiver, args.out, args.tile_size, args.device, tuple(args.size)):
            print(path)


if __name__ == "__main__":
    main()
