"""Training configurations: one base dataclass, each experiment a small override.

``TrainConfig`` holds every hyper-parameter with the value of the CPU recipe that
produces the bundled default (``compact``). Each named experiment in :data:`EXPERIMENTS`
is a dict of the fields it changes, so ``resolve_config("smoke")`` reads as "compact,
but tiny". The resolved config (a plain dict, see :meth:`TrainConfig.to_dict`) is stored
inside every checkpoint and a resumed run is rebuilt from it.

Stages (see ``docs/paper.md`` at the project root of the shared docs):

- stage 1a ``medium``: two small restorers trained with two-fold cross-fitting (L1);
- stage 1b ``perceiver``: CoOp tier prompts on CLIP, three quality tiers;
- stage 2 ``restorer``: the all-in-one restorer with L1 + InfoNCE + CLIP quality loss +
  difficulty-adaptive perceptual loss.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["TrainConfig", "EXPERIMENTS", "PREDATING_VALUES", "resolve_config", "config_from_dict", "TASKS_3", "TASKS_5",
           "TASKS_COMPACT"]

#: The field's benchmark task sets and the compact recipe's tasks.
TASKS_3 = ("noise", "rain", "haze")
TASKS_5 = ("noise", "rain", "haze", "motion_blur", "low_light")
TASKS_COMPACT = ("noise", "rain", "haze", "motion_blur", "low_light", "microscopy", "poisson", "micrograph")


def _tiny_clip() -> dict[str, Any]:
    # perceive_ir.models.tiny_clip_config() defaults, repeated here so that importing
    # the configs needs no torch; checked against the package in tests/test_training.py
    return {
        "embed_dim": 128,
        "vision_cfg": {"image_size": 224, "patch_size": 32, "width": 128, "layers": 4, "head_width": 32},
        "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 1, "layers": 2},
    }


@dataclass
class TrainConfig:
    """Every setting of a training run (defaults: the ``compact`` CPU recipe).

    Attributes
    ----------
    name : str
        Experiment name (a key of :data:`EXPERIMENTS`).
    tasks : tuple of str
        Restoration tasks: for the built-in data ``noise``, ``poisson`` (Poisson-Gaussian photon
        noise on natural images), ``micrograph`` (the same noise on band-limited natural images:
        Gaussian blur and a gain, as widefield micrographs sampled above Nyquist look), ``rain``, ``haze``,
        ``motion_blur``, ``low_light``, ``microscopy`` (synthetic fluorescence); for the folder
        layout ``noise``, ``rain``, ``haze``, ``motion_blur``, ``low_light`` (see ``data.build_tasks``).
    data_source : str
        ``"builtin"`` (BSD400, CBSD432, scikit-image images, synthetic microscopy; the
        degradations synthesised on the fly) or ``"folders"`` (the field's layout under
        ``data_root``).
    data_root : str or None
        Root of the ``folders`` layout (``Train/Denoise``, ``Train/Derain``,
        ``Train/Dehaze``, ``GoPro/train``, ``LOL/our485``).
    gray_sources : str
        How a gray source image becomes a 3-channel training sample: ``"plane"`` degrades
        the gray plane, then replicates it (the channels share the noise, as when the
        inference API replicates a gray plane); ``"replicated"`` replicates, then degrades
        each channel independently (what runs did before this field existed; checkpoints
        without the field are read as ``"replicated"``).
    deblur_inputs : bool
        Pass every stage-2 training sample (and the probe set) through what
        ``restore(deblur="auto")`` does before the network: a confidently detected linear
        motion blur is deconvolved (:mod:`perceive_ir.deblur`), so the network learns to
        finish deconvolved inputs, which it meets at inference. Off in runs before this field.
    microscopy_zoom : float
        The synthetic microscopy task cuts each region from a field up to this many times
        its side (log-uniform), so cells appear at the scales of tiles of a large micrograph
        (see ``data.MicroscopyTask``); 1 draws the field at the region's size (what runs did
        before this field existed; checkpoints without it are read as 1).
    detail_crops : int
        Each training region of a built-in natural-image task (every task but ``microscopy``)
        is the most detailed of this many random windows of its source image (mean absolute
        difference of neighbouring pixels, ``data.detail``); held-out regions stay uniform.
        1: uniform windows (runs before this field). On gray denoising alone, 4 gained 0.13-0.32 dB
        on Set12 at equal CPU time (``backbone_probe.py --detail-crops 4``).
    grating_share : float
        Share of the training regions of the built-in natural-image tasks (as ``detail_crops``)
        that get a sinusoidal grating added over part of the clean crop (``data.add_grating``):
        the regular fine texture (cloth, stripes) that BM3D restores best and the crops rarely
        hold. 0: none (runs before this field); held-out regions never get one.
    task_weights : dict
        Relative share of each stage-2 task in the training samples (task name ->
        positive integer; tasks not named get 1). The medium restorers and the perceiver
        always see the tasks equally often.
    noise_sigmas : tuple of float
        Noise levels (0-255 scale) of the ``noise`` task; empty means uniform in
        ``noise_range``.
    noise_range : tuple of float
        Range of the uniformly drawn noise level when ``noise_sigmas`` is empty.
    crop_size, region_size : int
        Training crop side; side of the degraded region from which the crop and its
        InfoNCE positive (a second crop) are cut.
    batch_size : int
        Restorer batch (per process).
    epoch_size : int
        Samples per epoch (epochs drive the sampler and the ``beta`` re-measurement).
    medium_backbone, medium_backbone_args : str, dict
        Architecture of the stage-1 medium restorers (no CFE, no SGM).
    medium_steps, medium_batch_size, medium_lr, medium_minutes :
        Schedule of each of the two cross-fitted medium restorers.
    clip : str or None
        ``"ARCH:TAG"`` (open_clip pretrained tag, e.g. ``"ViT-B-32:openai"``) or a local
        CLIP weights file; None trains the tiny CLIP of ``clip_config`` from scratch.
    clip_model : str
        open_clip architecture name used with ``clip``.
    clip_config : dict or None
        Full open_clip config of a compact CLIP (used when ``clip`` is None).
    n_ctx : int
        Learned context tokens per tier.
    perceiver_crop, perceiver_crop_max : int
        Side of the synchronised (low, medium, high) crops, resized to the CLIP input. With
        ``perceiver_crop_max`` each batch draws its side uniformly in [``perceiver_crop``,
        ``perceiver_crop_max``], as tiles of different sizes reach the CLIP input at
        inference, and the held-out accuracy is measured at both ends. The largest side is
        the perceiver's ``tile_size`` (what ``perceive`` tiles with by default). None: always
        ``perceiver_crop`` (runs before this field are read so).
    perceiver_init_from : str or None
        Start the prompt learning from a trained perceiver (zoo name or weights file) of the
        same architecture instead of from scratch (fine-tuning it on this run's data).
    perceiver_steps, perceiver_batch_size, perceiver_lr, perceiver_tower_lr, perceiver_minutes :
        Prompt-learning schedule (batch counts triplets); ``perceiver_tower_lr`` is the
        learning rate of the image tower when it is trained (no pretrained CLIP).
    perceiver_eval_crops : int
        Held-out crops per task for the three-tier accuracy.
    backbone, backbone_args, semantic, semantic_args, cfe, sgm, embed_dim, color_head :
        Stage-2 restorer architecture (``RestorerConfig`` fields). ``semantic_args``
        of ``"clip"`` is filled from the perceiver's image tower.
    init_from : str or None
        Start stage 2 from the restorer of another run (its folder or its ``restorer.pt``)
        instead of from scratch: every stored weight must fit the new model (same names
        and shapes); parameters the new model adds (e.g. ``full_res_width`` in
        ``backbone_args``, ``color_head``) keep their initialisation, which for the compact backbone
        leaves the output unchanged. The source's step, minutes and history go into the
        checkpoint and the model card.
    dinov2_file : str or None
        Pretrained DINOv2 weights for ``semantic="dinov2"``.
    vgg_file : str or None
        VGG16 weights for the perceptual loss; None uses the fallback feature pyramid.
    steps, lr, min_lr, weight_decay, minutes :
        Stage-2 schedule (AdamW, cosine to ``min_lr``); ``minutes`` (if set) ends the
        stage on wall-clock time and drives the cosine instead of ``steps``.
    warmup_steps : int
        Linear learning-rate warm-up of every phase.
    router_lr_scale : float
        The expert router's learning rate is ``lr`` times this (1: one group). The router's
        gradient passes through the expert kernels, which start at zero, so it learns slowly.
    teacher, teacher_tasks, teacher_weight :
        Distillation (not in the paper; off by default): a run folder whose trained
        restorer (frozen) teaches the restorer on the samples of ``teacher_tasks``, with an
        extra ``teacher_weight * L1(output, teacher's output)`` on them. A specialist of the
        same architecture (e.g. one trained on the noise task alone) gives a target without
        the clean target's irreducible error, which a shared network can match while it
        learns the other tasks. 0: off (no teacher is loaded).
    l1_weight, info_nce_weight, clip_weight, dpl_weight : float
        Loss weights (paper: 1, 0.1, 0.05, 0.1).
    frequency_weight : float
        Weight of ``losses.frequency_l1`` (L1 between the output's and the target's
        spectra; not in the paper, 0: off, as in runs before the field).
    temperature : float
        InfoNCE temperature.
    beta_hard, beta_easy : float
        Proxy weights of the perceptual loss (hard / easy negative).
    beta_every : int
        Re-measure ``beta`` every this many steps (0: every epoch).
    probe_crops : int
        Probe crops per task for ``beta`` and the validation PSNR.
    amp : bool
        bf16 autocast on CUDA.
    cpu_amp : bool
        bf16 autocast on CPU too. Convolutions then run in bfloat16, which CPUs with native
        bf16 (Intel AMX / AVX512-BF16; ``perceive_ir``'s training README has the step times
        measured here) compute faster; without it they are emulated and slower. False: float32
        on CPU, as in runs before the field.
    num_workers : int
        DataLoader workers.
    clock : str
        What the ``minutes`` budgets count: ``"wall"`` time, or ``"process"`` CPU time (so
        that runs sharing a machine get equal budgets; used by ``training/ablate.py``).
    checkpoint_minutes : float
        Checkpoint at least this often.
    log_every : int
        Steps between log rows.
    seed : int
        Seed of everything random.
    ship : bool
        At the end of stage 2, save the models into the package's ``weights/`` folder
        and register them (the ``compact`` recipe).
    """

    name: str = "compact"
    tasks: tuple[str, ...] = TASKS_COMPACT
    data_source: str = "builtin"
    data_root: str | None = None
    gray_sources: str = "plane"
    deblur_inputs: bool = False
    microscopy_zoom: float = 3.0
    detail_crops: int = 1
    grating_share: float = 0.0
    task_weights: dict[str, int] = field(default_factory=dict)
    noise_sigmas: tuple[float, ...] = ()
    noise_range: tuple[float, float] = (5.0, 55.0)
    crop_size: int = 96
    region_size: int = 128
    batch_size: int = 12
    epoch_size: int = 2400
    # stage 1a: medium restorers (two folds)
    medium_backbone: str = "compact"
    medium_backbone_args: dict[str, Any] = field(
        default_factory=lambda: {"width": 16, "encoder_blocks": [1, 1], "latent_blocks": 2, "decoder_blocks": [1, 1]}
    )
    medium_steps: int = 4000
    medium_batch_size: int = 12
    medium_lr: float = 1e-3
    medium_minutes: float | None = 4.5
    # stage 1b: perceiver
    clip: str | None = None
    clip_model: str = "ViT-B-32"
    clip_config: dict[str, Any] | None = field(default_factory=_tiny_clip)
    n_ctx: int = 16
    perceiver_crop: int = 112
    perceiver_crop_max: int | None = 224
    perceiver_init_from: str | None = None
    perceiver_steps: int = 3000
    perceiver_batch_size: int = 12
    perceiver_lr: float = 2e-3
    perceiver_tower_lr: float = 3e-4
    perceiver_minutes: float | None = 9.0
    perceiver_eval_crops: int = 24
    # stage 2: restorer
    backbone: str = "compact"
    backbone_args: dict[str, Any] = field(
        default_factory=lambda: {"width": 32, "encoder_blocks": [2, 2], "latent_blocks": 4, "decoder_blocks": [2, 2]}
    )
    cfe: bool = True
    sgm: bool = True
    color_head: bool = False
    embed_dim: int = 128
    semantic: str = "clip"
    semantic_args: dict[str, Any] = field(default_factory=lambda: {"depths": [1, 2, 3]})
    init_from: str | None = None
    dinov2_file: str | None = None
    vgg_file: str | None = None
    steps: int = 1_000_000
    lr: float = 1e-3
    min_lr: float = 1e-6
    weight_decay: float = 1e-4
    minutes: float | None = 45.0
    warmup_steps: int = 100
    router_lr_scale: float = 1.0
    teacher: str | None = None
    teacher_tasks: tuple[str, ...] = ("noise",)
    teacher_weight: float = 0.0
    l1_weight: float = 1.0
    info_nce_weight: float = 0.1
    clip_weight: float = 0.05
    dpl_weight: float = 0.1
    frequency_weight: float = 0.0
    temperature: float = 0.1
    beta_hard: float = 1.25
    beta_easy: float = 0.75
    beta_every: int = 500
    probe_crops: int = 8
    # runtime
    amp: bool = True
    cpu_amp: bool = False
    num_workers: int = 0
    clock: str = "wall"
    checkpoint_minutes: float = 3.0
    log_every: int = 25
    seed: int = 0
    ship: bool = True

    def __post_init__(self) -> None:
        self.tasks = tuple(self.tasks)
        self.noise_sigmas = tuple(float(s) for s in self.noise_sigmas)
        self.noise_range = tuple(float(s) for s in self.noise_range)
        if not self.tasks:
            raise ValueError("tasks must name at least one task")
        self.task_weights = {str(k): v for k, v in dict(self.task_weights).items()}
        unknown = sorted(set(self.task_weights) - set(self.tasks))
        if unknown:
            raise ValueError(f"task_weights names tasks {unknown} that are not in tasks {list(self.tasks)}")
        if any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in self.task_weights.values()):
            raise ValueError(f"task_weights must be positive integers, got {self.task_weights}")
        if self.region_size < self.crop_size:
            raise ValueError(f"region_size must be >= crop_size, got {self.region_size} vs {self.crop_size}")
        if self.data_source not in ("builtin", "folders"):
            raise ValueError(f"data_source must be 'builtin' or 'folders', got {self.data_source!r}")
        self.teacher_tasks = tuple(self.teacher_tasks)
        if not self.teacher_weight >= 0:
            raise ValueError(f"teacher_weight must be >= 0, got {self.teacher_weight}")
        if self.teacher_weight > 0:
            if not self.teacher:
                raise ValueError("teacher_weight > 0 needs a teacher: the run folder of a trained restorer")
            outside = sorted(set(self.teacher_tasks) - set(self.tasks))
            if not self.teacher_tasks or outside:
                raise ValueError(f"teacher_tasks must name tasks that are trained, got {list(self.teacher_tasks)} "
                                 f"(tasks: {list(self.tasks)})")
        if not self.router_lr_scale > 0:
            raise ValueError(f"router_lr_scale must be positive, got {self.router_lr_scale}")
        if self.perceiver_crop_max is not None and self.perceiver_crop_max < self.perceiver_crop:
            raise ValueError(f"perceiver_crop_max must be >= perceiver_crop, got {self.perceiver_crop_max} vs "
                             f"{self.perceiver_crop}")
        if self.detail_crops < 1:
            raise ValueError(f"detail_crops must be >= 1, got {self.detail_crops}")
        if not 0 <= self.grating_share <= 1:
            raise ValueError(f"grating_share must be in [0, 1], got {self.grating_share}")
        if not self.microscopy_zoom >= 1:
            raise ValueError(f"microscopy_zoom must be >= 1, got {self.microscopy_zoom}")
        if self.gray_sources not in ("plane", "replicated"):
            raise ValueError(f"gray_sources must be 'plane' or 'replicated', got {self.gray_sources!r}")
        if self.clock not in ("wall", "process"):
            raise ValueError(f"clock must be 'wall' or 'process', got {self.clock!r}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (InfoNCE needs negatives), got {self.batch_size}")

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (lists instead of tuples) that ``torch.save`` stores safely."""
        return _plain(asdict(self))

    def perceiver_sizes(self) -> tuple[int, ...]:
        """The perceiver crop sides measured in the held-out accuracy (both ends of the range)."""
        if self.perceiver_crop_max is None or self.perceiver_crop_max == self.perceiver_crop:
            return (self.perceiver_crop,)
        return (self.perceiver_crop, self.perceiver_crop_max)

    def stage2_task_weights(self) -> list[int]:
        """The weight of each task of :attr:`tasks`, in order (1 where not named)."""
        return [int(self.task_weights.get(name, 1)) for name in self.tasks]


#: Fields added after runs already existed, with the value that describes how those runs were
#: trained when it differs from today's default (a checkpoint without the field gets this value
#: when its config is compared, so a resume records the change in its history).
PREDATING_VALUES: dict[str, Any] = {"gray_sources": "replicated", "microscopy_zoom": 1.0, "perceiver_crop_max": None}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


_PAPER = dict(
    data_source="folders",
    noise_sigmas=(15.0, 25.0, 50.0),
    crop_size=256,
    region_size=320,
    batch_size=8,
    epoch_size=20_000,
    medium_backbone="restormer",
    medium_backbone_args={"dim": 48, "blocks": [4, 6, 6, 8], "heads": [1, 2, 4, 8], "refinement_blocks": 4},
    medium_steps=20_000,
    medium_batch_size=8,
    medium_lr=2e-4,
    medium_minutes=None,
    clip="ViT-B-32:openai",
    clip_config=None,
    perceiver_crop=224,
    perceiver_crop_max=None,
    perceiver_steps=100_000,
    perceiver_batch_size=32,
    perceiver_lr=4e-5,
    perceiver_minutes=None,
    perceiver_eval_crops=64,
    backbone="restormer",
    backbone_args={"dim": 48, "blocks": [4, 6, 6, 8], "heads": [1, 2, 4, 8], "refinement_blocks": 4},
    semantic="dinov2",
    semantic_args={"model_name": "vit_base_patch14_dinov2", "depths": [0, 3, 7, 11]},
    steps=300_000,
    lr=2e-4,
    minutes=None,
    warmup_steps=1000,
    beta_every=0,
    probe_crops=16,
    num_workers=4,
    checkpoint_minutes=10.0,
    log_every=100,
    ship=False,
)

#: Named experiments: each a small override of :class:`TrainConfig`.
EXPERIMENTS: dict[str, dict[str, Any]] = {
    # the CPU recipe of the bundled default: all defaults
    "compact": {},
    # tiny: every loss and both stages in well under two minutes on one CPU thread
    "smoke": dict(
        tasks=("noise", "rain", "haze", "microscopy"),
        crop_size=32,
        region_size=48,
        batch_size=4,
        epoch_size=16,
        medium_backbone_args={"width": 8, "encoder_blocks": [1, 1], "latent_blocks": 1, "decoder_blocks": [1, 1]},
        medium_steps=6,
        medium_batch_size=4,
        medium_minutes=None,
        clip_config={
            "embed_dim": 32,
            "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 32, "layers": 3, "head_width": 16},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 1, "layers": 1},
        },
        n_ctx=4,
        perceiver_crop=32,
        perceiver_crop_max=48,
        perceiver_steps=6,
        perceiver_batch_size=4,
        perceiver_minutes=None,
        perceiver_eval_crops=2,
        backbone_args={"width": 8, "encoder_blocks": [1, 1], "latent_blocks": 1, "decoder_blocks": [1, 1]},
        embed_dim=16,
        semantic_args={"depths": [0, 1, 2]},
        steps=8,
        minutes=None,
        warmup_steps=2,
        beta_every=4,
        frequency_weight=0.1,
        probe_crops=1,
        checkpoint_minutes=0.0,
        log_every=2,
        ship=False,
    ),
    "paper-3task": dict(_PAPER, tasks=TASKS_3),
    "paper-5task": dict(_PAPER, tasks=TASKS_5),
}


def resolve_config(name: str, **overrides: Any) -> TrainConfig:
    """The config of experiment ``name`` with keyword ``overrides`` applied on top.

    Raises
    ------
    ValueError
        Unknown experiment (the message lists them) or unknown override field.
    """
    if name not in EXPERIMENTS:
        close = difflib.get_close_matches(name, list(EXPERIMENTS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown config {name!r}.{hint} Available: {sorted(EXPERIMENTS)}")
    values = dict(EXPERIMENTS[name], name=name)
    values.update(overrides)
    return config_from_dict(values)


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """Rebuild a :class:`TrainConfig` from a dict (e.g. the one stored in a checkpoint)."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown config fields {unknown}; expected a subset of {sorted(known)}")
    return TrainConfig(**values)
