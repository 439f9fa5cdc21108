"""Synthetic image degradations for all-in-one restoration.

This module synthesises the degradations that the restorer is trained and
evaluated on: additive Gaussian noise, Poisson-Gaussian (microscopy) noise,
Gaussian / defocus / motion blur, atmospheric haze, rain streaks, low light
and JPEG compression.  It is used for on-the-fly training data, for tests,
for generating the sample data and by the command line interface
(``perceive-ir degrade IN OUT --kind K --level L``).

It depends only on numpy, scipy, scikit-image and Pillow (no torch), and
imports nothing else from :mod:`perceive_ir`.

Conventions
-----------
* Images are real arrays with values nominally in ``[0, 1]`` and shape
  ``(H, W)`` (grayscale) or ``(H, W, C)`` with ``C`` in ``{1, 3}``.  Integer
  arrays are accepted but are *not* rescaled: they must already be on the
  ``[0, 1]`` scale.  Every function converts to ``float32`` internally,
  returns a new ``float32`` array of the input's shape and never modifies
  its input.
* Every random function takes a keyword ``rng`` which may be a
  :class:`numpy.random.Generator`, an ``int`` seed or ``None`` (a fresh,
  unseeded generator).  The same seed gives an identical output.
* Gaussian and Poisson-Gaussian noise are **not** clipped by default
  (``clip=False``), following the usual denoising protocol with unclipped
  float noise.  All other degradations return values clipped to ``[0, 1]``.
* Noise standard deviations (``sigma``, ``noise_sigma``) are on the 0-255
  scale: ``sigma=25`` means a standard deviation of ``25 / 255``.
* Convolutions use the ``reflect`` border mode (``d c b a | a b c d``).

Degradation levels
------------------
:func:`degrade` is the single entry point for callers.  ``level`` is a float
in ``[0, 1]`` (0 = mildest, 1 = strongest) or one of ``"low"``, ``"medium"``,
``"high"`` (0.0, 0.5 and 1.0).  Parameters are interpolated linearly in
``level`` between the two ends of the ranges below, except ``photons``, which
is interpolated log-linearly.  Random choices (motion and rain angles, the
haze depth map, the noise itself) are drawn from ``rng`` inside
:func:`degrade`; :func:`degradation_params` returns the deterministic part.

| kind          | parameter                                   | level 0 | level 1 |
|---------------|---------------------------------------------|---------|---------|
| `noise`       | `sigma` (0-255 scale)                       | 5       | 55      |
| `poisson`     | `photons` (log-spaced)                      | 100     | 5       |
| `poisson`     | `read_noise` (photo-electrons)              | 0.5     | 1.5     |
| `blur`        | `sigma` (pixels)                            | 0.8     | 3.5     |
| `defocus`     | `radius` (pixels)                           | 1       | 5       |
| `motion_blur` | `length` (pixels; angle uniform in 0-180)   | 5       | 25      |
| `haze`        | `beta` (`airlight` fixed at 0.9)            | 0.5     | 2.5     |
| `rain`        | `amount` (angle within 20 deg of vertical)  | 0.2     | 1.0     |
| `low_light`   | `factor`                                    | 0.5     | 0.08    |
| `low_light`   | `gamma`                                     | 1.2     | 2.2     |
| `low_light`   | `noise_sigma` (0-255 scale)                 | 2       | 10      |
| `jpeg`        | `quality` (rounded to an integer)           | 60      | 10      |
"""

from __future__ import annotations

import difflib
import io
import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage, signal

__all__ = [
    "KINDS",
    "LEVEL_NAMES",
    "add_gaussian_noise",
    "add_poisson_gaussian_noise",
    "gaussian_kernel",
    "disk_kernel",
    "motion_kernel",
    "gaussian_blur",
    "defocus_blur",
    "motion_blur",
    "make_depth_map",
    "add_haze",
    "add_rain",
    "low_light",
    "jpeg_compress",
    "degradation_params",
    "degrade",
    "random_degradation",
]

#: Degradation kinds understood by :func:`degrade`.
KINDS: tuple[str, ...] = (
    "noise",
    "poisson",
    "blur",
    "defocus",
    "motion_blur",
    "haze",
    "rain",
    "low_light",
    "jpeg",
)

#: Named levels accepted by :func:`degrade` and :func:`degradation_params`.
LEVEL_NAMES: dict[str, float] = {"low": 0.0, "medium": 0.5, "high": 1.0}

# Kernels with at most this many taps are applied with a direct convolution,
# larger ones through an FFT on a reflect-padded image.
_DIRECT_CONVOLUTION_MAX_TAPS = 81

# Fixed airlight used by ``degrade(..., "haze", ...)``.
_DEGRADE_AIRLIGHT = 0.9

# Maximum deviation of rain streaks from vertical when the angle is random.
_RAIN_MAX_TILT_DEGREES = 20.0


# ---------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------


