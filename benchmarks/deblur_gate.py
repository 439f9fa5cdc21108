"""How often ``deblur="auto"`` deconvolves: the motion-blur gate, per degradation.

:func:`perceive_ir.deblur.estimate_motion` gives each image a confidence (the depth of
its cepstral motion peak) and the depth of that peak's harmonics; ``restore(deblur="auto")``
deconvolves planes where both reach :data:`perceive_ir.deblur.CONFIDENCE_THRESHOLD` and
:data:`perceive_ir.deblur.HARMONICS_THRESHOLD`. This prints, on centre crops of
*training* images (the threshold is set here, not on the held-out images of the report),
the fraction of motion-blurred crops that pass (per kernel length, random angles) and the
fraction of crops of every other degradation (and clean ones) that pass by mistake, with
the length and angle errors of the detected kernels.

Usage (from the repository root)::

    PYTHONPATH=src python benchmarks/deblur_gate.py [--images 48] [--size 256] [--threshold 15] [--harmonics 6]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

from perceive_ir import deblur as B  # noqa: E402
from perceive_ir import degrade as D  # noqa: E402

LENGTHS = (5.0, 7.0, 9.0, 13.0, 17.0, 21.0, 25.0)
OTHERS = ("clean", "noise", "poisson", "rain", "haze", "low_light", "blur", "defocus", "jpeg")


def training_crops(count: int, size: int) -> list[np.ndarray]:
    """Centre crops (float32 RGB in [0, 1]) of colour training images spread over the training set."""
    from data import natural_images

    images = [im for im in natural_images("train") if im.ndim == 3 and min(im.shape[:2]) >= size]
    chosen = np.linspace(0, len(images) - 1, count).astype(int)
    crops = []
    for i in chosen:
        image = images[i]
        top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
        crops.append(image[top:top + size, left:left + size].astype(np.float32) / 255.0)
    return crops


def gray(image: np.ndarray) -> np.ndarray:
    return image.mean(axis=-1) if image.ndim == 3 else image


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threshold", type=float, default=B.CONFIDENCE_THRESHOLD)
    parser.add_argument("--harmonics", type=float, default=B.HARMONICS_THRESHOLD)
    args = parser.parse_args(argv)
    crops = training_crops(args.images, args.size)
    rates: dict[str, float] = {}
    print(f"{len(crops)} training crops of {args.size} px, thresholds: confidence {args.threshold:g}, "
          f"harmonics {args.harmonics:g}\n")
    print("| motion blur length (px) | detected | median confidence | length error (px, median / max) | angle error (deg, median / max) |")
    print("|---|---|---|---|---|")
    for length in LENGTHS:
        found, confidences, length_errors, angle_errors = 0, [], [], []
        for index, crop in enumerate(crops):
            angle = float(np.random.default_rng([23, index, int(length)]).uniform(0.0, 180.0))
            estimate = B.estimate_motion([gray(D.motion_blur(crop, length, angle))])
            confidences.append(estimate.confidence)
            if estimate.detected(args.threshold, args.harmonics):
                found += 1
                length_errors.append(abs(estimate.length - length))
                angle_errors.append(abs((estimate.angle - angle + 90.0) % 180.0 - 90.0))
        rates[f"motion_blur {length:g}"] = found / len(crops)
        errors = (f"{np.median(length_errors):.2f} / {np.max(length_errors):.2f} | "
                  f"{np.median(angle_errors):.1f} / {np.max(angle_errors):.1f}") if found else "- | -"
        print(f"| {length:g} | {found}/{len(crops)} | {np.median(confidences):.1f} | {errors} |")
    print("\n| other input (three strengths) | passed by mistake | median / max confidence |")
    print("|---|---|---|")
    for kind in OTHERS:
        confidences, passed = [], 0
        for index, crop in enumerate(crops):
            if kind == "clean":
                image = crop
            else:
                level = (0.2, 0.5, 0.8)[index % 3]
                image = D.degrade(crop, kind, level, rng=np.random.default_rng([29, index]))
            estimate = B.estimate_motion([gray(image)])
            confidences.append(estimate.confidence)
            passed += estimate.detected(args.threshold, args.harmonics)
        rates[kind] = passed / len(crops)
        print(f"| {kind} | {passed}/{len(crops)} | {np.median(confidences):.1f} / {np.max(confidences):.1f} |")
    return rates


if __name__ == "__main__":
    main()
