"""Tests of training/evaluate.py: the classical baselines work and the report is built."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import load_benchmark, tiny_restorer_config

TRAINING = Path(__file__).resolve().parents[1] / "training"
sys.path.insert(0, str(TRAINING))

import data  # noqa: E402
import evaluate  # noqa: E402

from perceive_ir import degrade as D  # noqa: E402

HAVE_DATASETS = (data.DATASETS_DIR / "set12").is_dir() and (data.DATASETS_DIR / "cbsd432").is_dir()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((np.clip(a, 0, 1).astype(np.float64) - b) ** 2)))


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()[100:228, 150:278].astype(np.float32) / 255.0


def test_dark_channel_prior_removes_synthetic_haze(scene):
    hazy = D.degrade(scene, "haze", 0.7, rng=0)
    dehazed = evaluate.dark_channel_prior(hazy)
    assert dehazed.shape == scene.shape
    assert psnr(dehazed, scene) > psnr(hazy, scene) + 2.0


def test_richardson_lucy_with_the_true_kernel_sharpens_without_border_ringing(scene):
    gray = scene.mean(axis=-1)
    kernel = D.motion_kernel(11, 30.0)
    blurred = D.motion_blur(gray, 11, 30.0)
    restored = evaluate.richardson_lucy(blurred, kernel, gray)
    assert psnr(restored, gray) > psnr(blurred, gray) + 1.0
    border = np.concatenate([(restored - gray)[:6].ravel(), (restored - gray)[-6:].ravel()])
    assert np.sqrt(np.mean(border ** 2)) < 0.1


def test_oracle_tuning_picks_the_candidate_closest_to_the_reference(scene):
    candidates = [lambda: scene + 0.2, lambda: scene + 0.01, lambda: scene - 0.1]
    assert np.allclose(evaluate.oracle(candidates, scene), np.clip(scene + 0.01, 0, 1))


def test_classical_denoisers_improve_noisy_input(scene):
    rng = np.random.default_rng(0)
    noisy = (scene + rng.normal(0, 25 / 255, scene.shape)).astype(np.float32)
    for result in (evaluate.tv(noisy, 25 / 255, scene), evaluate.nlmeans(noisy, 25 / 255, scene),
                   evaluate.wavelet(noisy, 25 / 255)):
        assert result.shape == scene.shape and psnr(result, scene) > psnr(noisy, scene) + 3.0


def test_logistic_regression_separates_separable_tiers():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    features = rng.normal(0, 0.3, (120, 4)) + labels[:, None] * np.array([1.0, -1.0, 0.0, 0.5])
    predict = evaluate.logistic_regression(features, labels)
    assert (predict(features) == labels).mean() > 0.95
    assert evaluate.classical_features(torch.rand(3, 3, 32, 32)).shape == (3, 8)


def test_anscombe_stabilises_photon_noise_and_inverts_without_bias():
    from perceive_ir.degrade import add_poisson_gaussian_noise

    for value, photons, read_noise in [(0.3, 20.0, 1.0), (0.05, 10.0, 1.5), (0.8, 100.0, 0.5)]:
        vst = evaluate.Anscombe(photons, read_noise)
        noisy = add_poisson_gaussian_noise(np.full((200, 200), value, np.float32), photons, read_noise, rng=0)
        transformed = vst.forward(noisy)
        assert transformed.std() == pytest.approx(1.0, abs=0.1)  # measured 1.01-1.08
        # the exact unbiased inverse of the mean; the algebraic inverse is 0.022 at 0.05 (10 photons)
        assert float(vst.inverse(np.array(transformed.mean()))) == pytest.approx(value, abs=0.005)
    # a denoiser run in the stabilised domain gets unit-variance noise scaled to [0, 1]
    seen = {}

    def denoiser(image, sigma):
        seen.update(low=float(image.min()), high=float(image.max()), sigma=sigma)
        return image

    vst = evaluate.Anscombe(20.0, 1.0)
    ramp = add_poisson_gaussian_noise(np.tile(np.linspace(0.1, 0.9, 64, dtype=np.float32), (64, 1)), 20.0, 1.0, rng=1)
    assert np.allclose(vst.denoise(ramp, denoiser), vst.inverse(vst.forward(ramp)), atol=1e-5)
    assert seen["low"] == pytest.approx(0.0) and seen["high"] == pytest.approx(1.0)
    assert seen["sigma"] == pytest.approx(1.0 / np.ptp(vst.forward(ramp)))


def test_scores_table_marks_the_best_method_and_reports_speed(scene):
    scores = evaluate.Scores()
    case = evaluate.Case(scene * 0.5, scene)
    scores.add("row", "input", case.degraded, case, 0.0)
    scores.add("row", "good", scene * 0.98, case, 0.5)
    scores.add("row", "bad", scene * 0.9, case, 0.1)
    table = scores.table(["row"], ["input", "good", "bad"])
    cells = [c.strip() for c in table.splitlines()[2].split("|")[1:-1]]
    assert cells[0] == "row" and not cells[1].startswith("**") and cells[2].startswith("**") and not cells[3].startswith("**")
    speed = table.splitlines()[-1].split("|")
    assert speed[1].strip() == "s / megapixel" and float(speed[3]) == pytest.approx(0.5 / (128 * 128 / 1e6), rel=1e-3)


def test_each_tables_speed_row_counts_only_its_own_rows(scene):
    scores = evaluate.Scores()
    case = evaluate.Case(scene * 0.5, scene)
    megapixels = 128 * 128 / 1e6
    scores.add("first", "model", scene, case, 1.0)
    scores.add("second", "model", scene, case, 3.0)
    for rows, seconds in ((["first"], 1.0), (["second"], 3.0), (["first", "second"], 2.0)):
        speed = scores.table(rows, ["model"]).splitlines()[-1].split("|")
        assert float(speed[2]) == pytest.approx(seconds / megapixels, rel=1e-3)
    assert scores.to_dict()["seconds_per_megapixel"]["model"] == pytest.approx(2.0 / megapixels)


def test_without_classical_methods_only_cached_ones_are_reported(scene):
    case = evaluate.Case(scene * 0.5, scene)

    def refuse():
        raise AssertionError("a classical method ran with classical=False")

    scores = evaluate.Scores(classical=False, cache={"row | TV | 0": [30.0, 0.9, 2.0]})
    scores.run("row", "perceive-ir (blind)", case, lambda: scene * 0.98)
    scores.run("row", "TV", case, refuse)  # read from the cache
    scores.run("row", "BM3D", case, refuse)  # not cached: skipped
    table = scores.table(["row"], ["perceive-ir (blind)", "TV", "BM3D"])
    cells = [c.strip() for c in table.splitlines()[2].split("|")[1:-1]]
    assert cells[1].startswith("**") and cells[2] == "30.00 / 0.900" and cells[3] == ""
    assert set(scores.to_dict()["psnr"]) == {"row | perceive-ir (blind)", "row | TV"}  # no NaN for BM3D
    # a cache that holds fewer of the row's images than the model was scored on: the cell says so
    # and is not the row's best, though its mean is higher
    scores = evaluate.Scores(classical=False, cache={"row | TV | 0": [60.0, 0.99, 2.0]})
    for _ in range(2):
        scores.run("row", "perceive-ir (blind)", case, lambda: scene * 0.98)
        scores.run("row", "TV", case, refuse)  # "row | TV | 1" is not cached
    cells = [c.strip() for c in scores.table(["row"], ["perceive-ir (blind)", "TV"]).splitlines()[2].split("|")[1:-1]]
    assert cells[1].startswith("**") and cells[2] == "60.00 / 0.990 (1 of 2 images)"


@pytest.mark.skipif(not HAVE_DATASETS, reason="needs ../shared/datasets (Set12, CBSD432)")
def test_quick_report_runs_every_restoration_section(restorer_file, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setattr(evaluate, "LEVELS", (0.5,))
    monkeypatch.setattr(evaluate, "bm3d_denoise", lambda image, sigma, per_channel=False: image)  # BM3D is slow
    out, cache = tmp_path / "report.json", tmp_path / "baselines.json"
    result = evaluate.main(["--model", restorer_file, "--images", "1", "--sections", "set12", "rgb", "tasks",
                            "--json", str(out), "--baseline-cache", str(cache)])
    stored = json.loads(out.read_text())
    assert stored["markdown"] == result["markdown"]
    for row in ("Set12 sigma 25 | perceive-ir (blind)", "CBSD held-out sigma 50 | perceive-ir per channel",
                "haze | dark channel prior", "motion blur | Richardson-Lucy (true kernel)",
                "microscopy (skimage cell) | TV", "low light | gamma / CLAHE", "rain | median filter",
                "photon noise (Poisson-Gaussian) | NL-means", "photon noise, band-limited (micrograph-like) | TV",
                "microscopy (skimage cell) | NL-means + Anscombe", "photon noise (Poisson-Gaussian) | BM3D + Anscombe",
                "microscopy (synthetic) | TV + Anscombe"):
        assert np.isfinite(stored["psnr"][row]), row
    assert stored["psnr"]["Set12 sigma 25 | TV"] > stored["psnr"]["Set12 sigma 25 | input"] + 3
    assert "| s / megapixel |" in result["markdown"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["baselines.json", "report.json"]  # renamed, no temporaries
    # the second run reads the classical methods from the cache (they must not run again)
    def refuse(*args, **kwargs):
        raise AssertionError("a cached classical method ran again")

    for name in ("tv", "nlmeans", "wavelet", "dark_channel_dehaze", "richardson_lucy", "brighten", "median_derain",
                 "tv_anscombe", "nlmeans_anscombe", "bm3d_anscombe"):
        monkeypatch.setattr(evaluate, name, refuse)
    again = evaluate.main(["--model", restorer_file, "--images", "1", "--sections", "set12", "tasks",
                           "--baseline-cache", str(cache), "--ensemble", "2"])
    for key in ("Set12 sigma 25 | TV", "haze | dark channel prior", "microscopy (skimage cell) | NL-means"):
        assert again["psnr"][key] == stored["psnr"][key]
    # --ensemble restores with mirrored copies (the tiny random model is not equivariant)
    assert "self-ensemble of 2" in again["markdown"]
    assert again["psnr"]["Set12 sigma 25 | perceive-ir (blind)"] != stored["psnr"]["Set12 sigma 25 | perceive-ir (blind)"]


@pytest.mark.skipif(not HAVE_DATASETS, reason="needs ../shared/datasets (CBSD432 held-out crops)")
def test_haze_global_error_benchmark_fits_a_gain_and_offset(restorer_file, capsys):
    module = load_benchmark("haze_global_error")
    clean = np.random.default_rng(0).uniform(0.2, 0.8, (16, 16, 3))
    np.testing.assert_allclose(module.oracle_affine(0.5 * clean + 0.1, clean), clean, atol=1e-6)
    means = module.main(["--model", restorer_file, "--images", "1"])
    assert set(means) == {"input", "model", "dark channel prior", "model + oracle affine"}
    # the identity is one of the fitted maps, so the fit is never worse than the output itself
    assert means["model + oracle affine"] >= means["model"] - 1e-3
    assert "| mean |" in capsys.readouterr().out


@pytest.mark.skipif(not HAVE_DATASETS, reason="needs ../shared/datasets (CBSD432 held-out crops)")
def test_color_head_benchmark_compares_the_model_with_and_without_its_head(restorer_file, capsys, tmp_path):
    from perceive_ir.models import Restorer
    from perceive_ir.zoo import save_weights

    module = load_benchmark("color_head")
    results = module.main(["--model", restorer_file, "--images", "1"])  # the tiny test model has a (random) head
    assert set(results) == set(module.TASKS)
    assert all(r["gain"] > 0 for r in results.values())
    assert any(abs(r["with"] - r["without"]) > 1e-3 for r in results.values())  # the head changes the output
    assert "| haze |" in capsys.readouterr().out
    plain = tmp_path / "plain.safetensors"
    torch.manual_seed(0)
    save_weights(Restorer(tiny_restorer_config()), plain, card={})
    with pytest.raises(SystemExit, match="no colour head"):
        module.main(["--model", str(plain), "--images", "1"])


@pytest.mark.skipif(not HAVE_DATASETS, reason="needs ../shared/datasets (Set12, CBSD432 held-out crops)")
def test_experts_benchmark_reports_each_tasks_routing(capsys, tmp_path):
    from perceive_ir.models import Restorer
    from perceive_ir.zoo import save_weights

    module = load_benchmark("experts")
    torch.manual_seed(0)
    args = dict(width=8, encoder_blocks=(1, 1), latent_blocks=1, decoder_blocks=(1, 1), experts=3)
    model = Restorer(tiny_restorer_config(backbone_args=args))
    with torch.no_grad():
        model.router.weight.mul_(50)  # a decided router: images of different tasks route differently
    routed = tmp_path / "experts.safetensors"
    save_weights(model, routed, card={})
    results = module.main(["--model", str(routed), "--images", "1"])
    assert {"Set12 sigma 15", "haze", "synthetic microscopy", "skimage cell"} <= set(results)
    for row in results.values():
        assert len(row["mean"]) == 3 and sum(row["mean"]) == pytest.approx(1.0, abs=1e-5)
        assert 1 / 3 - 1e-6 <= row["largest"] <= 1 and 0 <= row["entropy"] <= np.log2(3) + 1e-6
    # the same weights as the restorer's own routing of that image
    image = module.case_sets(1)[4][1][0]
    tensor = torch.from_numpy(np.moveaxis(image, -1, 0).copy())[None]
    windows = module.condition_windows(256, 256, model.config.condition_crop)
    crops = torch.cat([tensor[..., y0:y1, x0:x1] for y0, y1, x0, x1 in windows])
    with torch.no_grad():
        expected = model.router(model.condition_from_crops(crops).vector(0)).softmax(-1)[0].numpy()
    np.testing.assert_allclose(module.routing(model, image), expected, atol=1e-5)
    assert len({tuple(np.round(r["mean"], 3)) for r in results.values()}) > 1
    assert "| haze |" in capsys.readouterr().out
    plain = tmp_path / "plain.safetensors"
    save_weights(Restorer(tiny_restorer_config()), plain, card={})
    with pytest.raises(SystemExit, match="no expert kernels"):
        module.main(["--model", str(plain), "--images", "1"])


@pytest.mark.skipif(not HAVE_DATASETS, reason="needs ../shared/datasets (CBSD432 held-out crops)")
def test_motion_blur_benchmark_reports_each_kernel_length(restorer_file, capsys):
    module = load_benchmark("motion_blur")
    results = module.main(["--model", restorer_file, "--images", "1", "--lengths", "5", "15"])
    assert set(results) == {5.0, 15.0}
    # the held-out crop blurred as evaluate.py's motion-blur row blurs it (same seeded angle)
    clean = evaluate.held_out_crops(1)[0]
    angle = float(np.random.default_rng([17, 0]).uniform(0.0, 180.0))
    assert results[5.0]["input"] == pytest.approx(psnr(D.motion_blur(clean, 5.0, angle), clean), abs=1e-4)
    assert results[15.0]["input"] < results[5.0]["input"]  # a longer kernel loses more
    for row in results.values():  # the true kernel lets Richardson-Lucy sharpen
        assert row["richardson_lucy"] > row["input"] + 0.3
        assert np.isfinite(row["model"]) and np.isfinite(row["output_vs_input"])
    assert "| 15 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        module.main(["--model", restorer_file, "--lengths"])  # a list option needs a value
