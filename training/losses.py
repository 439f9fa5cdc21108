"""Losses of Perceive-IR stage 2 and the feature extractors of the perceptual loss.

``L = L1(R, GT) + 0.1 * InfoNCE + 0.05 * L_clip + 0.1 * L_dpl`` (paper weights), optionally
``+ w * L_freq``:

- :func:`info_nce`: CFE embeddings; positive = another crop of the same degraded image,
  negatives = batch samples of a different task;
- :func:`clip_quality_loss`: ``mean(1 - p_high)`` of the restored output under the frozen
  stage-1 perceiver;
- :func:`difficulty_adaptive_perceptual_loss`: contrastive perceptual ratio whose
  negatives are the degraded input (weight 2) and the outputs of proxy restorers
  (weights ``beta_k``, masked by task);
- :func:`frequency_l1`: L1 between the 2-D spectra of output and target (not in the paper;
  the frequency loss of MIMO-UNet and AdaIR, which pushes against the over-smooth output
  that pixel L1 alone settles for on blur).

Feature spaces for the perceptual loss: :class:`Vgg16Features` (the paper's, needs VGG16
weights) and :class:`RandomFeaturePyramid`, a fixed random convolutional pyramid used when
no VGG16 weights are available offline. Tensors are NCHW with values in [0, 1].
"""

from __future__ import annotations

import os
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DPL_LAYER_WEIGHTS",
    "info_nce",
    "clip_quality_loss",
    "difficulty_adaptive_perceptual_loss",
    "frequency_l1",
    "RandomFeaturePyramid",
    "Vgg16Features",
    "psnr",
]

#: Weights of the four feature taps (shallow to deep), as in the paper.
DPL_LAYER_WEIGHTS = (1.0 / 12, 1.0 / 6, 1.0 / 3, 1.0)


