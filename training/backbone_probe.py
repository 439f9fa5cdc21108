"""How much denoising a backbone learns per CPU minute: a quick probe for architecture choices.

Usage::

    python training/backbone_probe.py --minutes 10 --threads 1 \
        --variant compact='{}' --variant full-res-16='{"full_res_width": 16}'

Each variant is a compact U-Net (``perceive_ir.models.CompactUNet``, one gray channel) with
the given keyword arguments over the defaults of the ``compact`` recipe's backbone. It is
trained on BSD400 alone, denoising only, blind (sigma uniform in [0, 55]), with the setting
of the reference measurement quoted in the training issue: 64x64 crops with flips and
rotations, batch 16, L1, AdamW (1e-3, weight decay 1e-4), 100 warm-up steps, cosine to
1e-6 over the budget. The budget is *process CPU time*, so variants that share the machine
get equal compute, and a variant with dearer steps takes fewer of them. Reported: steps,
Set12 PSNR (field protocol: float noise with ``np.random.seed(0)`` per image, unclipped
input, output clipped to [0, 1]), Barbara's (image 09, fine stripes) alone at sigma 25, and
seconds per megapixel of a 512x512 forward pass. ``--detail-crops K`` trains on the most
detailed of K random crops (``data.detail``) instead of uniform crops; ``--grating-share Q``
adds a sinusoidal grating (``data.add_grating``) to that share of the crops.

This isolates the backbone from the all-in-one training (no CFE, SGM, other tasks or
colour): it tells which architecture learns faster, not what the all-in-one model reaches.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
import torch.nn.functional as F

from configs import TrainConfig
from data import DATASETS_DIR, _list_images, add_grating, detail, load_image
from run import evaluate_set12, learning_rate

from perceive_ir.models import CompactUNet


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=JSON",
                        help="a name and the CompactUNet keyword arguments that differ from the compact recipe's")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget of each variant, CPU minutes")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--detail-crops", type=int, default=1, metavar="K",
                        help="draw K random crops per sample and train on the most detailed one (data.detail; "
                             "1: uniform crops)")
    parser.add_argument("--grating-share", type=float, default=0.0, metavar="Q",
                        help="share of the crops that get a sinusoidal grating added (data.add_grating)")
    parser.add_argument("--json", default=None, help="also write the results here")
    arguments = parser.parse_args(argv)
    if not 0 <= arguments.grating_share <= 1:
        parser.error(f"--grating-share must be in [0, 1], got {arguments.grating_share}")
    return arguments


def train_and_measure(arguments_of_net: dict, minutes: float, crop: int, batch: int, seed: int,
                      images: list[np.ndarray], detail_crops: int = 1, grating_share: float = 0.0) -> dict:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = CompactUNet(1, **{**TrainConfig().backbone_args, **arguments_of_net})
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    started, step = time.process_time(), 0
    while (spent := (time.process_time() - started) / 60) < minutes:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(1e-3, 1e-6, spent / minutes, step, warmup_steps=100)
        crops = []
        for _ in range(batch):
            image = images[rng.integers(len(images))]
            candidates = []
            for _ in range(detail_crops):
                top, left = rng.integers(image.shape[0] - crop + 1), rng.integers(image.shape[1] - crop + 1)
                candidates.append(image[top:top + crop, left:left + crop])
            patch = np.rot90(candidates[0] if detail_crops == 1 else max(candidates, key=detail), rng.integers(4))
            if grating_share > 0 and rng.random() < grating_share:
                patch = add_grating(patch, rng)
            crops.append(np.ascontiguousarray(patch[:, ::-1] if rng.random() < 0.5 else patch))
        clean = torch.from_numpy(np.stack(crops))[:, None]
        sigma = torch.from_numpy(rng.uniform(0, 55, (batch, 1, 1, 1)).astype(np.float32)) / 255
        loss = F.l1_loss(model(clean + sigma * torch.randn_like(clean)), clean)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
    model.eval()
    result = {"steps": step, "parameters": sum(p.numel() for p in model.parameters())}
    with torch.no_grad():
        for key, value in evaluate_set12(model, torch.device("cpu"), per_image=True).items():
            result[key.replace("sigma", "")] = round(value, 2)
        x = torch.rand(1, 1, 512, 512)
        model(x)
        begin = time.perf_counter()
        for _ in range(3):
            model(x)
        result["s_per_mp"] = round((time.perf_counter() - begin) / 3 / (512 * 512 / 1e6), 2)
    return result


def main(argv: list[str] | None = None) -> dict[str, dict]:
    arguments = parse_arguments(argv)
    torch.set_num_threads(arguments.threads)
    variants = {}
    for pair in arguments.variant:
        name, _, text = pair.partition("=")
        variants[name] = json.loads(text or "{}")
    images = [load_image(p).astype(np.float32) / 255 for p in _list_images(DATASETS_DIR / "bsd400")]
    if not images:
        raise SystemExit(f"no BSD400 images under '{DATASETS_DIR / 'bsd400'}'")
    images = [image if image.ndim == 2 else image.mean(axis=-1) for image in images]
    results = {}
    for name, net_arguments in variants.items():
        results[name] = train_and_measure(net_arguments, arguments.minutes, arguments.crop, arguments.batch,
                                          arguments.seed, images, arguments.detail_crops,
                                          arguments.grating_share)
        print(json.dumps({name: results[name]}), flush=True)
    crops = ("uniform crops" if arguments.detail_crops == 1
             else f"the most detailed of {arguments.detail_crops} random crops")
    if arguments.grating_share > 0:
        crops += f", a grating added to {arguments.grating_share:.0%} of them"
    print(f"\nDenoising only, BSD400 gray, {crops}, {arguments.minutes:g} CPU min per variant, {arguments.threads} thread(s); "
          "Set12 PSNR dB; Barbara (image 09, fine stripes) alone at σ25\n\n| variant | arguments | parameters | steps | "
          "Set12 σ15 | σ25 | σ50 | Barbara σ25 | s / MP (512², 1 call) |\n|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | `{json.dumps(variants[name])}` | {r['parameters']:,} | {r['steps']} | {r['set12_15']:.2f} | "
              f"{r['set12_25']:.2f} | {r['set12_50']:.2f} | {r.get('set12_25_09', float('nan')):.2f} | {r['s_per_mp']:.2f} |")
    if arguments.json:
        Path(arguments.json).write_text(json.dumps({"minutes": arguments.minutes, "variants": variants,
                                                    "results": results}, indent=2))
    return results


if __name__ == "__main__":
    main()
