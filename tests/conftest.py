"""Shared fixtures: tiny models built and saved by the tests themselves (no downloads)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pytest
import torch
import torchvision  # noqa: F401  # load torch's triton before any Qt/OpenGL canvas (see perceive_ir.napari._widget.check_llvm_clash)

from perceive_ir.models import PerceiverConfig, QualityPerceiver, Restorer, RestorerConfig, tiny_clip_config

torch.set_num_threads(1)  # robust timings on a shared 2-core machine


def tiny_restorer_config(in_channels: int = 3, **overrides) -> RestorerConfig:
    """A compact restorer small enough for unit tests."""
    args = dict(in_channels=in_channels,
                backbone_args=dict(width=8, encoder_blocks=(1, 1), latent_blocks=1, decoder_blocks=(1, 1)),
                embed_dim=16)
    args.update(overrides)
    return RestorerConfig(**args)


def tiny_clip() -> dict:
    return tiny_clip_config(image_size=64, patch_size=16, vision_width=32, vision_layers=2, text_width=32,
                            text_layers=1, embed_dim=32, context_length=24)


def perturb(model: torch.nn.Module, scale: float = 0.02, seed: int = 0) -> torch.nn.Module:
    """Make zero-initialised paths (residual scales, FiLM, attention projections) non-trivial."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)
    return model


@pytest.fixture(scope="session")
def tiny_restorer() -> Restorer:
    """RGB, with a colour head and expert kernels: every API test also checks that the per-image
    correction and routing hold across tiles (and that the expert kernels survive channels_last)."""
    torch.manual_seed(0)
    args = dict(width=8, encoder_blocks=(1, 1), latent_blocks=1, decoder_blocks=(1, 1), experts=2)
    return perturb(Restorer(tiny_restorer_config(color_head=True, backbone_args=args))).eval()


@pytest.fixture(scope="session")
def tiny_gray_restorer() -> Restorer:
    torch.manual_seed(1)
    return perturb(Restorer(tiny_restorer_config(in_channels=1))).eval()


@pytest.fixture(scope="session")
def identity_restorer() -> Restorer:
    """An untrained restorer: its residual starts at zero, so restore() returns what it is given
    (what changes an image is then the API's own work, e.g. deblurring)."""
    torch.manual_seed(0)
    return Restorer(tiny_restorer_config()).eval()


@pytest.fixture(scope="session")
def identity_restorer_file(tmp_path_factory, identity_restorer) -> str:
    from perceive_ir.zoo import save_weights

    path = tmp_path_factory.mktemp("weights") / "identity-restorer.safetensors"
    save_weights(identity_restorer, path, card={"note": "untrained: the identity"})
    return str(path)


@pytest.fixture(scope="session")
def tiny_perceiver() -> QualityPerceiver:
    torch.manual_seed(0)
    return QualityPerceiver(PerceiverConfig(clip_config=tiny_clip())).lock()


@pytest.fixture(scope="session")
def restorer_file(tmp_path_factory, tiny_restorer) -> str:
    from perceive_ir.zoo import save_weights

    path = tmp_path_factory.mktemp("weights") / "tiny-restorer.safetensors"
    save_weights(tiny_restorer, path, card={"note": "random weights for tests"})
    return str(path)


@pytest.fixture(scope="session")
def perceiver_file(tmp_path_factory, tiny_perceiver) -> str:
    from perceive_ir.zoo import save_weights

    path = tmp_path_factory.mktemp("weights") / "tiny-perceiver.safetensors"
    save_weights(tiny_perceiver, path)
    return str(path)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def load_benchmark(name: str):
    """A script of ``benchmarks/`` as a module (they are scripts, not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
