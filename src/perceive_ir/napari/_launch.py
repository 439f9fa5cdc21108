"""``perceive-ir napari``: start napari with torch's stack loaded before the first canvas.

Loading torchvision (and so torch's triton) before napari creates its OpenGL canvas
avoids a crash with Mesa's LLVM-based software OpenGL; see
:func:`perceive_ir.napari._widget.check_llvm_clash`.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["launch"]


def launch(files: Sequence[str] = ()) -> None:
    """Open a napari viewer (with ``files``, if any) and run its event loop."""
    import torchvision  # noqa: F401  # before any OpenGL context exists

    import napari

    viewer = napari.Viewer()
    if files:
        viewer.open(list(files), plugin=None)
    napari.run()
