"""Tests for perceive_ir.degrade (pure numpy/scipy degradation synthesis)."""

from __future__ import annotations

import ast
import inspect

import numpy as np
import pytest
from scipy import ndimage
from skimage import data

from perceive_ir import degrade as dg
from perceive_ir.degrade import (
    KINDS,
    add_gaussian_noise,
    add_haze,
    add_poisson_gaussian_noise,
    add_rain,
    defocus_blur,
    degradation_params,
    degrade,
    disk_kernel,
    gaussian_blur,
    gaussian_kernel,
    jpeg_compress,
    low_light,
    make_depth_map,
    motion_blur,
    motion_kernel,
    random_degradation,
)

# ---------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def camera() -> np.ndarray:
    """Grayscale 128 x 128 camera image in [0, 1]."""
    return (data.camera()[::4, ::4] / 255.0).astype(np.float32)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    """RGB 128 x 128 astronaut image in [0, 1]."""
    return (data.astronaut()[::4, ::4] / 255.0).astype(np.float32)


@pytest.fixture(scope="module")
def small_gray() -> np.ndarray:
    """Grayscale 64 x 64 textured image in [0, 1]."""
    return (data.camera()[::8, ::8] / 255.0).astype(np.float32)


@pytest.fixture(scope="module")
def small_rgb() -> np.ndarray:
    """RGB 64 x 64 textured image in [0, 1]."""
    return (data.astronaut()[::8, ::8] / 255.0).astype(np.float32)


