"""Kernel-aware motion deblurring: estimate a linear motion kernel, then deconvolve.

A straight camera, stage or telescope drift during the exposure blurs an image with a
line-segment kernel (:func:`perceive_ir.degrade.motion_kernel`). Its transfer function is a
sinc across the motion direction, whose zeros repeat every ``1 / length`` cycles per pixel;
in the *cepstrum* (the inverse Fourier transform of the log magnitude spectrum) those
periodic zeros add up to a sharp negative peak at the motion vector, ``length`` pixels from
the origin in the motion direction. :func:`estimate_motion` finds that peak (Hann-windowed
windows, cepstra averaged) and reports how far it stands out of the cepstrum around it as
a confidence (its depth over the robust spread of the search annulus): an image without
such blur has no isolated negative peak. Rain streaks are motion-blurred drops, so a rainy
image can show such a peak too; but only a blur of the whole image repeats it at twice and
three times the motion vector (the sinc's zeros are evenly spaced), so the depth of those
*harmonics* is the second test. ``benchmarks/deblur_gate.py`` measures how often each
degradation passes both thresholds.

:func:`deconvolve` then inverts the estimated kernel with a total-variation prior,
solved by half-quadratic splitting in the Fourier domain. The image is mirrored on all
sides first, so the periodic transform sees whole-sample symmetric borders (the same
borders :mod:`perceive_ir.degrade` blurs with); inside a tile, a margin read around it
absorbs the error of that assumption.

The restorer network alone barely deblurs (see ``training/README.md``, *Motion blur*);
:func:`perceive_ir.restore` therefore runs this step before the network when the
estimate is confident (``deblur="auto"``), and not at all otherwise.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import fft

from .degrade import motion_kernel

__all__ = ["MotionEstimate", "cepstrum", "estimate_motion", "deconvolve", "CONFIDENCE_THRESHOLD", "HARMONICS_THRESHOLD",
           "MIN_LENGTH", "MAX_LENGTH", "margin_for"]

#: Confidence from which ``deblur="auto"`` deconvolves (``benchmarks/deblur_gate.py``, training images).
CONFIDENCE_THRESHOLD = 15.0
#: Summed depth of the peak's second and third harmonics needed as well (same units).
HARMONICS_THRESHOLD = 6.0
#: Motion lengths (pixels) searched by :func:`estimate_motion`.
MIN_LENGTH = 3.0
MAX_LENGTH = 40.0


@dataclass(frozen=True)
class MotionEstimate:
    """A linear motion kernel estimated from an image.

    Attributes
    ----------
    length : float
        Motion length in pixels.
    angle : float
        Direction in degrees in [0, 180), counter-clockwise from +x (rows grow downwards).
    confidence : float
        Depth of the cepstral peak below the deepest point of its ring at least 45 degrees
        away (a disk or Gaussian blur deepens the whole ring), over the robust spread
        (1.4826 median absolute deviation) of the cepstrum in the search annulus.
    harmonics : float
        Summed depths (same units) of the cepstrum at twice and three times the motion
        vector, where a blur of the whole image repeats its peak.
    """

    length: float
    angle: float
    confidence: float
    harmonics: float = math.inf

    def kernel(self) -> np.ndarray:
        """The normalised kernel (:func:`perceive_ir.degrade.motion_kernel`)."""
        return motion_kernel(self.length, self.angle)

    def detected(self, threshold: float = CONFIDENCE_THRESHOLD, harmonics: float = HARMONICS_THRESHOLD) -> bool:
        """Whether the estimate is confident enough to deconvolve by."""
        return self.confidence >= threshold and self.harmonics >= harmonics


@functools.lru_cache(maxsize=8)
def _geometry(height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hann taper, and radius and direction (radians) of every cepstrum sample from the centre."""
    taper = np.outer(np.hanning(height), np.hanning(width))
    yy, xx = np.mgrid[:height, :width]
    cy, cx = height // 2, width // 2
    taper.setflags(write=False)
    radius, direction = np.hypot(yy - cy, xx - cx), np.arctan2(yy - cy, xx - cx)
    radius.setflags(write=False)
    direction.setflags(write=False)
    return taper, radius, direction


def cepstrum(windows: Sequence[np.ndarray]) -> np.ndarray:
    """Mean real cepstrum of equally sized 2D ``windows``, origin shifted to the centre."""
    if not windows:
        raise ValueError("cepstrum needs at least one window")
    shape = windows[0].shape
    if any(w.shape != shape or w.ndim != 2 for w in windows):
        raise ValueError(f"windows must be 2D and of one shape, got {[w.shape for w in windows]}")
    taper = _geometry(*shape)[0]
    total = np.zeros(shape, dtype=np.float64)
    for window in windows:
        values = np.asarray(window, dtype=np.float64)
        magnitude = np.abs(fft.fft2((values - values.mean()) * taper))
        # the floor keeps log finite where the spectrum vanishes (flat windows, exact zeros)
        floor = 1e-3 * magnitude.max() if magnitude.max() > 0 else 1.0
        total += np.real(fft.ifft2(np.log(magnitude + floor)))
    return fft.fftshift(total / len(windows))


def _parabolic(minus: float, centre: float, plus: float) -> float:
    """Offset in [-0.5, 0.5] of the extremum of the parabola through three samples."""
    curvature = minus - 2.0 * centre + plus
    if curvature == 0:
        return 0.0
    return float(np.clip(0.5 * (minus - plus) / curvature, -0.5, 0.5))


