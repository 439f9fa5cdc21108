"""perceive-ir: all-in-one image restoration with a CLIP-space quality perceiver.

Public API::

    from perceive_ir import restore, perceive, load_restorer, load_perceiver

Submodules are imported on first use, so ``import perceive_ir.degrade`` (numpy only)
does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["restore", "perceive", "load_restorer", "load_perceiver", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .api import perceive, restore
    from .zoo import load_perceiver, load_restorer

_LOCATIONS = {"restore": "api", "perceive": "api", "load_restorer": "zoo", "load_perceiver": "zoo"}


def __getattr__(name: str) -> Any:
    if name in _LOCATIONS:
        import importlib

        module = importlib.import_module(f".{_LOCATIONS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'perceive_ir' has no attribute {name!r}")
