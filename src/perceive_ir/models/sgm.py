"""SGM: semantic guidance module.

At each guidance point of a backbone (the latent and the decoder levels) a global
condition vector (semantic features of the image, concatenated with the CFE degradation
embedding) is turned into FiLM parameters that modulate the feature map,
``x * (1 + gamma) + beta``; a channel-wise ("transposed") cross-attention then lets the
modulated feature query the unmodulated one. Both paths start as the identity (zero
initialised outputs), so a pretrained backbone is unchanged until guidance is learned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import Modulator

__all__ = ["Condition", "GuidanceBlock", "SemanticGuidance"]


@dataclass
class Condition:
    """Global description of an image that steers the restorer.

    Attributes
    ----------
    embedding : Tensor or None
        CFE degradation embedding, (N, embed_dim), unit norm.
    semantic : tuple of Tensor or None
        One (N, semantic_dim) vector per guidance level, coarse to fine.
    statistics : Tensor or None
        Intensity statistics of the input, (N, k) (the restorer's colour head reads them).
    """

    embedding: torch.Tensor | None = None
    semantic: tuple[torch.Tensor, ...] | None = None
    statistics: torch.Tensor | None = None

    def vector(self, level: int) -> torch.Tensor:
        """The condition vector for guidance ``level``."""
        parts = []
        if self.semantic is not None:
            parts.append(self.semantic[level])
        if self.embedding is not None:
            parts.append(self.embedding)
        if not parts:
            raise ValueError("a Condition needs an embedding, semantic features or both")
        return torch.cat(parts, dim=-1)

    def expand(self, batch: int) -> "Condition":
        """Repeat a single-image condition (N=1) to ``batch`` images."""

        def grow(t: torch.Tensor) -> torch.Tensor:
            return t if t.shape[0] == batch else t.expand(batch, *t.shape[1:])

        return Condition(
            embedding=None if self.embedding is None else grow(self.embedding),
            semantic=None if self.semantic is None else tuple(grow(s) for s in self.semantic),
            statistics=None if self.statistics is None else grow(self.statistics),
        )

    @staticmethod
    def cat(conditions: Sequence["Condition"]) -> "Condition":
        """Stack per-image conditions (each N=1) into one batch, in order."""
        first = conditions[0]
        return Condition(
            embedding=None if first.embedding is None else torch.cat([c.embedding for c in conditions]),
            semantic=None if first.semantic is None else tuple(
                torch.cat([c.semantic[i] for c in conditions]) for i in range(len(first.semantic))
            ),
            statistics=None if first.statistics is None else torch.cat([c.statistics for c in conditions]),
        )

    @staticmethod
    def mean(conditions: Sequence["Condition"]) -> "Condition":
        """Average the conditions of several crops of one image (embedding re-normalised)."""
        first = conditions[0]
        embedding = None
        semantic = None
        statistics = None
        if first.statistics is not None:
            statistics = torch.cat([c.statistics for c in conditions]).mean(0, keepdim=True)
        if first.embedding is not None:
            embedding = F.normalize(torch.cat([c.embedding for c in conditions]).mean(0, keepdim=True), dim=-1)
        if first.semantic is not None:
            semantic = tuple(
                torch.cat([c.semantic[i] for c in conditions]).mean(0, keepdim=True) for i in range(len(first.semantic))
            )
        return Condition(embedding=embedding, semantic=semantic, statistics=statistics)

    def to(self, device: torch.device | str) -> "Condition":
        return Condition(
            embedding=None if self.embedding is None else self.embedding.to(device),
            semantic=None if self.semantic is None else tuple(s.to(device) for s in self.semantic),
            statistics=None if self.statistics is None else self.statistics.to(device),
        )


class GuidanceBlock(nn.Module):
    """FiLM modulation from a condition vector, then channel-wise cross-attention."""

    def __init__(self, channels: int, condition_dim: int, heads: int = 1) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels must be divisible by heads, got {channels} and {heads}")
        hidden = max(channels, 64)
        self.film = nn.Sequential(nn.Linear(condition_dim, hidden), nn.GELU(), nn.Linear(hidden, 2 * channels))
        nn.init.zeros_(self.film[-1].weight)
        nn.init.zeros_(self.film[-1].bias)
        self.heads = heads
        self.query = nn.Conv2d(channels, channels, 1)
        self.key_value = nn.Conv2d(channels, 2 * channels, 1)
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.project = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.project.weight)
        nn.init.zeros_(self.project.bias)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        gamma, beta = self.film(condition).reshape(n, 2 * c, 1, 1).chunk(2, dim=1)
        modulated = x * (1 + gamma) + beta
        q = self.query(modulated).reshape(n, self.heads, c // self.heads, h * w)
        k, v = self.key_value(x).reshape(n, 2, self.heads, c // self.heads, h * w).unbind(1)
        attn = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1) * self.temperature).softmax(-1)
        return modulated + self.project((attn @ v).reshape(n, c, h, w))


class SemanticGuidance(nn.Module):
    """One :class:`GuidanceBlock` per guidance point of a backbone.

    Parameters
    ----------
    guidance_channels : sequence of int
        Channels at each guidance point (the backbone's ``guidance_channels``).
    condition_dim : int
        Size of :meth:`Condition.vector`.
    heads : int
        Cross-attention heads at every point.
    """

    def __init__(self, guidance_channels: Sequence[int], condition_dim: int, heads: int = 1) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(GuidanceBlock(c, condition_dim, heads) for c in guidance_channels)

    def modulator(self, condition: Condition) -> Modulator:
        """A hook for ``backbone.forward(x, modulate=...)`` bound to ``condition``."""

        def modulate(level: int, feature: torch.Tensor) -> torch.Tensor:
            return self.blocks[level](feature, condition.vector(level))

        return modulate