def _as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    """Return a numpy Generator from a Generator, an integer seed or None.

    Parameters
    ----------
    rng : numpy.random.Generator or int or None
        An existing generator (returned unchanged), a non-negative integer
        seed, or None for a fresh, unseeded generator.

    Returns
    -------
    numpy.random.Generator
        The generator to draw from.

    Raises
    ------
    ValueError
        If `rng` is of another type or is a negative integer.
    """
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (bool, np.bool_)) or not isinstance(rng, numbers.Integral):
        raise ValueError(
            "rng must be a numpy.random.Generator, an int seed or None, "
            f"got {type(rng).__name__} {rng!r}"
        )
    if rng < 0:
        raise ValueError(f"rng seed must be >= 0, got {rng}")
    return np.random.default_rng(int(rng))


def _validate_image(image: Any, name: str = "image") -> np.ndarray:
    """Check an image and return it as a new float32 array.

    Parameters
    ----------
    image : array_like
        Real numeric array of shape (H, W) or (H, W, C) with C in {1, 3}.
    name : str, optional
        Name used in error messages.

    Returns
    -------
    numpy.ndarray
        A float32 copy of `image` (never a view of the input).

    Raises
    ------
    ValueError
        If the dtype is not real numeric (bool, complex, object, strings),
        the shape is not (H, W) or (H, W, 1|3), the array is empty, or it
        contains NaN or inf values.
    """
    array = np.asarray(image)
    dtype = array.dtype
    if dtype == np.bool_ or not (
        np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)
    ):
        raise ValueError(
            f"{name} must have a real numeric dtype (integer or float), "
            f"got dtype {dtype}"
        )
    if array.ndim not in (2, 3):
        raise ValueError(
            f"{name} must have shape (H, W) or (H, W, C) with C in (1, 3), "
            f"got {array.ndim} dimensions with shape {array.shape}"
        )
    if array.ndim == 3 and array.shape[2] not in (1, 3):
        raise ValueError(
            f"{name} must have 1 or 3 channels in its last dimension, "
            f"got shape {array.shape} with {array.shape[2]} channels"
        )
    if array.size == 0:
        raise ValueError(f"{name} must be non-empty, got shape {array.shape}")
    result = np.array(array, dtype=np.float32, copy=True)
    if not np.all(np.isfinite(result)):
        raise ValueError(f"{name} contains NaN or inf values")
    return result