def psnr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB for images in [0, 1]."""
    mse = float(np.mean((np.asarray(estimate, np.float64) - reference) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def high_frequency_energy(image: np.ndarray) -> float:
    """Mean squared Laplacian response (per channel)."""
    image = np.asarray(image, np.float64)
    if image.ndim == 3:
        energies = [np.mean(ndimage.laplace(image[..., c]) ** 2) for c in range(image.shape[2])]
        return float(np.mean(energies))
    return float(np.mean(ndimage.laplace(image) ** 2))


# Every random public callable, as image -> output with a given rng.
RANDOM_FUNCTIONS = {
    "gaussian_noise": lambda img, rng: add_gaussian_noise(img, 25, rng=rng),
    "poisson_gaussian": lambda img, rng: add_poisson_gaussian_noise(img, 20, 2.0, rng=rng),
    "haze": lambda img, rng: add_haze(img, 1.5, rng=rng),
    "rain": lambda img, rng: add_rain(img, 0.7, rng=rng),
    "low_light": lambda img, rng: low_light(img, 0.3, noise_sigma=5, rng=rng),
    **{f"degrade_{kind}": (lambda img, rng, kind=kind: degrade(img, kind, 0.7, rng=rng))
       for kind in ("noise", "poisson", "motion_blur", "haze", "rain", "low_light")},
    "random_degradation": lambda img, rng: random_degradation(img, rng=rng)[0],
}

# Every public image function with representative arguments.
IMAGE_FUNCTIONS = {
    "add_gaussian_noise": lambda img: add_gaussian_noise(img, 25, rng=0),
    "add_poisson_gaussian_noise": lambda img: add_poisson_gaussian_noise(img, 20, 1.0, rng=0),
    "gaussian_blur": lambda img: gaussian_blur(img, 2.0),
    "defocus_blur": lambda img: defocus_blur(img, 3.0),
    "motion_blur": lambda img: motion_blur(img, 9, 30),
    "add_haze": lambda img: add_haze(img, rng=0),
    "add_rain": lambda img: add_rain(img, rng=0),
    "low_light": lambda img: low_light(img, noise_sigma=3, rng=0),
    "jpeg_compress": lambda img: jpeg_compress(img, 30),
    "degrade": lambda img: degrade(img, "noise", 0.5, rng=0),
    "random_degradation": lambda img: random_degradation(img, rng=0)[0],
}


# ---------------------------------------------------------------------------
# Module hygiene
# ---------------------------------------------------------------------------


def test_module_imports_no_torch_and_nothing_from_package() -> None:
    tree = ast.parse(inspect.getsource(dg))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level > 0:
                imported.add("<relative>")
            elif node.module:
                imported.add(node.module.split(".")[0])
    assert "torch" not in imported
    assert "perceive_ir" not in imported
    assert "<relative>" not in imported


def test_all_names_exist_and_documented() -> None:
    for name in dg.__all__:
        obj = getattr(dg, name)
        if callable(obj):
            doc = inspect.getdoc(obj) or ""
            assert "Parameters" in doc and "Returns" in doc, name
    for kind in KINDS:
        assert f"`{kind}`" in dg.__doc__


# ---------------------------------------------------------------------------
# Randomness
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RANDOM_FUNCTIONS))
def test_seeded_determinism_and_seed_sensitivity(name: str, small_rgb: np.ndarray) -> None:
    function = RANDOM_FUNCTIONS[name]
    first = function(small_rgb, 123)
    second = function(small_rgb, 123)
    other = function(small_rgb, 124)
    from_generator = function(small_rgb, np.random.default_rng(123))
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, from_generator)
    assert not np.array_equal(first, other)


def test_invalid_rng_rejected(small_gray: np.ndarray) -> None:
    with pytest.raises(ValueError, match="rng"):
        add_gaussian_noise(small_gray, 10, rng="seed")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rng seed must be >= 0, got -1"):
        add_gaussian_noise(small_gray, 10, rng=-1)


# ---------------------------------------------------------------------------
# Noise
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [5, 15, 25, 50])
def test_gaussian_noise_std_matches_sigma(sigma: float) -> None:
    flat = np.full((256, 256), 0.5, dtype=np.float32)
    noisy = add_gaussian_noise(flat, sigma, rng=0)
    assert noisy.dtype == np.float32 and noisy.shape == flat.shape
    assert np.std(noisy) == pytest.approx(sigma / 255.0, rel=0.05)
    assert np.mean(noisy) == pytest.approx(0.5, abs=3 * sigma / 255.0 / 256)


def test_gaussian_noise_rgb_channels_independent() -> None:
    flat = np.full((128, 128, 3), 0.5, dtype=np.float32)
    noise = add_gaussian_noise(flat, 25, rng=1) - flat
    correlation = np.corrcoef(noise[..., 0].ravel(), noise[..., 1].ravel())[0, 1]
    assert abs(correlation) < 0.05


def test_gaussian_noise_zero_sigma_is_identity(small_gray: np.ndarray) -> None:
    np.testing.assert_array_equal(add_gaussian_noise(small_gray, 0, rng=0), small_gray)


def test_noise_unclipped_by_default_and_clip_option() -> None:
    dark = np.zeros((64, 64), dtype=np.float32)
    bright = np.ones((64, 64), dtype=np.float32)
    assert add_gaussian_noise(dark, 25, rng=0).min() < 0
    assert add_gaussian_noise(bright, 25, rng=0).max() > 1
    clipped = add_gaussian_noise(dark, 25, rng=0, clip=True)
    assert clipped.min() >= 0 and clipped.max() <= 1
    assert add_poisson_gaussian_noise(dark, 10, 2.0, rng=0).min() < 0
    clipped_poisson = add_poisson_gaussian_noise(dark, 10, 2.0, rng=0, clip=True)
    assert clipped_poisson.min() >= 0 and clipped_poisson.max() <= 1


@pytest.mark.parametrize(
    ("value", "photons", "read_noise"), [(0.3, 20.0, 2.0), (0.7, 50.0, 0.0), (0.5, 5.0, 3.0)]
)
def test_poisson_gaussian_mean_and_variance(
    value: float, photons: float, read_noise: float
) -> None:
    flat = np.full((256, 256), value, dtype=np.float32)
    noisy = add_poisson_gaussian_noise(flat, photons, read_noise, rng=0)
    expected_variance = value / photons + (read_noise / photons) ** 2
    assert noisy.dtype == np.float32
    assert np.mean(noisy) == pytest.approx(value, abs=4 * np.sqrt(expected_variance / flat.size))
    assert np.var(noisy) == pytest.approx(expected_variance, rel=0.05)


def test_poisson_noise_is_signal_dependent() -> None:
    ramp = np.concatenate([np.full((128, 128), 0.1), np.full((128, 128), 0.9)], axis=1)
    noisy = add_poisson_gaussian_noise(ramp, 30, rng=0)
    assert np.var(noisy[:, 128:]) > 5 * np.var(noisy[:, :128])


# ---------------------------------------------------------------------------
# Blur kernels and blurs
# ---------------------------------------------------------------------------

KERNELS = {
    "gaussian_0.8": lambda: gaussian_kernel(0.8),
    "gaussian_3.5": lambda: gaussian_kernel(3.5),
    "disk_1": lambda: disk_kernel(1),
    "disk_2.5": lambda: disk_kernel(2.5),
    "disk_5": lambda: disk_kernel(5),
    "motion_5_0": lambda: motion_kernel(5, 0),
    "motion_12_33": lambda: motion_kernel(12, 33),
    "motion_25_90": lambda: motion_kernel(25, 90),
    "motion_7.5_135": lambda: motion_kernel(7.5, 135),
}


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_kernels_normalised_odd_and_symmetric(name: str) -> None:
    kernel = KERNELS[name]()
    assert kernel.dtype == np.float32 and kernel.ndim == 2
    assert kernel.shape[0] % 2 == 1 and kernel.shape[1] % 2 == 1
    assert kernel.min() >= 0
    assert float(kernel.sum(dtype=np.float64)) == pytest.approx(1.0, abs=1e-5)
    # Point-symmetric about the centre, so convolution == correlation.
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1], atol=1e-6)


def test_zero_size_kernels_are_identity() -> None:
    np.testing.assert_array_equal(gaussian_kernel(0), np.ones((1, 1), np.float32))
    np.testing.assert_array_equal(disk_kernel(0), np.ones((1, 1), np.float32))


def test_disk_kernel_is_round_with_expected_support() -> None:
    kernel = disk_kernel(4)
    assert kernel.shape == (9, 9)
    assert kernel[4, 4] == pytest.approx(kernel.max())
    assert kernel[0, 0] == 0  # corner is outside the disk
    np.testing.assert_allclose(kernel, kernel.T, atol=1e-7)
    # Interior taps are fully covered, so total coverage = area pi r^2 pixels.
    assert float(kernel.sum() / kernel.max()) == pytest.approx(np.pi * 16, rel=0.02)


@pytest.mark.parametrize("length", [5, 8.5, 21])
def test_motion_kernel_orientation(length: float) -> None:
    horizontal = motion_kernel(length, 0)
    assert horizontal.shape[0] == 1  # extent along x only
    assert horizontal.shape[1] >= length
    vertical = motion_kernel(length, 90)
    assert vertical.shape[1] == 1  # extent along y only
    np.testing.assert_allclose(vertical[:, 0], horizontal[0, :], atol=1e-6)
    # 180 degrees is the same line as 0.
    np.testing.assert_allclose(motion_kernel(length, 180), horizontal, atol=1e-6)
    # 45 degrees runs from bottom-left to top-right (rows grow downwards).
    diagonal = motion_kernel(length, 45)
    assert np.trace(np.fliplr(diagonal)) > 0.5 * diagonal.sum()
    assert np.trace(diagonal) < 0.2 * diagonal.sum()


def test_motion_blur_direction_on_stripes() -> None:
    stripes_along_x = np.tile((np.arange(64) % 8 < 4).astype(np.float32)[:, None], (1, 64))
    stripes_along_y = stripes_along_x.T.copy()
    # Blurring along x leaves horizontal stripes (constant along x) untouched...
    np.testing.assert_allclose(motion_blur(stripes_along_x, 9, 0), stripes_along_x, atol=1e-5)
    # ...but smears vertical stripes.
    assert np.abs(motion_blur(stripes_along_y, 9, 0) - stripes_along_y).mean() > 0.1
    np.testing.assert_allclose(motion_blur(stripes_along_y, 9, 90), stripes_along_y, atol=1e-5)


BLURS = {
    "gaussian": lambda img: gaussian_blur(img, 2.0),
    "defocus": lambda img: defocus_blur(img, 3.0),
    "motion": lambda img: motion_blur(img, 15, 30),
    "motion_long": lambda img: motion_blur(img, 25, 100),  # FFT path
    "defocus_large": lambda img: defocus_blur(img, 6.0),  # FFT path
}


@pytest.mark.parametrize("name", sorted(BLURS))
@pytest.mark.parametrize("channels", [None, 3])
def test_blur_preserves_mean_and_removes_high_frequencies(name: str, channels: int | None) -> None:
    shape = (96, 96) if channels is None else (96, 96, channels)
    image = np.random.default_rng(0).random(shape).astype(np.float32)
    blurred = BLURS[name](image)
    assert blurred.dtype == np.float32 and blurred.shape == image.shape
    assert blurred.min() >= 0 and blurred.max() <= 1
    assert float(blurred.mean()) == pytest.approx(float(image.mean()), abs=1e-3)
    assert high_frequency_energy(blurred) < 0.2 * high_frequency_energy(image)


def test_blur_is_per_channel(small_rgb: np.ndarray) -> None:
    blurred = gaussian_blur(small_rgb, 1.5)
    for channel in range(3):
        expected = gaussian_blur(small_rgb[..., channel], 1.5)
        np.testing.assert_allclose(blurred[..., channel], expected, atol=1e-6)
    one_channel = defocus_blur(small_rgb[..., :1], 2.0)
    assert one_channel.shape == (64, 64, 1)
    np.testing.assert_allclose(one_channel[..., 0], defocus_blur(small_rgb[..., 0], 2.0), atol=1e-6)


@pytest.mark.parametrize(
    ("blur", "kernel"),
    [
        (lambda img: gaussian_blur(img, 1.7), gaussian_kernel(1.7)),
        (lambda img: defocus_blur(img, 2.5), disk_kernel(2.5)),
        (lambda img: motion_blur(img, 11, 60), motion_kernel(11, 60)),
        (lambda img: motion_blur(img, 25, 20), motion_kernel(25, 20)),
    ],
)
def test_blurs_match_exposed_kernels(blur, kernel: np.ndarray, small_gray: np.ndarray) -> None:
    expected = ndimage.convolve(
        small_gray.astype(np.float64), kernel.astype(np.float64), mode="reflect"
    )
    np.testing.assert_allclose(blur(small_gray), np.clip(expected, 0, 1), atol=1e-4)


# ---------------------------------------------------------------------------
# Haze
# ---------------------------------------------------------------------------


def test_depth_map_range_shape_and_smoothness() -> None:
    depth = make_depth_map((96, 80, 3), rng=0)
    assert depth.shape == (96, 80) and depth.dtype == np.float32
    assert depth.min() == pytest.approx(0.0, abs=1e-6)
    assert depth.max() == pytest.approx(1.0, abs=1e-6)
    assert np.abs(np.diff(depth, axis=0)).max() < 0.1
    assert np.abs(np.diff(depth, axis=1)).max() < 0.1
    # Vertical gradient: top is farther than bottom on average.
    assert depth[:20].mean() > depth[-20:].mean()
    with pytest.raises(ValueError, match="shape"):
        make_depth_map((0, 5))


def test_haze_moves_toward_airlight_and_reduces_contrast(camera: np.ndarray) -> None:
    airlight = 0.9
    hazy = add_haze(camera, beta=1.5, airlight=airlight, rng=0)
    assert hazy.min() >= 0 and hazy.max() <= 1
    assert abs(hazy.mean() - airlight) < abs(camera.mean() - airlight)
    assert hazy.std() < camera.std()


def test_haze_monotonic_in_beta(astronaut: np.ndarray) -> None:
    betas = [0.0, 0.5, 1.0, 2.0, 4.0]
    hazy = [add_haze(astronaut, beta, 0.9, rng=7) for beta in betas]
    np.testing.assert_allclose(hazy[0], astronaut, atol=1e-6)
    distances = [abs(float(h.mean()) - 0.9) for h in hazy]
    stds = [float(h.std()) for h in hazy]
    psnrs = [psnr(h, astronaut) for h in hazy[1:]]
    assert distances == sorted(distances, reverse=True)
    assert stds == sorted(stds, reverse=True)
    assert psnrs == sorted(psnrs, reverse=True)


def test_haze_with_explicit_depth(small_rgb: np.ndarray) -> None:
    zero_depth = np.zeros(small_rgb.shape[:2])
    np.testing.assert_allclose(add_haze(small_rgb, 2.0, depth=zero_depth), small_rgb, atol=1e-6)
    far = np.full(small_rgb.shape[:2], 50.0)
    np.testing.assert_allclose(add_haze(small_rgb, 2.0, 0.8, depth=far), 0.8, atol=1e-6)
    with pytest.raises(ValueError, match=r"depth must have shape \(64, 64\)"):
        add_haze(small_rgb, depth=np.zeros((32, 64)))
    with pytest.raises(ValueError, match="depth must be >= 0"):
        add_haze(small_rgb, depth=-np.ones((64, 64)))
    with pytest.raises(ValueError, match="airlight"):
        add_haze(small_rgb, airlight=1.5, rng=0)


# ---------------------------------------------------------------------------
# Rain
# ---------------------------------------------------------------------------


def test_rain_adds_bright_streaks_clipped(camera: np.ndarray) -> None:
    rainy = add_rain(camera, 0.8, rng=0)
    assert rainy.min() >= 0 and rainy.max() <= 1
    assert rainy.mean() > camera.mean() + 0.01
    # Screen blending only brightens.
    assert np.all(rainy >= camera - 1e-6)


def test_rain_same_layer_on_all_channels(small_gray: np.ndarray) -> None:
    rgb = np.repeat(small_gray[..., None], 3, axis=2)
    rainy = add_rain(rgb, 0.8, rng=3)
    np.testing.assert_array_equal(rainy[..., 0], rainy[..., 1])
    np.testing.assert_array_equal(rainy[..., 0], rainy[..., 2])
    np.testing.assert_allclose(rainy[..., 0], add_rain(small_gray, 0.8, rng=3), atol=1e-6)


def test_rain_is_screen_blended(camera: np.ndarray) -> None:
    # On black, the output is the streak layer S itself; it does not depend on the image.
    streaks = add_rain(np.zeros_like(camera), 0.9, angle=10, length=15, rng=6)
    assert streaks.max() > 0.5
    rainy = add_rain(camera, 0.9, angle=10, length=15, rng=6)
    np.testing.assert_allclose(rainy, 1 - (1 - camera) * (1 - streaks), atol=1e-5)


def test_rain_streaks_are_oriented() -> None:
    black = np.zeros((128, 128), dtype=np.float32)
    vertical = add_rain(black, 0.8, angle=0, rng=0)
    # Streaks vary much less along them (y) than across them (x).
    along = np.abs(np.diff(vertical, axis=0)).mean()
    across = np.abs(np.diff(vertical, axis=1)).mean()
    assert along < 0.5 * across
    tilted = add_rain(black, 0.8, angle=90, rng=0)  # 90 degrees from vertical = horizontal
    assert np.abs(np.diff(tilted, axis=1)).mean() < 0.5 * np.abs(np.diff(tilted, axis=0)).mean()


def test_rain_strength_grows_with_amount(camera: np.ndarray) -> None:
    amounts = (0.0, 0.3, 0.6, 1.0)
    means = [float(add_rain(camera, amount, angle=5, rng=2).mean()) for amount in amounts]
    assert means[0] == pytest.approx(float(camera.mean()), abs=1e-6)
    assert means == sorted(means) and means[-1] > means[1]


# ---------------------------------------------------------------------------
# Low light and JPEG
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [0.5, 0.2, 0.08])
def test_low_light_scales_mean_by_factor(factor: float, astronaut: np.ndarray) -> None:
    dark = low_light(astronaut, factor=factor, gamma=1.0)
    assert float(dark.mean()) == pytest.approx(factor * float(astronaut.mean()), rel=1e-3)
    gamma_dark = low_light(astronaut, factor=factor, gamma=2.0)
    expected = factor * float(np.mean(astronaut.astype(np.float64) ** 2))
    assert float(gamma_dark.mean()) == pytest.approx(expected, rel=1e-3)
    assert gamma_dark.mean() < dark.mean()


def test_low_light_noise_option(camera: np.ndarray) -> None:
    clean_dark = low_light(camera, 0.3, 1.0)
    noisy_dark = low_light(camera, 0.3, 1.0, noise_sigma=10, rng=0)
    assert noisy_dark.min() >= 0 and noisy_dark.max() <= 1
    residual = (noisy_dark - clean_dark)[clean_dark > 0.1]  # away from the clip at 0
    assert np.std(residual) == pytest.approx(10 / 255, rel=0.1)


def test_jpeg_quality_and_difference(camera: np.ndarray, astronaut: np.ndarray) -> None:
    compressed = jpeg_compress(camera, quality=60)
    assert compressed.dtype == np.float32 and compressed.shape == camera.shape
    assert not np.array_equal(compressed, camera)
    assert psnr(compressed, camera) > 25
    assert psnr(jpeg_compress(camera, quality=10), camera) < psnr(compressed, camera)
    rgb = jpeg_compress(astronaut, quality=60)
    assert rgb.shape == astronaut.shape and psnr(rgb, astronaut) > 25
    single = jpeg_compress(camera[..., None], quality=60)
    np.testing.assert_array_equal(single[..., 0], compressed)


@pytest.mark.parametrize("quality", [0, 101, 50.5, True])
def test_jpeg_quality_validation(quality, small_gray: np.ndarray) -> None:
    with pytest.raises(ValueError, match="quality must be an integer in \\[1, 100\\]"):
        jpeg_compress(small_gray, quality)


# ---------------------------------------------------------------------------
# degrade / degradation_params / random_degradation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("level", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("color", ["gray", "rgb", "single_channel"])
def test_degrade_every_kind_and_level(
    kind: str, level: float, color: str, small_gray: np.ndarray, small_rgb: np.ndarray
) -> None:
    image = {"gray": small_gray, "rgb": small_rgb, "single_channel": small_gray[..., None]}[color]
    out = degrade(image, kind, level, rng=0)
    assert out.dtype == np.float32
    assert out.shape == image.shape
    assert np.all(np.isfinite(out))
    assert not np.array_equal(out, image)
    if kind not in ("noise", "poisson"):
        assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("color", ["gray", "rgb"])
def test_degrade_stronger_with_level(
    kind: str, color: str, camera: np.ndarray, astronaut: np.ndarray
) -> None:
    image = camera if color == "gray" else astronaut
    scores = [psnr(degrade(image, kind, level, rng=11), image) for level in (0.0, 0.5, 1.0)]
    assert scores[0] > scores[1] > scores[2], scores


def test_named_levels_match_numbers(small_rgb: np.ndarray) -> None:
    for name, value in (("low", 0.0), ("medium", 0.5), ("high", 1.0)):
        assert degradation_params("haze", name) == degradation_params("haze", value)
        np.testing.assert_array_equal(
            degrade(small_rgb, "noise", name, rng=4), degrade(small_rgb, "noise", value, rng=4)
        )
    assert degradation_params("blur", " High ") == degradation_params("blur", 1)


@pytest.mark.parametrize(
    ("kind", "key", "at_zero", "at_one"),
    [
        ("noise", "sigma", 5.0, 55.0),
        ("poisson", "photons", 100.0, 5.0),
        ("poisson", "read_noise", 0.5, 1.5),
        ("blur", "sigma", 0.8, 3.5),
        ("defocus", "radius", 1.0, 5.0),
        ("motion_blur", "length", 5.0, 25.0),
        ("haze", "beta", 0.5, 2.5),
        ("rain", "amount", 0.2, 1.0),
        ("low_light", "factor", 0.5, 0.08),
        ("low_light", "gamma", 1.2, 2.2),
        ("jpeg", "quality", 60, 10),
    ],
)
def test_degradation_params_table(kind: str, key: str, at_zero: float, at_one: float) -> None:
    assert degradation_params(kind, 0.0)[key] == pytest.approx(at_zero)
    assert degradation_params(kind, 1.0)[key] == pytest.approx(at_one)


def test_degradation_params_details() -> None:
    # Common denoising sigmas are inside the range.
    assert degradation_params("noise", 0.2)["sigma"] == pytest.approx(15)
    assert degradation_params("noise", 0.4)["sigma"] == pytest.approx(25)
    assert degradation_params("noise", 0.9)["sigma"] == pytest.approx(50)
    # Photons are log-spaced: the midpoint is the geometric mean.
    assert degradation_params("poisson", 0.5)["photons"] == pytest.approx(np.sqrt(100 * 5))
    assert isinstance(degradation_params("jpeg", 0.37)["quality"], int)
    assert "angle" not in degradation_params("motion_blur", 0.5)


def test_degrade_uses_documented_params(small_rgb: np.ndarray) -> None:
    params = degradation_params("blur", 0.3)
    expected = gaussian_blur(small_rgb, **params)
    np.testing.assert_array_equal(degrade(small_rgb, "blur", 0.3), expected)
    params = degradation_params("jpeg", 0.8)
    expected = jpeg_compress(small_rgb, **params)
    np.testing.assert_array_equal(degrade(small_rgb, "jpeg", 0.8), expected)


def test_random_degradation(small_rgb: np.ndarray) -> None:
    out, kind, level = random_degradation(small_rgb, rng=5)
    assert kind in KINDS and 0.0 <= level <= 1.0
    assert out.shape == small_rgb.shape and out.dtype == np.float32
    again, kind_again, level_again = random_degradation(small_rgb, rng=5)
    assert (kind_again, level_again) == (kind, level)
    np.testing.assert_array_equal(again, out)
    generator = np.random.default_rng(0)
    drawn = {
        random_degradation(small_rgb, kinds=("blur", "jpeg"), rng=generator)[1] for _ in range(12)
    }
    assert drawn == {"blur", "jpeg"}


@pytest.mark.parametrize("kinds", [(), ("blur", "nosie"), "blur"])
def test_random_degradation_rejects_bad_kinds(kinds, small_rgb: np.ndarray) -> None:
    with pytest.raises(ValueError, match="kind"):
        random_degradation(small_rgb, kinds=kinds, rng=0)


# ---------------------------------------------------------------------------
# Errors and input handling
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((8, 8), dtype=bool), "dtype bool"),
        (np.zeros((8, 8), dtype=complex), "dtype complex128"),
        (np.array([["a"]]), "dtype <U1"),
        (np.array([[0.1, np.nan], [0.2, 0.3]]), "image contains NaN or inf values"),
        (np.array([[0.1, np.inf], [0.2, 0.3]]), "image contains NaN or inf values"),
        (np.zeros(8), r"got 1 dimensions with shape \(8,\)"),
        (np.zeros((2, 8, 8, 3)), "got 4 dimensions"),
        (np.zeros((8, 8, 2)), r"got shape \(8, 8, 2\) with 2 channels"),
        (np.zeros((0, 8)), "non-empty"),
    ],
)
@pytest.mark.parametrize("function", sorted(IMAGE_FUNCTIONS))
def test_invalid_images_rejected(image: np.ndarray, message: str, function: str) -> None:
    with pytest.raises(ValueError, match=message):
        IMAGE_FUNCTIONS[function](image)


def test_unknown_kind_suggests_closest(small_gray: np.ndarray) -> None:
    with pytest.raises(ValueError, match="did you mean 'noise'") as info:
        degrade(small_gray, "nosie", 0.5)
    for kind in KINDS:
        assert kind in str(info.value)
    with pytest.raises(ValueError, match="did you mean 'motion_blur'"):
        degradation_params("motion-blur", 0.5)
    with pytest.raises(ValueError, match="unknown degradation kind 'xyz'"):
        degrade(small_gray, "xyz", 0.5)


@pytest.mark.parametrize("level", [1.5, -0.1, float("nan"), "extreme", True, None])
def test_bad_level_rejected(level, small_gray: np.ndarray) -> None:
    with pytest.raises(ValueError, match="level"):
        degrade(small_gray, "noise", level, rng=0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda img: add_gaussian_noise(img, -3), "sigma must be >= 0, got -3"),
        (lambda img: add_gaussian_noise(img, float("inf")), "sigma must be finite"),
        (lambda img: add_gaussian_noise(img, "25"), "sigma must be a real number, got str"),
        (lambda img: add_poisson_gaussian_noise(img, 0), "photons must be > 0, got 0"),
        (lambda img: add_poisson_gaussian_noise(img, 10, -1), "read_noise must be >= 0, got -1"),
        (lambda img: gaussian_blur(img, -1), "sigma must be >= 0, got -1"),
        (lambda img: defocus_blur(img, -2), "radius must be >= 0, got -2"),
        (lambda img: motion_blur(img, 0.5), "length must be >= 1, got 0.5"),
        (lambda img: motion_blur(img, 5, float("nan")), "angle must be finite"),
        (lambda img: add_haze(img, -1, rng=0), "beta must be >= 0, got -1"),
        (lambda img: add_rain(img, 1.5, rng=0), r"amount must be in \[0, 1\], got 1.5"),
        (lambda img: add_rain(img, 0.5, length=0, rng=0), "length must be >= 1, got 0"),
        (lambda img: low_light(img, 0), r"factor must be in \(0, 1\], got 0"),
        (lambda img: low_light(img, 1.5), r"factor must be in \[0, 1\], got 1.5"),
        (lambda img: low_light(img, 0.2, 0), "gamma must be > 0, got 0"),
        (lambda img: low_light(img, 0.2, noise_sigma=-1), "noise_sigma must be >= 0, got -1"),
    ],
)
def test_parameter_validation(call, message: str, small_gray: np.ndarray) -> None:
    with pytest.raises(ValueError, match=message):
        call(small_gray)


@pytest.mark.parametrize("function", sorted(IMAGE_FUNCTIONS))
def test_input_not_modified(function: str, small_rgb: np.ndarray) -> None:
    image = small_rgb.copy()
    out = IMAGE_FUNCTIONS[function](image)
    np.testing.assert_array_equal(image, small_rgb)
    assert not np.shares_memory(out, image)


@pytest.mark.parametrize("kind", KINDS)
def test_degrade_input_not_modified(kind: str, small_rgb: np.ndarray) -> None:
    image = small_rgb.copy()
    degrade(image, kind, 1.0, rng=0)
    np.testing.assert_array_equal(image, small_rgb)


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.float16, np.float64])
def test_other_numeric_dtypes_accepted(dtype) -> None:
    image = (np.arange(64 * 64).reshape(64, 64) % 2).astype(dtype)
    for kind in KINDS:
        out = degrade(image, kind, 0.5, rng=0)
        assert out.dtype == np.float32 and out.shape == image.shape
