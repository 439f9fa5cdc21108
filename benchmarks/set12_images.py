"""Where a restorer loses to BM3D on Set12: PSNR image by image.

The report (``training/evaluate.py``) gives Set12 means; this prints each image's PSNR for
the restorer (``restore()`` with its defaults, as the report runs it) and for BM3D given the
true sigma, the gap, and the share of the mean gap that each image carries. Same protocol as
the report: float noise drawn with ``np.random.seed(0)`` per image, not clipped, not quantised;
outputs clipped to [0, 1] before scoring.

Usage (from the repository root)::

    PYTHONPATH=src python benchmarks/set12_images.py [--model NAME|FILE | --run FOLDER] [--sigmas 15 25 50]
        [--no-bm3d] [--threads 1]

BM3D takes most of the time (three sigmas: about five minutes on one thread); ``--no-bm3d``
prints the restorer alone.
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


def main(argv: list[str] | None = None) -> dict[int, dict[str, dict[str, float]]]:
    def add_arguments(parser) -> None:
        parser.add_argument("--sigmas", type=float, nargs="+", default=[15.0, 25.0, 50.0],
                            help="noise levels on the 0-255 scale")
        parser.add_argument("--no-bm3d", action="store_true", help="the restorer alone (no BM3D column)")

    arguments, model = held_out_restorer(__doc__.splitlines()[0], argv, add_arguments)
    images = evaluate.set12(arguments.images)
    results: dict[int, dict[str, dict[str, float]]] = {}
    for sigma in arguments.sigmas:
        rows: dict[str, dict[str, float]] = {}
        for name, clean in images:
            np.random.seed(0)
            noisy = (clean.astype(np.float64) + np.random.normal(0, sigma / 255.0, clean.shape)).astype(np.float32)
            row = {"restorer": psnr(evaluate.model_restore(model, noisy), clean)}
            if not arguments.no_bm3d:
                row["bm3d"] = psnr(evaluate.bm3d_denoise(noisy, sigma / 255.0), clean)
            rows[name] = row
        results[int(sigma)] = rows
        print(f"\n### Set12, sigma {sigma:g}: {arguments.source} vs BM3D (true sigma), PSNR dB\n")
        if arguments.no_bm3d:
            print("| image | size | restorer |\n|---|---|---|")
        else:
            print("| image | size | restorer | BM3D | gap | share of the mean gap |\n|---|---|---|---|---|---|")
        gaps = [row["bm3d"] - row["restorer"] for row in rows.values()] if not arguments.no_bm3d else []
        total = sum(gaps)
        for (name, clean), row in zip(images, rows.values()):
            size = f"{clean.shape[1]}x{clean.shape[0]}"
            if arguments.no_bm3d:
                print(f"| {name} | {size} | {row['restorer']:.2f} |")
            else:
                gap = row["bm3d"] - row["restorer"]
                share = f"{100 * gap / total:.0f}%" if total > 0 else "-"
                print(f"| {name} | {size} | {row['restorer']:.2f} | {row['bm3d']:.2f} | {gap:+.2f} | {share} |")
        mean = np.mean([row["restorer"] for row in rows.values()])
        if arguments.no_bm3d:
            print(f"| mean | | {mean:.2f} |")
        else:
            print(f"| mean | | {mean:.2f} | {np.mean([row['bm3d'] for row in rows.values()]):.2f} | "
                  f"{np.mean(gaps):+.2f} | 100% |")
    return results


if __name__ == "__main__":
    main()
