"""Restormer backbone (Zamir et al., CVPR 2022), the paper's stage-2 restorer.

Four-level U-Net of transformer blocks: multi-Dconv-head transposed attention (MDTA,
attention across channels, linear in the number of pixels) and gated-Dconv feed-forward
networks (GDFN). Paper setting: dim 48, blocks [4, 6, 6, 8], heads [1, 2, 4, 8],
FFN expansion 2.66, 4 refinement blocks, global residual.

Tensors are NCHW; any height/width (reflect-padded to a multiple of 8, cropped back).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import Modulator, pad_to_multiple

__all__ = ["Restormer", "TransformerBlock", "ChannelLayerNorm"]


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor (with bias)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class TransposedAttention(nn.Module):
    """MDTA: self-attention across channels, per head, with a learned temperature."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels must be divisible by heads, got {channels} and {heads}")
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, bias=False)
        self.qkv_dw = nn.Conv2d(3 * channels, 3 * channels, 3, padding=1, groups=3 * channels, bias=False)
        self.project = nn.Conv2d(channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv_dw(self.qkv(x)).chunk(3, dim=1)
        q, k, v = (t.reshape(n, self.heads, c // self.heads, h * w) for t in (q, k, v))
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        return self.project((attn @ v).reshape(n, c, h, w))


class GatedFeedForward(nn.Module):
    """GDFN: depth-wise gated feed-forward network."""

    def __init__(self, channels: int, expansion: float) -> None:
        super().__init__()
        hidden = int(channels * expansion)
        self.project_in = nn.Conv2d(channels, 2 * hidden, 1, bias=False)
        self.dw = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=False)
        self.project_out = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.dw(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(gate) * value)


class TransformerBlock(nn.Module):
    """Pre-norm Restormer block: MDTA then GDFN, each with a residual."""

    def __init__(self, channels: int, heads: int, expansion: float) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm(channels)
        self.attn = TransposedAttention(channels, heads)
        self.norm2 = ChannelLayerNorm(channels)
        self.ffn = GatedFeedForward(channels, expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def _stage(channels: int, depth: int, heads: int, expansion: float) -> nn.Sequential:
    return nn.Sequential(*[TransformerBlock(channels, heads, expansion) for _ in range(depth)])


class Restormer(nn.Module):
    """Four-level Restormer U-Net.

    Parameters
    ----------
    in_channels : int
        Image channels (1 or 3); the output has the same count.
    dim : int
        Channels at level 1 (doubled per level: dim, 2dim, 4dim, 8dim).
    blocks : sequence of 4 int
        Transformer blocks per level (level 4 is the latent).
    heads : sequence of 4 int
        Attention heads per level.
    ffn_expansion : float
        Hidden-channel expansion of the feed-forward networks.
    refinement_blocks : int
        Blocks at full resolution after the decoder.

    Notes
    -----
    Guidance points (for SGM): the latent and the three decoder levels, coarse to fine,
    with channels :attr:`guidance_channels` = (8dim, 4dim, 2dim, 2dim).
    """

    multiple = 8

    def __init__(
        self,
        in_channels: int = 3,
        dim: int = 48,
        blocks: Sequence[int] = (4, 6, 6, 8),
        heads: Sequence[int] = (1, 2, 4, 8),
        ffn_expansion: float = 2.66,
        refinement_blocks: int = 4,
    ) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        if len(blocks) != 4 or len(heads) != 4:
            raise ValueError(f"blocks and heads need 4 entries each, got {list(blocks)} and {list(heads)}")
        self.in_channels = in_channels
        d1, d2, d3, d4 = dim, 2 * dim, 4 * dim, 8 * dim
        self.embed = nn.Conv2d(in_channels, d1, 3, padding=1, bias=False)
        self.encoder1 = _stage(d1, blocks[0], heads[0], ffn_expansion)
        self.down1 = _downsample(d1)
        self.encoder2 = _stage(d2, blocks[1], heads[1], ffn_expansion)
        self.down2 = _downsample(d2)
        self.encoder3 = _stage(d3, blocks[2], heads[2], ffn_expansion)
        self.down3 = _downsample(d3)
        self.latent = _stage(d4, blocks[3], heads[3], ffn_expansion)
        self.up3 = _upsample(d4)
        self.reduce3 = nn.Conv2d(2 * d3, d3, 1, bias=False)
        self.decoder3 = _stage(d3, blocks[2], heads[2], ffn_expansion)
        self.up2 = _upsample(d3)
        self.reduce2 = nn.Conv2d(2 * d2, d2, 1, bias=False)
        self.decoder2 = _stage(d2, blocks[1], heads[1], ffn_expansion)
        self.up1 = _upsample(d2)
        self.decoder1 = _stage(2 * d1, blocks[0], heads[0], ffn_expansion)
        self.refinement = _stage(2 * d1, refinement_blocks, heads[0], ffn_expansion)
        self.output = nn.Conv2d(2 * d1, in_channels, 3, padding=1, bias=False)
        self.guidance_channels: tuple[int, ...] = (d4, d3, d2, 2 * d1)

    def forward(self, x: torch.Tensor, modulate: Modulator | None = None) -> torch.Tensor:
        """Restore ``x`` (N, C, H, W); ``modulate`` is applied at the guidance points."""
        height, width = x.shape[-2:]
        padded = pad_to_multiple(x, self.multiple)
        hook = modulate if modulate is not None else (lambda _level, feature: feature)
        e1 = self.encoder1(self.embed(padded))
        e2 = self.encoder2(self.down1(e1))
        e3 = self.encoder3(self.down2(e2))
        latent = hook(0, self.latent(self.down3(e3)))
        d3 = hook(1, self.decoder3(self.reduce3(torch.cat([self.up3(latent), e3], dim=1))))
        d2 = hook(2, self.decoder2(self.reduce2(torch.cat([self.up2(d3), e2], dim=1))))
        d1 = hook(3, self.decoder1(torch.cat([self.up1(d2), e1], dim=1)))
        out = self.output(self.refinement(d1)) + padded
        return out[..., :height, :width]


def _downsample(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, channels // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))


def _upsample(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, channels * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))
