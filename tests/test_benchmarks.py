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
