"""Train Perceive-IR: stage 1 (medium restorers, quality perceiver), then stage 2 (restorer).

Usage::

    python training/run.py --config smoke --out runs/smoke             # < 2 minutes on a CPU
    python training/run.py --config compact --out runs/compact --threads 1
    python training/run.py --config compact --out runs/compact --resume [--minutes 60]
    python training/run.py --config compact --out runs/compact --ship  # re-ship from checkpoints
    torchrun --nproc_per_node 4 training/run.py --config paper-3task --data-root DATA \\
        --clip ViT-B-32:openai --dinov2 dinov2_vitb14.safetensors --vgg vgg16.safetensors --device cuda

The script reads top to bottom: configuration, runtime (device, DDP), data, then the
four phases, each checkpointed in ``--out`` and skipped when already finished:

1. ``medium0`` / ``medium1`` (stage 1a): two small restorers (plain L1, no CFE/SGM),
   each trained on one half of the images (two-fold cross-fitting), so every training
   image has a medium-quality restoration by the model that did not see it;
2. ``perceiver`` (stage 1b): CoOp prompts of three quality tiers (low = degraded,
   medium = cross-fitted medium restoration, high = clean) on CLIP; CLIP is frozen when
   pretrained weights are given (``--clip``), otherwise the tiny CLIP's image tower and
   logit scale are trained from scratch too; three-tier accuracy on held-out images;
3. ``restorer`` (stage 2): L1 + 0.1 InfoNCE + 0.05 L_clip + 0.1 L_dpl (``losses.py``),
   with the two medium restorers as the proxies of L_dpl and ``beta`` re-measured on a
   fixed probe set.

Checkpoints are ``torch.save`` files of plain dicts (tensors, numbers, strings) written
atomically and read with ``weights_only=True``; each stores the resolved config, and a
resumed run is rebuilt from it. ``log.csv`` and ``log.png`` record every loss term.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from configs import EXPERIMENTS, PREDATING_VALUES, TrainConfig, config_from_dict, resolve_config
from data import SKIMAGE_IMAGES, TaskBalancedDataset, build_tasks, fixed_samples, set12_images
from losses import (
    RandomFeaturePyramid,
    Vgg16Features,
    clip_quality_loss,
    difficulty_adaptive_perceptual_loss,
    frequency_l1,
    info_nce,
    psnr,
)

from perceive_ir import zoo
from perceive_ir.io import atomic_output
from perceive_ir.models import PerceiverConfig, QualityPerceiver, Restorer, RestorerConfig, TIERS, build_clip

REPOSITORY = Path(__file__).resolve().parents[1]
#: Where shipping leaves a small resume checkpoint of a run (weights, step, config).
RESUME_CHECKPOINTS = REPOSITORY / "training" / "checkpoints"
PHASES = ("medium0", "medium1", "perceiver", "restorer")
LOSS_COLUMNS = ("loss", "l1", "info_nce", "clip", "dpl", "frequency", "distill")
LOG_COLUMNS = ("step", "stage", "phase", *LOSS_COLUMNS, "accuracy", "psnr", "lr", "seconds")


# =========================================================================================
# command line
# =========================================================================================
def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="compact", help=f"experiment: {', '.join(EXPERIMENTS)}")
    parser.add_argument("--out", default=None, help="run folder (checkpoints, log.csv, log.png); default runs/CONFIG")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out (config read from them)")
    parser.add_argument("--branch", default=None, metavar="FOLDER",
                        help="start stage 2 in the new run folder --out from the trained restorer of FOLDER (a run "
                             "folder, e.g. training/checkpoints/compact): its stage 1 is copied in, its restorer's "
                             "config is taken (then --minutes and --override), and training starts from its weights "
                             "(init_from) with a fresh schedule; continue the branch later with --resume")
    parser.add_argument("--stage", type=int, choices=(1, 2), default=None, help="run only this stage")
    parser.add_argument("--data-root", default=None, help="root of the field's dataset layout (paper configs)")
    parser.add_argument("--clip", default=None, help="pretrained CLIP: ARCH:TAG (e.g. ViT-B-32:openai) or a weights file")
    parser.add_argument("--dinov2", default=None, help="DINOv2 weights file for semantic='dinov2'")
    parser.add_argument("--vgg", default=None, help="VGG16 weights file for the perceptual loss")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--minutes", type=float, default=None, help="wall-clock budget of stage 2 (overrides the config)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--ship", action="store_true", help="only ship the finished models of --out into the package")
    parser.add_argument("--restorer-name", default=None, help="zoo name of the shipped restorer (default: zoo.DEFAULT_RESTORER)")
    parser.add_argument("--perceiver-name", default=None, help="zoo name of the shipped perceiver (default: zoo.DEFAULT_PERCEIVER)")
    parser.add_argument("--perceiver-from", default=None, metavar="FOLDER",
                        help="with --ship: ship the (longer trained) perceiver of this run folder instead of --out's; "
                             "the restorer keeps the semantic tower it was trained with")
    parser.add_argument("--restorer-only", action="store_true",
                        help="with --ship: ship the restorer alone, leaving the zoo's perceivers untouched")
    parser.add_argument("--overwrite", action="store_true",
                        help="shipping may replace models already in the package under the same names (a run that "
                             "ships at its end otherwise leaves them alone and says how to ship under new names)")
    parser.add_argument("--override", action="append", default=[], metavar="FIELD=JSON",
                        help="override a config field, e.g. --override batch_size=4 (repeatable)")
    return parser.parse_args(argv)


def _parse_overrides(pairs: list[str]) -> dict[str, Any]:
    overrides = {}
    for pair in pairs:
        name, separator, text = pair.partition("=")
        if not separator:
            raise SystemExit(f"--override expects FIELD=JSON, got {pair!r}")
        try:
            overrides[name] = json.loads(text)
        except json.JSONDecodeError:
            overrides[name] = text  # a bare string
    return overrides


# =========================================================================================
# runtime: device and distributed data parallel
# =========================================================================================
@dataclass
class Runtime:
    """Where this process runs."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_runtime(device_name: str | None) -> Runtime:
    """Pick the device; join the process group when launched by torchrun (WORLD_SIZE set)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if device_name is None:
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    if device_name not in ("cpu", "cuda"):
        raise SystemExit(f"--device must be cpu or cuda, got {device_name!r}")
    if device_name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but torch sees no CUDA device")
    if world_size > 1:
        import torch.distributed as dist

        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        dist.init_process_group(backend="nccl" if device_name == "cuda" else "gloo")
        device = torch.device("cuda", local_rank) if device_name == "cuda" else torch.device("cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return Runtime(device, dist.get_rank(), world_size)
    return Runtime(torch.device(device_name))


def wrap_for_training(module: nn.Module, runtime: Runtime) -> nn.Module:
    """DistributedDataParallel around ``module`` when distributed, else ``module``."""
    if not runtime.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [runtime.device.index] if runtime.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def make_loader(dataset: TaskBalancedDataset, batch_size: int, runtime: Runtime, config: TrainConfig) -> DataLoader:
    """DataLoader with a DistributedSampler under DDP (task balance: index % n_tasks)."""
    sampler = None
    if runtime.distributed:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(dataset, shuffle=True, seed=config.seed, drop_last=True)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, drop_last=True,
                      num_workers=config.num_workers, pin_memory=runtime.device.type == "cuda",
                      persistent_workers=False)


def batches(loader: DataLoader, start_epoch: int) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """Endless (epoch, batch) stream; sets the epoch of the dataset and sampler."""
    epoch = start_epoch
    while True:
        loader.dataset.set_epoch(epoch)
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        for batch in loader:
            yield epoch, batch
        epoch += 1


# =========================================================================================
# checkpoints and logs
# =========================================================================================
def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` a plain dict atomically (temporary file + ``os.replace``).

    Saved through a file object, so the archive's inner folder is torch's fixed ``archive``
    rather than the random temporary name: the same payload gives the same bytes (a
    re-shipped, unchanged stage-1 checkpoint is no change to git).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(payload, stream)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no unpickling)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def load_module_state(module: nn.Module, state: dict[str, torch.Tensor], optional_prefixes: tuple[str, ...] = ()) -> None:
    """Load ``state`` into ``module``; keys under ``optional_prefixes`` may be absent."""
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(optional_prefixes)]
    if missing or unexpected:
        raise RuntimeError(f"checkpoint does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")


def load_perceiver_checkpoint(run_folder: Path, device: torch.device | str = "cpu") -> tuple[QualityPerceiver, dict[str, Any]]:
    """The locked perceiver of a run folder and its checkpoint (config, step, seconds, metrics)."""
    state = load_checkpoint(Path(run_folder) / "perceiver.pt")
    # the fields its run predates read as that run behaved (e.g. the crops it was trained on: its tile size)
    perceiver = build_perceiver(config_from_dict(stored_config(state)), pretrained=False)
    load_module_state(perceiver, state["models"]["model"])  # float16 resume checkpoints are cast on copy
    return perceiver.to(device).lock(), state


def load_run(run_folder: Path, device: torch.device | str = "cpu", with_restorer: bool = True,
             ) -> tuple[TrainConfig, list[Restorer], QualityPerceiver, Restorer | None]:
    """The models of a run folder, rebuilt from its checkpoints: (config, mediums, perceiver, restorer).

    The restorer is None when stage 2 has not started (or ``with_restorer`` is False);
    every model is in eval mode.
    """
    run_folder = Path(run_folder)
    for name in ("medium0", "medium1", "perceiver"):
        if not (run_folder / f"{name}.pt").exists():
            raise FileNotFoundError(f"'{run_folder}' has no {name}.pt: stage 1 has not been run there")
    latest = "restorer" if with_restorer and (run_folder / "restorer.pt").exists() else "perceiver"
    config = config_from_dict(stored_config(load_checkpoint(run_folder / f"{latest}.pt")))
    mediums = []
    for fold in (0, 1):
        medium = Restorer(medium_config(config))
        load_module_state(medium, load_checkpoint(run_folder / f"medium{fold}.pt")["models"]["model"])
        mediums.append(medium.to(device).eval().requires_grad_(False))
    perceiver, _state = load_perceiver_checkpoint(run_folder, device)
    restorer = None
    if latest == "restorer":
        restorer = build_restorer(config, perceiver)
        load_module_state(restorer, load_checkpoint(run_folder / "restorer.pt")["models"]["model"],
                          optional_prefixes=("semantic.",))
        restorer = restorer.to(device).eval().requires_grad_(False)
    return config, mediums, perceiver, restorer


class TrainingLog:
    """Append rows to ``log.csv`` and redraw ``log.png`` (one panel per phase)."""

    def __init__(self, folder: Path, enabled: bool) -> None:
        self.csv_path = folder / "log.csv"
        self.png_path = folder / "log.png"
        self.enabled = enabled
        if not enabled:
            return
        if not self.csv_path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            with open(self.csv_path, "w", newline="") as handle:
                csv.writer(handle).writerow(LOG_COLUMNS)
            return
        with open(self.csv_path, newline="") as handle:
            reader = csv.DictReader(handle)
            if tuple(reader.fieldnames or ()) == LOG_COLUMNS:
                return
            rows = list(reader)
        # a run logged before a column was added: rewrite its rows under today's header
        with atomic_output(self.csv_path, overwrite=True) as temporary, open(temporary, "w", newline="") as stream:
            writer = csv.DictWriter(stream, LOG_COLUMNS, restval="", extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def write(self, **values: Any) -> None:
        if not self.enabled:
            return
        row = [values.get(column, "") for column in LOG_COLUMNS]
        row = [f"{v:.6g}" if isinstance(v, float) else v for v in row]
        with open(self.csv_path, "a", newline="") as handle:
            csv.writer(handle).writerow(row)
        message = " ".join(f"{c}={v}" for c, v in zip(LOG_COLUMNS, row) if v != "")
        print(message, flush=True)

    def plot(self) -> None:
        """Draw the loss curves of every phase into ``log.png``."""
        if not self.enabled:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        with open(self.csv_path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        phases = [p for p in PHASES if any(r["phase"] == p for r in rows)]
        if not phases:
            return
        figure, axes = plt.subplots(1, len(phases), figsize=(4.5 * len(phases), 3.5), squeeze=False)
        for axis, phase in zip(axes[0], phases):
            phase_rows = [r for r in rows if r["phase"] == phase]
            for column in LOSS_COLUMNS:
                points = [(float(r["step"]), float(r[column])) for r in phase_rows if r[column] not in ("", None)]
                if points:
                    axis.plot(*zip(*points), label=column)
            axis.set_yscale("log")
            axis.set_title(phase)
            axis.set_xlabel("step")
            metric = "accuracy" if phase == "perceiver" else "psnr"
            points = [(float(r["step"]), float(r[metric])) for r in phase_rows if r[metric] not in ("", None)]
            if points:
                twin = axis.twinx()
                twin.plot(*zip(*points), "k.--", label=metric)
                twin.set_ylabel(metric)
            if axis.get_legend_handles_labels()[0]:
                axis.legend(fontsize=7, loc="upper right")
        figure.tight_layout()
        handle, temporary = tempfile.mkstemp(dir=self.png_path.parent, suffix=".png")
        os.close(handle)
        figure.savefig(temporary, dpi=80)
        plt.close(figure)
        os.replace(temporary, self.png_path)


# =========================================================================================
# models
# =========================================================================================
def medium_config(config: TrainConfig) -> RestorerConfig:
    """Stage-1 medium restorer: the medium backbone alone (plain L1, no CFE, no SGM)."""
    return RestorerConfig(in_channels=3, backbone=config.medium_backbone, backbone_args=dict(config.medium_backbone_args),
                          cfe=False, sgm=False, semantic="none")


def perceiver_config(config: TrainConfig) -> PerceiverConfig:
    """The perceiver's architecture, and the tile side it learns to rate (its largest training crop)."""
    tile_size = max(config.perceiver_sizes())
    if config.clip is None:
        return PerceiverConfig(clip_config=config.clip_config, n_ctx=config.n_ctx, tile_size=tile_size)
    return PerceiverConfig(clip_model=config.clip_model, clip_config=None, n_ctx=config.n_ctx, tile_size=tile_size)


