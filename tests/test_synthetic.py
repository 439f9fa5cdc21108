"""Tests of perceive_ir.synthetic: the one fluorescence generator of the training data, the
napari sample data and sample_data/*.tif (no viewer, no torch needed)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from perceive_ir import synthetic
from perceive_ir.synthetic import (
    CAMERA_GAIN,
    CAMERA_OFFSET,
    SAMPLE_SEED,
    STRUCTURES,
    acquisition_parameters,
    degrade_fluorescence,
    make_fluorescence_pair,
    make_hazy_astronaut_pair,
    synth_fluorescence,
)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "sample_data"

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")


def load_make_samples():
    spec = importlib.util.spec_from_file_location("make_samples", SAMPLE_DIR / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sample_pair():
    return make_fluorescence_pair()


# -- synth_fluorescence / degrade_fluorescence (the training generator) -------------------
def test_synth_fluorescence_is_clean_and_reproducible():
    first = synth_fluorescence((64, 80), rng=3)
    assert first.shape == (64, 80) and first.dtype == np.float32
    assert 0.0 <= first.min() and first.max() <= 1.0 and first.max() > 0.5
    np.testing.assert_array_equal(first, synth_fluorescence((64, 80), rng=3))
    np.testing.assert_array_equal(first, synth_fluorescence((64, 80), rng=np.random.default_rng(3)))
    assert not np.array_equal(first, synth_fluorescence((64, 80), rng=4))
    noisy = degrade_fluorescence(first, rng=0, blur_sigma=1.0, photons=20.0, read_noise=1.0)
    assert noisy.shape == first.shape and noisy.dtype == np.float32
    assert abs(float(noisy.mean() - first.mean())) < 0.02
    with pytest.raises(ValueError, match="shape"):
        synth_fluorescence((4, 64), rng=0)
    with pytest.raises(ValueError, match="shape"):
        synth_fluorescence((64, 64, 3), rng=0)


def test_degrade_fluorescence_is_reproducible_and_noisier_with_fewer_photons():
    clean = synth_fluorescence((96, 96), rng=1)
    np.testing.assert_array_equal(degrade_fluorescence(clean, rng=7), degrade_fluorescence(clean, rng=7))
    assert not np.array_equal(degrade_fluorescence(clean, rng=7), degrade_fluorescence(clean, rng=8))
    errors = [float(np.std(degrade_fluorescence(clean, rng=2, blur_sigma=0.0, photons=p, read_noise=1.0) - clean))
              for p in (10.0, 300.0)]
    assert errors[0] > 2 * errors[1]


def test_acquisition_drawn_first_gives_the_same_image_and_records_it():
    clean = synth_fluorescence((64, 64), rng=1)
    for seed in range(6):
        generator = np.random.default_rng(seed)
        acquisition = acquisition_parameters(generator)
        np.testing.assert_array_equal(degrade_fluorescence(clean, rng=generator, **acquisition),
                                      degrade_fluorescence(clean, rng=seed))
        assert 10 <= acquisition["photons"] <= 300 and 0.5 <= acquisition["read_noise"] <= 2
        assert acquisition["blur_sigma"] == 0 or 0.5 <= acquisition["blur_sigma"] <= 2
    given = acquisition_parameters(0, photons=42.0)
    assert given["photons"] == 42.0 and 0.5 <= given["read_noise"] <= 2
    assert acquisition_parameters(3, blur_sigma=0.0, photons=5.0, read_noise=1.5) == {
        "blur_sigma": 0.0, "photons": 5.0, "read_noise": 1.5}


def test_structures_argument_only_overrides_the_random_choice():
    # None (the training default) and naming what None picked give the same image; the
    # random choices are drawn either way, so forcing a structure changes the image
    same = different = 0
    for seed in range(12):
        default = synth_fluorescence((48, 48), rng=seed)
        forced = synth_fluorescence((48, 48), rng=seed, structures=STRUCTURES)
        if np.array_equal(default, forced):
            same += 1
        else:
            different += 1
    assert same and different
    # background only: smooth, its median near its peak; structures: a dark background
    # under bright, sparse objects
    for seed in range(3):
        background = synth_fluorescence((48, 48), rng=seed, structures=())
        everything = synth_fluorescence((48, 48), rng=seed, structures=STRUCTURES)
        assert np.median(background) > 0.4 * background.max()
        assert np.median(everything) < 0.2 * everything.max()
    assert synth_fluorescence((48, 48), rng=0, structures="cells").shape == (48, 48)
    with pytest.raises(ValueError, match="unknown structures"):
        synth_fluorescence((48, 48), rng=0, structures=("cells", "mitochondria"))


# -- make_fluorescence_pair (the sample) ---------------------------------------------------
def test_fluorescence_pair_dtype_shape_and_camera_range(sample_pair):
    degraded, clean = sample_pair
    assert degraded.dtype == clean.dtype == np.uint16
    assert degraded.shape == clean.shape == (512, 512)
    # clean = 400 + 4000 * intensity with intensity in [0, 1]; its bright structures reach
    # 0.6-1.0 of the scale (not blank, not saturated)
    assert clean.min() >= CAMERA_OFFSET and clean.max() <= CAMERA_OFFSET + CAMERA_GAIN
    assert np.percentile(clean, 99.9) >= CAMERA_OFFSET + 0.5 * CAMERA_GAIN
    assert np.percentile(clean, 50) < CAMERA_OFFSET + 0.5 * CAMERA_GAIN
    assert degraded.max() < 65535 and np.mean(degraded == 0) < 0.001
    # unbiased noise: same mean; visibly noisy: large pixel differences
    assert abs(float(degraded.mean()) - float(clean.mean())) < 0.02 * CAMERA_GAIN
    difference = degraded.astype(np.float64) - clean
    assert float(np.std(difference)) > 0.05 * CAMERA_GAIN


def test_fluorescence_pair_is_deterministic_and_seeded(sample_pair):
    degraded, clean = make_fluorescence_pair((64, 96), seed=5)
    assert degraded.shape == clean.shape == (64, 96)
    again = make_fluorescence_pair((64, 96), seed=5)
    np.testing.assert_array_equal(again[0], degraded)
    np.testing.assert_array_equal(again[1], clean)
    other = make_fluorescence_pair((64, 96), seed=6)
    assert not np.array_equal(other[0], degraded) and not np.array_equal(other[1], clean)
    default = make_fluorescence_pair(seed=SAMPLE_SEED)
    np.testing.assert_array_equal(default[0], sample_pair[0])
    np.testing.assert_array_equal(default[1], sample_pair[1])
    with pytest.raises(ValueError, match="shape"):
        make_fluorescence_pair((4, 64))


def test_fluorescence_pair_is_built_on_the_training_generator():
    degraded, clean = make_fluorescence_pair((80, 80), seed=11)
    rng = np.random.default_rng(11)
    expected_clean = synth_fluorescence((80, 80), rng=rng, structures=STRUCTURES)
    expected_degraded = degrade_fluorescence(expected_clean, rng=rng, blur_sigma=1.5, photons=40.0, read_noise=1.0)

    def to_counts(intensity):
        return np.clip(np.rint(CAMERA_OFFSET + CAMERA_GAIN * intensity), 0, 65535).astype(np.uint16)

    np.testing.assert_array_equal(clean, to_counts(expected_clean))
    np.testing.assert_array_equal(degraded, to_counts(expected_degraded))


def test_hazy_astronaut_pair():
    hazy, clean = make_hazy_astronaut_pair()
    assert hazy.dtype == clean.dtype == np.uint8 and hazy.shape == clean.shape == (512, 512, 3)
    np.testing.assert_array_equal(make_hazy_astronaut_pair()[0], hazy)
    assert not np.array_equal(make_hazy_astronaut_pair(seed=1)[0], hazy)
    assert float(hazy.mean()) > float(clean.mean())  # haze brightens toward the airlight


# -- one generator for the napari samples, make_samples.py and the committed TIFFs ---------
def test_napari_samples_and_make_samples_use_this_generator(sample_pair):
    from perceive_ir.napari import _sample_data

    make_samples = load_make_samples()
    assert make_samples.make_fluorescence_pair is synthetic.make_fluorescence_pair
    assert make_samples.make_hazy_astronaut_pair is synthetic.make_hazy_astronaut_pair
    assert make_samples.SAMPLE_SEED == SAMPLE_SEED
    assert not hasattr(_sample_data, "fluorescence_phantom")
    layers = {kwargs["name"]: data for data, kwargs, kind in _sample_data.fluorescence_sample()}
    np.testing.assert_array_equal(layers["fluorescence (degraded)"], sample_pair[0])
    np.testing.assert_array_equal(layers["fluorescence (clean)"], sample_pair[1])
    arrays = make_samples.sample_arrays()
    np.testing.assert_array_equal(arrays["fluorescence_degraded.tif"][0], sample_pair[0])
    np.testing.assert_array_equal(arrays["fluorescence_clean.tif"][0], sample_pair[1])


def test_committed_sample_files_equal_the_generator(sample_pair):
    tifffile = pytest.importorskip("tifffile")
    hazy, astronaut = make_hazy_astronaut_pair()
    expected = {"fluorescence_degraded.tif": sample_pair[0], "fluorescence_clean.tif": sample_pair[1],
                "astronaut_hazy.tif": hazy, "astronaut_clean.tif": astronaut}
    for name, array in expected.items():
        path = SAMPLE_DIR / name
        assert path.is_file(), f"{path} missing: run python sample_data/make_samples.py"
        stored = tifffile.imread(path)
        assert stored.dtype == array.dtype, name
        np.testing.assert_array_equal(stored, array, err_msg=f"{name}: run python sample_data/make_samples.py")
    assert load_make_samples().check_samples(SAMPLE_DIR) == []


def test_make_samples_check_detects_a_changed_file(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    make_samples = load_make_samples()
    assert make_samples.main(["--out", str(tmp_path)]) == 0
    assert make_samples.check_samples(tmp_path) == []
    degraded = tifffile.imread(tmp_path / "fluorescence_degraded.tif")
    degraded[0, 0] += 1
    tifffile.imwrite(tmp_path / "fluorescence_degraded.tif", degraded)
    (tmp_path / "astronaut_clean.tif").unlink()
    assert sorted(make_samples.check_samples(tmp_path)) == [
        "astronaut_clean.tif: missing", "fluorescence_degraded.tif: differs from the generator"]
    assert make_samples.main(["--check", "--out", str(tmp_path)]) == 1


def test_synthetic_imports_no_gui_or_torch():
    code = (
        "import json, sys\n"
        "import perceive_ir.synthetic as s\n"
        "s.make_fluorescence_pair((32, 32))\n"
        "s.make_hazy_astronaut_pair()\n"
        "bad = ('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'vispy', 'magicgui', 'torch',\n"
        "       'torchvision', 'perceive_ir.napari')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in bad or m.startswith(bad))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
