"""Sample images of the napari plugin, generated deterministically at call time.

Two degraded images with their clean references, made by :mod:`perceive_ir.synthetic`
(the same generator as the training data and ``sample_data/make_samples.py``):

- a synthetic fluorescence image (YX, uint16, 512x512): cells with nuclei, filaments and
  punctae (:func:`perceive_ir.synthetic.synth_fluorescence`), out-of-focus blur and
  Poisson-Gaussian noise (:func:`perceive_ir.synthetic.degrade_fluorescence`);
- a hazy natural photograph (YXC, uint8, 512x512x3): ``skimage.data.astronaut()`` (NASA,
  public domain per its docstring) under atmospheric haze.

The images are made from this package's code in about a second, so the installed plugin
needs no data files; ``sample_data/make_samples.py`` writes the same arrays as compressed
TIFFs for scripts, the command line and demos (and checks they are unchanged).

Nothing here imports napari: the ``*_sample`` functions return napari ``LayerData``
tuples ``(data, kwargs, "image")``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..synthetic import CAMERA_OFFSET, make_fluorescence_pair, make_hazy_astronaut_pair

__all__ = ["fluorescence_sample", "hazy_astronaut_sample"]


def fluorescence_sample() -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """napari sample: the degraded fluorescence image over its (hidden) clean reference."""
    degraded, clean = make_fluorescence_pair()
    limits = (float(CAMERA_OFFSET), float(np.percentile(clean, 99.9)))
    metadata = {"sample": "perceive-ir synthetic fluorescence (perceive_ir.synthetic)"}
    common = {"colormap": "gray", "contrast_limits": limits, "metadata": metadata}
    return [
        (clean, {**common, "name": "fluorescence (clean)", "visible": False}, "image"),
        (degraded, {**common, "name": "fluorescence (degraded)"}, "image"),
    ]


def hazy_astronaut_sample() -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """napari sample: the hazy astronaut over its (hidden) clean reference."""
    hazy, clean = make_hazy_astronaut_pair()
    metadata = {"sample": "skimage.data.astronaut (NASA, public domain) with synthetic haze"}
    return [
        (clean, {"name": "astronaut (clean)", "rgb": True, "visible": False, "metadata": metadata}, "image"),
        (hazy, {"name": "astronaut (hazy)", "rgb": True, "metadata": metadata}, "image"),
    ]