def _real(value: Any, name: str) -> float:
    """Return `value` as a finite Python float.

    Parameters
    ----------
    value : Any
        The value to check.
    name : str
        Parameter name used in error messages.

    Returns
    -------
    float
        The value as a float.

    Raises
    ------
    ValueError
        If `value` is not a real number (bools are rejected) or not finite.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(
            f"{name} must be a real number, got {type(value).__name__} {value!r}"
        )
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return result


def _at_least(value: Any, name: str, minimum: float) -> float:
    """Validate ``value >= minimum`` and return it as a float."""
    result = _real(value, name)
    if result < minimum:
        raise ValueError(f"{name} must be >= {minimum:g}, got {value!r}")
    return result


def _positive(value: Any, name: str) -> float:
    """Validate ``value > 0`` and return it as a float."""
    result = _real(value, name)
    if result <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return result


def _in_range(value: Any, name: str, low: float, high: float) -> float:
    """Validate ``low <= value <= high`` and return it as a float."""
    result = _real(value, name)
    if not low <= result <= high:
        raise ValueError(f"{name} must be in [{low:g}, {high:g}], got {value!r}")
    return result


def _as_hwc(image: np.ndarray) -> np.ndarray:
    """Return an (H, W, C) view of an (H, W) or (H, W, C) array."""
    return image[:, :, np.newaxis] if image.ndim == 2 else image


def _clip01(image: np.ndarray) -> np.ndarray:
    """Clip to [0, 1] in place and return the array as float32."""
    np.clip(image, 0.0, 1.0, out=image)
    return image.astype(np.float32, copy=False)


# ---------------------------------------------------------------------------
# Noise
# ---------------------------------------------------------------------------


def add_gaussian_noise(
    image: np.ndarray,
    sigma: float,
    *,
    rng: np.random.Generator | int | None = None,
    clip: bool = False,
) -> np.ndarray:
    """Add white Gaussian noise.

    Parameters
    ----------
    image : numpy.ndarray
        Image of shape (H, W) or (H, W, C), values nominally in [0, 1].
    sigma : float
        Noise standard deviation on the 0-255 scale (``sigma=25`` gives a
        standard deviation of 25/255). Must be >= 0.
    rng : numpy.random.Generator or int or None, optional
        Generator, integer seed, or None for a fresh generator.
    clip : bool, optional
        Clip the result to [0, 1]. Default False (unclipped float noise, as
        in the usual denoising protocol).

    Returns
    -------
    numpy.ndarray
        Noisy float32 image of the input's shape. Noise is independent per
        pixel and per channel.

    Raises
    ------
    ValueError
        If the image is invalid or `sigma` is negative or not finite.
    """
    result = _validate_image(image)
    sigma = _at_least(sigma, "sigma", 0.0)
    generator = _as_rng(rng)
    noise = generator.standard_normal(result.shape, dtype=np.float32)
    result += noise * np.float32(sigma / 255.0)
    return _clip01(result) if clip else result


def add_poisson_gaussian_noise(
    image: np.ndarray,
    photons: float,
    read_noise: float = 0.0,
    *,
    rng: np.random.Generator | int | None = None,
    clip: bool = False,
) -> np.ndarray:
    """Add Poisson-Gaussian (shot plus read) noise, as in microscopy.

    The photon counts are ``Poisson(image * photons) + Normal(0, read_noise)``
    and the result is ``counts / photons``, so its expectation is ``image``
    and its variance ``image / photons + (read_noise / photons) ** 2``.

    Parameters
    ----------
    image : numpy.ndarray
        Image of shape (H, W) or (H, W, C), values nominally in [0, 1].
        Negative values are treated as 0 for the Poisson rate.
    photons : float
        Expected photon count of a pixel of value 1. Must be > 0; fewer
        photons means stronger noise.
    read_noise : float, optional
        Standard deviation of the Gaussian read noise in photo-electrons.
        Must be >= 0. Default 0.
    rng : numpy.random.Generator or int or None, optional
        Generator, integer seed, or None for a fresh generator.
    clip : bool, optional
        Clip the result to [0, 1]. Default False.

    Returns
    -------
    numpy.ndarray
        Noisy float32 image of the input's shape.

    Raises
    ------
    ValueError
        If the image is invalid, `photons` is not > 0, or `read_noise` is
        negative.
    """
    clean = _validate_image(image)
    photons = _positive(photons, "photons")
    read_noise = _at_least(read_noise, "read_noise", 0.0)
    generator = _as_rng(rng)
    rate = np.clip(clean.astype(np.float64), 0.0, None) * photons
    counts = generator.poisson(rate).astype(np.float64)
    if read_noise > 0:
        counts += generator.normal(0.0, read_noise, size=counts.shape)
    result = (counts / photons).astype(np.float32)
    return _clip01(result) if clip else result


# ---------------------------------------------------------------------------
# Blur kernels and blurs
# ---------------------------------------------------------------------------


def gaussian_kernel(sigma: float) -> np.ndarray:
    """Build a normalised 2D Gaussian kernel.

    Parameters
    ----------
    sigma : float
        Standard deviation in pixels, >= 0. The kernel is truncated at
        4 sigma (as :func:`scipy.ndimage.gaussian_filter`); ``sigma=0`` gives
        the identity kernel ``[[1]]``.

    Returns
    -------
    numpy.ndarray
        Float32 kernel of odd shape (2r+1, 2r+1) summing to 1.

    Raises
    ------
    ValueError
        If `sigma` is negative or not finite.
    """
    sigma = _at_least(sigma, "sigma", 0.0)
    radius = int(4.0 * sigma + 0.5)
    if sigma == 0 or radius == 0:
        return np.ones((1, 1), dtype=np.float32)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    profile = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = np.outer(profile, profile)
    return (kernel / kernel.sum()).astype(np.float32)


def disk_kernel(radius: float) -> np.ndarray:
    """Build a normalised, anti-aliased disk (defocus) kernel.

    Each tap is the fraction of its pixel covered by a disk of the given
    radius centred on the middle pixel (estimated with 16 x 16 sub-samples).

    Parameters
    ----------
    radius : float
        Disk radius in pixels, >= 0. Radii too small to cover any
        sub-sample give the identity kernel ``[[1]]``.

    Returns
    -------
    numpy.ndarray
        Float32 kernel of odd shape summing to 1.

    Raises
    ------
    ValueError
        If `radius` is negative or not finite.
    """
    radius = _at_least(radius, "radius", 0.0)
    half = max(0, math.ceil(radius - 0.5))
    supersampling = 16
    size = 2 * half + 1
    sub_offsets = (np.arange(size * supersampling) + 0.5) / supersampling - (half + 0.5)
    sub_y, sub_x = np.meshgrid(sub_offsets, sub_offsets, indexing="ij")
    inside = (sub_y**2 + sub_x**2) <= radius**2
    coverage = inside.reshape(size, supersampling, size, supersampling).mean(axis=(1, 3))
    total = coverage.sum()
    if total <= 0:
        return np.ones((1, 1), dtype=np.float32)
    return (coverage / total).astype(np.float32)


def motion_kernel(length: float, angle: float = 0.0) -> np.ndarray:
    """Build a normalised, anti-aliased linear motion-blur kernel.

    The kernel is a line segment of `length` pixels centred on the middle
    pixel, rasterised by bilinear splatting of densely spaced points, then
    cropped symmetrically to its support.

    Parameters
    ----------
    length : float
        Length of the motion in pixels, >= 1.
    angle : float, optional
        Direction in degrees, counter-clockwise from the +x axis (image rows
        grow downwards, so 90 is vertical). 0 gives a horizontal kernel of a
        single row. Default 0.

    Returns
    -------
    numpy.ndarray
        Float32 kernel of odd shape summing to 1, point-symmetric about its
        centre.

    Raises
    ------
    ValueError
        If `length` is < 1 or either argument is not finite.
    """
    length = _at_least(length, "length", 1.0)
    angle = _real(angle, "angle")
    half = math.ceil(length / 2.0) + 1
    size = 2 * half + 1
    theta = math.radians(angle)
    n_points = int(math.ceil(length * 16)) + 1
    positions = np.linspace(-length / 2.0, length / 2.0, n_points)
    # Round so that e.g. cos(90 deg) ~ 6e-17 gives an exactly axis-aligned line.
    x = np.round(positions * math.cos(theta), 9) + half
    y = np.round(-positions * math.sin(theta), 9) + half
    x0 = np.floor(x).astype(np.intp)
    y0 = np.floor(y).astype(np.intp)
    fx = x - x0
    fy = y - y0
    kernel = np.zeros((size, size), dtype=np.float64)
    np.add.at(kernel, (y0, x0), (1 - fy) * (1 - fx))
    np.add.at(kernel, (y0, x0 + 1), (1 - fy) * fx)
    np.add.at(kernel, (y0 + 1, x0), fy * (1 - fx))
    np.add.at(kernel, (y0 + 1, x0 + 1), fy * fx)
    kernel[kernel < 1e-12] = 0.0
    rows = np.nonzero(kernel.sum(axis=1))[0]
    cols = np.nonzero(kernel.sum(axis=0))[0]
    row_half = int(np.max(np.abs(rows - half)))
    col_half = int(np.max(np.abs(cols - half)))
    kernel = kernel[half - row_half : half + row_half + 1, half - col_half : half + col_half + 1]
    return (kernel / kernel.sum()).astype(np.float32)


def _convolve(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve each channel of an image with a 2D odd-sized kernel.

    Parameters
    ----------
    image : numpy.ndarray
        Float32 image of shape (H, W) or (H, W, C).
    kernel : numpy.ndarray
        2D kernel with odd dimensions.

    Returns
    -------
    numpy.ndarray
        Float32 image of the same shape, computed with ``reflect`` borders.
    """
    kernel = kernel.astype(np.float32, copy=False)
    if kernel.size == 1:
        return image * kernel.flat[0]
    hwc = _as_hwc(image)
    if kernel.size <= _DIRECT_CONVOLUTION_MAX_TAPS:
        result = ndimage.convolve(hwc, kernel[:, :, np.newaxis], mode="reflect")
    else:
        pad_y, pad_x = kernel.shape[0] // 2, kernel.shape[1] // 2
        # numpy's "symmetric" is scipy.ndimage's "reflect" (d c b a | a b c d).
        padded = np.pad(hwc, ((pad_y, pad_y), (pad_x, pad_x), (0, 0)), mode="symmetric")
        result = signal.fftconvolve(padded, kernel[:, :, np.newaxis], mode="valid", axes=(0, 1))
    return result.reshape(image.shape).astype(np.float32, copy=False)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Blur each channel with a Gaussian.

    Parameters
    ----------
    image : numpy.ndarray
        Image of shape (H, W) or (H, W, C), values nominally in [0, 1].
    sigma : float
        Standard deviation in pixels, >= 0 (0 returns a clipped copy).
        Equivalent to convolving with :func:`gaussian_kernel`.

    Returns
    -------
    numpy.ndarray
        Blurred float32 image of the input's shape, clipped to [0, 1].

    Raises
    ------
    ValueError
        If the image is invalid or `sigma` is negative or not finite.
    """
    result = _validate_image(image)
    sigma = _at_least(sigma, "sigma", 0.0)
    if sigma > 0:
        sigmas = (sigma, sigma) if result.ndim == 2 else (sigma, sigma, 0.0)
        result = ndimage.gaussian_filter(result, sigma=sigmas, mode="reflect", truncate=4.0)
    return _clip01(result)


def defocus_blur(image: np.ndarray, radius: float) -> np.ndarray:
    """Blur each channel with a disk (out-of-focus) PSF.

    Parameters
    ----------
    image : numpy.ndarray
        Image of shape (H, W) or (H, W, C), values nominally in [0, 1].
    radius : float
        Disk radius in pixels, >= 0 (see :func:`disk_kernel`).

    Returns
    -------
    numpy.ndarray
        Blurred float32 image of the input's shape, clipped to [0, 1].

    Raises
    ------
    ValueError
        If the image is invalid or `radius` is negative or not finite.
    """
    result = _validate_image(image)
    kernel = disk_kernel(radius)
    return _clip01(_convolve(result, kernel))


def motion_blur(image: np.ndarray, length: float, angle: float = 0.0) -> np.ndarray:
    """Blur each channel with a linear motion PSF.

    Parameters
    ----------
    image : numpy.ndarray
        Image of shape (H, W) or (H, W, C), values nominally in [0, 1].
    length : float
        Motion length in pixels, >= 1.
    angle : float, optional
        Direction in degrees counter-clockwise from the +x axis (0 is
        horizontal, 90 vertical). Default 0.

    Returns
    -------
    numpy.ndarray
        Blurred float32 image of the input's shape, clipped to [0, 1].

    Raises
    ------
    ValueError
        If the image is invalid, `length` < 1, or `angle` is not finite.
    """
    result = _validate_image(image)
    kernel = motion_kernel(length, angle)
    return _clip01(_convolve(result, kernel))


# ---------------------------------------------------------------------------
# Haze
# ---------------------------------------------------------------------------


def _validate_shape(shape: Any) -> tuple[int, int]:
    """Return (H, W) from an image shape (H, W) or (H, W, C)."""
    try:
        dims = tuple(shape)
    except TypeError:
        raise ValueError(
            f"shape must be a tuple (H, W) or (H, W, C), got {shape!r}"
        ) from None
    if len(dims) not in (2, 3) or not all(
        isinstance(d, numbers.Integral) and not isinstance(d, (bool, np.bool_)) and d > 0
        for d in dims
    ):
        raise ValueError(
            f"shape must be a tuple (H, W) or (H, W, C) of positive integers, got {shape!r}"
        )
    return int(dims[0]), int(dims[1])


def make_depth_map(
    shape: tuple[int, ...],
    *,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Make a smooth random depth map in [0, 1] for haze synthesis.

    The map is the sum of a smooth random field (bicubic interpolation of a
    coarse grid of Gaussian noise, about 5 x 5 control points) and a vertical
    gradient (far at the top, near at the bottom), normalised to [0, 1].

    Parameters
    ----------
    shape : tuple of int
        Image shape (H, W) or (H, W, C); only H and W are used.
    rng : numpy.random.Generator or int or None, optional
        Generator, integer seed, or None for a fresh generator.

    Returns
    -------
    numpy.ndarray
        Float32 array of shape (H, W) with values in [0, 1] (larger = farther).

    Raises
    ------
    ValueError
        If `shape` is not (H, W) or (H, W, C) of positive integers.
    """
    height, width = _validate_shape(shape)
    generator = _as_rng(rng)
    grid = 5
    coarse = generator.standard_normal((grid, grid))
    rows = np.linspace(0.0, grid - 1.0, height)
    cols = np.linspace(0.0, grid - 1.0, width)
    coords = np.meshgrid(rows, cols, indexing="ij")
    field = ndimage.map_coordinates(coarse, coords, order=3, mode="nearest")
    field_range = field.max() - field.min()
    field = (field - field.min()) / field_range if field_range > 1e-12 else np.zeros_like(field)
    gradient = np.linspace(1.0, 0.0, height)[:, np.newaxis]
    depth = 0.5 * field + 0.5 * gradient
    depth_range = depth.max() - depth.min()
    if depth_range <= 1e-12:
        return np.full((height, width), 0.5, dtype=np.float32)
    return ((depth - depth.min()) / depth_range).astype(np.float32)


