"""Small pieces shared by the backbones: padding and the guidance-hook type."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["Modulator", "pad_to_multiple"]

#: ``modulate(level, feature) -> feature``: called by a backbone at each guidance point
#: (level 0 = latent, then the decoder levels from coarse to fine).
Modulator = Callable[[int, torch.Tensor], torch.Tensor]


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the bottom/right of ``x`` (N, C, H, W) so H and W are multiples of ``multiple``.

    Reflect padding is used when the image is large enough, replicate otherwise.
    """
    height, width = x.shape[-2:]
    pad_h = (-height) % multiple
    pad_w = (-width) % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
