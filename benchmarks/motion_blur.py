"""How much a restorer deblurs linear motion blur, kernel length by kernel length.

On the held-out crops of ``training/evaluate.py`` (same images, the same seeded angles as its
motion-blur row) each crop is blurred by a linear motion kernel of every length in
``--lengths``. For each length it prints the mean PSNR of the blurred input, of the network
alone (``restore(deblur="off")``), how far the network moved its input (PSNR of its output
against the input: high means the output is nearly the input; a network that leaves motion
blur alone shows a gain near zero at every length, including the short kernels that are
easy to invert), of ``restore()``'s default (``deblur="auto"``: the kernel estimated from
the image and deconvolved before the network where the estimate is confident, see
:mod:`perceive_ir.deblur`; deblurred planes return the deconvolution) with the share of crops
it deblurred, the deconvolution alone (estimated kernel, every crop), the network run on that
deconvolution (what ``restore()`` does not do: the worst crop shows why), Richardson-Lucy given the true kernel
(iterations oracle-tuned, as in the report), and the seconds per megapixel of the network
alone and of the default.

Usage (from the repository root)::

    PYTHONPATH=src python benchmarks/motion_blur.py [--model NAME|FILE] [--images 12] [--threads 2] [--lengths 5 9 15 21]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import evaluate  # noqa: E402
from _common import held_out_restorer  # noqa: E402
from haze_global_error import psnr  # noqa: E402

from perceive_ir import degrade as D  # noqa: E402
from perceive_ir import restore  # noqa: E402
from perceive_ir.deblur import deconvolve, estimate_motion  # noqa: E402

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
    restore(images[0][:64, :64], model=model, device="cpu")  # warm-up: the timings below are steady-state
    print("| length (px) | input | network alone | its gain | its output vs its input | restore() default "
          "(deblur auto) | crops deblurred | deconvolution alone | network on the deconvolution (mean / worst change) | "
          "Richardson-Lucy (true kernel) | s / MP alone | s / MP default |\n|---|---|---|---|---|---|---|---|---|---|---|---|")
    for length in arguments.lengths:
        rows = []
        for clean, angle in zip(images, angles):
            blurred = D.motion_blur(clean, length, angle)
            megapixels = blurred.shape[0] * blurred.shape[1] / 1e6
            start = time.perf_counter()
            alone = restore(blurred, model=model, device="cpu", deblur="off")
            middle = time.perf_counter()
            restored = restore(blurred, model=model, device="cpu", deblur="auto")
            end = time.perf_counter()
            estimate = estimate_motion([blurred.mean(axis=-1)])
            deconvolved = np.moveaxis(deconvolve(np.moveaxis(blurred, -1, 0), estimate.kernel()), 0, -1)
            deconvolved = np.clip(deconvolved, 0, 1)
            after = restore(deconvolved, model=model, device="cpu", deblur="off")
            richardson = evaluate.richardson_lucy(blurred, D.motion_kernel(length, angle), clean)
            rows.append((psnr(blurred, clean), psnr(alone, clean), psnr(alone, blurred), psnr(restored, clean),
                         float(estimate.detected()), psnr(deconvolved, clean), psnr(after, clean),
                         psnr(richardson, clean), (middle - start) / megapixels, (end - middle) / megapixels,
                         psnr(after, clean) - psnr(deconvolved, clean)))
        worst = float(np.min(np.asarray(rows)[:, -1]))
        blurred_db, alone_db, change_db, auto_db, share, deconvolved_db, after_db, rl_db, alone_s, auto_s, _ = (
            float(v) for v in np.mean(rows, axis=0))
        results[length] = {"input": blurred_db, "model": alone_db, "output_vs_input": change_db, "auto": auto_db,
                           "deblurred_share": share, "deconvolution": deconvolved_db, "network_after": after_db,
                           "network_after_worst_change": worst, "richardson_lucy": rl_db,
                           "seconds_per_mp_alone": alone_s, "seconds_per_mp_auto": auto_s}
        print(f"| {length:g} | {blurred_db:.2f} | {alone_db:.2f} | {alone_db - blurred_db:+.2f} | {change_db:.1f} | "
              f"{auto_db:.2f} | {share:.0%} | {deconvolved_db:.2f} | {after_db:.2f} / {worst:+.1f} | {rl_db:.2f} | "
              f"{alone_s:.2f} | {auto_s:.2f} |",
              flush=True)
    return results


if __name__ == "__main__":
    main()
