"""Training data: restoration tasks, task-balanced crops, held-out sets.

A *task* is a list of images together with a way to get a (degraded, clean) pair of
regions from image ``i``:

- :class:`SynthesizedTask`: clean images in memory (uint8), degraded on the fly with
  :mod:`perceive_ir.degrade` (Gaussian noise, Poisson-Gaussian photon noise, rain, haze,
  motion blur, low light); the ``micrograph`` task first band-limits the clean crop
  (:func:`band_limit`: Gaussian blur and a gain, as a widefield micrograph sampled above
  Nyquist looks) and then adds Poisson-Gaussian photon noise;
- :class:`MicroscopyTask`: synthetic fluorescence images (:mod:`perceive_ir.synthetic`),
  image ``i`` drawn from seed ``(seed, i)``, degraded by PSF blur and Poisson-Gaussian
  noise;
- :class:`PairedTask`: (degraded, clean) file pairs of the field's folder layout, read
  from disk when needed;
- :class:`NoisyFolderTask`: clean files (``Train/Denoise``) with Gaussian noise added.

:class:`TaskBalancedDataset` turns tasks into training samples: sample ``index`` belongs
to task ``index % n_tasks`` (so every task is seen equally often whatever its number of
images; optional integer ``weights`` repeat a task in that cycle), its image and crop
positions come from a generator seeded by ``(seed, epoch, index)``. Each sample holds the degraded crop, its clean crop, a second
crop of the same degraded region (the InfoNCE positive), the task index and the image's
cross-fitting fold.

Every region is 3-channel, so one RGB model serves both gray and colour images. A gray
source image is degraded as one plane and then replicated (``gray_sources="plane"``), so its
three channels carry the same noise, exactly what the model sees when the inference API
replicates a gray plane (it averages the output channels back). The older order,
``"replicated"`` (replicate, then degrade each channel independently), taught the model to
average noise across channels, which fails on gray inputs whose channels are identical.

Folder layout (``data_source="folders"``, the PromptIR / AdaIR convention)::

    DATA_ROOT/Train/Denoise/*.png            clean images, noise added on the fly
    DATA_ROOT/Train/Derain/rainy/*, gt/*     Rain100L-style pairs (rain-1.png / norain-1.png)
    DATA_ROOT/Train/Dehaze/hazy/*, clear/*   RESIDE-style pairs (0001_0.8_0.2.jpg / 0001.jpg)
    DATA_ROOT/GoPro/train/*/blur/*, sharp/*  GoPro scenes
    DATA_ROOT/LOL/our485/low/*, high/*       LOL pairs
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from perceive_ir.deblur import deconvolve, estimate_motion
from perceive_ir.degrade import add_gaussian_noise, degrade
from perceive_ir.synthetic import degrade_fluorescence, synth_fluorescence

__all__ = [
    "DATASETS_DIR",
    "SKIMAGE_IMAGES",
    "Task",
    "SynthesizedTask",
    "MicroscopyTask",
    "PairedTask",
    "NoisyFolderTask",
    "TaskBalancedDataset",
    "task_schedule",
    "build_tasks",
    "load_image",
    "fixed_samples",
    "set12_images",
    "band_limit",
    "random_band_limit",
    "BAND_LIMIT_SIGMA",
    "BAND_LIMIT_GAIN",
]

DATASETS_DIR = Path(os.environ.get("PERCEIVE_IR_DATASETS", "/work/shared/datasets"))
#: scikit-image images that ship inside its wheel (no download needed).
SKIMAGE_IMAGES = (
    "astronaut", "camera", "coffee", "chelsea", "immunohistochemistry", "hubble_deep_field", "moon",
    "retina", "rocket", "coins", "cat", "page", "text", "brick", "grass", "gravel", "clock",
)
#: CBSD432 images held out for validation (a fixed 32, chosen by a seeded permutation).
CBSD432_VALIDATION = 32
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


# -- images -------------------------------------------------------------------------------
def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 (Y, X) or (Y, X, 3) (alpha dropped)."""
    from PIL import Image

    with Image.open(path) as handle:
        mode = handle.mode
        image = np.asarray(handle.convert("L" if mode in ("L", "I", "I;16", "F", "1") else "RGB"))
    return image


def _to_float(image: np.ndarray) -> np.ndarray:
    """uint8 or float (Y, X[, C]) -> float32 in [0, 1]: a gray (Y, X) plane or RGB (Y, X, 3)."""
    result = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    if result.ndim == 3 and result.shape[-1] == 1:
        result = result[..., 0]
    return np.ascontiguousarray(result if result.ndim == 2 else result[..., :3])