def add_haze(
    image: np.ndarray,
    beta: float = 1.0,
    airlight: float = 0.9,
    *,
    depth: np.ndarray | None = None,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Add haze with the atmospheric scattering model.

    ``I = J * t + A * (1 - t)`` with transmission ``t = exp(-beta * d)``.

    Parameters
    ----------
    image : numpy.ndarray
        Clean image J of shape (H, W) or (H, W, C), values in [0, 1].
    beta : float, optional
        Scattering coefficient, >= 0 (larger = denser haze). Default 1.
    airlight : float, optional
        Global atmospheric light A in [0, 1]. Default 0.9.
    depth : numpy.ndarray or None, optional
        Depth map d of shape (H, W), finite and >= 0. If None, a random map
        is drawn with :func:`make_depth_map`.
    rng : numpy.random.Generator or int or None, optional
        Generator, integer seed, or None; used only when `depth` is None.

    Returns
    -------
    numpy.ndarray
        Hazy float32 image of the input's shape, clipped to [0, 1].

    Raises
    ------
    ValueError
        If the image is invalid, `beta` < 0, `airlight` outside [0, 1], or
        `depth` has the wrong shape, an invalid dtype, non-finite or
        negative values.
    """
    result = _validate_image(image)
    beta = _at_least(beta, "beta", 0.0)
    airlight = _in_range(airlight, "airlight", 0.0, 1.0)
    height, width = result.shape[:2]
    if depth is None:
        depth_map = make_depth_map((height, width), rng=rng)
    else:
        depth_array = np.asarray(depth)
        if depth_array.shape != (height, width):
            raise ValueError(
                f"depth must have shape {(height, width)} matching the image, "
                f"got {depth_array.shape}"
            )
        depth_map = _validate_image(depth_array, name="depth")
        if np.any(depth_map < 0):
            raise ValueError(f"depth must be >= 0, got minimum {float(depth_map.min()):g}")
    transmission = np.exp(-beta * depth_map.astype(np.float32))
    hwc = _as_hwc(result)
    hwc *= transmission[:, :, np.newaxis]
    hwc += np.float32(airlight) * (1.0 - transmission[:, :, np.newaxis])
    return _clip01(result)


# ---------------------------------------------------------------------------
# Rain
# ---------------------------------------------------------------------------


def add_rain(
    image: np.ndarray,
    amount: float = 0.5,
    *,
    angle: float | None = None,
    length: float | None = None,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Add bright, oriented rain streaks.

    Sparse random seeds (density ``0.0015 + 0.0085 * amount`` per pixel, with
    random brightness) are smeared by a motion-blur kernel into streaks; the
    streak layer S (clipped to [0, 1], identical on all channels) is
    screen-blended onto the image: ``1 - (1 - I) * (1 - S)``.

    Parameters
    ----------
    image : numpy.ndarray
        Image of shape (H, W) or (H, W, C), values in [0, 1].
    amount : float, optional
        Rain strength in [0, 1]; controls streak density, length and
        brightness. 0 returns a clipped copy. Default 0.5.
    angle : float or None, optional
        Streak tilt in degrees *from vertical* (0 = straight down, positive =
        leaning right at the top, like ``/``). If None, drawn uniformly in
        [-20, 20].
    length : float or None, optional
        Streak length in pixels, >= 1. If None,
        ``min(H, W) * (0.06 + 0.10 * amount)`` limited to [5, 60].
    rng : numpy.random.Generator or int or None, optional
        Generator, integer seed, or None for a fresh generator.

    Returns
    -------
    numpy.ndarray
        Rainy float32 image of the input's shape, clipped to [0, 1].

    Raises
    ------
    ValueError
        If the image is invalid, `amount` outside [0, 1], or `angle` /
        `length` invalid.
    """
    result = _validate_image(image)
    amount = _in_range(amount, "amount", 0.0, 1.0)
    if angle is not None:
        angle = _real(angle, "angle")
    if length is not None:
        length = _at_least(length, "length", 1.0)
    generator = _as_rng(rng)
    height, width = result.shape[:2]
    if angle is None:
        angle = float(generator.uniform(-_RAIN_MAX_TILT_DEGREES, _RAIN_MAX_TILT_DEGREES))
    if length is None:
        length = float(np.clip(min(height, width) * (0.06 + 0.10 * amount), 5.0, 60.0))
    # Always draw the same random fields so that, for a fixed seed, a larger
    # amount gives a superset of the streaks of a smaller one.
    uniforms = generator.random((height, width))
    brightness = generator.uniform(0.3, 1.0, size=(height, width))
    if amount == 0:
        return _clip01(result)
    density = 0.0015 + 0.0085 * amount
    seeds = np.where(uniforms < density, brightness, 0.0).astype(np.float32)
    kernel = motion_kernel(length, 90.0 - angle)
    streaks = _convolve(seeds, kernel)
    # A normalised kernel spreads a seed over ~length pixels: undo that so a
    # streak keeps (roughly) its seed brightness, scaled by the opacity.
    opacity = 0.6 + 0.4 * amount
    streaks *= np.float32(length * opacity)
    np.clip(streaks, 0.0, 1.0, out=streaks)
    hwc = _as_hwc(result)
    np.clip(hwc, 0.0, 1.0, out=hwc)
    hwc[...] = 1.0 - (1.0 - hwc) * (1.0 - streaks[:, :, np.newaxis])
    return _clip01(result)


# ---------------------------------------------------------------------------
# Low light and JPEG
# ---------------------------------------------------------------------------


def low_light(
    image: np.ndarray,
    factor: float = 0.2,
    gamma: float = 1.5,
    *,
    noise_sigma: float = 0.0,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Darken an image to simulate a low-light capture.

    ``out = clip(image ** gamma * factor + noise, 0, 1)``, with optional
    Gaussian sensor noise.

    Parameters
    ----------
    image : numpy.ndarray
        Image of shape (H, W) or (H, W, C), values in [0, 1] (negative
        values are treated as 0).
    factor : float, optional
        Brightness multiplier in (0, 1]. Default 0.2.
    gamma : float, optional
        Gamma exponent, > 0 (> 1 darkens shadows more). Default 1.5.
    noise_sigma : float, optional
        Standard deviation of additive Gaussian noise on the 0-255 scale,
        >= 0. Default 0 (no noise).
    rng : numpy.random.Generator or int or None, optional
        Generator, integer seed, or None; used only when `noise_sigma` > 0.

    Returns
    -------
    numpy.ndarray
        Darkened float32 image of the input's shape, clipped to [0, 1].

    Raises
    ------
    ValueError
        If the image is invalid, `factor` not in (0, 1], `gamma` not > 0,
        or `noise_sigma` negative.
    """
    result = _validate_image(image)
    factor = _in_range(factor, "factor", 0.0, 1.0)
    if factor == 0:
        raise ValueError(f"factor must be in (0, 1], got {factor!r}")
    gamma = _positive(gamma, "gamma")
    noise_sigma = _at_least(noise_sigma, "noise_sigma", 0.0)
    np.clip(result, 0.0, None, out=result)
    np.power(result, np.float32(gamma), out=result)
    result *= np.float32(factor)
    if noise_sigma > 0:
        generator = _as_rng(rng)
        noise = generator.standard_normal(result.shape, dtype=np.float32)
        result += noise * np.float32(noise_sigma / 255.0)
    return _clip01(result)


def jpeg_compress(image: np.ndarray, quality: int = 30) -> np.ndarray:
    """Round-trip an image through an 8-bit JPEG (Pillow).

    Parameters
    ----------
    image : numpy.ndarray
        Image of shape (H, W), (H, W, 1) (encoded as grayscale) or
        (H, W, 3) (encoded as RGB), values in [0, 1] (clipped before
        quantisation to 8 bits).
    quality : int, optional
        JPEG quality, an integer in [1, 100] (lower = stronger artefacts).
        Default 30.

    Returns
    -------
    numpy.ndarray
        Decoded float32 image in [0, 1] of the input's shape.

    Raises
    ------
    ValueError
        If the image is invalid or `quality` is not an integer in [1, 100].
    """
    result = _validate_image(image)
    if isinstance(quality, (bool, np.bool_)) or not isinstance(quality, numbers.Integral):
        raise ValueError(
            f"quality must be an integer in [1, 100], got {type(quality).__name__} {quality!r}"
        )
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be an integer in [1, 100], got {quality}")
    as_bytes = np.round(np.clip(result, 0.0, 1.0) * 255.0).astype(np.uint8)
    if as_bytes.ndim == 3 and as_bytes.shape[2] == 1:
        as_bytes = as_bytes[:, :, 0]
    buffer = io.BytesIO()
    Image.fromarray(as_bytes).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        decoded_array = np.asarray(decoded.convert("L" if as_bytes.ndim == 2 else "RGB"))
    return (decoded_array.astype(np.float32) / 255.0).reshape(result.shape)


# ---------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------


def _validate_kind(kind: Any) -> str:
    """Return `kind` if it is in KINDS, else raise with a suggestion."""
    if isinstance(kind, str) and kind in KINDS:
        return kind
    message = f"unknown degradation kind {kind!r}; expected one of: {', '.join(KINDS)}"
    if isinstance(kind, str):
        close = difflib.get_close_matches(kind.strip().lower(), KINDS, n=1)
        if close:
            message += f" (did you mean {close[0]!r}?)"
    raise ValueError(message)


def _parse_level(level: Any) -> float:
    """Return the level as a float in [0, 1] (named levels allowed)."""
    if isinstance(level, str):
        key = level.strip().lower()
        if key not in LEVEL_NAMES:
            raise ValueError(
                f"level must be a number in [0, 1] or one of "
                f"{', '.join(repr(name) for name in LEVEL_NAMES)}, got {level!r}"
            )
        return LEVEL_NAMES[key]
    return _in_range(level, "level", 0.0, 1.0)


def _lerp(start: float, end: float, level: float) -> float:
    """Linear interpolation between `start` (level 0) and `end` (level 1)."""
    return start + level * (end - start)


def degradation_params(kind: str, level: float | str) -> dict[str, float | int]:
    """Return the deterministic parameters :func:`degrade` uses.

    See the table in the module docstring. Random choices (motion and rain
    angles, haze depth map, the noise itself) are drawn in :func:`degrade`
    and are not part of the result.

    Parameters
    ----------
    kind : str
        One of :data:`KINDS`.
    level : float or str
        Strength in [0, 1], or ``"low"`` / ``"medium"`` / ``"high"``.

    Returns
    -------
    dict
        Keyword arguments of the corresponding degradation function, e.g.
        ``{"sigma": 30.0}`` for ``("noise", 0.5)``.

    Raises
    ------
    ValueError
        If `kind` is unknown (the message lists the valid kinds and the
        closest spelling) or `level` is out of range.
    """
    kind = _validate_kind(kind)
    value = _parse_level(level)
    if kind == "noise":
        return {"sigma": _lerp(5.0, 55.0, value)}
    if kind == "poisson":
        photons = math.exp(_lerp(math.log(100.0), math.log(5.0), value))
        return {"photons": photons, "read_noise": _lerp(0.5, 1.5, value)}
    if kind == "blur":
        return {"sigma": _lerp(0.8, 3.5, value)}
    if kind == "defocus":
        return {"radius": _lerp(1.0, 5.0, value)}
    if kind == "motion_blur":
        return {"length": _lerp(5.0, 25.0, value)}
    if kind == "haze":
        return {"beta": _lerp(0.5, 2.5, value), "airlight": _DEGRADE_AIRLIGHT}
    if kind == "rain":
        return {"amount": _lerp(0.2, 1.0, value)}
    if kind == "low_light":
        return {
            "factor": _lerp(0.5, 0.08, value),
            "gamma": _lerp(1.2, 2.2, value),
            "noise_sigma": _lerp(2.0, 10.0, value),
        }
    # kind == "jpeg"
    return {"quality": int(round(_lerp(60.0, 10.0, value)))}


def degrade(
    image: np.ndarray,
    kind: str,
    level: float | str,
    *,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Apply one degradation at a given strength.

    Parameters
    ----------
    image : numpy.ndarray
        Clean image of shape (H, W) or (H, W, C) with C in {1, 3}, values
        in [0, 1].
    kind : str
        One of :data:`KINDS`: ``"noise"``, ``"poisson"``, ``"blur"``,
        ``"defocus"``, ``"motion_blur"``, ``"haze"``, ``"rain"``,
        ``"low_light"``, ``"jpeg"``.
    level : float or str
        Strength in [0, 1] (0 = mildest, 1 = strongest) or ``"low"``,
        ``"medium"``, ``"high"`` (0, 0.5, 1). Mapped to parameters by
        :func:`degradation_params` (table in the module docstring).
    rng : numpy.random.Generator or int or None, optional
        Generator, integer seed, or None for a fresh generator. Used for
        noise, the motion angle (uniform in [0, 180) degrees), the rain
        angle and the haze depth map.

    Returns
    -------
    numpy.ndarray
        Degraded float32 image of the input's shape. Values are clipped to
        [0, 1] except for ``"noise"`` and ``"poisson"``.

    Raises
    ------
    ValueError
        If the image is invalid, `kind` is unknown (the message lists the
        valid kinds and the closest spelling) or `level` is out of range.
    """
    params = degradation_params(kind, level)
    clean = _validate_image(image)
    generator = _as_rng(rng)
    if kind == "noise":
        return add_gaussian_noise(clean, params["sigma"], rng=generator)
    if kind == "poisson":
        return add_poisson_gaussian_noise(
            clean, params["photons"], params["read_noise"], rng=generator
        )
    if kind == "blur":
        return gaussian_blur(clean, params["sigma"])
    if kind == "defocus":
        return defocus_blur(clean, params["radius"])
    if kind == "motion_blur":
        angle = float(generator.uniform(0.0, 180.0))
        return motion_blur(clean, params["length"], angle)
    if kind == "haze":
        return add_haze(clean, params["beta"], params["airlight"], rng=generator)
    if kind == "rain":
        return add_rain(clean, params["amount"], rng=generator)
    if kind == "low_light":
        return low_light(
            clean,
            params["factor"],
            params["gamma"],
            noise_sigma=params["noise_sigma"],
            rng=generator,
        )
    # kind == "jpeg"
    return jpeg_compress(clean, int(params["quality"]))


def random_degradation(
    image: np.ndarray,
    *,
    kinds: Sequence[str] = KINDS,
    rng: np.random.Generator | int | None = None,
) -> tuple[np.ndarray, str, float]:
    """Apply a random degradation kind at a random level.

    Parameters
    ----------
    image : numpy.ndarray
        Clean image of shape (H, W) or (H, W, C) with C in {1, 3}.
    kinds : sequence of str, optional
        Kinds to choose from (uniformly), each in :data:`KINDS`. Default all.
    rng : numpy.random.Generator or int or None, optional
        Generator, integer seed, or None for a fresh generator.

    Returns
    -------
    degraded : numpy.ndarray
        Degraded float32 image of the input's shape.
    kind : str
        The kind that was applied.
    level : float
        The level that was applied, uniform in [0, 1].

    Raises
    ------
    ValueError
        If the image is invalid or `kinds` is empty, a bare string, or
        contains an unknown kind.
    """
    if isinstance(kinds, str):
        raise ValueError(
            f"kinds must be a sequence of kind names, got the string {kinds!r}; "
            f"use ({kinds!r},) for a single kind"
        )
    kind_list = list(kinds)
    if not kind_list:
        raise ValueError(f"kinds must contain at least one of: {', '.join(KINDS)}, got {kinds!r}")
    for kind in kind_list:
        _validate_kind(kind)
    clean = _validate_image(image)
    generator = _as_rng(rng)
    kind = kind_list[int(generator.integers(len(kind_list)))]
    level = float(generator.uniform(0.0, 1.0))
    return degrade(clean, kind, level, rng=generator), kind, level
