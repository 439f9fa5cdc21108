"""Write the sample images of perceive-ir as compressed TIFFs (deterministic).

The images come from :mod:`perceive_ir.synthetic`, the same code that the napari plugin's
File > Open Sample entries call (and that makes the training data's microscopy images), so
the files here and the plugin's samples are identical. Run from the repository root::

    python sample_data/make_samples.py           # (re)write the TIFFs next to this script
    python sample_data/make_samples.py --check   # verify the files match the generator

Files (YX uint16 fluorescence, YXC uint8 RGB; zlib-compressed TIFF):

- ``fluorescence_degraded.tif`` / ``fluorescence_clean.tif``: synthetic fluorescence
  image (cells, nuclei, filaments, punctae) with out-of-focus Gaussian blur and
  Poisson-Gaussian noise, and its clean reference;
- ``astronaut_hazy.tif`` / ``astronaut_clean.tif``: ``skimage.data.astronaut()`` (public
  domain) under synthetic haze, and the original.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import tifffile

from perceive_ir.synthetic import SAMPLE_SEED, make_fluorescence_pair, make_hazy_astronaut_pair

HERE = Path(__file__).resolve().parent


def sample_arrays(seed: int = SAMPLE_SEED) -> dict[str, tuple[np.ndarray, str]]:
    """File name -> (array, axes) of every sample image."""
    degraded, clean = make_fluorescence_pair(seed=seed)
    hazy, astronaut = make_hazy_astronaut_pair(seed=seed)
    return {
        "fluorescence_degraded.tif": (degraded, "YX"),
        "fluorescence_clean.tif": (clean, "YX"),
        "astronaut_hazy.tif": (hazy, "YXS"),
        "astronaut_clean.tif": (astronaut, "YXS"),
    }


def write_samples(directory: Path = HERE) -> list[Path]:
    """Write every sample image into ``directory``; returns the paths."""
    paths = []
    for name, (array, axes) in sample_arrays().items():
        path = directory / name
        tifffile.imwrite(path, array, compression="zlib", photometric="rgb" if axes == "YXS" else "minisblack",
                         metadata={"axes": axes})
        paths.append(path)
    return paths


def check_samples(directory: Path = HERE) -> list[str]:
    """Names of the files that are missing or differ from the generator."""
    problems = []
    for name, (array, _axes) in sample_arrays().items():
        path = directory / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif not np.array_equal(tifffile.imread(path), array):
            problems.append(f"{name}: differs from the generator")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="verify the files instead of writing them")
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: this script's folder)")
    args = parser.parse_args(argv)
    if args.check:
        problems = check_samples(args.out)
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    for path in write_samples(args.out):
        print(f"{path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
