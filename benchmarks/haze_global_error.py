"""How much of the restorer's haze error is global colour and contrast.

For each held-out haze case of ``training/evaluate.py`` (same crops, strengths and seeds) it
prints the PSNR of the input, of the model, of the dark channel prior and of the model's output
after an *oracle* per-channel gain and offset fitted to the clean image (a diagnostic, not a
method: it needs the clean image). A large gap between "model" and "model + oracle affine" means
the error is mostly global (airlight, contrast), which local filters cannot fix.

Usage (from the repository root)::

    PYTHONPATH=src python benchmarks/haze_global_error.py [--model NAME|FILE] [--images 12] [--threads 2]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from skimage.metrics import peak_signal_noise_ratio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import evaluate  # noqa: E402
from _common import held_out_restorer  # noqa: E402



def psnr(image: np.ndarray, clean: np.ndarray) -> float:
    """PSNR of ``image`` clipped to [0, 1], as ``evaluate.Scores`` scores it."""
    return float(peak_signal_noise_ratio(clean.astype(np.float64), np.clip(image, 0, 1).astype(np.float64), data_range=1.0))


def oracle_affine(output: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """``output`` with each channel mapped by the least-squares gain and offset onto ``clean``."""
    channels = [np.polyval(np.polyfit(output[..., c].ravel(), clean[..., c].ravel(), 1), output[..., c])
                for c in range(output.shape[-1])]
    return np.stack(channels, axis=-1)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args, model = held_out_restorer(__doc__.splitlines()[0], argv)
    columns = ("input", "model", "dark channel prior", "model + oracle affine")
    rows = []
    print("| crop | level | " + " | ".join(columns) + " |\n|---|---|" + "---|" * len(columns))
    for index, case in enumerate(evaluate.task_cases("haze", evaluate.held_out_crops(args.images))):
        output = evaluate.model_restore(model, case.degraded)
        row = [psnr(case.degraded, case.clean), psnr(output, case.clean),
               psnr(evaluate.dark_channel_dehaze(case.degraded, case.clean), case.clean),
               psnr(oracle_affine(output, case.clean), case.clean)]
        rows.append(row)
        print(f"| {index} | {case.params['level']} | " + " | ".join(f"{v:.2f}" for v in row) + " |", flush=True)
    means = dict(zip(columns, np.mean(rows, axis=0).tolist()))
    print("| mean | | " + " | ".join(f"{v:.2f}" for v in means.values()) + " |")
    return means


if __name__ == "__main__":
    main()
