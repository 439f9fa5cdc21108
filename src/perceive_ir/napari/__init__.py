"""napari plugin of perceive-ir: a restore widget, a quality heatmap widget and sample data.

The contributions are declared in ``perceive_ir/napari.yaml`` (npe2) and imported by napari
on first use; this module imports nothing heavy (no napari, Qt or torch), so that
``import perceive_ir.napari`` stays cheap.

- :mod:`._widget`: :class:`RestoreWidget` and :class:`QualityWidget` (Qt, napari);
- :mod:`._layers`: pure helpers (axes of a layer, heatmap transforms and colours, summary
  text, field of view) tested without a viewer;
- :mod:`._sample_data`: deterministic sample images (synthetic fluorescence, hazy photo),
  made by :mod:`perceive_ir.synthetic`.
"""

from __future__ import annotations

__all__: list[str] = []
