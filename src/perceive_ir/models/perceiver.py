"""Quality perceiver (paper stage 1): an open_clip CLIP model with learned tier prompts.

Three quality tiers (low, medium, high) are described by CoOp prompts: per tier, 16
learned context token embeddings (class-specific) fed through CLIP's text transformer in
place of the words of the template ``"X X ... X ."``. Each context starts from N(0, 0.02)
except its last token, which starts from the word embedding of "terrible", "mediocre" or
"excellent". Tier logits are ``logit_scale * cos(image feature, tier text feature)``.

Any open_clip architecture works: ``ViT-B-32`` with ``openai`` weights for the paper
setting (open_clip downloads them when online, or reads a local file), or a compact
config given as a dict (the offline default that this package trains and ships).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .semantic import OPENAI_MEAN, OPENAI_STD

__all__ = ["PerceiverConfig", "QualityPerceiver", "build_clip", "tiny_clip_config", "TIERS"]

TIERS = ("low", "medium", "high")


@dataclass
class PerceiverConfig:
    """Everything needed to rebuild a :class:`QualityPerceiver` (stored in weights files).

    Attributes
    ----------
    clip_model : str
        open_clip architecture name (e.g. ``"ViT-B-32"``), used when ``clip_config`` is None.
    clip_config : dict, optional
        A full open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``).
    n_ctx : int
        Learned context tokens per tier.
    tier_words : tuple of str
        Words whose embeddings initialise the last context token of each tier.
    mean, std : tuple of float
        Image normalisation of the CLIP model.
    tile_size : int
        Side in pixels of the image squares the perceiver was trained to rate (its training
        crops, resized to the CLIP input); ``perceive`` tiles with it by default. A tile of
        another side shows noise and structures at another scale after the resize. Files
        written before the field read as 224 (the CLIP input, ``perceive``'s former default).
    """

    clip_model: str = "ViT-B-32"
    clip_config: dict[str, Any] | None = None
    n_ctx: int = 16
    tier_words: tuple[str, ...] = ("terrible", "mediocre", "excellent")
    mean: tuple[float, ...] = OPENAI_MEAN
    std: tuple[float, ...] = OPENAI_STD
    tile_size: int = 224

    def __post_init__(self) -> None:
        self.tier_words = tuple(self.tier_words)
        self.mean = tuple(self.mean)
        self.std = tuple(self.std)
        if len(self.tier_words) != len(TIERS):
            raise ValueError(f"tier_words needs {len(TIERS)} words (for {TIERS}), got {list(self.tier_words)}")
        if self.n_ctx < 1:
            raise ValueError(f"n_ctx must be >= 1, got {self.n_ctx}")
        if self.tile_size < 16:
            raise ValueError(f"tile_size must be >= 16, got {self.tile_size}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PerceiverConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown perceiver config keys {sorted(unknown)}; expected a subset of {sorted(known)}")
        return cls(**data)


def build_clip(config: PerceiverConfig, pretrained: str | None = None) -> nn.Module:
    """Build the open_clip CLIP model of ``config``.

    Parameters
    ----------
    config : PerceiverConfig
        Which architecture.
    pretrained : str, optional
        An open_clip pretrained tag (``"openai"``: downloaded by open_clip, needs network
        or its cache) or a local checkpoint file (``.safetensors``, ``.bin``, ``.pt``).
        None gives random weights.
    """
    import open_clip

    if config.clip_config is None:
        return open_clip.create_model(config.clip_model, pretrained=pretrained)
    model = open_clip.CLIP(**config.clip_config)
    if pretrained is not None:
        open_clip.load_checkpoint(model, pretrained)
    return model


class QualityPerceiver(nn.Module):
    """CLIP + CoOp tier prompts -> probabilities of (low, medium, high) quality.

    Parameters
    ----------
    config : PerceiverConfig
        Prompt and model settings.
    clip : nn.Module, optional
        An open_clip ``CLIP`` model; built from ``config`` (random weights) when omitted.

    Notes
    -----
    :meth:`forward` takes CLIP-normalised pixels (N, 3, S, S); :meth:`probabilities`
    takes images (N, 1 or 3, H, W) with values in [0, 1] and does the preparation.
    """

    def __init__(self, config: PerceiverConfig, clip: nn.Module | None = None) -> None:
        super().__init__()
        import open_clip

        self.config = config
        self.clip = clip if clip is not None else build_clip(config)
        context_length = self.clip.context_length
        tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=context_length)
        template = " ".join(["X"] * config.n_ctx) + "."
        tokens = tokenizer([template] * len(TIERS))
        self.register_buffer("tokens", tokens, persistent=False)
        embedding = self.clip.token_embedding
        ctx = torch.randn(len(TIERS), config.n_ctx, embedding.embedding_dim) * 0.02
        with torch.no_grad():
            for tier, word in enumerate(config.tier_words):
                ids = torch.tensor(tokenizer.encode(word), dtype=torch.long, device=embedding.weight.device)
                ctx[tier, -1] = embedding(ids).mean(0).cpu()
        self.ctx = nn.Parameter(ctx)
        size = self.clip.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.register_buffer("mean", torch.tensor(config.mean).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).reshape(1, 3, 1, 1), persistent=False)

    # -- freezing ---------------------------------------------------------------------
    def lock_text(self) -> "QualityPerceiver":
        """Freeze the text tower (token embedding, transformer, projection)."""
        for name, p in self.clip.named_parameters():
            if not name.startswith("visual."):
                p.requires_grad_(False)
        return self

    def lock_image(self) -> "QualityPerceiver":
        """Freeze the image tower."""
        for p in self.clip.visual.parameters():
            p.requires_grad_(False)
        return self

    def lock(self) -> "QualityPerceiver":
        """Freeze everything (prompts included) and switch to eval mode."""
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    # -- encoders ---------------------------------------------------------------------
    def text_features(self) -> torch.Tensor:
        """Unit-norm text features of the three tier prompts, (3, embed_dim)."""
        clip = self.clip
        x = clip.token_embedding(self.tokens)
        n_ctx = self.config.n_ctx
        x = torch.cat([x[:, :1], self.ctx.to(x.dtype), x[:, 1 + n_ctx :]], dim=1)
        x = x + clip.positional_embedding.to(x.dtype)
        x = clip.transformer(x, attn_mask=clip.attn_mask)
        x = clip.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), self.tokens.argmax(dim=-1)]
        projection = clip.text_projection
        if projection is not None:
            x = projection(x) if isinstance(projection, nn.Linear) else x @ projection
        return F.normalize(x, dim=-1)

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unit-norm image features of CLIP-normalised pixels (N, 3, S, S)."""
        return F.normalize(self.clip.encode_image(pixels), dim=-1)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Images (N, 1|3, H, W) in [0, 1] -> CLIP input (N, 3, S, S), S = ``image_size``."""
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected images of shape (N, 1 or 3, H, W), got {tuple(images.shape)}")
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        if images.shape[-2:] != (self.image_size, self.image_size):
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear",
                                   antialias=True, align_corners=False)
        return (images.clamp(0, 1) - self.mean) / self.std

    def forward(self, pixels: torch.Tensor, text_features: torch.Tensor | None = None) -> torch.Tensor:
        """Tier logits (N, 3) of CLIP-normalised pixels."""
        if text_features is None:
            text_features = self.text_features()
        return self.clip.logit_scale.exp() * self.image_features(pixels) @ text_features.t()

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Tier probabilities (N, 3) = (low, medium, high) of images in [0, 1]."""
        return self(self.prepare(images)).softmax(dim=-1)

    def quality_score(self, probabilities: torch.Tensor) -> torch.Tensor:
        """Scalar quality in [0, 1]: expected tier value with low=0, medium=0.5, high=1."""
        return probabilities @ torch.tensor([0.0, 0.5, 1.0], device=probabilities.device, dtype=probabilities.dtype)


def tiny_clip_config(image_size: int = 224, patch_size: int = 32, vision_width: int = 128, vision_layers: int = 4,
                     text_width: int = 32, text_layers: int = 2, embed_dim: int = 128, context_length: int = 24) -> dict:
    """A compact open_clip config (for the offline default and for tests)."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": image_size, "patch_size": patch_size, "width": vision_width,
                       "layers": vision_layers, "head_width": 32},
        "text_cfg": {"context_length": context_length, "vocab_size": 49408, "width": text_width,
                     "heads": max(1, text_width // 32), "layers": text_layers},
    }