def build_perceiver(config: TrainConfig, pretrained: bool) -> QualityPerceiver:
    """The stage-1 perceiver; with ``pretrained`` the CLIP weights of ``config.clip`` are loaded."""
    settings = perceiver_config(config)
    if not pretrained or config.clip is None:
        return QualityPerceiver(settings)
    source = config.clip
    if os.path.isfile(source):
        clip = build_clip(settings, pretrained=source)
    else:
        architecture, _, tag = source.partition(":")
        if not tag:
            raise SystemExit(f"--clip expects ARCH:TAG (e.g. ViT-B-32:openai) or an existing file, got {source!r}")
        settings = replace(settings, clip_model=architecture)
        clip = build_clip(settings, pretrained=tag)
    return QualityPerceiver(settings, clip)


def clip_vision_config(config: TrainConfig) -> tuple[dict[str, Any], int]:
    """(vision_cfg, embed_dim) of the perceiver's CLIP."""
    if config.clip is None:
        return dict(config.clip_config["vision_cfg"]), int(config.clip_config["embed_dim"])
    import open_clip

    model_config = open_clip.get_model_config(config.clip_model)
    return dict(model_config["vision_cfg"]), int(model_config["embed_dim"])


def restorer_config(config: TrainConfig) -> RestorerConfig:
    semantic_args = dict(config.semantic_args)
    if config.semantic == "clip":
        vision_cfg, embed_dim = clip_vision_config(config)
        semantic_args = {"vision_cfg": vision_cfg, "embed_dim": embed_dim, "depths": list(semantic_args.get("depths", [1, 2, 3]))}
    return RestorerConfig(in_channels=3, backbone=config.backbone, backbone_args=dict(config.backbone_args),
                          cfe=config.cfe, embed_dim=config.embed_dim, sgm=config.sgm, semantic=config.semantic,
                          semantic_args=semantic_args, color_head=config.color_head)


