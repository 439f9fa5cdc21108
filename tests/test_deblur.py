"""Kernel-aware motion deblurring: kernel estimation, deconvolution, and restore(deblur=...)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data as skdata

from perceive_ir import degrade as D
from perceive_ir import deblur as B
from perceive_ir.api import InputError, restore


def psnr(reference: np.ndarray, image: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((np.clip(image, 0, 1) - reference) ** 2)))


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    """A 256 px natural colour crop (float32 RGB in [0, 1])."""
    return skdata.astronaut()[:256, 128:384].astype(np.float32) / 255.0


@pytest.mark.parametrize("length, angle", [(5.0, 20.0), (11.0, 135.0), (19.0, 80.0)])
def test_estimate_motion_finds_the_kernel(scene, length, angle) -> None:
    estimate = B.estimate_motion([D.motion_blur(scene, length, angle).mean(axis=-1)])
    assert estimate.detected()
    assert abs(estimate.length - length) < 0.7
    assert abs((estimate.angle - angle + 90.0) % 180.0 - 90.0) < 4.0


@pytest.mark.parametrize("kind", ["clean", "noise", "defocus", "blur"])
def test_estimate_motion_rejects_other_inputs(scene, kind) -> None:
    image = scene if kind == "clean" else D.degrade(scene, kind, 0.6, rng=np.random.default_rng(1))
    estimate = B.estimate_motion([image.mean(axis=-1)])
    assert not estimate.detected(), estimate


def test_estimate_motion_on_tiny_windows_detects_nothing() -> None:
    estimate = B.estimate_motion([np.random.default_rng(0).random((8, 8))])
    assert estimate.confidence == 0.0 and not estimate.detected()


def test_cepstrum_rejects_mixed_windows() -> None:
    with pytest.raises(ValueError, match="one shape"):
        B.cepstrum([np.zeros((16, 16)), np.zeros((8, 8))])
    with pytest.raises(ValueError, match="at least one"):
        B.cepstrum([])


def test_deconvolve_inverts_the_blur(scene) -> None:
    kernel = D.motion_kernel(13.0, 30.0)
    blurred = np.moveaxis(D.motion_blur(scene, 13.0, 30.0), -1, 0)
    restored = B.deconvolve(blurred, kernel)
    assert restored.shape == blurred.shape and restored.dtype == np.float32
    clean = np.moveaxis(scene, -1, 0)
    assert psnr(clean, restored) > psnr(clean, blurred) + 3.0
    gray = B.deconvolve(blurred[0], kernel)  # (H, W) in, (H, W) out
    assert gray.shape == blurred.shape[1:]
    np.testing.assert_allclose(gray, restored[0], atol=1e-5)


def test_deconvolve_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="odd"):
        B.deconvolve(np.zeros((16, 16)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="expected"):
        B.deconvolve(np.zeros((2, 2, 16, 16)), np.ones((3, 3)))


def test_restore_auto_deblurs_a_motion_blurred_image(scene, identity_restorer) -> None:
    blurred = D.motion_blur(scene, 11.0, 60.0)
    alone = restore(blurred, model=identity_restorer, device="cpu", deblur="off")
    np.testing.assert_allclose(alone, blurred, atol=1e-5)  # the untrained network is the identity
    auto = restore(blurred, model=identity_restorer, device="cpu")  # deblur="auto" is the default
    assert psnr(scene, auto) > psnr(scene, blurred) + 3.0
    known = restore(blurred, model=identity_restorer, device="cpu", deblur=(11.0, 60.0))
    assert psnr(scene, known) > psnr(scene, blurred) + 3.0


def test_restore_auto_leaves_unblurred_images_to_the_network(scene, identity_restorer) -> None:
    noisy = D.degrade(scene, "noise", 0.5, rng=np.random.default_rng(0))
    auto = restore(noisy, model=identity_restorer, device="cpu")
    np.testing.assert_allclose(auto, noisy, atol=1e-5)


def test_tiled_deblurring_is_as_good_as_one_tile(scene, identity_restorer) -> None:
    """Each tile is deconvolved with a margin read around it: small tiles restore as well as one
    tile over the whole image (the deconvolution is not linear, so the two differ slightly)."""
    blurred = D.motion_blur(scene, 9.0, 150.0)
    whole = restore(blurred, model=identity_restorer, device="cpu", deblur=(9.0, 150.0), tile_size=256)
    tiled = restore(blurred, model=identity_restorer, device="cpu", deblur=(9.0, 150.0), tile_size=64,
                    tile_overlap=16)
    assert psnr(scene, tiled) > psnr(scene, whole) - 0.1
    assert psnr(whole, tiled) > 35.0


def test_dask_deblurring_matches_memory(scene, identity_restorer) -> None:
    da = pytest.importorskip("dask.array")
    blurred = D.motion_blur(scene, 9.0, 40.0)
    in_memory = restore(blurred, model=identity_restorer, device="cpu", tile_size=128)
    lazy = restore(da.from_array(blurred, chunks=(128, 128, 3)), model=identity_restorer, device="cpu", tile_size=128)
    assert psnr(in_memory, np.asarray(lazy.compute())) > 40.0
    assert psnr(scene, in_memory) > psnr(scene, blurred) + 2.0


@pytest.mark.parametrize("bad", ["on", (0.5, 10.0), (float("nan"), 0.0), (5.0,), 3])
def test_restore_rejects_bad_deblur(scene, identity_restorer, bad) -> None:
    with pytest.raises(InputError, match="deblur"):
        restore(scene, model=identity_restorer, device="cpu", deblur=bad)


def test_a_stack_deblurs_only_its_blurred_planes(scene, identity_restorer) -> None:
    """Planes are gated one by one; a batch holding tiles of both kinds keeps each plane's own path."""
    blurred = D.motion_blur(scene, 11.0, 60.0)
    noisy = D.degrade(scene, "noise", 0.5, rng=np.random.default_rng(0))
    stack = np.stack([blurred, noisy])  # ZYXC
    restored = restore(stack, model=identity_restorer, device="cpu", axes="ZYXC", batch_size=2)
    assert psnr(scene, restored[0]) > psnr(scene, blurred) + 3.0
    np.testing.assert_allclose(restored[1], noisy, atol=1e-5)
