"""Measure a restore through the napari widget: total time and the longest GUI-thread block.

Not collected by pytest (run by hand). Opens a napari viewer, adds a 2048x2048 layer,
restores it with :class:`perceive_ir.napari._widget.RestoreWidget` and, while the worker
runs, a ``QTimer`` ticks every 10 ms on the GUI thread; the longest gap between ticks is
how long the GUI was unresponsive. Without ``--model`` a tiny random restorer is used
(the widget's own cost, independent of model size); ``--model default`` times the bundled one::

    xvfb-run -a python tests/gui_timing.py
    QT_QPA_PLATFORM=offscreen DISPLAY=:0 python tests/gui_timing.py --model weights.safetensors --device cuda

Prints one JSON line: size, tile settings, device, total seconds, tiles, the longest and
the 99th-percentile tick gap (ms), and the number of ticks.

``--torch-threads`` (default 1) sets ``OMP_NUM_THREADS`` before torch is imported (0: torch's
default).

Under Xvfb with Mesa 22.3 (llvmpipe), napari 0.9.2 / vispy 0.17 segfault in
``glDrawArrays`` when a large image layer is added after other image layers were added and
removed; ``tests/gui_mesa_repro.py`` reproduces it with napari alone (no perceive-ir, no
torch). An earlier version of this script warmed up by restoring a small layer and removing
it, and crashed in about one run in three; the warm-up now restores without layers.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

TICK_MS = 10


def tiny_restorer_file(directory: Path) -> Path:
    """A tiny random RGB restorer saved as a weights file (for timing the GUI, not quality)."""
    import torch

    from perceive_ir.models import Restorer, RestorerConfig
    from perceive_ir.zoo import save_weights

    torch.manual_seed(0)
    config = RestorerConfig(in_channels=3, embed_dim=16,
                            backbone_args=dict(width=8, encoder_blocks=(1, 1), latent_blocks=1, decoder_blocks=(1, 1)))
    path = directory / "tiny_restorer.safetensors"
    save_weights(Restorer(config), path)
    return path


def measure(model: str, size: int, tile_size: int, tile_overlap: int, batch_size: int, device: str) -> dict:
    """Restore a ``size`` x ``size`` uint16 layer through the widget; timings in a dict."""
    import torchvision  # noqa: F401  # torch before the OpenGL canvas (see check_llvm_clash)

    import napari
    from qtpy.QtCore import QElapsedTimer, QTimer
    from qtpy.QtWidgets import QApplication

    from perceive_ir.napari._widget import RestoreWidget

    viewer = napari.Viewer(show=True)  # drawn, as for a user (offscreen or Xvfb when headless)
    rng = np.random.default_rng(0)
    data = (1000 + 200 * rng.standard_normal((size, size))).clip(0, 65535).astype(np.uint16)
    layer = viewer.add_image(data, name="big")
    widget = RestoreWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Restore")
    widget.model.set_model(model)
    widget.device.value = device
    widget.tile_size.value = tile_size
    widget.tile_overlap.value = tile_overlap
    widget.batch_size.value = batch_size
    app = QApplication.instance()

    # warm-up (not timed): load the model into the widget's cache and let torch initialise,
    # without adding and removing layers (that sequence crashes Mesa under Xvfb, see the docstring)
    from perceive_ir import api
    from perceive_ir.napari._widget import MODEL_CACHE

    warm = MODEL_CACHE.get("restorer", widget.model.model, api.resolve_device(device))
    api.restore(data[:256, :256], model=warm, tile_size=tile_size, tile_overlap=tile_overlap, batch_size=batch_size,
                device=device)

    gaps: list[float] = []
    clock = QElapsedTimer()
    timer = QTimer()
    timer.setInterval(TICK_MS)

    def tick() -> None:
        gaps.append(clock.restart())

    timer.timeout.connect(tick)
    tiles = {"total": 0}
    start = time.perf_counter()
    worker = widget.start(layer)
    worker.yielded.connect(lambda step: tiles.update(total=step.total))
    worker.returned.connect(lambda _result: tiles.update(ticks_before_result=len(gaps)))
    clock.start()
    timer.start()
    while widget.running:
        app.processEvents()
        time.sleep(0.001)
    total = time.perf_counter() - start
    timer.stop()
    if "big restored" not in viewer.layers or viewer.layers["big restored"].data.shape != data.shape:
        raise RuntimeError("the restore did not add 'big restored' (see the notifications above)")
    viewer.close()
    return {
        "size": f"{size}x{size}", "tile_size": tile_size, "tile_overlap": tile_overlap, "batch_size": batch_size,
        "device": device, "tiles": tiles["total"], "total_s": round(total, 2),
        "max_gui_gap_ms": float(max(gaps)) if gaps else None,
        "p99_gui_gap_ms": float(np.percentile(gaps, 99)) if gaps else None, "ticks": len(gaps),
        # while tiles are restored, before the result layer is added and drawn
        "max_gui_gap_during_tiles_ms": float(max(gaps[: tiles.get("ticks_before_result", len(gaps))] or [0.0])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="restorer weights file or zoo name (default: tiny random)")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--tile-size", type=int, default=256)
    parser.add_argument("--tile-overlap", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--torch-threads", type=int, default=1, help="OMP_NUM_THREADS for torch (see above)")
    args = parser.parse_args()
    if args.torch_threads > 0:
        os.environ["OMP_NUM_THREADS"] = str(args.torch_threads)  # before torch is imported
    with tempfile.TemporaryDirectory() as folder:
        model = args.model or str(tiny_restorer_file(Path(folder)))
        report = measure(model, args.size, args.tile_size, args.tile_overlap, args.batch_size, args.device)
    report["model"] = args.model or "tiny random"
    report["torch_threads"] = args.torch_threads
    print(json.dumps(report))


if __name__ == "__main__":
    main()
