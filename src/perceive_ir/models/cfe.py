"""CFE: compact feature extraction, the degradation embedding of the paper.

A small stride-2 convolutional encoder of the degraded image, pooled to one L2-normalised
vector ``Z`` per image. Trained with InfoNCE (see ``training/losses.py``) so that crops of
the same degraded image lie close and images of other degradations lie apart.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DegradationEncoder"]


class DegradationEncoder(nn.Module):
    """Map a degraded image (N, C, H, W) to an embedding (N, embed_dim) of unit norm.

    Parameters
    ----------
    in_channels : int
        Image channels (1 or 3).
    channels : sequence of int
        Output channels of the stride-2 convolutions (paper: 32, 64, 96, 128).
    embed_dim : int
        Size of the embedding.
    """

    def __init__(self, in_channels: int = 3, channels: Sequence[int] = (32, 64, 96, 128), embed_dim: int = 128) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        for count in channels:
            layers += [nn.Conv2d(previous, count, 3, stride=2, padding=1), nn.GELU()]
            previous = count
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(previous, embed_dim)
        self.embed_dim = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.features(x).mean(dim=(-2, -1))
        return F.normalize(self.head(pooled), dim=-1)