def estimate_motion(windows: Sequence[np.ndarray], min_length: float = MIN_LENGTH,
                    max_length: float = MAX_LENGTH) -> MotionEstimate:
    """Estimate a linear motion kernel from 2D windows of one image (gray intensities).

    Windows should be at least about four times ``max_length`` on a side; the search
    radius is capped at a quarter of the window side.
    """
    c = cepstrum(windows)
    height, width = c.shape
    cy, cx = height // 2, width // 2
    _, radius, direction = _geometry(height, width)
    max_length = min(max_length, min(height, width) / 4.0)
    annulus = (radius >= min_length) & (radius <= max_length)
    if not annulus.any():
        return MotionEstimate(0.0, 0.0, 0.0, 0.0)
    y, x = np.unravel_index(np.argmin(np.where(annulus, c, np.inf)), c.shape)
    values = c[annulus]
    spread = 1.4826 * float(np.median(np.abs(values - np.median(values))))
    # a line kernel gives a peak in one direction only; a disk or Gaussian blur a ring of
    # equal depth: what counts is how far the peak stands below the deepest point of its
    # ring at least 45 degrees away from it
    peak_radius = radius[y, x]
    turned = np.abs(np.angle(np.exp(2j * (direction - math.atan2(y - cy, x - cx))))) / 2
    ring = annulus & (np.abs(radius - peak_radius) <= 1.0) & (turned >= math.radians(45))
    ring_depth = float(-c[ring].min()) if ring.any() else 0.0
    confidence = float((-c[y, x] - max(ring_depth, 0.0)) / spread) if spread > 0 else 0.0
    dy = y - cy + (_parabolic(c[y - 1, x], c[y, x], c[y + 1, x]) if 0 < y < height - 1 else 0.0)
    dx = x - cx + (_parabolic(c[y, x - 1], c[y, x], c[y, x + 1]) if 0 < x < width - 1 else 0.0)
    length = math.hypot(dy, dx)
    angle = math.degrees(math.atan2(-dy, dx)) % 180.0
    harmonics = 0.0
    for multiple in (2, 3):
        hy, hx = int(round(cy + multiple * dy)), int(round(cx + multiple * dx))
        if spread > 0 and 1 <= hy < height - 1 and 1 <= hx < width - 1:
            harmonics += float(-c[hy - 1:hy + 2, hx - 1:hx + 2].min() / spread)
    return MotionEstimate(float(length), float(angle), confidence, harmonics)


def margin_for(estimate: MotionEstimate) -> int:
    """Pixels to read around a tile before deconvolving it (border effects decay within it)."""
    return int(math.ceil(2.0 * estimate.length)) + 16


def _transfer(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Real-FFT transfer function of a centred kernel on a periodic grid of ``shape``."""
    padded = np.zeros(shape, dtype=np.float32)
    kh, kw = kernel.shape
    padded[:kh, :kw] = kernel
    padded = np.roll(padded, (-(kh // 2), -(kw // 2)), axis=(0, 1))
    return fft.rfft2(padded)


def deconvolve(image: np.ndarray, kernel: np.ndarray, weight: float = 1e-3, iterations: int = 8,
               beta: float = 1e-2) -> np.ndarray:
    """Total-variation deconvolution of ``image`` (C, H, W) or (H, W) by ``kernel``.

    Minimises ``||k * x - y||^2 + weight * |grad x|_1`` by half-quadratic splitting
    (gradient auxiliaries shrunk, then an exact Fourier-domain solve), with the splitting
    weight starting at ``beta`` and doubling each of ``iterations`` rounds. The image is
    mirrored to twice its size first (whole-sample symmetric borders: the periodic
    transform sees no seam). Returns float32 of the input's shape.
    """
    values = np.asarray(image, dtype=np.float32)
    planes = values[None] if values.ndim == 2 else values
    if planes.ndim != 3:
        raise ValueError(f"expected (H, W) or (C, H, W), got shape {values.shape}")
    kernel = np.asarray(kernel, dtype=np.float32)
    if kernel.ndim != 2 or kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
        raise ValueError(f"kernel must be 2D with odd sides, got shape {kernel.shape}")
    _, height, width = planes.shape
    shape = (2 * height, 2 * width)
    transfer = _transfer(kernel / kernel.sum(), shape)
    grad_x = _transfer(np.array([[0.0, -1.0, 1.0]], dtype=np.float32), shape)  # first differences
    grad_y = _transfer(np.array([[0.0], [-1.0], [1.0]], dtype=np.float32), shape)
    gram = np.abs(transfer) ** 2
    grad_gram = np.abs(grad_x) ** 2 + np.abs(grad_y) ** 2
    out = np.empty_like(planes, dtype=np.float32)
    for index, plane in enumerate(planes):
        spectrum = fft.rfft2(np.pad(plane, ((0, height), (0, width)), mode="symmetric"))
        data = np.conj(transfer) * spectrum
        splitting = beta
        for _ in range(iterations):
            gx = fft.irfft2(grad_x * spectrum, s=shape)
            gy = fft.irfft2(grad_y * spectrum, s=shape)
            threshold = np.float32(weight / splitting)
            wx = np.sign(gx) * np.maximum(np.abs(gx) - threshold, 0.0)
            wy = np.sign(gy) * np.maximum(np.abs(gy) - threshold, 0.0)
            numerator = data + np.float32(splitting) * (np.conj(grad_x) * fft.rfft2(wx) + np.conj(grad_y) * fft.rfft2(wy))
            spectrum = (numerator / (gram + np.float32(splitting) * grad_gram)).astype(np.complex64)
            splitting *= 2.0
        out[index] = fft.irfft2(spectrum, s=shape)[:height, :width]
    return out[0] if values.ndim == 2 else out
