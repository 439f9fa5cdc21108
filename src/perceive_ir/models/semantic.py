"""Frozen semantic encoders for SGM: DINOv2 (timm), the CLIP image tower, or none.

Each encoder maps an image batch (N, C, H, W) with values in [0, 1] (C = 1 or 3) to a
tuple of global vectors, one per requested transformer depth (the class token after that
block), coarse guidance levels first. Encoders are frozen (:meth:`lock`).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SemanticEncoder", "ClipSemanticEncoder", "Dinov2SemanticEncoder", "OPENAI_MEAN", "OPENAI_STD"]

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SemanticEncoder(nn.Module):
    """Base class: resizing, channel replication, normalisation and freezing."""

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float], depths: Sequence[int]) -> None:
        super().__init__()
        self.image_size = image_size
        self.depths = tuple(int(d) for d in depths)
        if list(self.depths) != sorted(set(self.depths)):
            raise ValueError(f"semantic depths must be strictly increasing block indices, got {list(self.depths)}")
        self.register_buffer("mean", torch.tensor(mean).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).reshape(1, 3, 1, 1), persistent=False)

    @property
    def dim(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True, align_corners=False)
        return (x - self.mean) / self.std

    def lock(self) -> "SemanticEncoder":
        """Freeze every parameter and switch to eval mode."""
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> "SemanticEncoder":
        # a frozen encoder stays in eval mode whatever its parent does
        return super().train(False)


class ClipSemanticEncoder(SemanticEncoder):
    """Class tokens of an open_clip ``VisionTransformer`` (the perceiver's image tower)."""

    def __init__(self, visual: nn.Module, depths: Sequence[int], mean=OPENAI_MEAN, std=OPENAI_STD) -> None:
        size = visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        super().__init__(size, mean, std, depths)
        self.visual = visual
        self._width = visual.conv1.out_channels

    @property
    def dim(self) -> int:
        return self._width

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.visual.forward_intermediates(
            self.prepare(x), indices=list(self.depths), intermediates_only=True, output_extra_tokens=True
        )
        tokens = [t[:, 0] for t in out["image_intermediates_prefix"]]
        return tuple(reversed(tokens))


class Dinov2SemanticEncoder(SemanticEncoder):
    """Class tokens of a timm DINOv2 ViT (paper: ``vit_base_patch14_dinov2``, blocks 1/4/8/12).

    Parameters
    ----------
    model_name : str
        timm architecture name.
    depths : sequence of int
        Block indices (0-based) whose class tokens are returned.
    pretrained_file : str, optional
        Local weights file (timm / safetensors) loaded through timm's ``pretrained_cfg_overlay``;
        ``None`` builds the architecture with random weights (only for tests and for
        loading a restorer whose weights file already contains the encoder).
    """

    def __init__(self, model_name: str = "vit_base_patch14_dinov2", depths: Sequence[int] = (0, 3, 7, 11),
                 pretrained_file: str | None = None, image_size: int = 224, **timm_kwargs) -> None:
        import timm

        super().__init__(image_size, IMAGENET_MEAN, IMAGENET_STD, depths)
        kwargs = dict(img_size=image_size, num_classes=0, **timm_kwargs)
        if pretrained_file is not None:
            kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(pretrained_file)))
        self.model = timm.create_model(model_name, **kwargs)

    @property
    def dim(self) -> int:
        return self.model.embed_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model.forward_intermediates(
            self.prepare(x), indices=list(self.depths), return_prefix_tokens=True, intermediates_only=True,
            output_fmt="NLC",
        )
        tokens = [prefix[:, 0] for _spatial, prefix in out]
        return tuple(reversed(tokens))
