"""Fine structure: how much noise a restorer removes from gratings, and how much contrast it keeps.

Set12's largest gap to BM3D is Barbara, whose fine stripes the network flattens or leaves noisy
(``set12_images.py``). This measures the same thing on synthetic gratings, period by period:
an oblique sinusoidal grating (``0.5 + 0.25 sin``, 30 degrees off the pixel grid) of a given
period, Gaussian noise of ``--sigma`` on it (``np.random.seed(0)``, float, not clipped), and

- PSNR of the input and of the restored output (clipped to [0, 1]), BM3D given the true sigma
  beside it (``--no-bm3d`` leaves it out);
- *contrast kept*: the amplitude of the grating's frequency in the output over the clean
  one's (1: kept; below: flattened; above: sharpened), of the noisy input's restoration and of
  the noiseless grating's (a restorer should return a clean input unchanged).

Usage (from the repository root)::

    PYTHONPATH=src python benchmarks/fine_structure.py [--model NAME|FILE | --run FOLDER]
        [--periods 3 4 6 8 12 24] [--sigma 25] [--size 256] [--no-bm3d] [--threads 1]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import evaluate  # noqa: E402
from _common import held_out_restorer  # noqa: E402
from haze_global_error import psnr  # noqa: E402

ANGLE = np.deg2rad(30.0)
AMPLITUDE = 0.25


def grating_phase(size: int, period: float) -> np.ndarray:
    """Phase (radians) of the oblique grating at every pixel of a ``size`` x ``size`` image."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    return 2 * np.pi * (x * np.cos(ANGLE) + y * np.sin(ANGLE)) / period


def grating(size: int, period: float) -> np.ndarray:
    return (0.5 + AMPLITUDE * np.sin(grating_phase(size, period))).astype(np.float32)


def contrast(image: np.ndarray, phase: np.ndarray) -> float:
    """Amplitude of the grating's frequency in ``image`` over the clean grating's amplitude."""
    values = np.asarray(image, np.float64)
    return float(2 * abs(np.mean((values - values.mean()) * np.exp(-1j * phase))) / AMPLITUDE)


def main(argv: list[str] | None = None) -> dict[float, dict[str, float]]:
    def add_arguments(parser) -> None:
        parser.add_argument("--periods", type=float, nargs="+", default=[3, 4, 6, 8, 12, 24],
                            help="grating periods in pixels (above 2: the Nyquist limit)")
        parser.add_argument("--sigma", type=float, default=25.0, help="noise level on the 0-255 scale")
        parser.add_argument("--size", type=int, default=256, help="side of the square test images")
        parser.add_argument("--no-bm3d", action="store_true", help="the restorer alone (no BM3D column)")

    arguments, model = held_out_restorer(__doc__.splitlines()[0], argv, add_arguments)
    if any(period <= 2 for period in arguments.periods):
        raise SystemExit(f"--periods must be above 2 pixels (the Nyquist limit), got {arguments.periods}")
    if arguments.size < 16:
        raise SystemExit(f"--size must be at least 16, got {arguments.size}")
    results: dict[float, dict[str, float]] = {}
    for period in arguments.periods:
        clean = grating(arguments.size, period)
        phase = grating_phase(arguments.size, period)
        np.random.seed(0)
        noisy = (clean + np.random.normal(0, arguments.sigma / 255.0, clean.shape)).astype(np.float32)
        restored = evaluate.model_restore(model, noisy)
        row = {"input": psnr(noisy, clean), "restorer": psnr(restored, clean),
               "contrast": contrast(np.clip(restored, 0, 1), phase),
               "contrast_clean": contrast(np.clip(evaluate.model_restore(model, clean), 0, 1), phase)}
        if not arguments.no_bm3d:
            denoised = evaluate.bm3d_denoise(noisy, arguments.sigma / 255.0)
            row["bm3d"] = psnr(denoised, clean)
            row["bm3d_contrast"] = contrast(np.clip(denoised, 0, 1), phase)
        results[period] = row
    bm3d = "" if arguments.no_bm3d else " BM3D (true sigma) beside it,"
    print(f"\n### Gratings, sigma {arguments.sigma:g}, {arguments.size}x{arguments.size}: {arguments.source},{bm3d} "
          "PSNR dB and contrast kept\n")
    if arguments.no_bm3d:
        print("| period px | input | restorer | contrast kept | contrast kept, noiseless input |\n|---|---|---|---|---|")
    else:
        print("| period px | input | restorer | BM3D | contrast kept | BM3D contrast | contrast kept, noiseless input |\n"
              "|---|---|---|---|---|---|---|")
    for period, row in results.items():
        cells = [f"{period:g}", f"{row['input']:.2f}", f"{row['restorer']:.2f}"]
        if not arguments.no_bm3d:
            cells.append(f"{row['bm3d']:.2f}")
        cells.append(f"{row['contrast']:.2f}")
        if not arguments.no_bm3d:
            cells.append(f"{row['bm3d_contrast']:.2f}")
        cells.append(f"{row['contrast_clean']:.2f}")
        print("| " + " | ".join(cells) + " |")
    return results


if __name__ == "__main__":
    main()
