"""How the restorer routes its expert kernels, task by task.

A compact backbone grown with ``experts=K`` mixes K expert kernels per image, weighted by a
softmax of the global condition (``Restorer.router``). For the held-out cases of
``training/evaluate.py`` (same crops, strengths and seeds) this prints each task's mean
routing weights, the mean largest weight and the mean entropy of an image's routing (in
bits; log2 K is uniform). The condition is the one restore() computes: the mean over the
crop windows of :func:`perceive_ir.api.condition_windows`. Distinct rows mean the experts
specialise by degradation; identical rows mean the router does not separate the tasks.
A model without experts is refused.

Usage (from the repository root)::

    PYTHONPATH=src python benchmarks/experts.py [--model NAME|FILE] [--images 12] [--threads 2]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import evaluate  # noqa: E402
from _common import held_out_restorer  # noqa: E402

from perceive_ir.api import condition_windows  # noqa: E402


def routing(model, image: np.ndarray) -> np.ndarray:
    """The routing weights (K,) of ``image`` ((Y, X) gray or (Y, X, 3) RGB in [0, 1])."""
    planes = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)
    if planes.shape[0] == 1 and model.in_channels == 3:  # as restore() feeds a gray plane to an RGB model
        planes = np.repeat(planes, 3, axis=0)
    windows = condition_windows(planes.shape[1], planes.shape[2], model.config.condition_crop)
    crops = torch.from_numpy(np.stack([planes[:, y0:y1, x0:x1] for y0, y1, x0, x1 in windows]).astype(np.float32))
    with torch.inference_mode():
        condition = model.condition_from_crops(crops)
        return model.routing(condition)[0].numpy()


def case_sets(images: int) -> list[tuple[str, list[np.ndarray]]]:
    """(task, degraded images) of the evaluation's held-out cases."""
    crops = evaluate.held_out_crops(images)
    sets = []
    for sigma in (15, 25, 50):
        noisy = []
        for _name, clean in evaluate.set12(images):
            np.random.seed(0)
            noisy.append((clean + np.random.normal(0, sigma / 255.0, clean.shape)).astype(np.float32))
        sets.append((f"Set12 sigma {sigma}", noisy))
    for task in ("noise", "rain", "haze", "motion_blur", "low_light", "poisson"):
        sets.append((task, [c.degraded for c in evaluate.task_cases(task, crops)]))
    sets.append(("band-limited photon noise", [c.degraded for c in evaluate.band_limited_cases(crops)]))
    sets.append(("synthetic microscopy", [c.degraded for c in evaluate.microscopy_cases(images)]))
    sets.append(("skimage cell", [c.degraded for c in evaluate.cell_cases()]))
    return sets


def main(argv: list[str] | None = None) -> dict[str, dict[str, object]]:
    arguments, model = held_out_restorer(__doc__.splitlines()[0], argv)
    if model.router is None:
        raise SystemExit(f"'{arguments.source}' has no expert kernels (backbone_args experts=0)")
    experts = model.router.out_features
    print("| task | " + " | ".join(f"expert {k}" for k in range(experts)) + " | largest | entropy (bits) |")
    print("|---|" + "---|" * (experts + 2))
    results: dict[str, dict[str, object]] = {}
    for task, degraded in case_sets(arguments.images):
        weights = np.stack([routing(model, image) for image in degraded])
        entropy = float(np.mean(-(weights * np.log2(np.clip(weights, 1e-12, None))).sum(1)))
        mean = weights.mean(0)
        results[task] = {"mean": mean.tolist(), "largest": float(weights.max(1).mean()), "entropy": entropy}
        print(f"| {task} | " + " | ".join(f"{w:.3f}" for w in mean) + f" | {weights.max(1).mean():.3f} | {entropy:.2f} |",
              flush=True)
    return results


if __name__ == "__main__":
    main()
