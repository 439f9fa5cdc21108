"""Neural networks of perceive-ir (pure modules: no file or network I/O besides open_clip/timm builders).

- :mod:`.compact`, :mod:`.restormer`: restoration backbones;
- :mod:`.cfe`: degradation embedding; :mod:`.sgm`: semantic guidance;
- :mod:`.semantic`: frozen DINOv2 / CLIP semantic encoders;
- :mod:`.restorer`: the assembled all-in-one restorer;
- :mod:`.perceiver`: CLIP quality perceiver with learned tier prompts.
"""

from __future__ import annotations

from .cfe import DegradationEncoder
from .compact import CompactUNet
from .perceiver import TIERS, PerceiverConfig, QualityPerceiver, build_clip, tiny_clip_config
from .restormer import Restormer
from .restorer import BACKBONES, SEMANTIC_SOURCES, Restorer, RestorerConfig
from .sgm import Condition, SemanticGuidance

__all__ = [
    "BACKBONES",
    "SEMANTIC_SOURCES",
    "TIERS",
    "CompactUNet",
    "Condition",
    "DegradationEncoder",
    "PerceiverConfig",
    "QualityPerceiver",
    "Restormer",
    "Restorer",
    "RestorerConfig",
    "SemanticGuidance",
    "build_clip",
    "tiny_clip_config",
]
