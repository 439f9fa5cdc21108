"""Smoke test: each benchmark script runs end to end at a tiny size (``--quick``);
``perceiver_tiles.py`` runs on the bundled models and sample and checks their verdict.

The scripts live in ``benchmarks/`` (not part of the package) and are run as a user
would, in a subprocess. Sizes are tiny; this checks that the scripts work and print their
tables, not the numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def _run(script: str, *args: str, timeout: int = 240) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    result = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                            env=env, timeout=timeout, cwd=ROOT)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result.stdout


def test_speed_quick(tmp_path: Path) -> None:
    out = _run("speed.py", "--quick", "--threads", "1", "--model", "random", "--json", str(tmp_path / "s.json"))
    for title in ("(a1)", "(a2)", "(b)", "(c1)", "(c2)", "(c3)", "(c4)", "(d)", "(e)", "(f)"):
        assert title in out, out
    assert "loadavg" in out and "torch threads 1" in out
    assert "RANDOM weights" in out
    assert (tmp_path / "s.json").is_file()


def test_memory_quick(tmp_path: Path) -> None:
    # the script's --quick sizes (512^2, 1024^2) shrunk further to keep the suite fast
    out = _run("memory.py", "--quick", "--sizes", "256", "--tile", "128", "--threads", "1", "--model", "random",
               "--signals", "INT", "KILL", "--tmp", str(tmp_path))
    assert "| 256x256 |" in out, out
    assert "peak RSS MB" in out
    rows = [line for line in out.splitlines() if line.startswith("| 256x256 | SIG")]
    assert len(rows) == 2, out
    for row in rows:
        assert "| no |" in row, row  # nothing under the output name after an interrupt
    assert not list(tmp_path.iterdir())  # temporary inputs/outputs removed


def test_perceiver_tiles_rates_the_fluorescence_sample_in_quality_order(tmp_path: Path) -> None:
    # the bundled models on the bundled sample, at the heatmap widget's default tile size:
    # the clean reference above its restoration above the degraded image
    out = _run("perceiver_tiles.py", "--samples", "fluorescence", "--tile-sizes", "224", "--threads", "1",
               "--json", str(tmp_path / "p.json"))
    assert "| fluorescence | 224 | restored |" in out, out
    rows = {row["image"]: row for row in json.loads((tmp_path / "p.json").read_text())["rows"]}
    assert rows["clean"]["mean_score"] > rows["restored"]["mean_score"] > rows["degraded"]["mean_score"]
    assert rows["restored"]["psnr"] > rows["degraded"]["psnr"] + 5


def test_deblur_gate_quick() -> None:
    import pytest

    sys.path.insert(0, str(ROOT / "training"))
    from data import DATASETS_DIR

    if not (DATASETS_DIR / "cbsd432").is_dir():
        pytest.skip("needs ../shared/datasets (CBSD432 training images)")
    out = _run("deblur_gate.py", "--images", "3", "--size", "128")
    assert "| 13 | " in out and "| rain | " in out and "| clean | 0/3 |" in out, out


def test_set12_images_prints_each_image_and_the_mean() -> None:
    import pytest

    sys.path.insert(0, str(ROOT / "training"))
    from data import DATASETS_DIR

    if not (DATASETS_DIR / "set12").is_dir():
        pytest.skip("needs ../shared/datasets (Set12)")
    out = _run("set12_images.py", "--images", "2", "--sigmas", "50", "--no-bm3d", "--threads", "1")
    cells = {line.strip("|").split("|")[0].strip(): [c.strip() for c in line.strip("|").split("|")[1:]]
             for line in out.splitlines() if line.startswith("| ")}
    assert cells["01"][0] == cells["02"][0] == "256x256", out
    values = [float(cells[name][1]) for name in ("01", "02")]
    assert all(20 < v < 40 for v in values)  # the noisy input is 14.8 dB: the restorer restores
    assert abs(float(cells["mean"][1]) - sum(values) / 2) < 0.011


def test_fine_structure_contrast_and_table() -> None:
    sys.path.insert(0, str(BENCH))
    import fine_structure

    phase = fine_structure.grating_phase(64, 6)
    assert abs(fine_structure.contrast(fine_structure.grating(64, 6), phase) - 1) < 0.02
    assert fine_structure.contrast(np.full((64, 64), 0.5), phase) < 1e-9  # flat: the grating is gone
    halved = 0.5 + 0.5 * (fine_structure.grating(64, 6) - 0.5)
    assert abs(fine_structure.contrast(halved, phase) - 0.5) < 0.02
    out = _run("fine_structure.py", "--periods", "4", "24", "--size", "64", "--no-bm3d", "--threads", "1")
    rows = {line.strip("|").split("|")[0].strip(): [float(c) for c in line.strip("|").split("|")[1:]]
            for line in out.splitlines() if line.startswith("| ") and not line.startswith("| period")}
    assert set(rows) == {"4", "24"}, out
    for values in rows.values():
        assert 19 < values[0] < 21.5, out  # sigma 25 on a float image: 20.2 dB
        assert 0 <= values[2] < 2 and 0 <= values[3] < 2, out
    assert rows["24"][1] > rows["24"][0] + 3, out  # a coarse grating is denoised
