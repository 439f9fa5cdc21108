"""Evaluate a restorer and the quality perceiver against classical baselines.

Usage::

    python training/evaluate.py                       # the bundled default models, full report
    python training/evaluate.py --quick               # 2 images per set (a smoke run)
    python training/evaluate.py --run runs/c2         # the restorer of a training run folder
    python training/evaluate.py --sections set12 rgb  # only some tables

Prints markdown tables (and writes ``--json``):

``set12``
    Set12 gray, sigma 15/25/50, the field's protocol (noise added in float with
    ``np.random.seed(0)`` per image, not clipped, not quantised) and the clipped 8-bit
    variant. The model is blind; the classical methods are given the true sigma.
``rgb``
    Held-out CBSD432 colour crops at sigma 25 and 50: the model on the RGB image
    (joint) vs on each channel alone, CBM3D (joint) vs BM3D per channel.
``tasks``
    Held-out CBSD432 crops (not used in training) for rain, haze, motion blur and low
    light, at three strengths each, against the classical method of each task; the same
    crops under Poisson-Gaussian photon noise (5-100 photons at white), and again after
    band-limiting them as the ``micrograph`` training task does (Gaussian blur of 2 px, gain
    0.6: smooth, micrograph-like content); synthetic
    fluorescence microscopy (held-out seeds) and ``skimage.data.cell()`` under
    Poisson-Gaussian noise at low photon counts (a real micrograph never used in training).
    The photon-noise and microscopy rows form a second table with the denoising baselines
    (TV, NL-means, BM3D), each also run after the generalized Anscombe transform with the true
    photon count and read noise (:class:`Anscombe`).
``perceiver``
    Three-tier accuracy (low / medium / high) on held-out crops, next to a classical
    baseline: logistic regression on no-reference image statistics, fitted on training
    crops.

``--baseline-cache FILE`` keeps the classical methods' scores and times between runs (they
do not depend on the model under test); the printed times then are those of the run that
measured them. ``--no-classical`` runs none of them (cells not in the cache stay empty): a
quick comparison of restorers.

Classical methods with a free parameter are *oracle-tuned*: each image gets the best of a
small grid scored against its clean reference (an upper bound on what a user tuning by
eye would get), while the model gets one blind pass. Times are seconds per megapixel on
this machine with the thread count printed in the header (torch and the classical code
share the same threads); a busy machine makes every method slower.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from scipy import ndimage
from skimage import exposure, restoration
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from perceive_ir import degrade as D
from perceive_ir import load_perceiver, load_restorer, restore
from perceive_ir.io import atomic_output
from perceive_ir.synthetic import acquisition_parameters, degrade_fluorescence, synth_fluorescence

REPOSITORY = Path(__file__).resolve().parents[1]
SECTIONS = ("set12", "rgb", "tasks", "perceiver")
LEVELS = (0.2, 0.5, 0.8)
#: The band-limiting of the micrograph-like row (see ``data.band_limit``).
BAND_LIMIT_EVAL = {"sigma": 2.0, "gain": 0.6}


# =========================================================================================
# evaluation cases and bookkeeping
# =========================================================================================
@dataclass
class Case:
    """One degraded image with its clean reference (float32, (Y, X) or (Y, X, 3))."""

    degraded: np.ndarray
    clean: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Scores:
    """PSNR / SSIM / seconds / megapixels accumulated per (table row, method).

    A table's "s / megapixel" row sums the seconds and megapixels of that table's rows only.
    """

    psnr: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    ssim: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    seconds: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    megapixels: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    #: results of the classical methods by "row | method | image index" (see ``--baseline-cache``)
    cache: dict[str, list[float]] = field(default_factory=dict)
    #: run the classical methods missing from :attr:`cache` (False: leave their cells empty)
    classical: bool = True

    def run(self, row: str, method: str, case: Case, function: Callable[[], np.ndarray]) -> None:
        """Time ``function`` and score its result; a classical method's result is read from
        and written to :attr:`cache` (they do not depend on the model under test)."""
        key = f"{row} | {method} | {len(self.psnr.get((row, method), ()))}"  # .get: a skipped method leaves no entry
        classical = not method.startswith("perceive-ir")
        if classical and key in self.cache:
            self._record(row, method, case, *self.cache[key])
            return
        if classical and not self.classical:
            return
        result, seconds = timed(function)
        self.add(row, method, result, case, seconds)
        if classical:
            self.cache[key] = [self.psnr[row, method][-1], self.ssim[row, method][-1], seconds]

    def add(self, row: str, method: str, restored: np.ndarray, case: Case, seconds: float) -> None:
        restored = np.clip(restored.astype(np.float64), 0.0, 1.0)
        clean = case.clean.astype(np.float64)
        psnr = peak_signal_noise_ratio(clean, restored, data_range=1.0)
        ssim = structural_similarity(clean, restored, data_range=1.0, channel_axis=-1 if clean.ndim == 3 else None)
        self._record(row, method, case, psnr, ssim, seconds)

    def _record(self, row: str, method: str, case: Case, psnr: float, ssim: float, seconds: float) -> None:
        self.psnr[row, method].append(psnr)
        self.ssim[row, method].append(ssim)
        self.seconds[row, method] += seconds
        self.megapixels[row, method] += case.clean.shape[0] * case.clean.shape[1] / 1e6

    def table(self, rows: list[str], methods: list[str]) -> str:
        lines = ["| | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
        for row in rows:
            cells = []
            # a method scored on fewer of the row's cases (a cache written by a run over fewer
            # images, read with --no-classical) is averaged over other images: marked, never best
            cases = max((len(self.psnr.get((row, m), ())) for m in methods), default=0)
            complete = [m for m in methods if len(self.psnr.get((row, m), ())) == cases > 0]
            best = max((np.mean(self.psnr[row, m]) for m in complete), default=None)
            for method in methods:
                if not self.psnr.get((row, method)):
                    cells.append("")
                    continue
                p, s = np.mean(self.psnr[row, method]), np.mean(self.ssim[row, method])
                text = f"{p:.2f} / {s:.3f}"
                if method not in complete:
                    text += f" ({len(self.psnr[row, method])} of {cases} images)"
                cells.append(f"**{text}**" if method != "input" and p == best and method in complete else text)
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        rate = {m: self.seconds_per_megapixel(m, rows) for m in methods if m != "input"}
        if any(v is not None for v in rate.values()):
            lines.append("| s / megapixel | " + " | ".join(
                "" if rate.get(m) is None else f"{rate[m]:.2f}" for m in methods) + " |")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "psnr": {f"{r} | {m}": float(np.mean(v)) for (r, m), v in self.psnr.items()},
            "ssim": {f"{r} | {m}": float(np.mean(v)) for (r, m), v in self.ssim.items()},
            "seconds_per_megapixel": {m: self.seconds_per_megapixel(m) for m in {m for _, m in self.seconds}},
        }

    def seconds_per_megapixel(self, method: str, rows: list[str] | None = None) -> float | None:
        """Seconds per megapixel of ``method`` over ``rows`` (all rows: None); None if not run."""
        keys = [(r, m) for r, m in self.megapixels if m == method and (rows is None or r in rows)]
        megapixels = sum(self.megapixels[k] for k in keys)
        return sum(self.seconds[k] for k in keys) / megapixels if megapixels else None


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` through a temporary sibling and a rename (two evaluations may share a cache)."""
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(text)


