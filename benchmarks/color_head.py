"""What the restorer's per-image colour head contributes, task by task.

For the held-out cases of ``training/evaluate.py`` (same crops, strengths and seeds) it prints
the mean PSNR of the model with its colour head and with the head switched off, and the mean
size of the gain and offset the head applies. A model without a colour head is refused.

Usage (from the repository root)::

    PYTHONPATH=src python benchmarks/color_head.py [--model NAME|FILE] [--images 12] [--threads 2]
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
from haze_global_error import psnr  # noqa: E402


TASKS = ("haze", "low_light", "rain", "noise", "poisson", "motion_blur")


def head_parameters(model, image: np.ndarray) -> tuple[float, float]:
    """Mean |gain| and |offset| the head applies to ``image`` (Y, X, 3), conditioned on its top-left crop.

    (``restore()`` averages the condition over up to 8 crops spread over the image, so this is
    an estimate of what the head applies there.)
    """
    crop = model.config.condition_crop
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    with torch.inference_mode():
        condition = model.condition_from_crops(tensor[..., :crop, :crop])
        gain, offset = model.color.correction(condition.vector(0), condition.statistics)
    return float(gain.abs().mean()), float(offset.abs().mean())


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    arguments, model = held_out_restorer(__doc__.splitlines()[0], argv)
    head = model.color
    if head is None:
        raise SystemExit(f"'{arguments.source}' has no colour head")
    images = evaluate.held_out_crops(arguments.images)
    results: dict[str, dict[str, float]] = {}
    print("| task | with head | without | mean abs gain | mean abs offset |\n|---|---|---|---|---|")
    try:
        for task in TASKS:
            cases = evaluate.task_cases(task, images)
            scores = []
            for enabled in (True, False):
                model.color = head if enabled else None
                scores.append(float(np.mean([psnr(evaluate.model_restore(model, c.degraded), c.clean) for c in cases])))
            model.color = head
            gain, offset = np.mean([head_parameters(model, c.degraded) for c in cases], axis=0)
            results[task] = {"with": scores[0], "without": scores[1], "gain": float(gain), "offset": float(offset)}
            print(f"| {task} | {scores[0]:.2f} | {scores[1]:.2f} | {gain:.4f} | {offset:.4f} |", flush=True)
    finally:
        model.color = head
    return results


if __name__ == "__main__":
    main()
