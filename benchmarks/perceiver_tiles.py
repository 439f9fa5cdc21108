"""How the quality perceiver's verdict depends on the tile size, on the bundled samples.

For each sample of the napari plugin (synthetic fluorescence, hazy astronaut), the clean
reference, the degraded image and its restoration by the restorer are each rated by
:func:`perceive_ir.perceive` at several tile sizes. A perceiver that works at a tile size
rates the clean image high, the degraded one low and the restoration in between; the
table shows at which tile sizes that holds. PSNRs against the clean reference (on its
data range, as ``perceive-ir restore --reference``) are printed beside them.

    PYTHONPATH=src python benchmarks/perceiver_tiles.py --threads 2
    PYTHONPATH=src python benchmarks/perceiver_tiles.py --model NAME_OR_FILE --perceiver NAME_OR_FILE

Not part of the package (run as a plain script from the repository root).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

SAMPLES = ("fluorescence", "hazy astronaut")


def sample_pair(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(degraded, clean) of a bundled sample."""
    from perceive_ir.synthetic import make_fluorescence_pair, make_hazy_astronaut_pair

    if name == "fluorescence":
        return make_fluorescence_pair()
    if name == "hazy astronaut":
        return make_hazy_astronaut_pair()
    raise ValueError(f"unknown sample {name!r}; expected one of {SAMPLES}")


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    """PSNR on the reference's data range (max - min), as ``perceive-ir restore --reference``."""
    peak = float(reference.max()) - float(reference.min()) or 1.0
    error = np.mean((image.astype(np.float64) - reference.astype(np.float64)) ** 2)
    return float(10 * np.log10(peak**2 / max(error, 1e-20)))


def measure(samples: list[str], tile_sizes: list[int], model: str, perceiver: str) -> list[dict[str, Any]]:
    from perceive_ir import perceive, restore

    rows = []
    for name in samples:
        degraded, clean = sample_pair(name)
        axes = "YXC" if degraded.ndim == 3 else "YX"
        restored = restore(degraded, model=model, axes=axes)
        versions = {"clean": clean, "degraded": degraded, "restored": restored}
        quality = {"clean": None, "degraded": psnr(degraded, clean), "restored": psnr(restored, clean)}
        for tile in tile_sizes:
            for version, image in versions.items():
                summary = perceive(image, model=perceiver, axes=axes, tile_size=tile).summary
                rows.append({"sample": name, "tile": tile, "image": version, "psnr": quality[version],
                             "tiles": summary["tiles"], **{f"{k}_fraction": v for k, v in summary["fraction"].items()},
                             "mean_score": summary["mean_score"]})
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", nargs="+", default=list(SAMPLES), choices=SAMPLES)
    parser.add_argument("--tile-sizes", nargs="+", type=int, default=[112, 128, 160, 224, 256])
    parser.add_argument("--model", default="default", help="restorer: 'default', a registered name or a weights file")
    parser.add_argument("--perceiver", default="default", help="perceiver: 'default', a registered name or a weights file")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    _common.set_threads(args.threads)
    rows = measure(args.samples, args.tile_sizes, args.model, args.perceiver)
    print(_common.header("perceiver verdict vs tile size, bundled samples",
                         f"restorer {args.model}, perceiver {args.perceiver}"))
    print(_common.table(
        ["sample", "tile px", "image", "PSNR dB", "tiles", "low", "medium", "high", "mean score"],
        [[r["sample"], r["tile"], r["image"], "-" if r["psnr"] is None else f"{r['psnr']:.2f}", r["tiles"],
          f"{r['low_fraction']:.0%}", f"{r['medium_fraction']:.0%}", f"{r['high_fraction']:.0%}",
          f"{r['mean_score']:.2f}"] for r in rows]))
    if args.json:
        args.json.write_text(json.dumps({"machine": _common.machine_facts(), "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