def to_float_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 or float (Y, X[, C]) -> float32 (Y, X, 3) in [0, 1], gray replicated."""
    result = _to_float(image)
    return np.repeat(result[..., None], 3, axis=-1) if result.ndim == 2 else result


def _source_float(image: np.ndarray, gray_planes: bool = True) -> np.ndarray:
    """A source crop as float32: gray kept as one (Y, X) plane when ``gray_planes`` (degraded
    before replication), else replicated to (Y, X, 3) at once."""
    return _to_float(image) if gray_planes else to_float_rgb(image)


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []


def _skimage_images() -> list[np.ndarray]:
    import skimage.data

    images = []
    for name in SKIMAGE_IMAGES:
        image = np.asarray(getattr(skimage.data, name)())
        if image.dtype == bool:
            image = image.astype(np.uint8) * 255
        images.append(image[..., :3] if image.ndim == 3 else image)
    return images


@functools.lru_cache(maxsize=2)
def natural_images(split: str) -> tuple[np.ndarray, ...]:
    """Clean natural images of the built-in data (uint8).

    ``split="train"``: BSD400 (gray), CBSD432 minus the held-out 32, scikit-image images;
    ``split="validation"``: the 32 held-out CBSD432 images.
    """
    cbsd = _list_images(DATASETS_DIR / "cbsd432")
    order = np.random.default_rng(432).permutation(len(cbsd))
    held_out = set(order[:CBSD432_VALIDATION].tolist())
    if split == "validation":
        return tuple(load_image(cbsd[i]) for i in sorted(held_out))
    if split != "train":
        raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
    images = [load_image(p) for p in _list_images(DATASETS_DIR / "bsd400")]
    images += [load_image(p) for i, p in enumerate(cbsd) if i not in held_out]
    images += _skimage_images()
    if not images:
        raise FileNotFoundError(f"no training images under '{DATASETS_DIR}' (expected bsd400/ and cbsd432/)")
    return tuple(images)


def set12_images() -> list[tuple[str, np.ndarray]]:
    """The Set12 test images (name, float32 (Y, X) in [0, 1]); for validation only."""
    return [(p.stem, load_image(p).astype(np.float32) / 255.0) for p in _list_images(DATASETS_DIR / "set12")]


# -- regions ------------------------------------------------------------------------------
def _random_window(shape: Sequence[int], size: int, rng: np.random.Generator) -> tuple[slice, slice]:
    top = int(rng.integers(0, shape[0] - size + 1))
    left = int(rng.integers(0, shape[1] - size + 1))
    return slice(top, top + size), slice(left, left + size)


def _fit(image: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pad an image smaller than ``size`` (either side) up to ``size``."""
    pad_y = max(0, size - image.shape[0])
    pad_x = max(0, size - image.shape[1])
    if pad_y or pad_x:
        widths = [(0, pad_y), (0, pad_x)] + [(0, 0)] * (image.ndim - 2)
        image = np.pad(image, widths, mode="reflect" if pad_y < image.shape[0] and pad_x < image.shape[1] else "edge")
    return image


def detail(window: np.ndarray) -> float:
    """Mean absolute difference between vertically and between horizontally neighbouring pixels."""
    values = np.asarray(window, dtype=np.float32)
    return float(np.abs(np.diff(values, axis=0)).mean() + np.abs(np.diff(values, axis=1)).mean())


