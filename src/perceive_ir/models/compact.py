"""Compact U-Net backbone: a CPU-friendly restorer for the bundled default.

Design for speed on CPUs, where element-wise and depth-wise layers are memory-bound:
the image is folded 2x2 into channels (pixel unshuffle) so every convolution runs at
half resolution or less; blocks are plain dense 3x3 convolutions with ReLU and a
zero-initialised residual scale (no normalisation layer to evaluate at inference).

Optionally (``experts=K``) the block convolutions outside the latent level are
*conditional*: each image's kernel is the shared kernel plus a mixture of K expert
kernels, weighted by a per-image routing vector (CondConv-style). The kernels are mixed
once per forward call, not per pixel: a batch of tiles of one image (one routing) runs
dense convolutions at the plain network's cost. A batch of different images (training,
planes of a stack sharing a batch) needs one kernel per image, a grouped convolution:
about as fast on this project's CPU, typically slower on GPUs (not measured).

Optionally (``attention_window=W``) the 1/2 level of the decoder starts with non-local
blocks: self-attention among the positions of W x W windows (2W x 2W pixels), the
learned counterpart of the block matching that BM3D and non-local means do, aimed at
repeated texture (stripes, gratings) that local convolutions flatten.

Tensors are NCHW; any height/width is accepted (reflect-padded inside ``forward`` to a
multiple of :attr:`CompactUNet.multiple`, cropped back).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import Modulator, pad_to_multiple

__all__ = ["CompactUNet", "ExpertConv2d", "ResidualBlock", "WindowAttention"]


class ExpertConv2d(nn.Conv2d):
    """3x3 convolution whose kernel is ``weight + sum_k routing[n, k] * delta[k]`` for image ``n``.

    The expert deltas start at zero, so the layer first computes what a plain convolution
    with ``weight`` does (a trained network can be grown into one). ``routing`` is
    (N, experts), one kernel per image (a grouped convolution), or (1, experts), one kernel
    for the whole batch (tiles of one image).
    """

    def __init__(self, in_channels: int, out_channels: int, experts: int) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1)
        self.experts = experts
        self.delta = nn.Parameter(torch.zeros(experts, out_channels, in_channels, 3, 3))
        self.delta_bias = nn.Parameter(torch.zeros(experts, out_channels))

    def forward(self, x: torch.Tensor, routing: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        if routing is None or routing.ndim != 2 or routing.shape[0] not in (1, x.shape[0]) or routing.shape[1] != self.experts:
            raise ValueError(f"expected a routing of shape ({x.shape[0]} or 1, {self.experts}), got "
                             f"{None if routing is None else tuple(routing.shape)}")
        routing = routing.to(self.weight.dtype)
        weight = (self.weight + torch.tensordot(routing, self.delta, dims=1)).to(x.dtype)  # (R, out, in, 3, 3)
        bias = (self.bias + routing @ self.delta_bias).to(x.dtype)  # (R, out)
        if routing.shape[0] == 1:
            return F.conv2d(x, weight[0], bias[0], padding=1)
        n, _, height, width = x.shape
        out = F.conv2d(x.reshape(1, -1, height, width), weight.flatten(0, 1), bias.flatten(), padding=1, groups=n)
        return out.reshape(n, -1, height, width)


class ResidualBlock(nn.Module):
    """``x + scale * conv(relu(conv(x)))`` with the scale initialised to zero (experts: see :class:`ExpertConv2d`)."""

    def __init__(self, channels: int, experts: int = 0) -> None:
        super().__init__()
        if experts:
            self.conv1: nn.Conv2d = ExpertConv2d(channels, channels, experts)
            self.conv2: nn.Conv2d = ExpertConv2d(channels, channels, experts)
        else:
            self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
            self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.experts = experts
        self.scale = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor, routing: torch.Tensor | None = None) -> torch.Tensor:
        if self.experts:
            return x + self.scale * self.conv2(F.relu(self.conv1(x, routing), inplace=True), routing)
        return x + self.scale * self.conv2(F.relu(self.conv1(x), inplace=True))


class WindowAttention(nn.Module):
    """``x + out(attention(q, k, v))`` within non-overlapping ``window`` x ``window`` windows.

    Each position becomes a similarity-weighted average of the values of the positions in
    its window (``heads`` heads of ``head_channels``, 1x1 projections, no positional term:
    what is compared is content, as in non-local means). With ``shifted`` the window grid
    is offset by half a window (the map is padded by that much on the top / left), so a
    pair of blocks, plain then shifted, lets every position reach across window borders.
    Maps whose size is not a multiple of the window are padded (replicate) and cropped
    back. The output projection starts at zero: the block is the identity at
    initialisation, so a trained network can be grown with it.
    """

    def __init__(self, channels: int, window: int, heads: int = 1, head_channels: int = 32,
                 shifted: bool = False) -> None:
        super().__init__()
        if window < 2 or heads < 1 or head_channels < 1:
            raise ValueError(f"window must be >= 2 and heads, head_channels >= 1, got {window}, {heads}, {head_channels}")
        self.window, self.heads, self.head_channels, self.shifted = window, heads, head_channels, shifted
        inner = heads * head_channels
        self.qkv = nn.Conv2d(channels, 3 * inner, 1)
        self.out = nn.Conv2d(inner, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, height, width = x.shape
        w, heads, d = self.window, self.heads, self.head_channels
        top = left = w // 2 if self.shifted else 0
        bottom, right = (-(height + top)) % w, (-(width + left)) % w
        qkv = self.qkv(x)
        if top or left or bottom or right:
            qkv = F.pad(qkv, (left, right, top, bottom), mode="replicate")
        rows, cols = qkv.shape[-2] // w, qkv.shape[-1] // w
        # (N, 3, heads, d, rows, w, cols, w) -> (3, N * rows * cols, heads, w * w, d)
        qkv = qkv.reshape(n, 3, heads, d, rows, w, cols, w).permute(1, 0, 4, 6, 2, 5, 7, 3)
        qkv = qkv.reshape(3, n * rows * cols, heads, w * w, d)
        attended = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        # back to (N, heads * d, rows * w, cols * w), then crop the padding
        attended = attended.reshape(n, rows, cols, heads, w, w, d).permute(0, 3, 6, 1, 4, 2, 5)
        attended = attended.reshape(n, heads * d, rows * w, cols * w)[..., top:top + height, left:left + width]
        return x + self.out(attended)


class Stage(nn.ModuleList):
    """Residual blocks applied in turn, passing the routing on (a Sequential cannot)."""

    def __init__(self, channels: int, depth: int, experts: int = 0) -> None:
        super().__init__([ResidualBlock(channels, experts) for _ in range(depth)])

    def forward(self, x: torch.Tensor, routing: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        for block in self:
            x = block(x, routing)
        return x


class CompactUNet(nn.Module):
    """Three-level residual U-Net working at 1/2, 1/4 and 1/8 resolution (optionally full too).

    Parameters
    ----------
    in_channels : int
        Image channels (1 for grayscale, 3 for RGB); the output has the same count.
    width : int
        Channels at the first level; doubled at each deeper level.
    encoder_blocks : sequence of int
        Residual blocks at the 1/2 and 1/4 levels of the encoder.
    latent_blocks : int
        Residual blocks at the 1/8 level.
    decoder_blocks : sequence of int
        Residual blocks at the 1/4 and 1/2 levels of the decoder.
    full_res_width : int
        Channels of an optional full-resolution path (0: none). A stem of
        ``full_res_blocks`` residual blocks feeds the 1/2 level and a full-resolution
        decoder of as many blocks adds its own output residual. Both junctions start at
        zero, so a network grown with this path from trained weights computes exactly what
        it did before, and training starts from there.
    full_res_blocks : int
        Residual blocks in the full-resolution stem and in its decoder.
    attention_window : int
        Window side (at the 1/2 level, so twice that in pixels) of ``attention_blocks``
        :class:`WindowAttention` blocks at the start of the last decoder stage, every
        other one shifted by half a window (0: none). They start as the identity.
    attention_blocks : int
        How many (with ``attention_window``).
    attention_heads : int
        Heads of each attention block (32 channels each).
    experts : int
        Expert kernels of every residual block outside the latent level (0: plain
        convolutions); ``forward`` then needs a per-image ``routing`` (N, experts). The
        latent level is left plain: its 4x-wider convolutions would multiply the
        parameter count by far more for the same per-pixel cost.

    Notes
    -----
    Guidance points (for SGM) are the latent level and each decoder level, in that
    order; their channel counts are in :attr:`guidance_channels`.
    """

    multiple = 8

    def __init__(
        self,
        in_channels: int = 3,
        width: int = 32,
        encoder_blocks: Sequence[int] = (2, 2),
        latent_blocks: int = 4,
        decoder_blocks: Sequence[int] = (2, 2),
        full_res_width: int = 0,
        full_res_blocks: int = 1,
        experts: int = 0,
        attention_window: int = 0,
        attention_blocks: int = 2,
        attention_heads: int = 1,
    ) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        if len(encoder_blocks) != 2 or len(decoder_blocks) != 2:
            raise ValueError(
                f"encoder_blocks and decoder_blocks need 2 entries each, got "
                f"{list(encoder_blocks)} and {list(decoder_blocks)}"
            )
        if experts < 0:
            raise ValueError(f"experts must be >= 0, got {experts}")
        self.in_channels = in_channels
        self.experts = experts
        w1, w2, w3 = width, 2 * width, 4 * width
        self.intro = nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(4 * in_channels, w1, 3, padding=1))
        self.encoder1 = Stage(w1, encoder_blocks[0], experts)
        self.down1 = nn.Conv2d(w1, w2, 2, stride=2)
        self.encoder2 = Stage(w2, encoder_blocks[1], experts)
        self.down2 = nn.Conv2d(w2, w3, 2, stride=2)
        self.latent = Stage(w3, latent_blocks)
        self.up2 = nn.Sequential(nn.Conv2d(w3, 4 * w2, 1), nn.PixelShuffle(2))
        self.decoder2 = Stage(w2, decoder_blocks[0], experts)
        self.up1 = nn.Sequential(nn.Conv2d(w2, 4 * w1, 1), nn.PixelShuffle(2))
        if attention_window < 0 or (attention_window and attention_blocks < 1):
            raise ValueError(f"attention_window must be >= 0 (and attention_blocks >= 1 with it), got "
                             f"{attention_window}, {attention_blocks}")
        self.attention = nn.Sequential(*[
            WindowAttention(w1, attention_window, attention_heads, shifted=bool(i % 2))
            for i in range(attention_blocks if attention_window else 0)
        ])
        self.decoder1 = Stage(w1, decoder_blocks[1], experts)
        self.tail = nn.Sequential(nn.Conv2d(w1, 4 * in_channels, 3, padding=1), nn.PixelShuffle(2))
        # the residual is zero at initialisation: an untrained network is the identity,
        # so training starts from the input's quality instead of below it
        nn.init.zeros_(self.tail[0].weight)
        nn.init.zeros_(self.tail[0].bias)
        self.guidance_channels: tuple[int, ...] = (w3, w2, w1)
        if full_res_width < 0 or full_res_blocks < 1:
            raise ValueError(f"full_res_width must be >= 0 and full_res_blocks >= 1, got {full_res_width}, {full_res_blocks}")
        self.full_res = None
        if full_res_width:
            f = full_res_width
            self.full_res = nn.ModuleDict({
                "stem": nn.Sequential(nn.Conv2d(in_channels, f, 3, padding=1),
                                      *[ResidualBlock(f, experts) for _ in range(full_res_blocks)]),
                "down": nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(4 * f, w1, 3, padding=1)),
                "up": nn.Sequential(nn.Conv2d(w1, 4 * f, 1), nn.PixelShuffle(2)),
                "decoder": Stage(f, full_res_blocks, experts),
                "tail": nn.Conv2d(f, in_channels, 3, padding=1),
            })
            for junction in (self.full_res["down"][1], self.full_res["tail"]):
                nn.init.zeros_(junction.weight)
                nn.init.zeros_(junction.bias)

    def forward(self, x: torch.Tensor, modulate: Modulator | None = None,
                routing: torch.Tensor | None = None) -> torch.Tensor:
        """Restore ``x`` (N, C, H, W); ``modulate`` is applied at the guidance points and
        ``routing`` weights the expert kernels (needed when ``experts``): (N, experts), one
        kernel per image (a grouped convolution), or (1, experts), one for the whole batch."""
        if self.experts and routing is None:
            raise ValueError(f"this backbone has {self.experts} experts per convolution: pass a routing "
                             f"(N, {self.experts}), or (1, {self.experts}) for a batch of tiles of one image")
        height, width = x.shape[-2:]
        padded = pad_to_multiple(x, self.multiple)
        hook = modulate if modulate is not None else (lambda _level, feature: feature)
        full = self.full_res
        stem = None
        if full is not None:
            stem = full["stem"][0](padded)
            for block in full["stem"][1:]:
                stem = block(stem, routing)
        e1 = self.intro(padded)
        e1 = self.encoder1(e1 if full is None else e1 + full["down"](stem), routing)
        e2 = self.encoder2(self.down1(e1), routing)
        latent = hook(0, self.latent(self.down2(e2)))
        d2 = hook(1, self.decoder2(self.up2(latent) + e2, routing))
        d1 = hook(2, self.decoder1(self.attention(self.up1(d2) + e1), routing))
        out = self.tail(d1) + padded
        if full is not None:
            out = out + full["tail"](full["decoder"](full["up"](d1) + stem, routing))
        return out[..., :height, :width]