def build_restorer(config: TrainConfig, perceiver: QualityPerceiver) -> Restorer:
    """The stage-2 restorer; a CLIP semantic encoder starts as a frozen copy of the perceiver's tower."""
    settings = restorer_config(config)
    encoder = None
    if config.sgm and config.semantic == "dinov2":
        from perceive_ir.models.semantic import Dinov2SemanticEncoder

        if config.dinov2_file is None:
            print("warning: semantic='dinov2' without --dinov2 FILE: the DINOv2 encoder keeps random weights", flush=True)
        arguments = {k: v for k, v in settings.semantic_args.items()}
        encoder = Dinov2SemanticEncoder(pretrained_file=config.dinov2_file, **arguments).lock()
    restorer = Restorer(settings, semantic_encoder=encoder)
    if config.sgm and config.semantic == "clip":
        restorer.semantic.visual.load_state_dict(perceiver.clip.visual.state_dict())
        restorer.semantic.lock()
    return restorer


class RestorerTrainingStep(nn.Module):
    """One forward of stage 2 (a module, so that DDP sees every trained parameter).

    Returns the restored batch, the CFE embedding of the input and that of the second
    crop (the InfoNCE positive); the embeddings are None without CFE.
    """

    def __init__(self, restorer: Restorer) -> None:
        super().__init__()
        self.restorer = restorer

    def forward(self, degraded: torch.Tensor, key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        restorer = self.restorer
        condition = restorer.condition(degraded)
        restored = restorer(degraded, condition)
        if restorer.cfe is None:
            return restored, None, None
        query = condition.embedding if condition is not None else restorer.cfe(degraded)
        return restored, query, restorer.cfe(key)


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """State dict without the frozen semantic encoder (rebuilt from the perceiver)."""
    return {k: v for k, v in module.state_dict().items() if not k.startswith("semantic.")}


def grow_from_checkpoint(restorer: Restorer, source: Path, config: TrainConfig) -> dict[str, Any]:
    """Load the restorer weights of ``source`` (a run folder or its ``restorer.pt``) into ``restorer``.

    Every stored weight must exist in ``restorer`` with the same shape; parameters that only
    ``restorer`` has keep their initialisation. Returns the provenance kept in checkpoints
    and model cards.
    """
    path = source / "restorer.pt" if source.is_dir() else source
    if not path.is_file():
        raise FileNotFoundError(f"init_from: no restorer checkpoint at '{path}'")
    state = load_checkpoint(path)
    if state.get("phase") != "restorer":
        raise ValueError(f"init_from: '{path}' is a {state.get('phase')!r} checkpoint, not a restorer one")
    stored = state["models"]["model"]
    target = trainable_state(restorer)
    missing = sorted(k for k in stored if k not in target)
    mismatched = sorted(k for k in stored if k in target and tuple(stored[k].shape) != tuple(target[k].shape))
    if missing or mismatched:
        raise ValueError(f"init_from: '{path}' does not fit the new model: not in it {missing[:5]}, other shapes "
                         f"{mismatched[:5]} (a grown model must keep every stored weight)")
    restorer.load_state_dict(stored, strict=False)
    added = sorted(k for k in target if k not in stored)
    return {"path": str(path), "step": int(state["step"]), "minutes": round(float(state["seconds"]) / 60, 1),
            "history": list(state.get("history", [])),
            "changed": config_changes(stored_config(state), config.to_dict()),
            "added_parameters": sorted({k.rsplit(".", 1)[0] for k in added}),
            "initialised_from": state.get("initialised_from") or None}  # the source's own origin, if grown


# =========================================================================================
# one training phase: schedule, logging, checkpoints, resume
# =========================================================================================
@dataclass
class Phase:
    """What a phase trains and for how long.

    ``step_function(batch) -> dict of loss terms`` does forward, backward and the
    optimizer step; ``hooks`` run at the start and every ``hook_every`` steps (or each
    epoch when 0) and may return extra log values; ``extra_state`` goes into checkpoints.
    """

    name: str
    stage: int
    modules: dict[str, nn.Module]
    optimizer: torch.optim.Optimizer
    loader: DataLoader
    step_function: Callable[[dict[str, torch.Tensor]], dict[str, float]]
    steps: int
    minutes: float | None
    hook: Callable[[int], dict[str, float]] | None = None
    hook_every: int = 0
    extra_state: Callable[[], dict[str, Any]] = lambda: {}
    load_extra_state: Callable[[dict[str, Any]], None] = lambda state: None
    state_filter: Callable[[nn.Module], dict[str, torch.Tensor]] = lambda module: module.state_dict()


def config_changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[Any]]:
    """Fields whose value differs between two config dicts, as ``{field: [before, after]}``.

    A resumed phase records these in its checkpoint's ``history`` (with the step at which
    they took effect), so a model card can say how the model was really trained.
    """
    return {key: [before.get(key), after.get(key)] for key in sorted(set(before) | set(after))
            if before.get(key) != after.get(key)}


