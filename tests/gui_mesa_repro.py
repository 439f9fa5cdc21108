"""napari alone crashes under Xvfb + Mesa llvmpipe: a reproduction without perceive-ir or torch.

Not collected by pytest. Seen here with napari 0.9.2, vispy 0.17.0, PyQt5 5.15.11 (Qt
5.15.14), Mesa 22.3.6 under Xvfb: adding a 2048x2048 image layer, two small ones, removing
the small ones and then adding a 2048x2048 float32 layer ends in a segmentation fault inside
vispy's ``glDrawArrays`` (4 runs out of 4)::

    xvfb-run -a python -X faulthandler tests/gui_mesa_repro.py

``tests/gui_timing.py`` avoids the sequence (its warm-up adds no layers).
"""

import time

import numpy as np
import napari
from qtpy.QtWidgets import QApplication


def pump(seconds: float) -> None:
    app, end = QApplication.instance(), time.time() + seconds
    while time.time() < end:
        app.processEvents()
        time.sleep(0.002)


viewer = napari.Viewer(show=True)
data = (1000 + 200 * np.random.default_rng(0).standard_normal((2048, 2048))).clip(0, 65535).astype(np.uint16)
viewer.add_image(data, name="big")
viewer.add_image(data[:256, :256], name="small")
pump(0.4)
viewer.add_image(data[:256, :256].astype("float32"), name="small float")
pump(0.4)
viewer.layers.remove("small")
viewer.layers.remove("small float")
pump(1.0)
viewer.add_image(np.random.rand(2048, 2048).astype(np.float32), name="big float")
pump(3.0)
viewer.close()
print("no crash")