class Task:
    """Base class: ``len(task)`` images; :meth:`region` gives a (degraded, clean) pair."""

    name: str

    def __len__(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def region(self, index: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(degraded, clean) float32 (size, size, 3) regions of image ``index``."""
        raise NotImplementedError  # pragma: no cover


@dataclass
class SynthesizedTask(Task):
    """Clean images in memory, degraded on the fly by ``degrade_function(clean, rng)``.

    ``prepare(clean, rng)``, when given, first turns the source crop into the clean target
    (e.g. :func:`band_limit` for the ``micrograph`` task). With ``detail_candidates`` K > 1
    the region is the most detailed of K random windows of the image (see :func:`detail`):
    training then sees textured regions, where restorers make most of their error, more often
    than flat sky or walls. With ``grating_share`` Q > 0 that share of the clean regions gets a
    sinusoidal grating over part of it (:func:`add_grating`) before ``prepare`` and the degradation.
    """

    name: str
    images: Sequence[np.ndarray]
    degrade_function: Callable[[np.ndarray, np.random.Generator], np.ndarray]
    gray_planes: bool = True
    prepare: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None
    detail_candidates: int = 1
    grating_share: float = 0.0

    def __post_init__(self) -> None:
        if self.detail_candidates < 1:
            raise ValueError(f"detail_candidates must be >= 1, got {self.detail_candidates}")
        if not 0 <= self.grating_share <= 1:
            raise ValueError(f"grating_share must be in [0, 1], got {self.grating_share}")

    def __len__(self) -> int:
        return len(self.images)

    def region(self, index: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        image = _fit(self.images[index], size)
        windows = [image[_random_window(image.shape, size, rng)] for _ in range(self.detail_candidates)]
        window = windows[0] if len(windows) == 1 else max(windows, key=detail)
        clean = _source_float(window, self.gray_planes)
        if self.grating_share > 0 and rng.random() < self.grating_share:  # no draw at 0: old runs' crops unchanged
            clean = add_grating(clean, rng)
        if self.prepare is not None:
            clean = self.prepare(clean, rng)
        return to_float_rgb(self.degrade_function(clean, rng)), to_float_rgb(clean)


@dataclass
class MicroscopyTask(Task):
    """Synthetic fluorescence images: image ``index`` is drawn from seed ``(seed, index)``.

    The generator scales its cells with the image, so an image drawn at the crop size is a
    whole zoomed-out field. A region is instead a window of a field ``zoom`` times the
    region's side (``zoom`` log-uniform in [1, ``max_zoom``], fixed per image), as a tile of
    a large micrograph is: cells up to ``max_zoom`` times larger, empty background too.
    ``max_zoom=1`` draws the field at the region's size (runs before 2026-12-01 did).
    """

    name: str
    count: int
    seed: int
    max_zoom: float = 1.0

    def __post_init__(self) -> None:
        if not self.max_zoom >= 1:
            raise ValueError(f"max_zoom must be >= 1, got {self.max_zoom}")

    def __len__(self) -> int:
        return self.count

    def region(self, index: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        zoom = float(np.exp(np.random.default_rng([self.seed, index, 1]).uniform(0.0, np.log(self.max_zoom))))
        side = max(size, int(round(size * zoom)))
        field = synth_fluorescence((side, side), rng=np.random.default_rng([self.seed, index]))
        clean = field[_random_window(field.shape, size, rng)] if side > size else field
        degraded = degrade_fluorescence(clean, rng=rng)
        return to_float_rgb(degraded), to_float_rgb(clean)


@dataclass
class PairedTask(Task):
    """(degraded file, clean file) pairs read from disk on demand."""

    name: str
    pairs: list[tuple[Path, Path]]

    def __len__(self) -> int:
        return len(self.pairs)

    def region(self, index: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        degraded_path, clean_path = self.pairs[index]
        degraded, clean = load_image(degraded_path), load_image(clean_path)
        if degraded.shape[:2] != clean.shape[:2]:
            raise ValueError(
                f"degraded and clean images differ in size: '{degraded_path}' {degraded.shape[:2]} vs "
                f"'{clean_path}' {clean.shape[:2]}"
            )
        degraded, clean = _fit(degraded, size), _fit(clean, size)
        window = _random_window(clean.shape, size, rng)
        return to_float_rgb(degraded[window]), to_float_rgb(clean[window])


@dataclass
class NoisyFolderTask(Task):
    """Clean files with white Gaussian noise of a level drawn from ``sigmas`` (0-255 scale)."""

    name: str
    files: list[Path]
    sigmas: tuple[float, ...]
    gray_planes: bool = True

    def __len__(self) -> int:
        return len(self.files)

    def region(self, index: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        image = _fit(load_image(self.files[index]), size)
        clean = _source_float(image[_random_window(image.shape, size, rng)], self.gray_planes)
        sigma = float(self.sigmas[int(rng.integers(len(self.sigmas)))])
        return to_float_rgb(add_gaussian_noise(clean, sigma, rng=rng)), to_float_rgb(clean)


# -- degradations of the built-in data ----------------------------------------------------
def _noise_degradation(sigmas: Sequence[float], sigma_range: Sequence[float]) -> Callable:
    def apply(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if sigmas:
            sigma = float(sigmas[int(rng.integers(len(sigmas)))])
        else:
            sigma = float(rng.uniform(sigma_range[0], sigma_range[1]))
        return add_gaussian_noise(clean, sigma, rng=rng)

    return apply


def _kind_degradation(kind: str) -> Callable:
    def apply(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return degrade(clean, kind, float(rng.uniform(0.0, 1.0)), rng=rng)

    return apply


#: Range of the Gaussian blur (pixels) and gain of :func:`random_band_limit`.
BAND_LIMIT_SIGMA = (1.0, 4.0)
BAND_LIMIT_GAIN = (0.3, 1.0)


def band_limit(clean: np.ndarray, sigma: float, gain: float) -> np.ndarray:
    """A micrograph-like clean image from a natural one: Gaussian blur of ``sigma`` pixels
    (in Y and X only), times ``gain``.

    A widefield micrograph is sampled above Nyquist: its point-spread function spans several
    pixels, so it has smooth regions and no pixel-level texture, unlike a photograph. The gain
    makes the photon count at the brightest pixel vary as it does between acquisitions.
    """
    from scipy.ndimage import gaussian_filter

    sigmas = (sigma, sigma) + (0.0,) * (clean.ndim - 2)
    return (gaussian_filter(np.asarray(clean, np.float32), sigmas, mode="reflect") * gain).astype(np.float32)


def random_band_limit(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """:func:`band_limit` with sigma log-uniform in :data:`BAND_LIMIT_SIGMA` and gain uniform in :data:`BAND_LIMIT_GAIN`."""
    sigma = float(np.exp(rng.uniform(np.log(BAND_LIMIT_SIGMA[0]), np.log(BAND_LIMIT_SIGMA[1]))))
    return band_limit(clean, sigma, float(rng.uniform(*BAND_LIMIT_GAIN)))


#: Ranges of :func:`add_grating`: period in pixels (log-uniform; 2 is the Nyquist limit) and amplitude.
GRATING_PERIOD = (2.5, 16.0)
GRATING_AMPLITUDE = (0.05, 0.25)


def add_grating(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A sinusoidal grating (random angle, phase, period in :data:`GRATING_PERIOD`, amplitude in
    :data:`GRATING_AMPLITUDE`) added over a random rectangle of ``clean`` (a third of each side
    or more), clipped to [0, 1]: the regular fine texture (cloth, stripes) that natural training
    crops rarely hold and block-matching methods restore best (``benchmarks/fine_structure.py``).
    Same on every channel of a colour crop; float32 out."""
    height, width = clean.shape[:2]
    angle, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
    period = float(np.exp(rng.uniform(np.log(GRATING_PERIOD[0]), np.log(GRATING_PERIOD[1]))))
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    pattern = rng.uniform(*GRATING_AMPLITUDE) * np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period + phase)
    rows = rng.integers(max(1, height // 3), height + 1)
    columns = rng.integers(max(1, width // 3), width + 1)
    top, left = rng.integers(height - rows + 1), rng.integers(width - columns + 1)
    mask = np.zeros((height, width), np.float32)
    mask[top:top + rows, left:left + columns] = 1
    overlay = pattern * mask
    out = np.asarray(clean, np.float32) + (overlay[..., None] if clean.ndim == 3 else overlay)
    return np.clip(out, 0, 1).astype(np.float32)


def _builtin_tasks(config: Any, split: str) -> list[Task]:
    images = natural_images(split)
    gray_planes = config.gray_sources == "plane"
    # held-out regions stay uniform and grating-free, so that validation numbers do not depend on these fields
    candidates = config.detail_crops if split == "train" else 1
    gratings = config.grating_share if split == "train" else 0.0
    tasks: list[Task] = []
    for name in config.tasks:
        if name == "microscopy":
            count = 4000 if split == "train" else 256
            tasks.append(MicroscopyTask(name, count=count, seed=config.seed + (0 if split == "train" else 1_000_003),
                                        max_zoom=config.microscopy_zoom))
        elif name == "noise":
            tasks.append(SynthesizedTask(name, images, _noise_degradation(config.noise_sigmas, config.noise_range),
                                         gray_planes, detail_candidates=candidates, grating_share=gratings))
        elif name in ("poisson", "rain", "haze", "motion_blur", "low_light"):
            tasks.append(SynthesizedTask(name, images, _kind_degradation(name), gray_planes,
                                         detail_candidates=candidates, grating_share=gratings))
        elif name == "micrograph":
            tasks.append(SynthesizedTask(name, images, _kind_degradation("poisson"), gray_planes,
                                         prepare=random_band_limit, detail_candidates=candidates,
                                         grating_share=gratings))
        else:
            raise ValueError(
                f"unknown task {name!r} for the built-in data; expected noise, poisson, micrograph, rain, haze, "
                f"motion_blur, low_light or microscopy"
            )
    return tasks


def _match_pairs(degraded_dir: Path, clean_dir: Path) -> list[tuple[Path, Path]]:
    """Pair files by name: same name, ``rain-N`` / ``norain-N``, or ``ID_xxx`` / ``ID``."""
    clean_files = {p.name: p for p in _list_images(clean_dir)}
    clean_by_stem = {p.stem: p for p in clean_files.values()}
    pairs = []
    for degraded in _list_images(degraded_dir):
        candidates = [
            clean_files.get(degraded.name),
            clean_files.get(degraded.name.replace("rain-", "norain-")),
            clean_by_stem.get(degraded.stem.split("_")[0]),
        ]
        clean = next((c for c in candidates if c is not None), None)
        if clean is not None:
            pairs.append((degraded, clean))
    return pairs


def _folder_tasks(config: Any, split: str) -> list[Task]:
    if not config.data_root:
        raise ValueError(f"config {config.name!r} reads the field's dataset layout: pass --data-root DIR")
    root = Path(config.data_root)
    tasks: list[Task] = []
    for name in config.tasks:
        if name == "noise":
            files = _list_images(root / "Train" / "Denoise")
            where = root / "Train" / "Denoise"
        elif name == "rain":
            where = root / "Train" / "Derain"
            files = _match_pairs(where / "rainy", where / "gt")
        elif name == "haze":
            where = root / "Train" / "Dehaze"
            files = _match_pairs(where / "hazy", where / "clear")
        elif name == "motion_blur":
            where = root / "GoPro" / "train"
            scenes = sorted(p for p in where.iterdir() if p.is_dir()) if where.is_dir() else []
            files = [pair for scene in scenes for pair in _match_pairs(scene / "blur", scene / "sharp")]
        elif name == "low_light":
            where = root / "LOL" / "our485"
            files = _match_pairs(where / "low", where / "high")
        else:
            raise ValueError(f"unknown task {name!r} for the folder layout; expected noise, rain, haze, motion_blur or low_light")
        if len(files) < 2:
            raise FileNotFoundError(
                f"task {name!r}: found {len(files)} images under '{where}', need at least 2 (see training/data.py "
                f"for the expected layout)"
            )
        held_out = max(1, len(files) // 50)  # the last 2% of each task for validation
        chosen = files[-held_out:] if split == "validation" else files[:-held_out]
        if name == "noise":
            tasks.append(NoisyFolderTask(name, chosen, config.noise_sigmas or (15.0, 25.0, 50.0),
                                         config.gray_sources == "plane"))
        else:
            tasks.append(PairedTask(name, chosen))
    return tasks


def build_tasks(config: Any, split: str = "train") -> list[Task]:
    """The tasks of ``config`` for ``split`` (``"train"`` or ``"validation"``)."""
    if config.data_source == "builtin":
        return _builtin_tasks(config, split)
    return _folder_tasks(config, split)


# -- samples ------------------------------------------------------------------------------
def _augment(arrays: Sequence[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The same random flip and 90-degree rotation applied to every array."""
    turns = int(rng.integers(4))
    flip = bool(rng.integers(2))
    result = []
    for array in arrays:
        array = np.rot90(array, turns, axes=(0, 1))
        result.append(np.ascontiguousarray(array[:, ::-1] if flip else array))
    return result


def _chw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def image_fold(index: int, seed: int) -> int:
    """Cross-fitting fold (0 or 1) of image ``index`` (a fixed hash of index and seed)."""
    return int(np.random.default_rng([seed, 77, index]).integers(2))


def task_schedule(n_tasks: int, weights: Sequence[int] | None = None) -> list[int]:
    """One cycle of task indices in which task ``i`` appears ``weights[i]`` times, interleaved.

    ``task_schedule(3, [2, 1, 1])`` is ``[0, 1, 2, 0]``: round-robin over the tasks that
    still have a share left, so repeated tasks are spread over the cycle.
    """
    if weights is None:
        return list(range(n_tasks))
    weights = list(weights)
    if len(weights) != n_tasks:
        raise ValueError(f"need one weight per task ({n_tasks}), got {len(weights)}: {weights}")
    if any(int(w) != w or w < 1 for w in weights):
        raise ValueError(f"task weights must be positive integers, got {weights}")
    schedule: list[int] = []
    for round_index in range(int(max(weights))):
        schedule += [i for i, w in enumerate(weights) if w > round_index]
    return schedule


class TaskBalancedDataset(Dataset):
    """Task-balanced training samples with on-the-fly degradation.

    Parameters
    ----------
    tasks : list of Task
        Restoration tasks.
    crop_size, region_size : int
        Side of the returned crops; side of the region they are cut from.
    length : int
        Samples per epoch.
    seed : int
        Seed of the crop positions and degradations (with the epoch and the index).
    fold : int, optional
        Only images of this cross-fitting fold (0 or 1); all images when None.
    augment : bool
        Random flips and 90-degree rotations.
    weights : sequence of int, optional
        Relative share of each task (positive integers, one per task; default all 1).
        Samples cycle through a fixed interleaved schedule in which task ``i`` appears
        ``weights[i]`` times, so the shares hold exactly within every cycle.
    deblur : bool
        Deconvolve each degraded region as ``restore(deblur="auto")`` would
        (:func:`deblur_like_restore`) before the crops are cut.

    Notes
    -----
    Items are dicts of tensors: ``degraded``, ``clean``, ``key`` (3, crop, crop) float32,
    ``task`` and ``fold`` (int64 scalars).
    """

    def __init__(self, tasks: list[Task], crop_size: int, region_size: int, length: int, seed: int,
                 fold: int | None = None, augment: bool = True, weights: Sequence[int] | None = None,
                 deblur: bool = False) -> None:
        self.tasks = tasks
        self.deblur = deblur
        self.schedule = task_schedule(len(tasks), weights)
        self.crop_size = crop_size
        self.region_size = region_size
        self.length = length
        self.seed = seed
        self.fold = fold
        self.augment = augment
        self.epoch = 0
        self.candidates = []
        for task in tasks:
            indices = [i for i in range(len(task)) if fold is None or image_fold(i, seed) == fold]
            if not indices:
                raise ValueError(f"task {task.name!r} has no image in fold {fold} ({len(task)} images in all)")
            self.candidates.append(indices)

    def set_epoch(self, epoch: int) -> None:
        """Change the random crops and degradations (call once per epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        task_index = self.schedule[index % len(self.schedule)]
        candidates = self.candidates[task_index]
        image_index = candidates[int(rng.integers(len(candidates)))]
        degraded, clean = self.tasks[task_index].region(image_index, self.region_size, rng)
        if self.deblur:
            degraded = deblur_like_restore(degraded)
        if self.augment:
            degraded, clean = _augment((degraded, clean), rng)
        window = _random_window(clean.shape, self.crop_size, rng)
        key_window = _random_window(clean.shape, self.crop_size, rng)
        return {
            "degraded": _chw(degraded[window]),
            "clean": _chw(clean[window]),
            "key": _chw(degraded[key_window]),
            "task": torch.tensor(task_index, dtype=torch.long),
            "fold": torch.tensor(image_fold(image_index, self.seed), dtype=torch.long),
        }


def deblur_like_restore(degraded: np.ndarray) -> np.ndarray:
    """``degraded`` (H, W, 3) float32, deconvolved by its motion kernel where
    :func:`perceive_ir.deblur.estimate_motion` detects one (else returned as it is)."""
    estimate = estimate_motion([degraded.mean(axis=-1)])
    if not estimate.detected():
        return degraded
    planes = deconvolve(np.moveaxis(degraded, -1, 0), estimate.kernel())
    return np.ascontiguousarray(np.moveaxis(planes, 0, -1), dtype=np.float32)


def fixed_samples(tasks: list[Task], crops_per_task: int, crop_size: int, seed: int,
                  deblur: bool = False) -> dict[str, torch.Tensor]:
    """A fixed, reproducible batch of held-out crops (probe set, validation set).

    Returns ``degraded``, ``clean`` (N, 3, crop, crop), ``task`` (N,) with tasks
    interleaved, N = ``crops_per_task * len(tasks)``.
    """
    dataset = TaskBalancedDataset(tasks, crop_size, crop_size, crops_per_task * len(tasks), seed, augment=False,
                                  deblur=deblur)
    dataset.set_epoch(10_000)
    items = [dataset[i] for i in range(len(dataset))]
    return {key: torch.stack([item[key] for item in items]) for key in ("degraded", "clean", "task")}
