"""Weight interpolation of two restorers trained from one another (a measurement tool).

Writes a run folder whose restorer is ``(1 - alpha) * B + alpha * A`` tensor by tensor
(floating-point tensors only; integer buffers are B's), everything else copied from run
folder B: stage 1, the config, the step count. ``training/evaluate.py --run OUT`` then
scores it. The checkpoint records the mix in ``interpolated`` (both paths and alpha), so a
folder made here is never mistaken for a trained one; ``run.py --ship`` refuses it.

Usage (from the repository root)::

    python training/interpolate.py runs/f1 runs/g1_45 --alpha 0.3 --out runs/mix_0.3

A and B must hold restorers of the same architecture (same tensor names and shapes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import copy_stage1, load_checkpoint, save_checkpoint  # noqa: E402


def interpolate(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * b + alpha * a`` for floating tensors, ``b``'s value for the others."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if a.keys() != b.keys():
        missing = sorted(set(a).symmetric_difference(b))[:5]
        raise ValueError(f"the two restorers have different tensors (e.g. {missing}): not the same architecture")
    mixed = {}
    for name, tensor in b.items():
        other = a[name]
        if other.shape != tensor.shape:
            raise ValueError(f"tensor {name!r} has shape {tuple(other.shape)} in A and {tuple(tensor.shape)} in B")
        if tensor.is_floating_point():
            mixed[name] = ((1.0 - alpha) * tensor.float() + alpha * other.float()).to(tensor.dtype)
        else:
            mixed[name] = tensor.clone()
    return mixed


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="run folder A (weight alpha)")
    parser.add_argument("b", type=Path, help="run folder B (weight 1 - alpha; everything else is copied from it)")
    parser.add_argument("--alpha", type=float, required=True, help="weight of A, in [0, 1]")
    parser.add_argument("--out", type=Path, required=True, help="new run folder (must not exist)")
    arguments = parser.parse_args(argv)
    for folder in (arguments.a, arguments.b):
        if not (folder / "restorer.pt").is_file():
            raise SystemExit(f"{folder} has no restorer.pt: not a run folder with a stage 2")
    if arguments.out.exists():
        raise SystemExit(f"{arguments.out} exists: choose a new folder")
    state_a = load_checkpoint(arguments.a / "restorer.pt")
    state_b = load_checkpoint(arguments.b / "restorer.pt")
    try:
        mixed = interpolate(state_a["models"]["model"], state_b["models"]["model"], arguments.alpha)
    except ValueError as error:
        raise SystemExit(str(error)) from error
    copy_stage1(arguments.b, arguments.out)
    state_b["models"]["model"] = mixed
    state_b.pop("optimizer", None)
    state_b["interpolated"] = {"a": str(arguments.a), "b": str(arguments.b), "alpha": arguments.alpha}
    save_checkpoint(arguments.out / "restorer.pt", state_b)
    print(f"wrote {arguments.out}: (1 - {arguments.alpha}) * {arguments.b} + {arguments.alpha} * {arguments.a}")
    return arguments.out


if __name__ == "__main__":
    main()
