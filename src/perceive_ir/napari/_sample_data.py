"""Sample images of the napari plugin, generated deterministically at call time.

Two degraded images with their clean references:

- a synthetic fluorescence image (YX, uint16, 512x512): cells with nuclei as smooth blobs,
  filaments as random smooth curves and punctae, blurred by a Gaussian PSF and corrupted
  by Poisson-Gaussian noise (:mod:`perceive_ir.degrade`);
- a hazy natural photograph (YXC, uint8, 512x512x3): ``skimage.data.astronaut()`` (NASA,
  public domain per its docstring) under atmospheric haze.

The images are made from this package's code in well under a second, so the installed
plugin needs no data files; ``sample_data/make_samples.py`` writes the same arrays as
compressed TIFFs for scripts, the command line and demos (and checks they are unchanged).

Nothing here imports napari: the ``*_sample`` functions return napari ``LayerData``
tuples ``(data, kwargs, "image")``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from .. import degrade

__all__ = [
    "SAMPLE_SEED",
    "fluorescence_phantom",
    "make_fluorescence_pair",
    "make_hazy_astronaut_pair",
    "fluorescence_sample",
    "hazy_astronaut_sample",
]

#: Seed of every random choice of the samples (phantom layout, noise, haze depth map).
SAMPLE_SEED = 20240607

#: Camera model of the fluorescence sample: ``counts = offset + gain * intensity``.
_CAMERA_OFFSET = 400.0
_CAMERA_GAIN = 4000.0
_PSF_SIGMA = 1.5  # pixels
_PHOTONS = 40.0  # expected photons of a pixel of intensity 1
_READ_NOISE = 1.0  # photo-electrons
_HAZE_BETA = 1.6
_HAZE_AIRLIGHT = 0.9


def _splat(canvas: np.ndarray, rows: np.ndarray, columns: np.ndarray, values: np.ndarray) -> None:
    """Add ``values`` at sub-pixel positions with bilinear weights (points outside are dropped)."""
    height, width = canvas.shape
    row0 = np.floor(rows).astype(int)
    column0 = np.floor(columns).astype(int)
    row_weight = rows - row0
    column_weight = columns - column0
    for d_row, weight_row in ((0, 1 - row_weight), (1, row_weight)):
        for d_column, weight_column in ((0, 1 - column_weight), (1, column_weight)):
            r, c = row0 + d_row, column0 + d_column
            inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            np.add.at(canvas, (r[inside], c[inside]), (values * weight_row * weight_column)[inside])


def _ellipse(height: int, width: int, center: tuple[float, float], radii: tuple[float, float], angle: float) -> np.ndarray:
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
    dy, dx = rows - center[0], columns - center[1]
    cos, sin = np.cos(angle), np.sin(angle)
    u = (dx * cos + dy * sin) / radii[1]
    v = (-dx * sin + dy * cos) / radii[0]
    return (u * u + v * v <= 1.0).astype(np.float32)


def fluorescence_phantom(shape: tuple[int, int] = (512, 512), *, seed: int = SAMPLE_SEED) -> np.ndarray:
    """A clean synthetic fluorescence image in [0, 1]: cells, nuclei, filaments, punctae.

    Parameters
    ----------
    shape : (int, int)
        (height, width) in pixels, each at least 32.
    seed : int
        Seed of the layout; the same seed gives the same image.

    Returns
    -------
    ndarray
        float32 (height, width), values in [0, 1].

    Raises
    ------
    ValueError
        ``shape`` is not two integers of at least 32.
    """
    if len(shape) != 2 or min(int(side) for side in shape) < 32:
        raise ValueError(f"shape must be (height, width) with sides >= 32, got {tuple(shape)}")
    height, width = (int(side) for side in shape)
    rng = np.random.default_rng(seed)
    scale = min(height, width) / 512.0
    cells = np.zeros((height, width), dtype=np.float32)
    nuclei = np.zeros((height, width), dtype=np.float32)
    for _ in range(max(3, int(round(14 * height * width / 512**2)))):
        center = (rng.uniform(0, height), rng.uniform(0, width))
        radii = (rng.uniform(30, 55) * scale, rng.uniform(40, 70) * scale)
        angle = rng.uniform(0, np.pi)
        cells = np.maximum(cells, rng.uniform(0.12, 0.22) * _ellipse(height, width, center, radii, angle))
        nucleus_center = (center[0] + rng.normal(0, 4 * scale), center[1] + rng.normal(0, 4 * scale))
        nucleus_radii = (radii[0] * rng.uniform(0.35, 0.5), radii[1] * rng.uniform(0.3, 0.45))
        nuclei = np.maximum(nuclei, rng.uniform(0.45, 0.7) * _ellipse(height, width, nucleus_center, nucleus_radii, angle))
    cells = ndimage.gaussian_filter(cells, 3.0 * scale + 0.5)
    # nuclear texture: smooth blobs modulate the nuclei
    texture = ndimage.gaussian_filter(rng.standard_normal((height, width)).astype(np.float32), 2.5)
    texture /= max(float(np.abs(texture).max()), 1e-6)
    nuclei = ndimage.gaussian_filter(nuclei * (1.0 + 0.35 * texture), 1.5)

    filaments = np.zeros((height, width), dtype=np.float64)
    for _ in range(max(6, int(round(40 * height * width / 512**2)))):
        length = int(rng.uniform(80, 320) * scale) + 10
        turns = ndimage.gaussian_filter1d(rng.normal(0, 0.25, length), 12.0)  # smooth curvature
        heading = rng.uniform(0, 2 * np.pi) + np.cumsum(turns)
        rows = rng.uniform(0, height) + np.cumsum(np.sin(heading))
        columns = rng.uniform(0, width) + np.cumsum(np.cos(heading))
        _splat(filaments, rows, columns, np.full(length, rng.uniform(0.35, 0.8)))
    filaments = ndimage.gaussian_filter(filaments, 0.8).astype(np.float32)

    spots = np.zeros((height, width), dtype=np.float64)
    count = max(20, int(round(220 * height * width / 512**2)))
    _splat(spots, rng.uniform(0, height, count), rng.uniform(0, width, count), rng.uniform(2.0, 6.0, count))
    spots = ndimage.gaussian_filter(spots, 1.2).astype(np.float32)

    image = 0.03 + cells + nuclei + 1.6 * filaments + spots
    image /= max(float(np.percentile(image, 99.95)), 1e-6)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def _to_counts(intensity: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(_CAMERA_OFFSET + _CAMERA_GAIN * intensity), 0, 65535).astype(np.uint16)


def make_fluorescence_pair(shape: tuple[int, int] = (512, 512), *, seed: int = SAMPLE_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Degraded and clean fluorescence images (YX, uint16 camera counts).

    The degraded image is the phantom blurred by a Gaussian PSF (sigma 1.5 px) with
    Poisson-Gaussian noise (40 photons at intensity 1, read noise 1 e-); both images are
    mapped to counts as ``400 + 4000 * intensity``.

    Returns
    -------
    degraded, clean : ndarray
        uint16 arrays of ``shape``.
    """
    clean = fluorescence_phantom(shape, seed=seed)
    blurred = degrade.gaussian_blur(clean, _PSF_SIGMA)
    noisy = degrade.add_poisson_gaussian_noise(blurred, _PHOTONS, _READ_NOISE, rng=seed + 1)
    return _to_counts(noisy), _to_counts(clean)


def make_hazy_astronaut_pair(*, seed: int = SAMPLE_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Hazy and clean ``skimage.data.astronaut()`` (YXC, uint8, 512x512x3).

    Haze by the scattering model of :func:`perceive_ir.degrade.add_haze` (beta 1.6,
    airlight 0.9) over a smooth random depth map drawn from ``seed``.
    """
    from skimage import data

    clean = data.astronaut()
    hazy = degrade.add_haze(clean.astype(np.float32) / 255.0, _HAZE_BETA, _HAZE_AIRLIGHT, rng=seed)
    return np.clip(np.rint(hazy * 255.0), 0, 255).astype(np.uint8), clean


def fluorescence_sample() -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """napari sample: the degraded fluorescence image over its (hidden) clean reference."""
    degraded, clean = make_fluorescence_pair()
    limits = (float(_CAMERA_OFFSET), float(np.percentile(clean, 99.9)))
    common = {"colormap": "gray", "contrast_limits": limits, "metadata": {"sample": "perceive-ir fluorescence phantom"}}
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