def timed(function: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    result = function()
    return np.asarray(result, dtype=np.float32), time.perf_counter() - start


def oracle(candidates: list[Callable[[], np.ndarray]], clean: np.ndarray) -> np.ndarray:
    """The candidate closest to ``clean`` (highest PSNR): oracle tuning of a free parameter."""
    best, best_error = None, np.inf
    for candidate in candidates:
        result = np.clip(np.asarray(candidate(), dtype=np.float64), 0, 1)
        error = np.mean((result - clean) ** 2)
        if error < best_error:
            best, best_error = result, error
    return best


# =========================================================================================
# the model
# =========================================================================================
#: extra ``restore()`` arguments of every model call (``--ensemble`` and ``--deblur`` set them)
RESTORE_SETTINGS: dict[str, Any] = {}


def model_restore(model, image: np.ndarray, per_channel: bool = False) -> np.ndarray:
    """Restore with the public API (tiles, intensity handling, gray replication) on CPU."""
    if per_channel and image.ndim == 3:
        return np.stack([restore(image[..., c], model=model, device="cpu", **RESTORE_SETTINGS)
                         for c in range(image.shape[-1])], axis=-1)
    return restore(image, model=model, device="cpu", **RESTORE_SETTINGS)


# =========================================================================================
# classical baselines
# =========================================================================================
def bm3d_denoise(image: np.ndarray, sigma: float, per_channel: bool = False) -> np.ndarray:
    import bm3d

    if image.ndim == 3 and not per_channel:
        return bm3d.bm3d_rgb(image, sigma)
    if image.ndim == 3:
        return np.stack([bm3d.bm3d(image[..., c], sigma) for c in range(image.shape[-1])], axis=-1)
    return bm3d.bm3d(image, sigma)


#: Oracle grids: TV weight and NL-means filter strength, in multiples of the noise level.
TV_WEIGHTS = (0.5, 0.8, 1.2, 1.8, 2.5)
NLMEANS_STRENGTHS = (0.6, 0.8, 1.0, 1.2)


def _stabilised(image: np.ndarray, sigma: float | None, vst: Anscombe | None) -> Callable[[Callable], np.ndarray]:
    """``apply(denoiser)``: ``denoiser(image, sigma)``, or the same run after ``vst`` (see :meth:`Anscombe.denoise`)."""
    if vst is None:
        return lambda denoiser: denoiser(image, sigma)
    return lambda denoiser: vst.denoise(image, denoiser)


def nlmeans(image: np.ndarray, sigma: float | None, clean: np.ndarray, vst: Anscombe | None = None) -> np.ndarray:
    axis, apply = (-1 if image.ndim == 3 else None), _stabilised(image, sigma, vst)
    return oracle([lambda h=h: apply(lambda x, s: restoration.denoise_nl_means(
        x, h=h * s, sigma=s, patch_size=5, patch_distance=6, fast_mode=True, channel_axis=axis))
        for h in NLMEANS_STRENGTHS], clean)


def tv(image: np.ndarray, sigma: float | None, clean: np.ndarray, vst: Anscombe | None = None) -> np.ndarray:
    axis, apply = (-1 if image.ndim == 3 else None), _stabilised(image, sigma, vst)
    return oracle([lambda w=w: apply(lambda x, s: restoration.denoise_tv_chambolle(x, weight=w * s, channel_axis=axis))
                   for w in TV_WEIGHTS], clean)


@dataclass
class Anscombe:
    """Generalized Anscombe transform of Poisson-Gaussian data ``counts / photons``, where
    ``counts = Poisson(photons * x) + Normal(0, read_noise)`` (``perceive_ir.degrade``'s model).

    Forward: ``f = 2 sqrt(counts + 3/8 + read_noise^2)`` has noise of about unit variance;
    inverse: the closed-form approximation of the exact unbiased inverse (Makitalo and Foi,
    IEEE TIP 2011 / 2013), which removes the bias of the algebraic inverse at low counts.
    """

    photons: float
    read_noise: float

    def forward(self, image: np.ndarray) -> np.ndarray:
        counts = np.asarray(image, np.float64) * self.photons
        return 2.0 * np.sqrt(np.maximum(counts + 0.375 + self.read_noise ** 2, 0.0))

    def inverse(self, transformed: np.ndarray) -> np.ndarray:
        d = np.maximum(np.asarray(transformed, np.float64), 1.0)  # the series diverges near 0
        root = np.sqrt(1.5)
        counts = 0.25 * d ** 2 + 0.25 * root / d - 1.375 / d ** 2 + 0.625 * root / d ** 3 - 0.125 - self.read_noise ** 2
        return np.maximum(counts, 0.0) / self.photons

    def denoise(self, image: np.ndarray, denoiser: Callable[[np.ndarray, float], np.ndarray]) -> np.ndarray:
        """``denoiser(image, sigma)`` run in the stabilised domain (rescaled to [0, 1], where the
        noise has standard deviation ``sigma``), then inverted."""
        transformed = self.forward(image)
        low, span = float(transformed.min()), float(np.ptp(transformed)) or 1.0
        result = denoiser(((transformed - low) / span).astype(np.float32), 1.0 / span)
        return self.inverse(np.asarray(result, np.float64) * span + low).astype(np.float32)


def photon_parameters(case: Case) -> Anscombe:
    """The true photon count and read noise of a photon-noise case (``params["level"]`` or the values themselves)."""
    params = case.params if "photons" in case.params else D.degradation_params("poisson", case.params["level"])
    return Anscombe(float(params["photons"]), float(params["read_noise"]))


def tv_anscombe(case: Case) -> np.ndarray:
    return tv(case.degraded, None, case.clean, vst=photon_parameters(case))


def nlmeans_anscombe(case: Case) -> np.ndarray:
    return nlmeans(case.degraded, None, case.clean, vst=photon_parameters(case))


def bm3d_anscombe(case: Case) -> np.ndarray:
    return photon_parameters(case).denoise(case.degraded, bm3d_denoise)


def wavelet(image: np.ndarray, sigma: float) -> np.ndarray:
    axis = -1 if image.ndim == 3 else None
    return restoration.denoise_wavelet(image, sigma=sigma, method="BayesShrink", mode="soft", rescale_sigma=True,
                                       channel_axis=axis, convert2ycbcr=image.ndim == 3)


def guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, epsilon: float) -> np.ndarray:
    """He et al.'s guided filter with a gray guide (box filters)."""
    size = 2 * radius + 1

    def box(x: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(x, size, mode="reflect")

    mean_g, mean_s = box(guide), box(source)
    covariance = box(guide * source) - mean_g * mean_s
    variance = box(guide * guide) - mean_g * mean_g
    a = covariance / (variance + epsilon)
    b = mean_s - a * mean_g
    return box(a) * guide + box(b)


def dark_channel_dehaze(image: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """Dark-channel-prior dehazing, haze-removal strength ``omega`` oracle-tuned."""
    return oracle([lambda w=w: dark_channel_prior(image, omega=w) for w in (0.7, 0.85, 0.95)], clean)


def dark_channel_prior(image: np.ndarray, patch: int = 15, omega: float = 0.95, t_min: float = 0.1) -> np.ndarray:
    """Dark-channel-prior dehazing (He, Sun, Tang 2009) with guided-filter refinement."""
    rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=-1)
    dark = ndimage.minimum_filter(rgb.min(axis=-1), size=patch)
    brightest = np.argsort(dark.ravel())[-max(1, dark.size // 1000):]
    airlight = np.maximum(rgb.reshape(-1, 3)[brightest].max(axis=0), 1e-3)
    transmission = 1.0 - omega * ndimage.minimum_filter((rgb / airlight).min(axis=-1), size=patch)
    transmission = guided_filter(rgb.mean(axis=-1), transmission, radius=30, epsilon=1e-3)
    transmission = np.maximum(transmission, t_min)[..., None]
    result = (rgb - airlight) / transmission + airlight
    return result if image.ndim == 3 else result.mean(axis=-1)


def median_derain(image: np.ndarray, clean: np.ndarray) -> np.ndarray:
    size = lambda s: (s, s, 1) if image.ndim == 3 else (s, s)  # noqa: E731
    return oracle([lambda s=s: ndimage.median_filter(image, size=size(s)) for s in (3, 5, 7)], clean)


def richardson_lucy(image: np.ndarray, kernel: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """Richardson-Lucy with the true kernel, per channel, on a reflect-padded image (no border
    ringing); iterations oracle-tuned."""
    pad = max(kernel.shape)

    def plane(x: np.ndarray, iterations: int) -> np.ndarray:
        padded = np.pad(x, pad, mode="reflect")
        return restoration.richardson_lucy(padded, kernel, num_iter=iterations, clip=True)[pad:-pad, pad:-pad]

    def run(iterations: int) -> np.ndarray:
        if image.ndim == 2:
            return plane(image, iterations)
        return np.stack([plane(image[..., c], iterations) for c in range(image.shape[-1])], axis=-1)

    return oracle([lambda n=n: run(n) for n in (5, 15, 40)], clean)


def brighten(image: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """Low light: the better of automatic gamma (mean to 0.5) and adaptive histogram equalisation."""
    mean = float(np.clip(image.mean(), 1e-3, 0.99))
    gamma = np.log(0.5) / np.log(mean)
    return oracle([lambda: np.clip(image, 0, 1) ** gamma,
                   lambda: exposure.equalize_adapthist(np.clip(image, 0, 1), clip_limit=0.01)], clean)


def estimated_sigma(image: np.ndarray) -> float:
    return float(restoration.estimate_sigma(image, channel_axis=-1 if image.ndim == 3 else None, average_sigmas=True))


# =========================================================================================
# data
# =========================================================================================
def set12(count: int) -> list[tuple[str, np.ndarray]]:
    from data import set12_images

    images = set12_images()
    if not images:
        raise SystemExit("no Set12 images found (expected ../shared/datasets/set12 or $PERCEIVE_IR_DATASETS/set12)")
    return images[:count]


def held_out_crops(count: int, size: int = 256) -> list[np.ndarray]:
    """Centre crops of the held-out CBSD432 images (never used for training), float32 RGB."""
    from data import natural_images

    crops = []
    for image in natural_images("validation")[:count]:
        top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
        crop = image[max(0, top):max(0, top) + size, max(0, left):max(0, left) + size]
        crops.append(crop.astype(np.float32) / 255.0)
    return crops


def task_cases(task: str, images: list[np.ndarray]) -> list[Case]:
    """Each image degraded at one of three strengths (cycled), seeded per image."""
    cases = []
    for index, clean in enumerate(images):
        level = LEVELS[index % len(LEVELS)]
        rng = np.random.default_rng([17, index])
        if task == "motion_blur":
            length = float(D.degradation_params("motion_blur", level)["length"])
            angle = float(rng.uniform(0.0, 180.0))
            cases.append(Case(D.motion_blur(clean, length, angle), clean,
                              {"kernel": D.motion_kernel(length, angle), "level": level}))
        else:
            cases.append(Case(D.degrade(clean, task, level, rng=rng), clean, {"level": level}))
    return cases


def band_limited_cases(images: list[np.ndarray]) -> list[Case]:
    """Photon noise (three strengths, cycled) on band-limited crops (``data.band_limit``, 2 px, gain 0.6)."""
    from data import band_limit

    cases = []
    for index, image in enumerate(images):
        clean = band_limit(image, BAND_LIMIT_EVAL["sigma"], BAND_LIMIT_EVAL["gain"])
        level = LEVELS[index % len(LEVELS)]
        degraded = D.degrade(clean, "poisson", level, rng=np.random.default_rng([29, index]))
        cases.append(Case(degraded, clean, {"level": level}))
    return cases


def microscopy_cases(count: int) -> list[Case]:
    """Synthetic fluorescence (held-out seeds, far from the training seeds) with PSF blur and Poisson-Gaussian noise."""
    cases = []
    for index in range(count):
        clean = synth_fluorescence((256, 256), rng=np.random.default_rng([99_991, index]))
        generator = np.random.default_rng([99_992, index])
        acquisition = acquisition_parameters(generator)
        degraded = degrade_fluorescence(clean, rng=generator, **acquisition)
        cases.append(Case(np.asarray(degraded, np.float32), np.asarray(clean, np.float32), acquisition))
    return cases


def cell_cases() -> list[Case]:
    """``skimage.data.cell()`` (a real micrograph, not in the training set) under Poisson-Gaussian noise."""
    import skimage.data

    cell = skimage.data.cell().astype(np.float32)
    cell = (cell - cell.min()) / (cell.max() - cell.min())
    crop = cell[cell.shape[0] // 2 - 128:cell.shape[0] // 2 + 128, cell.shape[1] // 2 - 128:cell.shape[1] // 2 + 128]
    return [Case(D.degrade(crop, "poisson", level, rng=np.random.default_rng([23, i])), crop, {"level": level})
            for i, level in enumerate(LEVELS)]


# =========================================================================================
# sections
# =========================================================================================
def section_set12(model, count: int, scores: Scores) -> str:
    rows = []
    for sigma in (15, 25, 50):
        for variant in ("float", "8-bit"):
            row = f"Set12 sigma {sigma}" + (" (clipped, 8-bit)" if variant == "8-bit" else "")
            rows.append(row)
            for _name, clean in set12(count):
                np.random.seed(0)
                noisy = (clean.astype(np.float64) + np.random.normal(0, sigma / 255.0, clean.shape)).astype(np.float32)
                if variant == "8-bit":
                    noisy = np.round(np.clip(noisy, 0, 1) * 255) / 255
                case = Case(noisy, clean)
                s = sigma / 255.0
                scores.add(row, "input", noisy, case, 0.0)
                for method, run in (("perceive-ir (blind)", lambda: model_restore(model, noisy)),
                                    ("BM3D", lambda: bm3d_denoise(noisy, s)),
                                    ("NL-means", lambda: nlmeans(noisy, s, clean)),
                                    ("TV", lambda: tv(noisy, s, clean)),
                                    ("wavelet", lambda: wavelet(noisy, s))):
                    scores.run(row, method, case, run)
    methods = ["input", "perceive-ir (blind)", "BM3D", "NL-means", "TV", "wavelet"]
    return ("### Set12 (gray), PSNR dB / SSIM; classical methods get the true sigma\n\n"
            + scores.table(rows, methods) + "\n\nPublished on Set12: BM3D 32.37 / 29.97 / 26.72, "
            "DnCNN-B 32.68 / 30.36 / 27.21 dB (sigma 15 / 25 / 50).")


def section_rgb(model, count: int, scores: Scores) -> str:
    rows = []
    for sigma in (25, 50):
        row = f"CBSD held-out sigma {sigma}"
        rows.append(row)
        for index, clean in enumerate(held_out_crops(count)):
            rng = np.random.default_rng([sigma, index])
            noisy = (clean + rng.normal(0, sigma / 255.0, clean.shape)).astype(np.float32)
            case, s = Case(noisy, clean), sigma / 255.0
            scores.add(row, "input", noisy, case, 0.0)
            for method, run in (("perceive-ir joint RGB", lambda: model_restore(model, noisy)),
                                ("perceive-ir per channel", lambda: model_restore(model, noisy, per_channel=True)),
                                ("CBM3D (joint)", lambda: bm3d_denoise(noisy, s)),
                                ("BM3D per channel", lambda: bm3d_denoise(noisy, s, per_channel=True))):
                scores.run(row, method, case, run)
    methods = ["input", "perceive-ir joint RGB", "perceive-ir per channel", "CBM3D (joint)", "BM3D per channel"]
    return ("### Colour: joint RGB vs channel by channel (held-out CBSD432 256px crops), PSNR dB / SSIM\n\n"
            + scores.table(rows, methods))


def _score_sets(model, sets, scores: Scores) -> tuple[list[str], list[str]]:
    rows, methods = [], ["input", "perceive-ir (blind)"]
    for row, cases, classical in sets:
        rows.append(row)
        for case in cases:
            scores.add(row, "input", case.degraded, case, 0.0)
            scores.run(row, "perceive-ir (blind)", case, lambda: model_restore(model, case.degraded))
            for method, run in classical:
                if method not in methods:
                    methods.append(method)
                scores.run(row, method, case, lambda: run(case))
    return rows, methods


def section_tasks(model, count: int, scores: Scores) -> str:
    images = held_out_crops(count)
    baselines: dict[str, list[tuple[str, Callable[[Case], np.ndarray]]]] = {
        "rain": [("median filter", lambda c: median_derain(c.degraded, c.clean))],
        "haze": [("dark channel prior", lambda c: dark_channel_dehaze(c.degraded, c.clean))],
        "motion_blur": [("Richardson-Lucy (true kernel)", lambda c: richardson_lucy(c.degraded, c.params["kernel"], c.clean))],
        "low_light": [("gamma / CLAHE", lambda c: brighten(c.degraded, c.clean))],
    }
    rows, methods = _score_sets(model, [(task.replace("_", " "), task_cases(task, images), baselines[task])
                                        for task in baselines], scores)
    tasks = ("### Other tasks (held-out images, three strengths each), PSNR dB / SSIM; classical methods oracle-tuned\n\n"
             + scores.table(rows, methods))
    blind: list[tuple[str, Callable[[Case], np.ndarray]]] = [
        ("TV", lambda c: tv(c.degraded, estimated_sigma(c.degraded), c.clean)),
        ("NL-means", lambda c: nlmeans(c.degraded, estimated_sigma(c.degraded), c.clean)),
        ("BM3D", lambda c: bm3d_denoise(c.degraded, estimated_sigma(c.degraded))),
    ]
    stabilised: list[tuple[str, Callable[[Case], np.ndarray]]] = [
        ("TV + Anscombe", tv_anscombe), ("NL-means + Anscombe", nlmeans_anscombe), ("BM3D + Anscombe", bm3d_anscombe)]
    rows, methods = _score_sets(model, [
        ("photon noise (Poisson-Gaussian)", task_cases("poisson", images), blind + stabilised),
        ("photon noise, band-limited (micrograph-like)", band_limited_cases(images), blind + stabilised),
        ("microscopy (synthetic)", microscopy_cases(max(3, count)), blind + stabilised),
        ("microscopy (skimage cell)", cell_cases(), blind + stabilised),
    ], scores)
    photons = ("### Photon noise and microscopy (held-out images), PSNR dB / SSIM; classical methods oracle-tuned\n\n"
               + scores.table(rows, methods)
               + "\n\nTV, NL-means and BM3D are given the noise level estimated by `skimage.restoration.estimate_sigma`; "
                 "the `+ Anscombe` columns run them after the generalized Anscombe transform with the true photon count "
                 "and read noise (and its exact unbiased inverse); they denoise but do not undo the PSF blur "
                 "that half of the synthetic micrographs also carry.")
    return tasks + "\n\n" + photons


# -- perceiver ------------------------------------------------------------------------------
def classical_features(images: torch.Tensor) -> np.ndarray:
    """No-reference statistics per crop: sharpness, noise, contrast, brightness, haze, colour."""
    rows = []
    for image in images.permute(0, 2, 3, 1).numpy().astype(np.float64):
        gray = image.mean(axis=-1)
        laplacian = ndimage.laplace(gray)
        gradient = np.hypot(ndimage.sobel(gray, 0), ndimage.sobel(gray, 1))
        dark = ndimage.minimum_filter(image.min(axis=-1), size=7)
        rows.append([
            np.log(laplacian.var() + 1e-8), np.log(estimated_sigma(gray) + 1e-4), gray.mean(), gray.std(),
            np.log(gradient.mean() + 1e-6), dark.mean(), image.std(axis=-1).mean(),
            np.log(np.abs(np.fft.fft2(gray))[gray.shape[0] // 4:, gray.shape[1] // 4:].mean() + 1e-8),
        ])
    return np.asarray(rows)


def logistic_regression(features: np.ndarray, labels: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Multinomial logistic regression (standardised features, L2, L-BFGS); returns a predictor."""
    mean, std = features.mean(0), features.std(0) + 1e-8
    x = torch.tensor((features - mean) / std, dtype=torch.float64)
    y = torch.tensor(labels)
    weights = torch.zeros(x.shape[1], 3, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights, bias], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weights + bias, y) + 1e-3 * weights.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return lambda f: (torch.tensor((f - mean) / std) @ weights.detach() + bias.detach()).argmax(1).numpy()


def tier_crops(tasks, mediums, count: int, crop: int, seed: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """(low, medium, high) crops: degraded, restored by the other fold's medium model, clean."""
    from data import TaskBalancedDataset
    from run import render_medium

    dataset = TaskBalancedDataset(tasks, crop, crop, count * len(tasks), seed, augment=False)
    dataset.set_epoch(20_000)
    items = [dataset[i] for i in range(len(dataset))]
    low = torch.stack([item["degraded"] for item in items])
    high = torch.stack([item["clean"] for item in items])
    medium = render_medium(mediums, low, torch.stack([item["fold"] for item in items]))
    images = torch.cat([low, medium, high])
    labels = np.repeat(np.arange(3), len(items))
    task_index = np.tile(np.array([int(item["task"]) for item in items]), 3)
    return images, labels, task_index


def section_perceiver(perceiver_name: str, stage1: Path, count: int, results: dict[str, Any]) -> str:
    """Three-tier accuracy of the perceiver and of a classical baseline at the perceiver's tile size
    (all tiers and tasks), and at the other sides that matter: its training crops and the CLIP input."""
    from data import build_tasks
    from run import held_out_tiers, load_run, perceiver_correct, tier_accuracy

    config, mediums, _perceiver, _restorer = load_run(stage1, with_restorer=False)
    perceiver = load_perceiver(perceiver_name)
    validation = build_tasks(config, "validation")
    tile = perceiver.config.tile_size
    sizes = sorted({*config.perceiver_sizes(), tile, perceiver.image_size})
    cpu = torch.device("cpu")
    training_tasks = build_tasks(config, "train")
    # both are scored on the same held-out crops; the classical baseline is fitted on training crops
    hits: dict[str, dict[int, torch.Tensor]] = {"model": {}, "classical": {}}
    seconds = {"model": 0.0, "classical": 0.0}
    crops = 0
    for size in sizes:
        test_images, labels, tasks = held_out_tiers(validation, mediums, config, size, cpu)
        start = time.perf_counter()  # both times: rating crops already in memory
        hits["model"][size] = perceiver_correct(perceiver, test_images, labels)
        seconds["model"] += time.perf_counter() - start
        train_images, train_labels, _ = tier_crops(training_tasks, mediums, 4 * count, size, config.seed + 5)
        predict = logistic_regression(classical_features(train_images), train_labels)
        start = time.perf_counter()
        hits["classical"][size] = torch.from_numpy(predict(classical_features(test_images)) == labels.numpy()).float()
        seconds["classical"] += time.perf_counter() - start
        crops += len(labels)
        if size == tile:
            tile_labels, tile_tasks = labels, tasks

    def metrics(kind: str) -> dict[str, float]:
        values = tier_accuracy(hits[kind][tile], tile_labels, tile_tasks, validation)
        values.update({f"accuracy_{size}px": hits[kind][size].mean().item() for size in sizes})
        return values

    scores = {kind: metrics(kind) for kind in hits}
    results["perceiver"] = {**scores, "tile_size": tile}
    keys = (["accuracy", "accuracy_low", "accuracy_medium", "accuracy_high"] + [f"accuracy_{t.name}" for t in validation]
            + [f"accuracy_{size}px" for size in sizes if size != tile])
    names = {"accuracy": f"all, {tile}px"} | {f"accuracy_{size}px": f"all, {size}px" for size in sizes}
    lines = ["| | " + " | ".join(names.get(k, k.replace("accuracy_", "")) for k in keys) + " | ms / crop |",
             "|---|" + "---|" * (len(keys) + 1)]
    for kind, name in (("model", f"perceiver `{perceiver_name}`"), ("classical", "classical statistics + logistic regression")):
        lines.append(f"| {name} | " + " | ".join(f"{100 * scores[kind][k]:.1f}" for k in keys)
                     + f" | {1000 * seconds[kind] / crops:.1f} |")
    return (f"### Quality perceiver: three-tier accuracy (%) on held-out crops of its tile size ({tile}px, "
            f"{crops // len(sizes)} crops; chance 33.3%), and at other sides\n\n" + "\n".join(lines))


# =========================================================================================
# main
# =========================================================================================
def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default", help="restorer: zoo name or weights file (default: the bundled default)")
    parser.add_argument("--run", default=None, help="evaluate the restorer of a training run folder instead of --model")
    parser.add_argument("--perceiver", default="default", help="perceiver: zoo name or weights file")
    parser.add_argument("--stage1", default=str(REPOSITORY / "training" / "checkpoints" / "compact"),
                        help="run folder whose medium restorers render the medium tier of the perceiver test")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--images", type=int, default=12, help="images per set (Set12 has 12)")
    parser.add_argument("--quick", action="store_true", help="2 images per set, few perceiver crops (a smoke run)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--ensemble", type=int, default=1, choices=(1, 2, 4, 8),
                        help="restore with this self-ensemble (rotated / mirrored copies averaged)")
    parser.add_argument("--deblur", default="auto", choices=("auto", "off"),
                        help="restore()'s motion deblurring before the network: auto (its default) or off "
                             "(the network alone)")
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    parser.add_argument("--no-classical", action="store_true",
                        help="run no classical method: their cells come from --baseline-cache or stay empty "
                             "(a quick comparison of restorers)")
    parser.add_argument("--baseline-cache", default=None, metavar="FILE",
                        help="read / write the classical methods' scores and times here (they do not depend on the "
                             "model, and BM3D takes most of the run); delete the file to re-measure them")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    arguments = parse_arguments(argv)
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    count = 2 if arguments.quick else arguments.images
    if arguments.run:
        from run import load_run

        _config, _mediums, _perceiver, model = load_run(Path(arguments.run))
        if model is None:
            raise SystemExit(f"'{arguments.run}' has no restorer checkpoint (stage 2 not run)")
        label = f"run {arguments.run}"
    else:
        model, label = load_restorer(arguments.model), f"model `{arguments.model}`"
    RESTORE_SETTINGS["ensemble"] = arguments.ensemble  # cleared when main ends: other callers get the defaults
    RESTORE_SETTINGS["deblur"] = arguments.deblur
    if arguments.ensemble > 1:
        label += f", self-ensemble of {arguments.ensemble}"
    label += ", motion deblurring auto" if arguments.deblur == "auto" else ", network alone (deblur off)"
    header = (f"## perceive-ir evaluation: {label}\n\n{platform.machine()}, {os.cpu_count()} cores, "
              f"{torch.get_num_threads()} torch thread(s), load average {os.getloadavg()[0]:.1f} at start; "
              f"{count} image(s) per set\n")
    print(header, flush=True)
    scores, results, parts = Scores(classical=not arguments.no_classical), {"header": header}, [header]
    cache_path = Path(arguments.baseline_cache) if arguments.baseline_cache else None
    if cache_path is not None and cache_path.exists():
        scores.cache = json.loads(cache_path.read_text())
    try:
        for section in arguments.sections:
            if section == "perceiver":
                text = section_perceiver(arguments.perceiver, Path(arguments.stage1), 2 if arguments.quick else 24, results)
            else:
                with torch.inference_mode():
                    text = {"set12": section_set12, "rgb": section_rgb, "tasks": section_tasks}[section](model, count, scores)
            print(text + "\n", flush=True)
            parts.append(text)
            if cache_path is not None:
                write_atomically(cache_path, json.dumps(scores.cache))
    finally:
        RESTORE_SETTINGS.clear()
    results.update(scores.to_dict())
    results["markdown"] = "\n\n".join(parts)
    if arguments.json:
        write_atomically(Path(arguments.json), json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