def stored_config(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's config with the fields it predates filled in: from
    ``configs.PREDATING_VALUES`` where runs before the field behaved otherwise (e.g.
    ``gray_sources``), else with their defaults.
    """
    values = {**PREDATING_VALUES, **dict(state.get("config", {}))}
    try:
        return config_from_dict(values).to_dict()
    except (TypeError, ValueError):  # written by another version: compare what is there
        return values


def learning_rate(base: float, minimum: float, progress: float, step: int, warmup_steps: int) -> float:
    """Cosine from ``base`` to ``minimum`` over ``progress`` in [0, 1], after a linear warm-up of the steps."""
    warmup = min(1.0, (step + 1) / max(1, warmup_steps))
    return warmup * (minimum + (base - minimum) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def finished(progress: float, runtime: Runtime) -> bool:
    """Whether a phase is over; under DDP every rank stops when any rank's budget is spent."""
    over = progress >= 1.0
    if runtime.distributed:
        import torch.distributed as dist

        flag = torch.tensor([float(over)], device=runtime.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        over = bool(flag.item())
    return over


def progress_of(step: int, seconds: float, steps: int, minutes: float | None) -> float:
    """Fraction of a phase's budget spent: by steps, or by clock time when it has ``minutes``."""
    by_steps = step / max(1, steps)
    return max(by_steps, seconds / (60.0 * minutes)) if minutes else by_steps


def run_phase(phase: Phase, config: TrainConfig, run_folder: Path, runtime: Runtime, log: TrainingLog) -> dict[str, Any]:
    """Train ``phase`` until its steps or minutes are spent; resumes from its checkpoint.

    Returns the final checkpoint payload (holding ``step``, ``seconds``, ``done``).
    """
    path = run_folder / f"{phase.name}.pt"
    step, seconds, epoch, done = 0, 0.0, 0, False
    resumed_at = 0  # the warm-up restarts on resume (the schedule may jump when a budget grows)
    history: list[dict[str, Any]] = []
    if path.exists():
        state = load_checkpoint(path)
        for name, module in phase.modules.items():
            load_module_state(module, state["models"][name], optional_prefixes=("semantic.",))
        step, seconds, epoch = int(state["step"]), float(state["seconds"]), int(state["epoch"]) + 1
        resumed_at = step
        history = list(state.get("history", []))
        changes = config_changes(stored_config(state), config.to_dict())
        if changes:
            history.append({"step": step, "minutes": round(seconds / 60, 1), "changed": changes})
        # finished means "the current budget is spent": a larger --minutes or steps continues a finished phase
        done = progress_of(step, seconds, phase.steps, phase.minutes) >= 1.0
        if "optimizer" in state and not done:
            load_optimizer_state(phase.optimizer, state["optimizer"], phase.name)
        phase.load_extra_state(state)
        if runtime.main:
            print(f"[{phase.name}] resumed from {path} at step {step} ({seconds / 60:.1f} min trained, done={done})", flush=True)
        if done:
            return state
    base_rates = [group["base_lr"] for group in phase.optimizer.param_groups]

    def progress() -> float:
        return progress_of(step, seconds, phase.steps, phase.minutes)

    def checkpoint(finished: bool) -> dict[str, Any]:
        payload = {
            "config": config.to_dict(),
            "phase": phase.name,
            "step": step,
            "seconds": seconds,
            "epoch": epoch,
            "done": finished,
            "models": {name: phase.state_filter(module) for name, module in phase.modules.items()},
            "optimizer": phase.optimizer.state_dict(),
            "history": history,
            **phase.extra_state(),
        }
        if runtime.main:
            save_checkpoint(path, payload)
            log.plot()
        return payload

    for module in phase.modules.values():
        module.train()
    last_save = time.monotonic()
    window: dict[str, list[float]] = {}
    extra: dict[str, float] = phase.hook(step) if phase.hook else {}
    stream = batches(phase.loader, epoch)
    # the budget clock: wall time, or this process's CPU time (fair budgets on a shared machine)
    clock = time.process_time if config.clock == "process" else time.monotonic
    started = clock() - seconds
    while not finished(progress(), runtime):
        batch_epoch, batch = next(stream)
        if batch_epoch != epoch:
            epoch = batch_epoch
            if phase.hook and phase.hook_every == 0:
                extra.update(phase.hook(step))
        for group, base in zip(phase.optimizer.param_groups, base_rates):
            group["lr"] = learning_rate(base, config.min_lr, progress(), step - resumed_at, config.warmup_steps)
        terms = phase.step_function(batch)
        for key, value in terms.items():
            if not math.isfinite(value):
                raise FloatingPointError(f"[{phase.name}] loss term {key} is {value} at step {step}")
            window.setdefault(key, []).append(value)
        step += 1
        seconds = clock() - started
        if phase.hook and phase.hook_every and step % phase.hook_every == 0:
            extra.update(phase.hook(step))
        if step % config.log_every == 0 or progress() >= 1.0:
            averages = {key: float(np.mean(values)) for key, values in window.items()}
            log.write(step=step, stage=phase.stage, phase=phase.name, lr=phase.optimizer.param_groups[0]["lr"],
                      seconds=round(seconds, 1), **averages, **extra)
            window, extra = {}, {}
        if time.monotonic() - last_save >= 60.0 * config.checkpoint_minutes:
            checkpoint(False)
            last_save = time.monotonic()
    final = checkpoint(True)
    if runtime.distributed:  # the other ranks wait until rank 0 has written the finished phase
        import torch.distributed as dist

        dist.barrier()
    return final


def load_optimizer_state(optimizer: torch.optim.Optimizer, stored: dict[str, Any], phase: str) -> None:
    """Load the stored moments but keep the configured rates and decay (a resume may change ``lr``)."""
    configured = [{key: group[key] for key in ("base_lr", "weight_decay")} for group in optimizer.param_groups]
    if len(stored["param_groups"]) != len(configured):
        hint = " (was router_lr_scale changed from or to 1?)" if phase == "restorer" else ""
        raise ValueError(f"{phase}: the checkpoint's optimizer has {len(stored['param_groups'])} parameter group(s), this "
                         f"config makes {len(configured)}{hint}; resume with the stored setting, or start a new run "
                         "folder with init_from")
    optimizer.load_state_dict(stored)
    for group, values in zip(optimizer.param_groups, configured):
        group.update(values)


def optimizer_for(groups: list[tuple[list[nn.Parameter], float]], weight_decay: float) -> torch.optim.AdamW:
    """AdamW over (parameters, base learning rate) groups; ``base_lr`` kept in each group."""
    return torch.optim.AdamW(
        [{"params": params, "lr": rate, "base_lr": rate} for params, rate in groups if params],
        weight_decay=weight_decay,
    )


def amp_enabled(runtime: Runtime, config: TrainConfig) -> bool:
    """Whether training steps run under bf16 autocast: ``amp`` on CUDA, ``cpu_amp`` on CPU."""
    if runtime.device.type == "cuda":
        return config.amp
    return runtime.device.type == "cpu" and config.cpu_amp


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX); False if torch cannot tell."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without the (private) query
        return False


def autocast(runtime: Runtime, config: TrainConfig):
    """bf16 autocast where :func:`amp_enabled`, else a no-op context."""
    return torch.autocast(device_type=runtime.device.type, dtype=torch.bfloat16, enabled=amp_enabled(runtime, config))


# =========================================================================================
# stage 1a: medium restorers with two-fold cross-fitting
# =========================================================================================
def train_medium(fold: int, config: TrainConfig, tasks, run_folder: Path, runtime: Runtime,
                 log: TrainingLog) -> tuple[Restorer, tuple[str, ...]]:
    """The medium restorer of ``fold`` (frozen) and the tasks it was trained on: those of its
    checkpoint, which are fewer than the run's when a finished run resumes with added tasks.
    (A medium phase still unfinished at such a resume trains on, and then names, all tasks.)"""
    model = Restorer(medium_config(config)).to(runtime.device)
    trained = wrap_for_training(model, runtime)
    optimizer = optimizer_for([(list(model.parameters()), config.medium_lr)], config.weight_decay)
    dataset = TaskBalancedDataset(tasks, config.crop_size, config.crop_size, config.epoch_size, config.seed, fold=fold)

    def step_function(batch: dict[str, torch.Tensor]) -> dict[str, float]:
        degraded = batch["degraded"].to(runtime.device, non_blocking=True)
        clean = batch["clean"].to(runtime.device, non_blocking=True)
        with autocast(runtime, config):
            loss = F.l1_loss(trained(degraded).float(), clean)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": loss.item(), "l1": loss.item()}

    phase = Phase(f"medium{fold}", 1, {"model": model}, optimizer, make_loader(dataset, config.medium_batch_size, runtime, config),
                  step_function, config.medium_steps, config.medium_minutes)
    state = run_phase(phase, config, run_folder, runtime, log)
    return model.eval().requires_grad_(False), tuple(stored_config(state)["tasks"])


@torch.no_grad()
def render_medium(mediums: list[Restorer], degraded: torch.Tensor, folds: torch.Tensor) -> torch.Tensor:
    """Medium tier: each image restored by the medium model of the *other* fold."""
    medium = torch.empty_like(degraded)
    for fold, model in enumerate(mediums):
        chosen = folds == (1 - fold)
        if chosen.any():
            medium[chosen] = model(degraded[chosen]).float().clamp(0, 1)
    return medium


# =========================================================================================
# stage 1b: quality perceiver (prompt learning)
# =========================================================================================
@torch.no_grad()
def perceiver_accuracy(perceiver: QualityPerceiver, mediums: list[Restorer], validation_tasks, config: TrainConfig,
                       device: torch.device, sizes: Sequence[int] | None = None) -> dict[str, float]:
    """Three-tier accuracy on held-out crops (held-out images: neither medium model saw them), at
    each crop side of ``sizes`` (default: ``config.perceiver_sizes()``), and pooled."""
    correct, labels, tasks = {}, [], []
    for size in sizes or config.perceiver_sizes():
        images, size_labels, size_tasks = held_out_tiers(validation_tasks, mediums, config, size, device)
        correct[size] = perceiver_correct(perceiver, images, size_labels)
        labels.append(size_labels)
        tasks.append(size_tasks)
    result = tier_accuracy(torch.cat(list(correct.values())), torch.cat(labels), torch.cat(tasks), validation_tasks)
    if len(correct) > 1:
        result.update({f"accuracy_{size}px": hits.mean().item() for size, hits in correct.items()})
    return result


@torch.no_grad()
def perceiver_correct(perceiver: QualityPerceiver, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """1.0 where the perceiver (in eval mode) gives an image its tier ``labels``, else 0.0 (on the CPU)."""
    was_training = perceiver.training
    perceiver.eval()
    predictions = torch.cat([perceiver(perceiver.prepare(chunk)).argmax(-1) for chunk in images.split(64)])
    perceiver.train(was_training)
    return (predictions.cpu() == labels).float()


def tier_accuracy(correct: torch.Tensor, labels: torch.Tensor, tasks: torch.Tensor, validation_tasks) -> dict[str, float]:
    """Accuracy in all, per tier and per task, from per-crop hits (1.0 / 0.0) and the crops' tier and task indices."""
    result = {"accuracy": correct.mean().item()}
    for index, tier in enumerate(TIERS):
        result[f"accuracy_{tier}"] = correct[labels == index].mean().item()
    for index, task in enumerate(validation_tasks):
        result[f"accuracy_{task.name}"] = correct[tasks == index].mean().item()
    return result


@torch.no_grad()
def held_out_tiers(validation_tasks, mediums: list[Restorer], config: TrainConfig, size: int,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Held-out (low, medium, high) crops of side ``size`` stacked, with their tier and task indices.

    The medium tier is rendered by the first medium model: the held-out images are in neither fold.
    """
    samples = fixed_samples(validation_tasks, config.perceiver_eval_crops, size, config.seed + 1)
    degraded, clean = samples["degraded"].to(device), samples["clean"].to(device)
    medium = mediums[0](degraded).float().clamp(0, 1)
    labels = torch.arange(len(TIERS)).repeat_interleave(len(degraded))
    return torch.cat([degraded, medium, clean]), labels, samples["task"].repeat(len(TIERS))


def synchronised_window(largest: int, smallest: int, rng: np.random.Generator) -> tuple[slice, ...]:
    """The same random square window, of side in [smallest, largest], of every crop of a batch (N, C, largest, largest)."""
    side = int(rng.integers(smallest, largest + 1))
    top, left = (int(v) for v in rng.integers(0, largest - side + 1, size=2))
    return (slice(None), slice(None), slice(top, top + side), slice(left, left + side))


def initialise_perceiver(perceiver: QualityPerceiver, source: str) -> None:
    """Copy a trained perceiver's weights (zoo name or file) into ``perceiver``; it must have the same architecture."""
    trained = zoo.load_perceiver(source)
    try:
        perceiver.load_state_dict(trained.state_dict())
    except RuntimeError as error:
        raise ValueError(f"perceiver_init_from: '{source}' does not fit this run's perceiver (clip_config, n_ctx): "
                         f"{str(error).splitlines()[0]}") from None


def train_perceiver(config: TrainConfig, mediums: list[Restorer], tasks, validation_tasks, run_folder: Path,
                    runtime: Runtime, log: TrainingLog) -> tuple[QualityPerceiver, dict[str, float]]:
    path = run_folder / "perceiver.pt"
    pretrained = config.clip is not None
    # a finished phase is rebuilt from its checkpoint: no need to fetch CLIP weights again
    perceiver = build_perceiver(config, pretrained=pretrained and not (path.exists() and load_checkpoint(path)["done"]))
    if config.perceiver_init_from and not path.exists():
        initialise_perceiver(perceiver, config.perceiver_init_from)
        if runtime.main:
            print(f"[perceiver] initialised from {config.perceiver_init_from}", flush=True)
    perceiver = perceiver.to(runtime.device)
    perceiver.lock_text()
    groups: list[tuple[list[nn.Parameter], float]] = [([perceiver.ctx], config.perceiver_lr)]
    if pretrained:
        perceiver.lock_image()  # the paper: frozen CLIP, only the prompts learn
    else:  # tiny CLIP without pretraining: the image tower and logit scale learn too
        perceiver.clip.logit_scale.requires_grad_(True)
        groups.append((list(perceiver.clip.visual.parameters()) + [perceiver.clip.logit_scale], config.perceiver_tower_lr))
    trained = wrap_for_training(perceiver, runtime)
    optimizer = optimizer_for(groups, config.weight_decay)
    largest = max(config.perceiver_sizes())
    dataset = TaskBalancedDataset(tasks, largest, largest, config.epoch_size, config.seed)
    labels = torch.arange(len(TIERS), device=runtime.device).repeat_interleave(config.perceiver_batch_size)
    sides = np.random.default_rng([config.seed, 11])  # the crop side and place of each batch

    def step_function(batch: dict[str, torch.Tensor]) -> dict[str, float]:
        window = synchronised_window(largest, config.perceiver_crop, sides)
        low = batch["degraded"][window].to(runtime.device, non_blocking=True)
        high = batch["clean"][window].to(runtime.device, non_blocking=True)
        medium = render_medium(mediums, low, batch["fold"].to(runtime.device))
        pixels = perceiver.prepare(torch.cat([low, medium, high]))
        with autocast(runtime, config):
            logits = trained(pixels).float()
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            perceiver.clip.logit_scale.clamp_(0, math.log(100.0))
        return {"loss": loss.item(), "accuracy": (logits.argmax(-1) == labels).float().mean().item()}


    phase = Phase("perceiver", 1, {"model": perceiver}, optimizer,
                  make_loader(dataset, config.perceiver_batch_size, runtime, config), step_function,
                  config.perceiver_steps, config.perceiver_minutes)
    state = run_phase(phase, config, run_folder, runtime, log)
    if "accuracy" not in state.get("metrics", {}):
        state["metrics"] = perceiver_accuracy(perceiver, mediums, validation_tasks, config, runtime.device)
        if runtime.main:
            save_checkpoint(path, state)
    held_out = dict(state["metrics"])
    log.write(step=state["step"], stage=1, phase="perceiver", accuracy=held_out["accuracy"], seconds=round(state["seconds"], 1))
    if runtime.main:
        print("[perceiver] held-out accuracy " + json.dumps({k: round(v, 4) for k, v in held_out.items()}), flush=True)
    return perceiver.lock(), held_out


# =========================================================================================
# stage 2: the all-in-one restorer
# =========================================================================================
@torch.no_grad()
def task_psnr(model: nn.Module, samples: dict[str, torch.Tensor], n_tasks: int, device: torch.device) -> torch.Tensor:
    """Mean PSNR per task, (n_tasks,), of ``model`` on fixed samples."""
    values = torch.cat([psnr(model(d.to(device)).float(), c.to(device)).cpu()
                        for d, c in zip(samples["degraded"].split(16), samples["clean"].split(16))])
    return torch.stack([values[samples["task"] == t].mean() for t in range(n_tasks)])


def restorer_groups(restorer: Restorer, config: TrainConfig) -> list[tuple[list[nn.Parameter], float]]:
    """The restorer's trainable parameters at ``lr``; the router in a group of its own if its rate differs."""
    router = [p for p in restorer.router.parameters() if p.requires_grad] \
        if restorer.router is not None and config.router_lr_scale != 1 else []
    in_router = {id(p) for p in router}
    rest = [p for p in restorer.parameters() if p.requires_grad and id(p) not in in_router]
    return [(rest, config.lr), (router, config.lr * config.router_lr_scale)]


def load_teacher(config: TrainConfig, device: torch.device) -> Restorer | None:
    """The frozen restorer of ``config.teacher`` (a run folder) when ``teacher_weight`` > 0, else None."""
    if not config.teacher_weight > 0:
        return None
    folder = Path(config.teacher)
    if not (folder / "restorer.pt").exists():
        raise SystemExit(f"teacher '{folder}' is not a run folder with a trained restorer (no restorer.pt)")
    return load_run(folder, device)[3]


def feature_extractor(config: TrainConfig) -> nn.Module:
    """VGG16 taps when weights are given (the paper), else the fixed random pyramid (documented fallback)."""
    if config.vgg_file:
        return Vgg16Features(config.vgg_file)
    return RandomFeaturePyramid(seed=config.seed)


def train_restorer(config: TrainConfig, mediums: list[tuple[Restorer, tuple[str, ...]]], perceiver: QualityPerceiver,
                   tasks, validation_tasks, run_folder: Path, runtime: Runtime,
                   log: TrainingLog) -> tuple[Restorer, dict[str, Any]]:
    """Stage 2. ``mediums``: (proxy restorer, the tasks it was trained on) pairs, from :func:`train_medium`."""
    device = runtime.device
    restorer = build_restorer(config, perceiver).to(device)
    initialised_from: dict[str, Any] = {}
    if config.init_from and not (run_folder / "restorer.pt").exists():
        initialised_from = grow_from_checkpoint(restorer, Path(config.init_from), config)
        if runtime.main:
            print(f"[restorer] initialised from {initialised_from['path']} (step {initialised_from['step']}); "
                  f"new: {initialised_from['added_parameters']}", flush=True)
    trained = wrap_for_training(RestorerTrainingStep(restorer), runtime)
    groups = restorer_groups(restorer, config)
    parameters = [p for params, _ in groups for p in params]
    optimizer = optimizer_for(groups, config.weight_decay)
    dataset = TaskBalancedDataset(tasks, config.crop_size, config.region_size, config.epoch_size, config.seed,
                                  weights=config.stage2_task_weights(), deblur=config.deblur_inputs)
    features = feature_extractor(config).to(device)
    probe = fixed_samples(validation_tasks, config.probe_crops, config.crop_size, config.seed + 2,
                          deblur=config.deblur_inputs)
    n_tasks = len(tasks)
    # proxies: the two cross-fitted medium restorers; m_k = 1 for the tasks proxy k was trained on
    task_mask = torch.tensor([[float(task.name in trained_on) for task in tasks] for _, trained_on in mediums])
    medium_models = [model for model, _ in mediums]
    state_metrics: dict[str, Any] = {"proxy_task_mask": {task.name: task_mask[:, t].tolist() for t, task in enumerate(tasks)}}
    beta = torch.full((len(medium_models), n_tasks), config.beta_hard)
    proxy_psnr = torch.stack([task_psnr(m, probe, n_tasks, device) for m in medium_models])
    teacher = load_teacher(config, device)
    taught = torch.tensor([task.name in config.teacher_tasks for task in tasks], device=device)

    def measure_beta(step: int) -> dict[str, float]:
        """beta_k = beta_hard where proxy k is at least as good as the current model on the probe set."""
        restorer.eval()
        current = task_psnr(restorer, probe, n_tasks, device)
        restorer.train()
        beta.copy_(torch.where(proxy_psnr >= current[None, :], config.beta_hard, config.beta_easy))
        state_metrics["probe_psnr"] = current.tolist()
        return {"psnr": current.mean().item()}

    def step_function(batch: dict[str, torch.Tensor]) -> dict[str, float]:
        degraded = batch["degraded"].to(device, non_blocking=True)
        clean = batch["clean"].to(device, non_blocking=True)
        key = batch["key"].to(device, non_blocking=True)
        task = batch["task"].to(device)
        # a term with weight 0 is not computed at all (ablations at equal time budget get the saved time)
        if config.dpl_weight > 0:
            with torch.no_grad():
                proxies = [m(degraded).float().clamp(0, 1) for m in medium_models]
            proxy_weights = (task_mask * beta).to(device)[:, task].t()
        with autocast(runtime, config):
            restored, query, positive = trained(degraded, key)
            restored = restored.float()
            zero = restored.new_zeros(())
            l1 = F.l1_loss(restored, clean)
            nce = info_nce(query.float(), positive.float(), task, config.temperature) if query is not None else zero
            quality = clip_quality_loss(perceiver, restored) if config.clip_weight > 0 else zero
            dpl = (difficulty_adaptive_perceptual_loss(features, restored, clean, degraded, proxies, proxy_weights)
                   if config.dpl_weight > 0 else zero)
            frequency = frequency_l1(restored, clean) if config.frequency_weight > 0 else zero
            distill = zero
            if teacher is not None and bool(taught[task].any()):
                chosen = taught[task]
                with torch.no_grad():
                    target = teacher(degraded[chosen]).float()
                distill = F.l1_loss(restored[chosen], target)
        loss = (config.l1_weight * l1 + config.info_nce_weight * nce + config.clip_weight * quality
                + config.dpl_weight * dpl + config.frequency_weight * frequency + config.teacher_weight * distill)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        return {"loss": loss.item(), "l1": l1.item(), "info_nce": nce.item(), "clip": quality.item(), "dpl": dpl.item(),
                "frequency": frequency.item(), "distill": distill.item()}

    def load_extra(state: dict[str, Any]) -> None:
        # the stored beta is not loaded: measure_beta runs when the phase starts (also after a
        # resume with other tasks, whose stored beta has other columns)
        initialised_from.update(state.get("initialised_from", {}))

    phase = Phase("restorer", 2, {"model": restorer}, optimizer, make_loader(dataset, config.batch_size, runtime, config),
                  step_function, config.steps, config.minutes, hook=measure_beta, hook_every=config.beta_every,
                  extra_state=lambda: {"beta": beta.clone(), "metrics": dict(state_metrics),
                                       "initialised_from": dict(initialised_from)},
                  load_extra_state=load_extra, state_filter=trainable_state)
    state = run_phase(phase, config, run_folder, runtime, log)
    return restorer.eval(), state


# =========================================================================================
# evaluation and shipping
# =========================================================================================
@torch.no_grad()
def restore_gray(model: nn.Module, image: np.ndarray, device: torch.device) -> np.ndarray:
    """Restore a (Y, X) float image: replicated to the model's ``in_channels`` (3 for the RGB
    restorer, 1 for a gray backbone), the output channels averaged."""
    channels = model.in_channels
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].expand(1, channels, -1, -1)
    tensor = tensor.to(device)
    return model(tensor).float().mean(dim=1)[0].cpu().numpy()


def evaluate_set12(model: nn.Module, device: torch.device, sigmas: tuple[int, ...] = (15, 25, 50),
                   per_image: bool = False) -> dict[str, float]:
    """Set12 PSNR per noise level (the field's protocol: float noise, np.random.seed(0) per image, unclipped input).

    ``per_image`` adds each image's PSNR as ``set12_sigma{sigma}_{name}``.
    """
    images = set12_images()
    result = {}
    for sigma in sigmas:
        values = []
        for name, clean in images:
            np.random.seed(0)
            noisy = clean + np.random.normal(0, sigma / 255.0, clean.shape).astype(np.float32)
            restored = np.clip(restore_gray(model, noisy, device), 0, 1)
            values.append(10 * np.log10(1.0 / np.mean((restored.astype(np.float64) - clean) ** 2)))
            if per_image:
                result[f"set12_sigma{sigma}_{name}"] = float(values[-1])
        result[f"set12_sigma{sigma}"] = float(np.mean(values))
    return result


def evaluate_tasks(model: Restorer, validation_tasks, config: TrainConfig, device: torch.device) -> dict[str, float]:
    """PSNR of input and output per task on fixed held-out 128x128 crops."""
    samples = fixed_samples(validation_tasks, 8, 128, config.seed + 3)
    output = task_psnr(model, samples, len(validation_tasks), device)
    identity = task_psnr(nn.Identity(), samples, len(validation_tasks), device)
    result = {}
    for index, task in enumerate(validation_tasks):
        result[f"{task.name}_psnr_input"] = round(identity[index].item(), 3)
        result[f"{task.name}_psnr_output"] = round(output[index].item(), 3)
    return result


def loss_description(config: TrainConfig) -> str:
    """The stage-2 loss of ``config`` in words, e.g. ``L1 + 0.1 InfoNCE(CFE, tau 0.1)``."""
    terms = [(config.l1_weight, "L1"), (config.info_nce_weight, f"InfoNCE(CFE, tau {config.temperature:g})"),
             (config.clip_weight, "L_clip(frozen stage-1 perceiver)"), (config.dpl_weight, "L_dpl"),
             (config.frequency_weight, "L1(FFT)"),
             (config.teacher_weight, f"L1(teacher {config.teacher} on {', '.join(config.teacher_tasks)})")]
    return " + ".join(name if weight == 1 else f"{weight:g} {name}" for weight, name in terms if weight)


def ship(config: TrainConfig, run_folder: Path, restorer: Restorer, perceiver: QualityPerceiver,
         perceiver_metrics: dict[str, float], validation_tasks, command: str, restorer_name: str | None = None,
         perceiver_name: str | None = None, perceiver_folder: Path | None = None,
         ship_perceiver: bool = True, separate_ship: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Save both models into the package's weights folder with model cards, register their sha256,
    and copy a compact resume checkpoint into ``training/checkpoints/<config>/``.

    ``perceiver_folder`` (default: ``run_folder``, with ``perceiver`` and ``perceiver_metrics``
    as given) ships the perceiver trained there instead, e.g. one trained longer than the
    run's own stage 1; the restorer keeps the semantic tower (a frozen copy of the run's
    own perceiver) it was trained with, stored in its file. ``ship_perceiver=False`` ships
    the restorer alone and leaves the zoo's perceivers as they are. ``separate_ship``: the
    call only ships finished checkpoints, so the cards name ``command`` the shipping command
    rather than the training command.

    Raises
    ------
    FileExistsError
        A model is already shipped under one of the names and ``overwrite`` is False
        (nothing is written).
    """
    device = torch.device("cpu")
    restorer_name = restorer_name or zoo.DEFAULT_RESTORER
    perceiver_name = perceiver_name or zoo.DEFAULT_PERCEIVER
    targets = [restorer_name] + ([perceiver_name] if ship_perceiver else [])
    existing = [name for name in targets if (zoo.WEIGHTS_DIR / f"{name}.safetensors").exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing} already shipped in '{zoo.WEIGHTS_DIR}': ship under new names "
                              "(--restorer-name / --perceiver-name, --restorer-only) or pass --overwrite to replace them")
    states = {name: load_checkpoint(run_folder / f"{name}.pt") for name in PHASES}
    if perceiver_folder is None:
        perceiver_folder, shipped_perceiver_state = Path(run_folder), states["perceiver"]
    else:
        perceiver, shipped_perceiver_state = load_perceiver_checkpoint(perceiver_folder)
        perceiver_metrics = dict(shipped_perceiver_state["metrics"])
    restorer_state = states["restorer"]
    restorer, perceiver = restorer.to(device).eval(), perceiver.to(device).eval()
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.get_num_threads()} "
               f"thread(s); load average at shipping {os.getloadavg()[0]:.1f} (a shared machine trains fewer steps per minute)")
    data = ("BSD400 (gray), CBSD432 minus 32 held-out images, scikit-image bundled images "
            "(" + ", ".join(SKIMAGE_IMAGES) + "), synthetic fluorescence microscopy "
            "(perceive_ir.synthetic); degradations synthesised on the fly with perceive_ir.degrade")
    if config.data_source == "folders":
        data = f"the field's folder layout under {config.data_root}"
    common = {
        # a separate `--ship` call is not how the weights were trained: say which it is
        ("shipping_command" if separate_ship else "training_command"): command,
        "config": config.to_dict(),
        "data": data,
        "tasks": list(config.tasks),
        "hardware": machine,
        "phases": {name: {"steps": int(state["step"]), "wall_time_minutes": round(float(state["seconds"]) / 60, 1)}
                   for name, state in states.items()},
        "total_wall_time_minutes": round(sum(float(state["seconds"]) for state in states.values()) / 60, 1),
    }
    # perceiver (float16: a few MB)
    if ship_perceiver:
        perceiver_path = zoo.WEIGHTS_DIR / f"{perceiver_name}.safetensors"
        trained_with = config_from_dict(stored_config(shipped_perceiver_state))  # its own run's settings
        sides = f"{trained_with.perceiver_crop}" + (f" to {trained_with.perceiver_crop_max}"
                                                    if len(trained_with.perceiver_sizes()) > 1 else "")
        start = (f"fine-tuned from {trained_with.perceiver_init_from}; " if trained_with.perceiver_init_from else "")
        card = dict(common, name=perceiver_name, kind="perceiver", stored_dtype="float16",
                    config=trained_with.to_dict(), tasks=list(trained_with.tasks),
                    steps=int(shipped_perceiver_state["step"]),
                    wall_time_minutes=round(float(shipped_perceiver_state["seconds"]) / 60, 1),
                    trained_in=str(perceiver_folder),
                    training=(start + "CoOp prompts (16 tokens per tier) on a compact open_clip CLIP; no pretrained CLIP "
                              "is available offline, so the image tower and the logit scale were trained from scratch "
                              "together with the prompts (text tower frozen at its random initialisation). Tiers: "
                              "low = degraded crop, medium = cross-fitted medium restorer output, high = clean crop; "
                              f"synchronised square crops of {sides} px resized to the CLIP input (224); synthetic "
                              f"microscopy regions are windows of fields up to {trained_with.microscopy_zoom:g} times "
                              "their side." if trained_with.clip is None else
                              start + f"CoOp prompts on frozen CLIP {trained_with.clip}"),
                    metrics={"held_out_three_tier_accuracy": {k: round(v, 4) for k, v in perceiver_metrics.items()},
                             "held_out_data": "32 held-out CBSD432 images and held-out synthetic microscopy seeds"})
        perceiver_sha = zoo.save_weights(perceiver, perceiver_path, card=card, dtype=torch.float16)
        zoo.register(perceiver_name, "perceiver", perceiver_path.name, perceiver_sha,
                     "Compact open_clip CLIP + learned tier prompts (image tower trained from scratch), trained by "
                     "`python training/run.py --config compact`")
    # restorer: compare float32 and float16 storage on Set12
    metrics = evaluate_set12(restorer, device)
    half = Restorer(restorer.config)
    half.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in restorer.state_dict().items()})
    half_metrics = evaluate_set12(half.eval(), device)
    worst = max(abs(metrics[k] - half_metrics[k]) for k in metrics)
    dtype = torch.float16 if worst < 0.01 else None
    task_metrics = evaluate_tasks(restorer, validation_tasks, config, device)
    restorer_path = zoo.WEIGHTS_DIR / f"{restorer_name}.safetensors"
    card = dict(common, name=restorer_name, kind="restorer",
                stored_dtype="float16" if dtype is not None else "float32",
                float16_vs_float32_set12_max_abs_difference_db=round(worst, 4),
                steps=int(restorer_state["step"]),
                losses=loss_description(config),
                training_history=restorer_state.get("history", []),
                initialised_from=restorer_state.get("initialised_from") or None,
                perceptual_features=("VGG16 relu1_2/2_2/3_2/3_3" if config.vgg_file else
                                     "fixed random conv pyramid (no VGG16 weights offline; see training/losses.py)"),
                dpl_proxies="the two cross-fitted medium restorers of stage 1",
                dpl_proxy_task_mask=restorer_state.get("metrics", {}).get("proxy_task_mask"),
                perceiver_in_training=(f"the run's own stage-1 perceiver ({int(states['perceiver']['step'])} steps) gave "
                                       "L_clip and the frozen semantic tower (stored in this file)"),
                gray_images=("degraded as one plane, then replicated to 3 channels (the channels share the noise, as "
                             "a gray input's do at inference)" if config.gray_sources == "plane" else
                             "replicated to 3 channels, then degraded channel by channel")
                + "; the inference API replicates gray planes and averages the output channels",
                metrics={**{k: round(v, 3) for k, v in metrics.items()},
                         "set12_protocol": "gray Set12, noise added in float64 with np.random.seed(0) per image, unclipped "
                                           "input, output clipped to [0, 1], whole-image inference",
                         "held_out_task_psnr_128px_crops": task_metrics,
                         "probe_psnr_per_task_last_measured": restorer_state.get("metrics", {}).get("probe_psnr")})
    restorer_sha = zoo.save_weights(restorer, restorer_path, card=card, dtype=dtype)
    zoo.register(restorer_name, "restorer", restorer_path.name, restorer_sha,
                 "Compact U-Net all-in-one restorer (CFE + SGM with the perceiver's image tower), trained on CPU by "
                 "`python training/run.py --config compact`")
    # a small resume checkpoint for later sessions: weights, step, config (no optimizer moments)
    seed_folder = RESUME_CHECKPOINTS / config.name
    seed_folder.mkdir(parents=True, exist_ok=True)
    for name, state in states.items():
        state.pop("optimizer", None)
        if name == "perceiver":
            state["models"] = {k: {n: t.half() if t.is_floating_point() else t for n, t in v.items()}
                               for k, v in state["models"].items()}
        save_checkpoint(seed_folder / f"{name}.pt", state)
    shipped_perceiver = f" and {perceiver_path} ({perceiver_sha[:12]})" if ship_perceiver else ""
    print(f"shipped {restorer_path} ({restorer_sha[:12]}){shipped_perceiver}; "
          f"Set12 {json.dumps({k: round(v, 2) for k, v in metrics.items()})}", flush=True)
    return {"restorer": str(restorer_path), "perceiver": str(perceiver_path) if ship_perceiver else None, **metrics}


# =========================================================================================
# main
# =========================================================================================
def resolve(arguments: argparse.Namespace, run_folder: Path) -> TrainConfig:
    """The run's config: from the checkpoints when resuming or shipping, else the named experiment."""
    overrides = _parse_overrides(arguments.override)
    if arguments.data_root is not None:
        overrides["data_root"] = arguments.data_root
    if arguments.clip is not None:
        overrides["clip"] = arguments.clip
    if arguments.dinov2 is not None:
        overrides["dinov2_file"] = arguments.dinov2
    if arguments.vgg is not None:
        overrides["vgg_file"] = arguments.vgg
    if arguments.minutes is not None:
        overrides["minutes"] = arguments.minutes
    existing = [run_folder / f"{name}.pt" for name in reversed(PHASES) if (run_folder / f"{name}.pt").exists()]
    if arguments.branch is not None:
        source = branch_source(Path(arguments.branch))
        if (run_folder / "restorer.pt").exists():
            raise SystemExit(f"--branch: '{run_folder}' already holds a stage-2 checkpoint; continue it with --resume "
                             "or choose another --out")
        stored = stored_config(load_checkpoint(source / "restorer.pt"))
        stored["init_from"] = str(source / "restorer.pt")
        # a teacher belongs to the phase it taught (a folder of that session): a branch names its own
        stored.update(teacher=None, teacher_weight=0.0)
        stored.update(overrides)
        return config_from_dict(stored)
    if arguments.resume or arguments.ship:
        if not existing:
            raise SystemExit(f"--resume/--ship: no checkpoint in '{run_folder}' (expected one of {[p + '.pt' for p in PHASES]})")
        stored = stored_config(load_checkpoint(existing[0]))  # fields the run predates read as the run behaved
        stored.update(overrides)
        return config_from_dict(stored)
    if existing:
        raise SystemExit(f"'{run_folder}' already holds checkpoints; pass --resume to continue or choose another --out")
    try:
        return resolve_config(arguments.config, **overrides)
    except ValueError as error:
        raise SystemExit(str(error)) from None


def branch_source(folder: Path) -> Path:
    """The run folder ``--branch`` starts from, checked: finished stage-1 checkpoints and a restorer one."""
    if not folder.is_dir():
        raise SystemExit(f"--branch '{folder}' is not a run folder")
    for name in PHASES:
        if not (folder / f"{name}.pt").is_file():
            raise SystemExit(f"--branch: '{folder}' has no {name}.pt (a branch starts from a run with both stages)")
    return folder


def copy_stage1(source: Path, run_folder: Path) -> None:
    """Copy the stage-1 checkpoints of ``source`` into ``run_folder`` (those it lacks), to train a stage 2 on them.

    Each copy is written to a temporary file and renamed, so that the processes of a
    ``torchrun`` launch, which all copy, never read a half-written checkpoint.
    """
    run_folder.mkdir(parents=True, exist_ok=True)
    for name in PHASES[:-1]:
        target = run_folder / f"{name}.pt"
        if not target.exists():
            try:
                with atomic_output(target) as temporary:
                    shutil.copy2(source / f"{name}.pt", temporary)
            except FileExistsError:  # another process copied it first
                pass


def check_paths(config: TrainConfig) -> None:
    """Stop with a clear message when a folder or weights file named by the config is missing."""
    if config.data_source == "folders" and not config.data_root:
        raise SystemExit(f"config {config.name!r} reads the field's dataset layout: pass --data-root DIR")
    if config.data_root and not Path(config.data_root).is_dir():
        raise SystemExit(f"--data-root '{config.data_root}' is not a folder")
    for option, value in (("--vgg", config.vgg_file), ("--dinov2", config.dinov2_file)):
        if value and not Path(value).is_file():
            raise SystemExit(f"{option} '{value}' is not a file")


def check_restorer_finished(path: Path, config: TrainConfig) -> None:
    """``--ship`` never trains: stop unless the stage-2 checkpoint has spent its budget."""
    if not path.exists():
        raise SystemExit(f"--ship needs a stage-2 checkpoint '{path}'; train stage 2 first")
    state = load_checkpoint(path)
    if "interpolated" in state:
        mix = state["interpolated"]
        raise SystemExit(f"--ship ships trained restorers, and '{path}' is a weight interpolation "
                         f"({1 - mix['alpha']:g} x {mix['b']} + {mix['alpha']:g} x {mix['a']}, training/interpolate.py)")
    step, minutes = int(state["step"]), float(state["seconds"]) / 60
    if progress_of(step, float(state["seconds"]), config.steps, config.minutes) >= 1.0:
        return
    raise SystemExit(
        f"--ship never trains, and '{path}' stopped before its budget (step {step} of {config.steps}, {minutes:.1f} of "
        f"{config.minutes} min): finish it with --resume, or ship it as it is with --override minutes={math.floor(minutes)}"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    arguments = parse_arguments(argv)
    if (arguments.perceiver_from or arguments.restorer_only) and not arguments.ship:
        raise SystemExit("--perceiver-from and --restorer-only are used with --ship")
    if arguments.perceiver_from and arguments.restorer_only:
        raise SystemExit("--perceiver-from ships a perceiver; --restorer-only ships none: choose one")
    if arguments.branch is not None and (arguments.resume or arguments.ship or arguments.stage == 1):
        raise SystemExit("--branch starts stage 2 of a new run folder: not with --resume, --ship or --stage 1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    run_folder = Path(arguments.out or REPOSITORY / "runs" / arguments.config)
    config = resolve(arguments, run_folder)
    check_paths(config)
    if arguments.branch is not None:
        copy_stage1(Path(arguments.branch), run_folder)
        arguments.stage = 2
    runtime = setup_runtime(arguments.device)
    torch.manual_seed(config.seed + runtime.rank)
    log = TrainingLog(run_folder, enabled=runtime.main)
    command = "python training/run.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if runtime.main:
        print(f"config {config.name} on {runtime.device} (world size {runtime.world_size}) -> {run_folder}", flush=True)
        if runtime.device.type == "cpu" and config.cpu_amp and not cpu_has_native_bf16():
            print("cpu_amp: this CPU has no native bf16 (AVX512-BF16 / AMX); bf16 convolutions are emulated and "
                  "slower than float32", flush=True)
    begin = time.monotonic()

    # ---- data -------------------------------------------------------------------------
    tasks = build_tasks(config, "train")
    validation_tasks = build_tasks(config, "validation")
    if runtime.main:
        print("tasks: " + ", ".join(f"{t.name} ({len(t)} train / {len(v)} held-out images)"
                                    for t, v in zip(tasks, validation_tasks)), flush=True)
    result: dict[str, Any] = {"run_folder": str(run_folder), "config": config.to_dict()}

    # ---- stage 1: medium restorers (cross-fitted), then the quality perceiver --------------
    if arguments.stage == 2 or arguments.ship:
        for name in ("medium0", "medium1", "perceiver"):
            if not (run_folder / f"{name}.pt").exists() or not load_checkpoint(run_folder / f"{name}.pt")["done"]:
                raise SystemExit(f"stage 2 needs the finished stage-1 checkpoint '{run_folder / (name + '.pt')}'; run --stage 1 first")
    if arguments.ship:
        check_restorer_finished(run_folder / "restorer.pt", config)
    mediums = [train_medium(fold, config, tasks, run_folder, runtime, log) for fold in (0, 1)]
    perceiver, perceiver_metrics = train_perceiver(config, [model for model, _ in mediums], tasks, validation_tasks,
                                                   run_folder, runtime, log)
    result["perceiver_accuracy"] = perceiver_metrics
    if arguments.stage == 1:
        return result

    # ---- stage 2: the all-in-one restorer ---------------------------------------------------
    restorer, restorer_state = train_restorer(config, mediums, perceiver, tasks, validation_tasks, run_folder, runtime, log)
    result["restorer_step"] = int(restorer_state["step"])
    log.plot()

    # ---- ship ---------------------------------------------------------------------------------
    if runtime.main and (config.ship or arguments.ship):
        try:
            result["shipped"] = ship(config, run_folder, restorer, perceiver, perceiver_metrics, validation_tasks,
                                     command, restorer_name=arguments.restorer_name,
                                     perceiver_name=arguments.perceiver_name, perceiver_folder=arguments.perceiver_from,
                                     ship_perceiver=not arguments.restorer_only, separate_ship=arguments.ship,
                                     overwrite=arguments.overwrite)
        except FileExistsError as error:
            if arguments.ship:
                raise SystemExit(f"not shipped: {error}") from None
            # the end of a training run: the checkpoints are complete, the shipped models stay as they are
            print(f"not shipped: {error}\nship later with: python training/run.py --out {run_folder} --ship "
                  "--restorer-name NAME [--restorer-only]", flush=True)
    if runtime.main:
        print(f"done in {(time.monotonic() - begin) / 60:.1f} min", flush=True)
    if runtime.distributed:
        import torch.distributed as dist

        dist.destroy_process_group()
    return result


if __name__ == "__main__":
    main()
