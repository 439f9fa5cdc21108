"""The ``perceive-ir`` command: restore, perceive, degrade, models.

Each subcommand prints one clear line and exits non-zero on error; progress goes to a
tqdm bar on stderr. Outputs are written atomically and never replace an existing file
unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perceive-ir",
        description="All-in-one image restoration (noise, blur, haze, rain, low light) with a CLIP quality perceiver.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--axes", default=None, help="axes of the input, e.g. YX, YXC, CYX, ZYX (default: inferred)")
    common.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:N or mps")
    common.add_argument("--batch-size", type=int, default=None, help="tiles per forward pass (default: by device)")
    common.add_argument("--quiet", action="store_true", help="no progress bar")

    restore = sub.add_parser("restore", parents=[common], help="restore an image file into a new file")
    restore.add_argument("input", help="input image (TIFF, OME-TIFF, zarr, npy, png, jpg)")
    restore.add_argument("output", help="output file (TIFF, zarr or npy); written atomically")
    restore.add_argument("--model", default="default", help="model name (see `perceive-ir models`) or weights file")
    restore.add_argument("--tile-size", type=int, default=None, help="tile side in pixels (default: from free memory)")
    restore.add_argument("--tile-overlap", type=int, default=32, help="overlap between tiles in pixels")
    restore.add_argument("--ensemble", type=int, default=1, choices=(1, 2, 4, 8),
                         help="average this many rotated / mirrored copies of each tile (slower, slightly better)")
    restore.add_argument("--deblur", default="auto", choices=("auto", "off"),
                         help="auto: deconvolve a detected linear motion blur before the network (default)")
    restore.add_argument("--float32", action="store_true", help="write float32 instead of the input dtype")
    restore.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    restore.add_argument("--report", default=None,
                         help="also write the quality report (JSON) of input and result to this file")
    restore.add_argument("--perceiver", default="default", help="perceiver for --report")
    restore.add_argument("--reference", default=None,
                         help="clean reference image of the same shape: add PSNR of input and result to --report")

    perceive = sub.add_parser("perceive", parents=[common], help="per-tile quality tiers of an image")
    perceive.add_argument("input", help="input image")
    perceive.add_argument("--model", default="default", help="perceiver name or weights file")
    perceive.add_argument("--tile-size", type=int, default=None,
                          help="side of the rated squares (default or 0: the one the perceiver was trained to rate)")
    perceive.add_argument("--json", dest="json_path", default=None, help="write the full report (JSON) here")
    perceive.add_argument("--overwrite", action="store_true", help="replace the JSON report if it exists")

    degrade = sub.add_parser("degrade", help="synthesise a degradation (for tests and demos)")
    degrade.add_argument("input", help="clean input image")
    degrade.add_argument("output", help="degraded output image")
    degrade.add_argument("--kind", required=True, help="noise, poisson, blur, defocus, motion_blur, haze, rain, low_light, jpeg")
    degrade.add_argument("--level", default="medium", help="low, medium, high or a number in [0, 1]")
    degrade.add_argument("--seed", type=int, default=0, help="random seed")
    degrade.add_argument("--overwrite", action="store_true", help="replace the output if it exists")

    gui = sub.add_parser("napari", help="open napari with the perceive-ir plugin (torch loaded first)")
    gui.add_argument("files", nargs="*", help="images to open")

    models = sub.add_parser("models", help="list the registered models")
    models.add_argument("--json", action="store_true", help="print JSON")
    return parser


class _ProgressBar:
    """tqdm progress bar fed with (done, total) callbacks."""

    def __init__(self, description: str, quiet: bool) -> None:
        self.description = description
        self.quiet = quiet
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.description, unit="tile", file=sys.stderr)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _batch(args: argparse.Namespace, default: int) -> int:
    return args.batch_size if args.batch_size is not None else default


def _check_report_path(path: str, overwrite: bool) -> None:
    """Refuse an existing report file (before any work) unless ``overwrite``."""
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"output '{path}' exists; pass --overwrite to replace it")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"folder of the output '{path}' does not exist")


def _write_json(path: str, payload: dict, overwrite: bool) -> None:
    from .io import atomic_output

    with atomic_output(path, overwrite=overwrite) as temporary:
        Path(temporary).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def reference_psnr(input_path: str, output_path: str, reference_path: str) -> dict[str, float]:
    """PSNR (dB) of the input and of the result against a clean reference, read lazily.

    The data range is the reference's max - min (so uint16 camera counts and [0, 1]
    floats are both judged on their own scale).
    """
    import dask.array as da
    import numpy as np

    from .io import read_dask

    reference = read_dask(reference_path)[0].astype("float64")
    values = {}
    for key, path in (("input", input_path), ("output", output_path)):
        image = read_dask(path)[0]
        if image.shape != reference.shape:
            raise ValueError(f"reference '{reference_path}' has shape {reference.shape} but {key} '{path}' has "
                             f"shape {image.shape}; they must match")
        values[key] = da.mean((image.astype("float64") - reference) ** 2)
    low, high, mse_in, mse_out = da.compute(reference.min(), reference.max(), values["input"], values["output"])
    peak = float(high - low) or 1.0
    psnr = lambda mse: float(10 * np.log10(peak ** 2 / mse)) if mse > 0 else float("inf")  # noqa: E731
    return {"data_range": peak, "psnr_input_db": round(psnr(mse_in), 3), "psnr_output_db": round(psnr(mse_out), 3)}


def _cmd_restore(args: argparse.Namespace) -> int:
    from .api import perceive, restore
    from .io import check_output_path

    check_output_path(args.output, overwrite=args.overwrite, input_path=args.input)
    if args.report is not None:
        _check_report_path(args.report, args.overwrite)
    if args.reference is not None:
        if args.report is None:
            raise ValueError("--reference needs --report (the PSNR goes into the report)")
        if not os.path.exists(args.reference):
            raise FileNotFoundError(f"reference image '{args.reference}' does not exist")
    bar = _ProgressBar("restoring", args.quiet)
    start = time.perf_counter()
    try:
        restore(args.input, out=args.output, model=args.model, axes=args.axes, tile_size=args.tile_size,
                tile_overlap=args.tile_overlap, batch_size=args.batch_size, device=args.device, progress=bar,
                ensemble=args.ensemble, deblur=args.deblur,
                overwrite=args.overwrite, out_dtype="float32" if args.float32 else None)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    print(f"restored '{args.input}' -> '{args.output}' in {seconds:.1f} s")
    if args.report is not None:
        before = perceive(args.input, model=args.perceiver, axes=args.axes, device=args.device)
        after = perceive(args.output, model=args.perceiver, axes=args.axes, device=args.device)
        report = {"input": str(args.input), "output": str(args.output), "restorer": str(args.model),
                  "perceiver": str(args.perceiver), "seconds": round(seconds, 2),
                  "before": before.summary, "after": after.summary}
        if args.reference is not None:
            report["reference"] = {"file": str(args.reference), **reference_psnr(args.input, args.output, args.reference)}
            print(f"PSNR vs '{args.reference}': {report['reference']['psnr_input_db']:.2f} dB -> "
                  f"{report['reference']['psnr_output_db']:.2f} dB")
        _write_json(args.report, report, args.overwrite)
        print(f"quality (mean score, 0 = low .. 1 = high): {before.summary['mean_score']:.3f} -> "
              f"{after.summary['mean_score']:.3f}; report written to '{args.report}'")
    return 0


def _cmd_perceive(args: argparse.Namespace) -> int:
    from .api import perceive

    if args.json_path is not None:
        _check_report_path(args.json_path, args.overwrite)
    bar = _ProgressBar("perceiving", args.quiet)
    try:
        quality = perceive(args.input, model=args.model, axes=args.axes, tile_size=args.tile_size or None,
                           batch_size=_batch(args, 16), device=args.device, progress=bar)
    finally:
        bar.close()
    summary = quality.summary
    fractions = ", ".join(f"{name} {value:.0%}" for name, value in summary["fraction"].items())
    print(f"{summary['tiles']} tiles of {summary['tile_size']} px: {fractions}; mean score {summary['mean_score']:.3f}")
    if args.json_path is not None:
        _write_json(args.json_path, {"input": str(args.input), "model": str(args.model), **quality.to_dict()},
                    args.overwrite)
    return 0


def _cmd_degrade(args: argparse.Namespace) -> int:
    import numpy as np

    from .degrade import degrade
    from .io import check_output_path, read_image, write_image

    check_output_path(args.output, overwrite=args.overwrite, input_path=args.input)
    image, _info = read_image(args.input)
    level: float | str = args.level
    try:
        level = float(args.level)
    except ValueError:
        pass
    dtype = image.dtype
    if dtype == np.uint8:
        scale = 255.0
    elif np.issubdtype(dtype, np.integer):
        scale = float(np.iinfo(dtype).max)
    else:
        scale = 1.0
    degraded = degrade(image.astype(np.float32) / scale, args.kind, level, rng=args.seed)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        degraded = np.clip(np.rint(degraded * scale), info.min, info.max).astype(dtype)
    else:
        degraded = degraded.astype(dtype)
    write_image(args.output, degraded, overwrite=args.overwrite)
    print(f"wrote '{args.output}' ({args.kind}, level {args.level}, seed {args.seed})")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from .zoo import DEFAULT_PERCEIVER, DEFAULT_RESTORER, list_models

    entries = list_models()
    if args.json:
        print(json.dumps([{"name": e.name, "kind": e.kind, "available": e.available, "file": str(e.path),
                           "sha256": e.sha256, "description": e.description} for e in entries], indent=2))
        return 0
    for entry in entries:
        default = " (default)" if entry.name in (DEFAULT_RESTORER, DEFAULT_PERCEIVER) else ""
        status = "bundled" if entry.available else "not bundled"
        print(f"{entry.name:28s} {entry.kind:10s} {status:12s}{default}  {entry.description}")
    return 0


def _cmd_napari(args: argparse.Namespace) -> int:
    from .napari._launch import launch

    launch(args.files)
    return 0


COMMANDS = {
    "restore": _cmd_restore,
    "perceive": _cmd_perceive,
    "degrade": _cmd_degrade,
    "models": _cmd_models,
    "napari": _cmd_napari,
}


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so temporary outputs are removed."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``perceive-ir`` console script; returns the exit code."""
    # idle OpenMP threads sleep instead of spinning: 2x faster with a busy core beside us
    # (benchmarks/speed.py, table d); only effective before torch is imported
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("perceive-ir: interrupted; no partial output was left", file=sys.stderr)
        return 130
    except (ValueError, KeyError, OSError, RuntimeError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"perceive-ir {args.command}: error: {message}", file=sys.stderr)
        if os.environ.get("PERCEIVE_IR_DEBUG"):
            raise
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
