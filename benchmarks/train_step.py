"""Time of one stage-2 training step in float32 and under bf16 autocast on CPU (``cpu_amp``).

The restorer of a run folder (default: the committed checkpoint of the bundled model) takes
training steps on a fixed random batch of the run's crop size: forward with the CFE key crop,
L1 + InfoNCE + the frequency loss, backward, gradient clipping and an AdamW step at learning
rate 0 (the weights stay as they are, so every step costs the same). The two precisions run
interleaved (A B A B ...), so that load that comes and goes hits both alike. It also prints
how far the bf16 forward pass is from the float32 one (PSNR between the two outputs).

Usage (from the repository root)::

    PYTHONPATH=src python benchmarks/train_step.py [--run training/checkpoints/compact] [--threads 1] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402
from _common import header, set_threads, table  # noqa: E402
from losses import frequency_l1, info_nce  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(ROOT / "training" / "checkpoints" / "compact"), metavar="FOLDER",
                        help="training run folder whose restorer is timed")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per precision (after one untimed)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the run's)")
    arguments = parser.parse_args(argv)
    set_threads(arguments.threads)
    config, _mediums, _perceiver, restorer = run.load_run(Path(arguments.run))
    if restorer is None:
        raise SystemExit(f"'{arguments.run}' has no stage-2 checkpoint (restorer.pt)")
    restorer.train().requires_grad_(True)
    if restorer.semantic is not None:
        restorer.semantic.requires_grad_(False)  # frozen in training too
    step_module = run.RestorerTrainingStep(restorer)
    batch, side = arguments.batch or config.batch_size, config.crop_size
    generator = torch.Generator().manual_seed(0)
    degraded, clean, key = (torch.rand(batch, 3, side, side, generator=generator) for _ in range(3))
    task = torch.arange(batch) % len(config.tasks)
    parameters = [p for p in restorer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=0.0)

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            restored, query, positive = step_module(degraded, key)
            restored = restored.float()
            loss = F.l1_loss(restored, clean) + frequency_l1(restored, clean)
            if query is not None:
                loss = loss + 0.1 * info_nce(query.float(), positive.float(), task, config.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()

    times: dict[bool, list[float]] = {False: [], True: []}
    for bf16 in times:
        step(bf16)
    for _ in range(arguments.repeats):
        for bf16 in times:
            start = time.perf_counter()
            step(bf16)
            times[bf16].append(time.perf_counter() - start)
    restorer.eval()
    with torch.no_grad():
        reference = restorer(degraded, restorer.condition(degraded)).float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = restorer(degraded, restorer.condition(degraded)).float()
    mse = float(((reference - low) ** 2).mean())
    results = {"float32_s": statistics.median(times[False]), "bf16_s": statistics.median(times[True]),
               "bf16_vs_float32_psnr_db": float("inf") if mse == 0 else -10.0 * float(torch.log10(torch.tensor(mse)))}
    print(header(f"stage-2 training step, batch {batch} x {side}^2, {arguments.run}",
                 f"native bf16 {run.cpu_has_native_bf16()}"))
    print(table(["precision", "median s / step", "min", "steps per minute"],
                [["float32", results["float32_s"], min(times[False]), 60 / results["float32_s"]],
                 ["bf16 autocast (cpu_amp)", results["bf16_s"], min(times[True]), 60 / results["bf16_s"]]]))
    print(f"\nbf16 time / float32 time: {results['bf16_s'] / results['float32_s']:.2f}; bf16 forward vs float32: "
          f"{results['bf16_vs_float32_psnr_db']:.1f} dB PSNR")
    return results


if __name__ == "__main__":
    main()
