"""Synthetic fluorescence-microscopy images and the sample images of perceive-ir.

One generator serves the training data (``training/data.py``), the napari plugin's
sample data (:mod:`perceive_ir.napari._sample_data`) and ``sample_data/make_samples.py``:

- :func:`synth_fluorescence` draws a clean widefield-like fluorescence image: cells with a
  dim cytoplasm and a brighter textured nucleus, filaments (random smooth curves, as
  microtubules or actin), and punctae (diffraction-limited spots), on a dark background,
  seen through a small optical point spread function;
- :func:`degrade_fluorescence` makes the acquisition harder: extra out-of-focus blur (a
  wider Gaussian PSF) and Poisson-Gaussian noise at low photon counts;
- :func:`make_fluorescence_pair` is the fluorescence sample: the two above with fixed
  acquisition parameters, mapped to uint16 camera counts;
- :func:`make_hazy_astronaut_pair` is the hazy-photograph sample
  (``skimage.data.astronaut()`` under synthetic haze).

All are pure functions of their arguments and of ``rng`` / ``seed`` (no file I/O). This
module needs only numpy, scipy and :mod:`perceive_ir.degrade` (plus scikit-image for the
astronaut, imported on use): it imports no napari, Qt or torch.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
from scipy import ndimage

from perceive_ir.degrade import add_haze, add_poisson_gaussian_noise, gaussian_blur

__all__ = [
    "SAMPLE_SEED",
    "STRUCTURES",
    "CAMERA_OFFSET",
    "CAMERA_GAIN",
    "synth_fluorescence",
    "degrade_fluorescence",
    "make_fluorescence_pair",
    "make_hazy_astronaut_pair",
]

#: Structures that :func:`synth_fluorescence` can draw (its ``structures`` argument).
STRUCTURES = ("cells", "filaments", "punctae")

#: Seed of every random choice of the sample images (layout, noise, haze depth map).
SAMPLE_SEED = 20240607

#: Camera model of the fluorescence sample: ``counts = CAMERA_OFFSET + CAMERA_GAIN * intensity``.
CAMERA_OFFSET = 400.0
CAMERA_GAIN = 4000.0

# Acquisition of the fluorescence sample (see make_fluorescence_pair).
_SAMPLE_PSF_SIGMA = 1.0  # in-focus optical PSF of the clean image, pixels
_SAMPLE_BLUR_SIGMA = 1.5  # extra out-of-focus blur of the degraded image, pixels
_SAMPLE_PHOTONS = 40.0  # expected photons of a pixel of intensity 1
_SAMPLE_READ_NOISE = 1.0  # photo-electrons
_HAZE_BETA = 1.6
_HAZE_AIRLIGHT = 0.9


# -- clean images and their degradation (the training data) ------------------------------
def _smooth_noise(shape: tuple[int, int], scale: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to [0, 1] (a cheap texture)."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), scale, mode="wrap")
    low, high = float(noise.min()), float(noise.max())
    return (noise - low) / max(high - low, 1e-6)


def _draw_cells(canvas: np.ndarray, count: int, rng: np.random.Generator) -> None:
    height, width = canvas.shape
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    size = min(height, width)
    texture = _smooth_noise((height, width), max(1.0, size / 64), rng)
    for _ in range(count):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        radius = rng.uniform(0.08, 0.22) * size
        aspect = rng.uniform(0.6, 1.0)
        angle = rng.uniform(0, np.pi)
        cos, sin = np.cos(angle), np.sin(angle)
        # only a box of 3 radii around the centre: further out both profiles add less than 1e-10
        reach = 3.0 * radius
        box = (slice(max(0, int(cy - reach)), min(height, int(cy + reach) + 1)),
               slice(max(0, int(cx - reach)), min(width, int(cx + reach) + 1)))
        y, x = yy[box], xx[box]
        u = ((x - cx) * cos + (y - cy) * sin) / radius
        v = (-(x - cx) * sin + (y - cy) * cos) / (radius * aspect)
        distance = np.sqrt(u * u + v * v)
        cytoplasm = 1.0 / (1.0 + np.exp((distance - 1.0) * 12.0))
        canvas[box] += rng.uniform(0.05, 0.2) * cytoplasm * (0.7 + 0.6 * texture[box])
        # nucleus: a smaller ellipse inside the cell, brighter and textured
        offset = rng.uniform(-0.3, 0.3, size=2) * radius
        n_radius = radius * rng.uniform(0.3, 0.5)
        nu = ((x - cx - offset[0]) * cos + (y - cy - offset[1]) * sin) / n_radius
        nv = (-(x - cx - offset[0]) * sin + (y - cy - offset[1]) * cos) / (n_radius * rng.uniform(0.7, 1.0))
        nucleus = 1.0 / (1.0 + np.exp((np.sqrt(nu * nu + nv * nv) - 1.0) * 10.0))
        canvas[box] += rng.uniform(0.3, 0.7) * nucleus * (0.5 + texture[box])


def _draw_filaments(canvas: np.ndarray, count: int, rng: np.random.Generator) -> None:
    height, width = canvas.shape
    lines = np.zeros_like(canvas)
    for _ in range(count):
        steps = int(rng.integers(max(height, width) // 2, 2 * max(height, width)))
        angle = rng.uniform(0, 2 * np.pi)
        turns = np.cumsum(rng.normal(0.0, 0.08, size=steps))  # smooth random curvature
        angles = angle + ndimage.gaussian_filter1d(turns, 5.0)
        y = rng.uniform(0, height) + np.cumsum(np.sin(angles) * 0.5)
        x = rng.uniform(0, width) + np.cumsum(np.cos(angles) * 0.5)
        inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
        np.add.at(lines, (y[inside].astype(int), x[inside].astype(int)), rng.uniform(0.15, 0.4))
    canvas += ndimage.gaussian_filter(lines, 0.7)


def _draw_punctae(canvas: np.ndarray, count: int, rng: np.random.Generator) -> None:
    height, width = canvas.shape
    spots = np.zeros_like(canvas)
    y = rng.integers(0, height, size=count)
    x = rng.integers(0, width, size=count)
    np.add.at(spots, (y, x), rng.uniform(2.0, 6.0, size=count).astype(np.float32))
    canvas += ndimage.gaussian_filter(spots, 1.0)


def _chosen(random_choice: bool, name: str, structures: frozenset[str] | None) -> bool:
    """Whether to draw structure ``name``: the random choice, unless ``structures`` is given."""
    return random_choice if structures is None else name in structures


def synth_fluorescence(
    shape: tuple[int, int],
    *,
    rng: np.random.Generator | int | None = None,
    psf_sigma: float = 1.0,
    structures: Collection[str] | None = None,
) -> np.ndarray:
    """Draw a clean synthetic fluorescence-microscopy image.

    Parameters
    ----------
    shape : tuple of int
        (Y, X) size of the image, each at least 8.
    rng : numpy.random.Generator or int or None, optional
        Random generator or seed; the same seed gives the same image.
    psf_sigma : float, optional
        Standard deviation (pixels) of the in-focus Gaussian point spread function.
    structures : collection of str or None, optional
        Which of ``"cells"`` (with nuclei), ``"filaments"`` and ``"punctae"`` to draw.
        None (the default, used by the training data) draws each at random (cells 80%,
        filaments and punctae 70% of the images). The random choices are drawn from ``rng``
        either way: naming exactly the structures that ``None`` would pick gives the same
        image as ``None``.

    Returns
    -------
    numpy.ndarray
        float32 (Y, X) image in [0, 1]: background, cells with nuclei, filaments and
        punctae, blurred by the PSF; the brightest structures reach 0.6-1.0.

    Raises
    ------
    ValueError
        If ``shape`` is not two sizes of at least 8 pixels, or ``structures`` names an
        unknown structure.
    """
    if len(tuple(shape)) != 2 or min(int(s) for s in shape) < 8:
        raise ValueError(f"shape must be (Y, X) with both sizes >= 8, got {tuple(shape)}")
    if structures is not None:
        structures = frozenset([structures] if isinstance(structures, str) else structures)
        unknown = sorted(structures - set(STRUCTURES))
        if unknown:
            raise ValueError(f"unknown structures {unknown}; expected some of {list(STRUCTURES)}")
    generator = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    height, width = int(shape[0]), int(shape[1])
    area = height * width / (128.0 * 128.0)
    canvas = np.zeros((height, width), dtype=np.float32)
    canvas += generator.uniform(0.01, 0.05) * (0.5 + _smooth_noise((height, width), max(height, width) / 8, generator))
    if _chosen(generator.random() < 0.8, "cells", structures):
        _draw_cells(canvas, max(1, int(generator.poisson(3 * area) + 1)), generator)
    if _chosen(generator.random() < 0.7, "filaments", structures):
        _draw_filaments(canvas, max(1, int(generator.poisson(6 * area))), generator)
    if _chosen(generator.random() < 0.7, "punctae", structures):
        _draw_punctae(canvas, max(1, int(generator.poisson(25 * area))), generator)
    if psf_sigma > 0:
        canvas = ndimage.gaussian_filter(canvas, psf_sigma, mode="reflect")
    peak = float(np.quantile(canvas, 0.999))
    canvas *= generator.uniform(0.6, 1.0) / max(peak, 1e-6)
    return np.clip(canvas, 0.0, 1.0).astype(np.float32)


def degrade_fluorescence(
    clean: np.ndarray,
    *,
    rng: np.random.Generator | int | None = None,
    blur_sigma: float | None = None,
    photons: float | None = None,
    read_noise: float | None = None,
) -> np.ndarray:
    """Simulate a poor acquisition of ``clean``: out-of-focus blur, then shot and read noise.

    Parameters
    ----------
    clean : numpy.ndarray
        Clean image (Y, X) or (Y, X, C) in [0, 1].
    rng : numpy.random.Generator or int or None, optional
        Random generator or seed.
    blur_sigma : float, optional
        Extra Gaussian PSF width in pixels; drawn from {0 (half of the time), U(0.5, 2)}
        when omitted.
    photons : float, optional
        Photons of a pixel of value 1; log-uniform in [10, 300] when omitted (low light).
    read_noise : float, optional
        Read noise in photo-electrons; uniform in [0.5, 2] when omitted.

    Returns
    -------
    numpy.ndarray
        float32 image of the input's shape, not clipped (unbiased noise).
    """
    generator = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    acquisition = acquisition_parameters(generator, blur_sigma=blur_sigma, photons=photons, read_noise=read_noise)
    blur_sigma = acquisition["blur_sigma"]
    image = gaussian_blur(clean, blur_sigma) if blur_sigma > 0 else np.asarray(clean, dtype=np.float32)
    return add_poisson_gaussian_noise(image, acquisition["photons"], acquisition["read_noise"], rng=generator)


def acquisition_parameters(
    rng: np.random.Generator | int | None = None,
    *,
    blur_sigma: float | None = None,
    photons: float | None = None,
    read_noise: float | None = None,
) -> dict[str, float]:
    """The acquisition of :func:`degrade_fluorescence`: the given values, the others drawn.

    Drawing them first with the generator that is then passed to
    :func:`degrade_fluorescence` (with these values) gives the same image as letting it
    draw them itself, and records what was drawn (e.g. for a variance-stabilising
    transform that needs the true photon count).

    Returns
    -------
    dict
        ``blur_sigma`` (pixels, 0: none), ``photons`` (of a pixel of value 1) and
        ``read_noise`` (photo-electrons).
    """
    generator = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    if blur_sigma is None:
        blur_sigma = 0.0 if generator.random() < 0.5 else float(generator.uniform(0.5, 2.0))
    if photons is None:
        photons = float(np.exp(generator.uniform(np.log(10.0), np.log(300.0))))
    if read_noise is None:
        read_noise = float(generator.uniform(0.5, 2.0))
    return {"blur_sigma": float(blur_sigma), "photons": float(photons), "read_noise": float(read_noise)}


# -- sample images ------------------------------------------------------------------------
def _to_counts(intensity: np.ndarray) -> np.ndarray:
    """Intensity (nominally [0, 1]) to uint16 camera counts ``offset + gain * intensity``."""
    return np.clip(np.rint(CAMERA_OFFSET + CAMERA_GAIN * intensity), 0, 65535).astype(np.uint16)


def make_fluorescence_pair(
    shape: tuple[int, int] = (512, 512), *, seed: int = SAMPLE_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Degraded and clean fluorescence images (YX, uint16 camera counts).

    The clean image is :func:`synth_fluorescence` with all its structures (cells with
    nuclei, filaments, punctae; in-focus PSF sigma 1 px); the degraded one is
    :func:`degrade_fluorescence` of it with an extra out-of-focus Gaussian blur (sigma
    1.5 px) and Poisson-Gaussian noise (40 photons at intensity 1, read noise 1 e-). Both
    draw from one generator seeded by ``seed``. Both images are mapped to camera counts as
    ``400 + 4000 * intensity`` (clipped to the uint16 range): the clean image lies in
    [400, 4400] counts; the degraded one, unclipped noise, spreads a little beyond.

    Parameters
    ----------
    shape : (int, int)
        (height, width) in pixels, each at least 8.
    seed : int
        Seed of the layout and of the noise; the same seed gives the same images.

    Returns
    -------
    degraded, clean : ndarray
        uint16 arrays of ``shape``.

    Raises
    ------
    ValueError
        If ``shape`` is not two sizes of at least 8 pixels.
    """
    rng = np.random.default_rng(seed)
    with np.errstate(over="ignore"):  # exp overflow of far-away cell edges: harmless (-> 0)
        clean = synth_fluorescence(shape, rng=rng, psf_sigma=_SAMPLE_PSF_SIGMA, structures=STRUCTURES)
    degraded = degrade_fluorescence(clean, rng=rng, blur_sigma=_SAMPLE_BLUR_SIGMA, photons=_SAMPLE_PHOTONS,
                                    read_noise=_SAMPLE_READ_NOISE)
    return _to_counts(degraded), _to_counts(clean)


def make_hazy_astronaut_pair(*, seed: int = SAMPLE_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Hazy and clean ``skimage.data.astronaut()`` (YXC, uint8, 512x512x3).

    Haze by the scattering model of :func:`perceive_ir.degrade.add_haze` (beta 1.6,
    airlight 0.9) over a smooth random depth map drawn from ``seed``.
    """
    from skimage import data

    clean = data.astronaut()
    hazy = add_haze(clean.astype(np.float32) / 255.0, _HAZE_BETA, _HAZE_AIRLIGHT, rng=seed)
    return np.clip(np.rint(hazy * 255.0), 0, 255).astype(np.uint8), clean
