"""The perceive-ir command end to end (in-process and as a console script)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from perceive_ir.cli import main


@pytest.fixture
def noisy_tif(tmp_path):
    rng = np.random.default_rng(0)
    image = (np.clip(rng.random((96, 80)) * 0.3 + 0.4, 0, 1) * 60000).astype(np.uint16)
    path = tmp_path / "noisy.tif"
    tifffile.imwrite(path, image)
    return path


def test_restore_writes_result_and_report(tmp_path, noisy_tif, restorer_file, perceiver_file, capsys) -> None:
    out = tmp_path / "restored.tif"
    report = tmp_path / "report.json"
    code = main(["restore", str(noisy_tif), str(out), "--model", restorer_file, "--tile-size", "48",
                 "--tile-overlap", "8", "--device", "cpu", "--report", str(report), "--perceiver", perceiver_file])
    assert code == 0
    restored = tifffile.imread(out)
    assert restored.shape == (96, 80) and restored.dtype == np.uint16
    payload = json.loads(report.read_text())
    assert set(payload) >= {"before", "after", "seconds"}
    assert payload["after"]["tiles"] == 1 and 0 <= payload["after"]["mean_score"] <= 1
    captured = capsys.readouterr()
    assert "restored" in captured.out and "tile" in captured.err  # tqdm bar on stderr


def test_ensemble_option_restores_with_rotated_copies(tmp_path, noisy_tif, restorer_file, capsys) -> None:
    plain, averaged = tmp_path / "plain.tif", tmp_path / "averaged.tif"
    common = ["--model", restorer_file, "--tile-size", "48", "--tile-overlap", "8", "--device", "cpu", "--quiet"]
    assert main(["restore", str(noisy_tif), str(plain), *common]) == 0
    assert main(["restore", str(noisy_tif), str(averaged), *common, "--ensemble", "4"]) == 0
    first, second = tifffile.imread(plain), tifffile.imread(averaged)
    assert first.shape == second.shape and not np.array_equal(first, second)
    with pytest.raises(SystemExit):
        main(["restore", str(noisy_tif), str(tmp_path / "x.tif"), *common, "--ensemble", "3"])
    assert "invalid choice" in capsys.readouterr().err


def test_deblur_option_reaches_restore(tmp_path, identity_restorer_file, capsys) -> None:
    """Default (auto) deconvolves a detected motion blur; --deblur off leaves it to the network
    (here an untrained one, the identity, so the output is the input)."""
    from skimage import data as skdata

    from perceive_ir import degrade as D

    clean = skdata.astronaut()[:256, 128:384]
    blurred = np.round(np.clip(D.motion_blur(clean.astype(np.float32) / 255, 11.0, 60.0), 0, 1) * 255).astype(np.uint8)
    source = tmp_path / "shaken.tif"
    tifffile.imwrite(source, blurred, photometric="rgb")
    common = ["--model", identity_restorer_file, "--device", "cpu", "--quiet"]
    assert main(["restore", str(source), str(tmp_path / "auto.tif"), *common]) == 0
    assert main(["restore", str(source), str(tmp_path / "off.tif"), *common, "--deblur", "off"]) == 0
    error = lambda path: np.mean((tifffile.imread(path).astype(float) - clean) ** 2)  # noqa: E731
    assert np.abs(tifffile.imread(tmp_path / "off.tif").astype(int) - blurred).max() <= 1
    assert error(tmp_path / "auto.tif") < 0.6 * error(tmp_path / "off.tif")
    with pytest.raises(SystemExit):
        main(["restore", str(source), str(tmp_path / "x.tif"), *common, "--deblur", "on"])
    assert "invalid choice" in capsys.readouterr().err


def test_reference_adds_psnr_of_input_and_result(tmp_path, noisy_tif, restorer_file, perceiver_file, capsys) -> None:
    from perceive_ir.cli import reference_psnr

    clean = tmp_path / "clean.tif"
    noisy = tifffile.imread(noisy_tif).astype(np.float64)
    reference = (noisy + 300 * np.random.default_rng(1).standard_normal(noisy.shape)).clip(0, 65535).astype(np.uint16)
    tifffile.imwrite(clean, reference)
    out, report = tmp_path / "restored.tif", tmp_path / "report.json"
    assert main(["restore", str(noisy_tif), str(out), "--model", restorer_file, "--device", "cpu", "--quiet",
                 "--report", str(report), "--perceiver", perceiver_file, "--reference", str(clean)]) == 0
    measured = json.loads(report.read_text())["reference"]
    peak = float(reference.max()) - float(reference.min())
    expected = 10 * np.log10(peak ** 2 / np.mean((noisy - reference) ** 2))
    assert measured["psnr_input_db"] == pytest.approx(expected, abs=1e-3) and np.isfinite(measured["psnr_output_db"])
    assert "PSNR vs" in capsys.readouterr().out
    # a reference of another shape, or without --report, is a clear error before any work
    tifffile.imwrite(tmp_path / "small.tif", reference[:10])
    with pytest.raises(ValueError, match="shape"):
        reference_psnr(str(noisy_tif), str(out), str(tmp_path / "small.tif"))
    assert main(["restore", str(noisy_tif), str(tmp_path / "x.tif"), "--model", restorer_file, "--quiet",
                 "--reference", str(clean)]) == 1
    assert "--reference needs --report" in capsys.readouterr().err and not (tmp_path / "x.tif").exists()


def test_existing_output_is_refused_then_overwritten(tmp_path, noisy_tif, restorer_file, capsys) -> None:
    out = tmp_path / "restored.tif"
    out.write_bytes(b"keep me")
    code = main(["restore", str(noisy_tif), str(out), "--model", restorer_file, "--device", "cpu", "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert "exists" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == b"keep me"
    assert main(["restore", str(noisy_tif), str(out), "--model", restorer_file, "--device", "cpu", "--quiet",
                 "--overwrite", "--tile-size", "64"]) == 0
    assert tifffile.imread(out).shape == (96, 80)


def test_perceive_prints_summary_and_json(tmp_path, noisy_tif, perceiver_file, capsys) -> None:
    target = tmp_path / "quality.json"
    assert main(["perceive", str(noisy_tif), "--model", perceiver_file, "--tile-size", "32", "--json",
                 str(target), "--device", "cpu", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "9 tiles of 32 px" in out
    payload = json.loads(target.read_text())
    assert np.asarray(payload["probabilities"]).shape == (3, 3, 3)


@pytest.mark.parametrize("kind", ["noise", "haze", "rain", "motion_blur", "low_light"])
def test_degrade(tmp_path, noisy_tif, kind) -> None:
    out = tmp_path / f"{kind}.tif"
    assert main(["degrade", str(noisy_tif), str(out), "--kind", kind, "--level", "high", "--seed", "3"]) == 0
    degraded = tifffile.imread(out)
    assert degraded.shape == (96, 80) and degraded.dtype == np.uint16
    assert not np.array_equal(degraded, tifffile.imread(noisy_tif))


def test_degrade_unknown_kind(tmp_path, noisy_tif, capsys) -> None:
    assert main(["degrade", str(noisy_tif), str(tmp_path / "x.tif"), "--kind", "nosie"]) == 1
    assert "noise" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["restore", "missing.tif", "out.tif", "--quiet"], "missing.tif"),
    (["perceive", "missing.tif", "--quiet"], "missing.tif"),
])
def test_errors_are_one_line(argv, message, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("perceive-ir")


def test_corrupt_weights_exit_code(tmp_path, noisy_tif, capsys) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file at all")
    assert main(["restore", str(noisy_tif), str(tmp_path / "o.tif"), "--model", str(broken), "--quiet"]) == 1
    assert "broken.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "o.tif").exists()


def test_models_lists_the_zoo(capsys) -> None:
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = {row["name"] for row in rows}
    from perceive_ir import zoo

    assert {zoo.DEFAULT_RESTORER, zoo.DEFAULT_PERCEIVER} <= names


def test_console_script_runs(tmp_path) -> None:
    """The installed entry point (or ``python -m perceive_ir.cli``) answers --help and models."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "-m", "perceive_ir.cli", "models"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    from perceive_ir import zoo

    assert zoo.DEFAULT_RESTORER in done.stdout
