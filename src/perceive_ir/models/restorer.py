"""The all-in-one restorer: backbone + CFE degradation embedding + SGM semantic guidance.

``Restorer(x)`` restores a batch; the global condition (CFE embedding and semantic
features) is computed from ``x`` itself unless given. For tiled inference the caller
computes one condition per image with :meth:`Restorer.condition_from_crops` and passes it
with every tile, so that tiles of one image are restored under the same condition and the
tiled result matches the whole-image result.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Sequence

import torch
from torch import nn

from .cfe import DegradationEncoder
from .compact import CompactUNet
from .restormer import Restormer
from .semantic import ClipSemanticEncoder, Dinov2SemanticEncoder, SemanticEncoder
from .sgm import Condition, SemanticGuidance

__all__ = ["Restorer", "RestorerConfig", "BACKBONES", "SEMANTIC_SOURCES"]

BACKBONES: dict[str, type[nn.Module]] = {"compact": CompactUNet, "restormer": Restormer}
SEMANTIC_SOURCES = ("none", "clip", "dinov2")


@dataclass
class RestorerConfig:
    """Everything needed to rebuild a :class:`Restorer` (stored inside weights files).

    Attributes
    ----------
    in_channels : int
        1 (grayscale; colour images are restored channel by channel) or 3 (RGB).
    backbone : str
        ``"compact"`` or ``"restormer"``.
    backbone_args : dict
        Keyword arguments of the backbone class.
    cfe : bool
        Use the CFE degradation embedding as (part of) the condition.
    embed_dim : int
        Size of the CFE embedding.
    sgm : bool
        Apply semantic guidance at the backbone's guidance points.
    semantic : str
        Semantic source of SGM: ``"none"``, ``"clip"`` or ``"dinov2"``.
    semantic_args : dict
        ``clip``: ``{"vision_cfg": {...}, "embed_dim": int, "depths": [...]}`` (an open_clip
        vision tower config); ``dinov2``: ``{"model_name": ..., "depths": [...]}``.
    guidance_heads : int
        Cross-attention heads in each guidance block.
    condition_crop : int
        Side of the crops from which a per-image condition is computed at inference.
    color_head : bool
        Correct the backbone's output with one gain and one offset per channel and image,
        ``y * (1 + g) + b``, predicted from the global condition and the input's intensity
        statistics (:func:`image_statistics`; needs ``sgm``). Its output layers start at
        zero, so a grown model computes what it did before. Global errors (haze's colour
        and contrast, exposure) are one vector per image, which a convolutional backbone
        that sees a tile at a time cannot estimate well.

    Notes
    -----
    A compact backbone with ``backbone_args["experts"] = K`` gets a *router*: a linear map
    of the global condition to a softmax over its K expert kernels per image (needs
    ``sgm``). The router starts random (the experts start at zero, so the output is
    unchanged), which lets the experts of different images specialise from the first step.
    """

    in_channels: int = 3
    backbone: str = "compact"
    backbone_args: dict[str, Any] = field(default_factory=dict)
    cfe: bool = True
    embed_dim: int = 128
    sgm: bool = True
    semantic: str = "none"
    semantic_args: dict[str, Any] = field(default_factory=dict)
    guidance_heads: int = 1
    condition_crop: int = 128
    color_head: bool = False

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; expected one of {sorted(BACKBONES)}")
        if self.semantic not in SEMANTIC_SOURCES:
            raise ValueError(f"unknown semantic source {self.semantic!r}; expected one of {list(SEMANTIC_SOURCES)}")
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {self.in_channels}")
        if self.sgm and not self.cfe and self.semantic == "none":
            raise ValueError("sgm=True needs a condition: enable cfe or choose a semantic source")
        if self.color_head and not self.sgm:
            raise ValueError("color_head=True needs the global condition of sgm=True")
        if self.backbone_args.get("experts") and not self.sgm:
            raise ValueError("backbone experts are routed by the global condition: they need sgm=True")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RestorerConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown restorer config keys {sorted(unknown)}; expected a subset of {sorted(known)}")
        return cls(**data)


def build_semantic_encoder(source: str, args: dict[str, Any]) -> SemanticEncoder | None:
    """Build the frozen semantic encoder named by ``source`` (random weights unless a file is given)."""
    if source == "none":
        return None
    if source == "clip":
        from open_clip.model import _build_vision_tower

        visual = _build_vision_tower(args.get("embed_dim", 512), args["vision_cfg"])
        return ClipSemanticEncoder(visual, depths=args.get("depths", (0, 1, 2, 3))).lock()
    model_args = {k: v for k, v in args.items() if k not in ("depths",)}
    return Dinov2SemanticEncoder(depths=args.get("depths", (0, 3, 7, 11)), **model_args).lock()


class Restorer(nn.Module):
    """All-in-one restorer (paper stage 2).

    Parameters
    ----------
    config : RestorerConfig
        Architecture description.
    semantic_encoder : SemanticEncoder, optional
        A ready encoder (e.g. with pretrained DINOv2 weights); built from the config when
        omitted.

    Notes
    -----
    Input and output are (N, C, H, W) tensors with values nominally in [0, 1] and
    C = ``config.in_channels``; any H and W.
    """

    def __init__(self, config: RestorerConfig, semantic_encoder: SemanticEncoder | None = None) -> None:
        super().__init__()
        self.config = config
        self.backbone = BACKBONES[config.backbone](in_channels=config.in_channels, **config.backbone_args)
        self.cfe = DegradationEncoder(config.in_channels, embed_dim=config.embed_dim) if config.cfe else None
        if semantic_encoder is None and config.sgm:
            semantic_encoder = build_semantic_encoder(config.semantic, config.semantic_args)
        self.semantic = semantic_encoder if config.sgm else None
        self.sgm = None
        if config.sgm:
            condition_dim = (config.embed_dim if config.cfe else 0) + (self.semantic.dim if self.semantic else 0)
            levels = self.backbone.guidance_channels
            if self.semantic is not None and len(self.semantic.depths) < len(levels):
                raise ValueError(
                    f"semantic encoder gives {len(self.semantic.depths)} feature depths but the backbone has "
                    f"{len(levels)} guidance levels"
                )
            self.sgm = SemanticGuidance(levels, condition_dim, heads=config.guidance_heads)
        self.color = ColorHead(condition_dim, config.in_channels) if config.color_head else None
        experts = getattr(self.backbone, "experts", 0)
        self.router = nn.Linear(condition_dim, experts) if experts else None

    @property
    def in_channels(self) -> int:
        return self.config.in_channels

    def condition(self, x: torch.Tensor) -> Condition | None:
        """Global condition of each image in ``x`` (None for a plain backbone)."""
        if self.sgm is None:
            return None
        embedding = self.cfe(x) if self.cfe is not None else None
        semantic = None
        if self.semantic is not None:
            with torch.no_grad():
                semantic = self.semantic(x)
            semantic = semantic[: len(self.backbone.guidance_channels)]
        statistics = image_statistics(x) if self.color is not None else None
        return Condition(embedding=embedding, semantic=semantic, statistics=statistics)

    def condition_from_crops(self, crops: Sequence[torch.Tensor] | torch.Tensor) -> Condition | None:
        """One condition for an image, averaged over crops of it ((K, C, h, w) or a list)."""
        if self.sgm is None:
            return None
        batch = crops if isinstance(crops, torch.Tensor) else torch.stack(list(crops))
        conditions = self.condition(batch)
        per_crop = [
            Condition(
                embedding=None if conditions.embedding is None else conditions.embedding[i : i + 1],
                semantic=None if conditions.semantic is None else tuple(s[i : i + 1] for s in conditions.semantic),
                statistics=None if conditions.statistics is None else conditions.statistics[i : i + 1],
            )
            for i in range(batch.shape[0])
        ]
        return Condition.mean(per_crop)

    def routing(self, condition: Condition) -> torch.Tensor | None:
        """Softmax weights (N, K) of the backbone's K expert kernels for each condition (None: no experts).

        Computed in float32 outside autocast, so that CPU, CUDA and half-precision weights
        route an image alike.
        """
        if self.router is None:
            return None
        vector = condition.vector(0)
        with torch.autocast(vector.device.type, enabled=False):
            logits = self.router(vector.to(self.router.weight.dtype))
        return logits.float().softmax(dim=-1)

    def forward(self, x: torch.Tensor, condition: Condition | None = None) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected a (N, {self.in_channels}, H, W) tensor, got shape {tuple(x.shape)}")
        if self.sgm is None:
            return self.backbone(x)
        if condition is None:
            condition = self.condition(x)
        routing = self.routing(condition)  # before expanding: one image's condition gives one (1, K) routing
        condition = condition.expand(x.shape[0])
        if routing is None:
            restored = self.backbone(x, modulate=self.sgm.modulator(condition))
        else:
            restored = self.backbone(x, modulate=self.sgm.modulator(condition), routing=routing)
        if self.color is not None:
            restored = self.color(restored, condition.vector(0), condition.statistics)
        return restored


#: quantiles of each channel (and of the dark channel) in :func:`image_statistics`
STATISTIC_QUANTILES = (0.01, 0.5, 0.99)


def image_statistics(x: torch.Tensor) -> torch.Tensor:
    """Intensity statistics of each image of ``x`` (N, C, H, W): (N, 5 C + 3).

    Per channel the 1st, 50th and 99th percentiles, the mean and the standard deviation,
    then the same three percentiles of the dark channel (the per-pixel minimum over
    channels; the dark channel prior's haze cue). Computed without gradients: they
    describe the input, as the dark channel prior's airlight and transmission do.
    """
    with torch.no_grad():
        flat = x.detach().float().flatten(2)  # (N, C, HW)
        step = -(-flat.numel() // 2**24)  # torch.quantile takes at most 2^24 elements: subsample huge inputs
        flat = flat[..., ::step] if step > 1 else flat
        q = torch.tensor(STATISTIC_QUANTILES, dtype=flat.dtype, device=flat.device)
        per_channel = torch.quantile(flat, q, dim=-1).permute(1, 2, 0).flatten(1)  # (N, 3C)
        dark = torch.quantile(flat.min(dim=1).values, q, dim=-1).transpose(0, 1)  # (N, 3)
        return torch.cat([per_channel, flat.mean(-1), flat.std(-1), dark], dim=1)


class ColorHead(nn.Module):
    """Per-image, per-channel affine correction ``y * (1 + gain) + offset``.

    ``gain`` and ``offset`` come from a small MLP of the condition vector plus a linear map
    of the input's :func:`image_statistics`. The output layer and the statistics layer
    are zero-initialised: the head starts as the identity (and the statistics layer can be
    added to a trained head without changing it).
    """

    def __init__(self, condition_dim: int, channels: int, hidden: int = 64) -> None:
        super().__init__()
        self.channels = channels
        self.mlp = nn.Sequential(nn.Linear(condition_dim, hidden), nn.GELU(), nn.Linear(hidden, 2 * channels))
        self.statistics = nn.Linear(5 * channels + len(STATISTIC_QUANTILES), hidden)
        for layer in (self.mlp[-1], self.statistics):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def correction(self, condition: torch.Tensor, statistics: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(gain, offset)``, each (N, channels), for condition vectors and input statistics."""
        if statistics is None:
            raise ValueError("the colour head needs the input's statistics in the condition (Restorer.condition)")
        hidden = self.mlp[0](condition) + self.statistics(statistics.to(condition.dtype))
        gain, offset = self.mlp[2](self.mlp[1](hidden)).chunk(2, dim=1)
        return gain, offset

    def forward(self, y: torch.Tensor, condition: torch.Tensor, statistics: torch.Tensor | None) -> torch.Tensor:
        gain, offset = (p.to(y.dtype)[:, :, None, None] for p in self.correction(condition, statistics))
        return y * (1 + gain) + offset