def info_nce(query: torch.Tensor, key: torch.Tensor, tasks: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """InfoNCE over unit-norm embeddings with task-aware negatives.

    Parameters
    ----------
    query, key : Tensor
        (N, D) unit-norm embeddings of two crops of the same N degraded images.
    tasks : Tensor
        (N,) task index of each image; negatives of sample i are the keys of samples
        whose task differs from task i.
    temperature : float
        Softmax temperature (paper: 0.1).

    Returns
    -------
    Tensor
        Scalar loss, ``mean_i -log(exp(q_i.k_i/t) / (exp(q_i.k_i/t) + sum_neg exp(q_i.k_j/t)))``.
    """
    logits = query @ key.t() / temperature
    same_task = tasks[:, None] == tasks[None, :]
    positive = torch.eye(len(tasks), dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill(same_task & ~positive, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(tasks), device=logits.device))


def clip_quality_loss(perceiver: nn.Module, restored: torch.Tensor) -> torch.Tensor:
    """``mean(1 - softmax(logits)[high])`` of ``restored`` under a frozen perceiver.

    Gradients flow into ``restored`` (the perceiver's parameters are frozen by the caller).
    """
    logits = perceiver(perceiver.prepare(restored))
    return (1.0 - logits.float().softmax(dim=-1)[:, -1]).mean()


def frequency_l1(restored: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the real and imaginary parts of the orthonormal 2-D
    real FFTs of ``restored`` and ``clean`` (N, C, H, W), in float32.

    With ``norm="ortho"`` the transform is unitary (Parseval; ``rfft2`` keeps the half of
    the conjugate-symmetric spectrum that determines it): white noise of one level costs
    the same at every crop size, and the term's gradient is of the
    order of pixel L1's (the unnormalised FFT of MIMO-UNet and AdaIR is ``sqrt(H * W)``
    times larger, so their weight 0.1 is about 10 here at 96 px crops).
    """
    difference = torch.fft.rfft2(restored.float() - clean.float(), norm="ortho")
    return torch.view_as_real(difference).abs().mean()


def _distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample mean absolute difference, (N,)."""
    return (a - b).abs().flatten(1).mean(dim=1)


def difficulty_adaptive_perceptual_loss(
    features: nn.Module,
    restored: torch.Tensor,
    clean: torch.Tensor,
    degraded: torch.Tensor,
    proxies: Sequence[torch.Tensor],
    proxy_weights: torch.Tensor,
    layer_weights: Sequence[float] = DPL_LAYER_WEIGHTS,
    epsilon: float = 1e-7,
) -> torch.Tensor:
    """Difficulty-adaptive perceptual loss (paper's L_dpl).

    ``sum_l w_l * d_l(R, GT) / (2 * d_l(R, D) + sum_k w_ik * d_l(R, P_k))`` per sample,
    averaged over the batch, where ``d_l`` is the mean absolute difference of feature
    tap ``l`` and ``w_ik = m_k(task_i) * beta_k``.

    Parameters
    ----------
    features : nn.Module
        Frozen feature extractor returning one tensor per tap.
    restored, clean, degraded : Tensor
        (N, 3, H, W) restored output R, ground truth GT and degraded input D.
    proxies : sequence of Tensor
        Outputs P_k of the K frozen proxy restorers on ``degraded``, each (N, 3, H, W).
    proxy_weights : Tensor
        (N, K): task mask times ``beta_k`` of each sample and proxy.
    layer_weights : sequence of float
        One weight per feature tap.
    """
    with torch.no_grad():
        clean_features = features(clean)
        degraded_features = features(degraded)
        proxy_features = [features(p) for p in proxies]
    restored_features = features(restored)
    if len(restored_features) != len(layer_weights):
        raise ValueError(f"feature extractor gives {len(restored_features)} taps, got {len(layer_weights)} layer weights")
    total = restored.new_zeros(restored.shape[0])
    for tap, weight in enumerate(layer_weights):
        r = restored_features[tap]
        positive = _distance(r, clean_features[tap])
        negative = 2.0 * _distance(r, degraded_features[tap])
        for k, proxy in enumerate(proxy_features):
            negative = negative + proxy_weights[:, k] * _distance(r, proxy[tap])
        total = total + weight * positive / (negative + epsilon)
    return total.mean()


class RandomFeaturePyramid(nn.Module):
    """A fixed random VGG-like pyramid: four taps of 16/32/64/64 channels (full, 1/2, 1/4, 1/8).

    The fallback feature space of the perceptual loss when no VGG16 weights are given:
    random convolutional features keep the full spatial resolution of the crop and act
    as a multi-scale, multi-orientation filter bank (random-weight networks are known
    to give usable perceptual and texture statistics); the tiny perceiver's image tower
    is not used because it sees a 7x7 grid of 32-pixel patches of the resized crop,
    which carries little of the pixel-level detail a perceptual loss should compare.
    The weights are drawn from a fixed seed (Kaiming normal), so the space is
    reproducible and need not be stored.
    """

    def __init__(self, seed: int = 0, channels: Sequence[int] = (16, 32, 64, 64)) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        stages = []
        previous = 3
        for index, count in enumerate(channels):
            layers: list[nn.Module] = [nn.AvgPool2d(2)] if index > 0 else []
            for _ in range(2):
                conv = nn.Conv2d(previous, count, 3, padding=1)
                with torch.no_grad():
                    conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * (2.0 / (9 * previous)) ** 0.5)
                    conv.bias.zero_()
                layers += [conv, nn.ReLU()]
                previous = count
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "RandomFeaturePyramid":
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        x = x * 2.0 - 1.0
        for stage in self.stages:
            x = stage(x)
            taps.append(x)
        return taps


class Vgg16Features(nn.Module):
    """Frozen torchvision VGG16 taps relu1_2, relu2_2, relu3_2 and relu3_3 (ImageNet-normalised).

    Parameters
    ----------
    weights_file : str or path
        VGG16 ``state_dict`` as ``.safetensors`` or a torch file (read with
        ``weights_only=True``); the keys of torchvision's ``vgg16`` (``features.*`` at least).

    Notes
    -----
    The paper uses VGG16 features up to relu3_3 with four layer weights (1/12, 1/6, 1/3, 1);
    the four taps chosen here are the last ReLUs of blocks 1 and 2 and the last two of
    block 3.
    """

    TAPS = (3, 8, 13, 15)

    def __init__(self, weights_file: str | os.PathLike) -> None:
        super().__init__()
        from torchvision.models import vgg16

        path = str(weights_file)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"VGG16 weights file not found: '{path}'")
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        model = vgg16(weights=None)
        features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        if not features:
            raise ValueError(f"'{path}' holds no 'features.*' tensors of a torchvision VGG16")
        model.features.load_state_dict(features, strict=False)
        self.features = model.features[: self.TAPS[-1] + 1]
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "Vgg16Features":
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.mean) / self.std
        taps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.TAPS:
                taps.append(x)
        return taps


def psnr(restored: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of (N, C, H, W) images in [0, 1] (``restored`` clipped)."""
    error = (restored.clamp(0, 1) - clean).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(1.0 / error.clamp_min(1e-10))
