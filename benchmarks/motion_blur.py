"""How much a restorer deblurs linear motion blur, kernel length by kernel length.

On the held-out crops of ``training/evaluate.py`` (same images, the same seeded angles as its
motion-blur row) each crop is blurred by a linear motion kernel of every length in
``--lengths``. For each length it prints the mean PSNR of the blurred input, of the model's
blind restoration, of Richardson-Lucy given the true kernel (iterations oracle-tuned, as in
the report), and how far the model moved its input (PSNR of the output against the input:
high means the output is nearly the input). A model that leaves motion blur alone shows a
gain near zero at every length, including the short kernels that are easy to invert.

Usage (from the repository root)::

    PYTHONPATH=src python benchmarks/motion_blur.py [--model NAME|FILE] [--images 12] [--threads 2] [--lengths 5 9 15 21]
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

from perceive_ir import degrade as D  # noqa: E402

#: kernel lengths (pixels): ``degrade``'s motion-blur level 0 and the report's three strengths
LENGTHS = (5.0, 9.0, 15.0, 21.0)


def main(argv: list[str] | None = None) -> dict[float, dict[str, float]]:
    def add_lengths(parser) -> None:
        parser.add_argument("--lengths", type=float, nargs="+", default=list(LENGTHS),
                            help="motion kernel lengths in pixels (>= 1)")

    arguments, model = held_out_restorer(__doc__.splitlines()[0], argv, add_lengths)
    images = evaluate.held_out_crops(arguments.images)
    # the angles of evaluate.task_cases: image i draws its angle first from default_rng([17, i])
    angles = [float(np.random.default_rng([17, index]).uniform(0.0, 180.0)) for index in range(len(images))]
    results: dict[float, dict[str, float]] = {}
    print("| length (px) | input | model | model gain | Richardson-Lucy (true kernel) | output vs input |\n"
          "|---|---|---|---|---|---|")
    for length in arguments.lengths:
        rows = []
        for clean, angle in zip(images, angles):
            blurred = D.motion_blur(clean, length, angle)
            restored = evaluate.model_restore(model, blurred)
            deconvolved = evaluate.richardson_lucy(blurred, D.motion_kernel(length, angle), clean)
            rows.append((psnr(blurred, clean), psnr(restored, clean), psnr(deconvolved, clean), psnr(restored, blurred)))
        blurred_db, model_db, rl_db, change_db = (float(v) for v in np.mean(rows, axis=0))
        results[length] = {"input": blurred_db, "model": model_db, "richardson_lucy": rl_db, "output_vs_input": change_db}
        print(f"| {length:g} | {blurred_db:.2f} | {model_db:.2f} | {model_db - blurred_db:+.2f} | {rl_db:.2f} | "
              f"{change_db:.1f} |", flush=True)
    return results


if __name__ == "__main__":
    main()
