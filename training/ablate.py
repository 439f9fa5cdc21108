"""Ablation of stage 2 at equal wall-clock budget: full method vs without its parts.

Usage::

    python training/ablate.py --stage1 runs/compact --minutes 12 --out runs/ablation --threads 1

Every variant starts stage 2 from scratch on the *same* finished stage 1 (the medium
restorers and the perceiver of ``--stage1``, copied into each variant's folder), trains
for the same number of minutes on the same thread count, and is evaluated the same way:

========================  ===============================================================
``full``                  L1 + 0.1 InfoNCE (CFE) + 0.05 L_clip + 0.1 L_dpl, CFE and SGM
``no-quality-losses``     L1 + 0.1 InfoNCE: without L_clip and L_dpl
``no-cfe``                without the degradation encoder (and so without InfoNCE)
``no-sgm``                without semantic guidance
``plain``                 the bare backbone with L1 only (neither CFE, SGM nor quality losses)
========================  ===============================================================

Equal budget means equal *CPU time* of the training process (``clock="process"``, so
that a busy machine does not favour one variant): a variant with cheaper steps takes more of them, which
is the comparison a user with a fixed machine and deadline cares about; the table also
lists the steps each variant took. A finished variant is not retrained (delete its
folder to redo it). The table is printed as markdown and saved to ``OUT/ablation.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch

from run import PHASES, copy_stage1, evaluate_set12, evaluate_tasks, load_checkpoint, load_run

from data import build_tasks

#: variant -> config overrides of stage 2
VARIANTS: dict[str, dict[str, object]] = {
    "full": {},
    "no-quality-losses": {"clip_weight": 0.0, "dpl_weight": 0.0},
    "no-cfe": {"cfe": False},
    "no-sgm": {"sgm": False},
    "plain": {"cfe": False, "sgm": False, "clip_weight": 0.0, "dpl_weight": 0.0},
}
STAGE1 = tuple(f"{name}.pt" for name in PHASES[:-1])  # what run.copy_stage1 copies


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stage1", required=True, help="run folder holding finished medium0/medium1/perceiver checkpoints")
    parser.add_argument("--minutes", type=float, required=True, help="stage-2 budget of every variant, in minutes of CPU time")
    parser.add_argument("--out", default="runs/ablation", help="folder of the variants' run folders")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of every run")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--override", action="append", default=[], metavar="FIELD=JSON",
                        help="a config override applied to every variant (before the variant's own), "
                             "e.g. 'tasks=[\"noise\"]' or gray_sources=\"replicated\"")
    return parser.parse_args(argv)


def train_variant(name: str, arguments: argparse.Namespace) -> Path:
    """Train one variant (in a fresh process, so that runs do not share state) unless finished."""
    folder = Path(arguments.out) / name
    restorer = folder / "restorer.pt"
    if restorer.exists() and load_checkpoint(restorer)["done"]:
        return folder
    copy_stage1(Path(arguments.stage1), folder)
    command = [sys.executable, str(Path(__file__).resolve().parent / "run.py"), "--out", str(folder), "--resume",
               "--stage", "2", "--minutes", str(arguments.minutes), "--threads", str(arguments.threads),
               "--override", "ship=false", "--override", "clock=process"]
    for pair in arguments.override:
        command += ["--override", pair]
    for field, value in VARIANTS[name].items():
        command += ["--override", f"{field}={json.dumps(value)}"]
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True)
    return folder


def evaluate_variant(folder: Path) -> dict[str, float]:
    config, _mediums, _perceiver, restorer = load_run(folder)
    state = load_checkpoint(folder / "restorer.pt")
    result: dict[str, float] = {"steps": int(state["step"]), "cpu_minutes": round(float(state["seconds"]) / 60, 1)}
    result.update({k: round(v, 2) for k, v in evaluate_set12(restorer, torch.device("cpu")).items()})
    result.update(evaluate_tasks(restorer, build_tasks(config, "validation"), config, torch.device("cpu")))
    return result


def markdown(results: dict[str, dict[str, float]]) -> str:
    columns = list(next(iter(results.values())))
    shown = [c for c in columns if not c.endswith("_psnr_input")]
    header = "| variant | " + " | ".join(c.replace("_psnr_output", "").replace("set12_", "Set12 ") for c in shown) + " |"
    rows = [header, "|" + "---|" * (len(shown) + 1)]
    first = next(iter(results.values()))
    inputs = [first.get(c.replace("_output", "_input")) if c.endswith("_output") else "" for c in shown]
    rows.append("| (input) | " + " | ".join(f"{v:.2f}" if isinstance(v, float) else "" for v in inputs) + " |")
    for name, values in results.items():
        rows.append(f"| {name} | " + " | ".join(f"{values[c]:.2f}" if isinstance(values[c], float) else str(values[c])
                                                 for c in shown) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    arguments = parse_arguments(argv)
    torch.set_num_threads(arguments.threads)
    missing = [f for f in STAGE1 if not (Path(arguments.stage1) / f).exists()]
    if missing:
        raise SystemExit(f"--stage1 '{arguments.stage1}' lacks {missing}; run `python training/run.py --stage 1` first")
    results = {}
    for name in arguments.variants:
        results[name] = evaluate_variant(train_variant(name, arguments))
        print(json.dumps({name: results[name]}), flush=True)
    table = markdown(results)
    print(f"\nStage 2 at equal budget ({arguments.minutes:g} CPU min, {arguments.threads} thread(s)); PSNR in dB "
          "(Set12: blind, field protocol; tasks: held-out 128px crops)\n\n" + table)
    out = Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps({"minutes": arguments.minutes, "threads": arguments.threads,
                                                   "results": results}, indent=2))
    return results


if __name__ == "__main__":
    main()
