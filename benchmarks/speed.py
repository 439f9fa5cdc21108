"""Throughput of ``perceive_ir.api.restore``: tile size, image size, tiling overhead, MAC/s.

Tables (all times are the median of ``--repeats`` runs, default 3, after one warm-up):

(a) megapixels per second vs tile size (128, 256, 512, 1024) on a 2048x2048 float32 gray
    image, and vs image size (512^2 .. 4096^2) at the default tile size (``tile_size=None``,
    chosen by ``api.choose_tile_size`` from free memory). Each row also gives the pixels the
    model actually processed per image pixel (overlap + the last tile shifted inside) and
    the share of wall time spent inside the model's forward.
(b) tiling overhead on a 1024x1024 image: tiled (tile 256 and 512, overlap 32) vs one pass
    (one 1024 tile), in % (target < 15 %).
(c) multiply-accumulates: the model's MACs per pixel counted from its layers (forward hooks
    on Conv2d/Linear, plus the SGM attention matmuls) on one tile; achieved model MAC/s vs
    the machine's measured peak (plain ``F.conv2d`` 32->32 3x3 on 256^2 x4 and 128->128 3x3
    on 64^2 x4, and a 2048^2 ``matmul``, same thread count); the top ops by self CPU time
    from ``torch.profiler`` on one batch; a few cheap variants (channels_last, bf16).
(d) one batch through the model at 1 thread vs torch's default thread count (on a loaded
    machine OpenMP threads oversubscribe the cores and the default can be many times slower).
(e) the bare model's processed MP/s vs tile side and batch size (how the working set, not
    the MAC count, sets the speed on CPU).
(f) restore() of the (a1) image with other (tile, batch) choices: the current default vs
    small working sets and the balanced-grid tile of ``benchmarks/grid.py``.

Usage::

    cd /work/main && PYTHONPATH=src .venv/bin/python benchmarks/speed.py
    PYTHONPATH=src .venv/bin/python benchmarks/speed.py --quick          # tiny sizes, 1 run
    PYTHONPATH=src .venv/bin/python benchmarks/speed.py --threads 1 --only c
    PYTHONPATH=src .venv/bin/python benchmarks/speed.py --device cuda    # bf16 autocast, channels_last

The model is the bundled default (``zoo.DEFAULT_RESTORER``) when its weights file exists, else random
weights of the same architecture (said in the header); ``--model`` picks any other.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from perceive_ir import api  # noqa: E402
from perceive_ir.tiling import TileGrid  # noqa: E402


# --------------------------------------------------------------------------------------
# helpers


def test_image(size: int, seed: int = 0) -> np.ndarray:
    """float32 gray image in [0, 1]: smooth pattern + noise (values do not change the cost)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    image = 0.4 + 0.3 * np.sin(9 * xx) * np.cos(7 * yy) + rng.normal(0, 0.05, (size, size)).astype(np.float32)
    return np.clip(image, 0, 1).astype(np.float32)


class ForwardTimer:
    """Wall time spent inside ``model.forward`` (forward pre/post hooks)."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.total = 0.0
        self.calls = 0
        self._start = 0.0
        self.device = device
        self._handles = [model.register_forward_pre_hook(self._pre), model.register_forward_hook(self._post)]

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def _pre(self, *_):
        self._sync()
        self._start = time.perf_counter()

    def _post(self, *_):
        self._sync()
        self.total += time.perf_counter() - self._start
        self.calls += 1

    def reset(self) -> None:
        self.total, self.calls = 0.0, 0

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def processed_pixels(model, height: int, width: int, tile: int, overlap: int = 32) -> tuple[int, int]:
    """(tiles, pixels the model sees) for ``restore`` of one plane with this grid."""
    grid = TileGrid(height, width, tile, overlap, align=model.backbone.multiple)
    th, tw = grid.tile_shape
    return len(grid), len(grid) * th * tw


class Runner:
    def __init__(self, args: argparse.Namespace, model, device: torch.device) -> None:
        self.args = args
        self.model = model
        self.device = device
        self.timer = ForwardTimer(model, device)

    def restore(self, image: np.ndarray, tile: int | None) -> np.ndarray:
        out = api.restore(image, model=self.model, tile_size=tile, tile_overlap=32, batch_size=self.args.batch,
                          device=self.device)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return out

    def measure_many(self, cases: dict) -> dict:
        """``{name: (image, tile)}`` -> ``{name: result}``, runs interleaved round-robin (A B C A B C ...)
        so that load from other jobs that comes and goes hits every case alike."""
        for image, tile in cases.values():  # warm-up: one tile's worth of each case
            side = min(image.shape[0], tile or image.shape[0])
            self.restore(image[:side, :side], tile)
        walls: dict = {name: [] for name in cases}
        shares: dict = {name: [] for name in cases}
        for _ in range(self.args.repeats):
            for name, (image, tile) in cases.items():
                self.timer.reset()
                start = time.perf_counter()
                self.restore(image, tile)
                wall = time.perf_counter() - start
                walls[name].append(wall)
                shares[name].append(self.timer.total / wall)
        return {name: {"wall": statistics.median(walls[name]), "times": walls[name],
                       "model_share": statistics.median(shares[name])} for name in cases}

    def measure(self, image: np.ndarray, tile: int | None) -> dict:
        """Median wall time of restore(image) over repeats, with the model's share."""
        # warm-up on one tile's worth of image: allocator, oneDNN primitives for this shape
        side = min(image.shape[0], tile or image.shape[0])
        self.restore(image[:side, :side], tile)
        times, shares = [], []
        for _ in range(self.args.repeats):
            self.timer.reset()
            start = time.perf_counter()
            self.restore(image, tile)
            wall = time.perf_counter() - start
            times.append(wall)
            shares.append(self.timer.total / wall)
        return {"wall": statistics.median(times), "times": times, "model_share": statistics.median(shares)}


# --------------------------------------------------------------------------------------
# (a) MP/s vs tile size and image size


def table_a(runner: Runner, args: argparse.Namespace) -> dict:
    model = runner.model
    size = args.a_size
    image = test_image(size)
    rows = []
    results = {"tile_sweep": [], "size_sweep": []}
    measured = runner.measure_many({tile: (image, tile) for tile in args.tiles})
    for tile in args.tiles:
        r = measured[tile]
        tiles, pixels = processed_pixels(model, size, size, tile)
        mp = size * size / 1e6
        rows.append([tile, tiles, f"{pixels / (size * size):.2f}", f"{r['wall']:.2f}", _common.spread(r["times"]),
                     f"{mp / r['wall']:.3f}", f"{pixels / 1e6 / r['wall']:.3f}", f"{100 * r['model_share']:.0f}%"])
        results["tile_sweep"].append({"tile": tile, **r, "processed_px": pixels})
        print(f"  (a) tile {tile}: {rows[-1]}", flush=True)
    print(_common.header(f"(a1) restore() throughput vs tile size: {size}x{size} float32 gray (tile sizes "
                         f"interleaved round-robin)",
                         f"overlap 32, batch {args.batch or 'auto'}, device {runner.device}, {args.model_label}"))
    print(_common.table(["tile", "tiles", "processed px / image px", "median s", "min-max s", "image MP/s",
                         "processed MP/s", "time in model.forward"], rows))

    default_tile = (api.choose_tile_size(runner.device, args.batch or 1) if args.default_tile is None
                    else args.default_tile)
    rows = []
    for size in args.sizes:
        image = test_image(size)
        r = runner.measure(image, default_tile)
        tiles, pixels = processed_pixels(model, size, size, default_tile)
        mp = size * size / 1e6
        rows.append([f"{size}x{size}", f"{mp:.2f}", tiles, f"{pixels / (size * size):.2f}", f"{r['wall']:.2f}",
                     _common.spread(r["times"]), f"{mp / r['wall']:.3f}", f"{pixels / 1e6 / r['wall']:.3f}",
                     f"{100 * r['model_share']:.0f}%"])
        results["size_sweep"].append({"size": size, "tile": default_tile, **r, "processed_px": pixels})
        print(f"  (a) size {size}: {rows[-1]}", flush=True)
    print(_common.header(f"(a2) restore() throughput vs image size at the default tile size ({default_tile}, "
                         f"= api.choose_tile_size on this machine now)",
                         f"float32 gray, overlap 32, batch {args.batch or 'auto'}, device {runner.device}, {args.model_label}"))
    print(_common.table(["image", "MP", "tiles", "processed px / image px", "median s", "min-max s", "image MP/s",
                         "processed MP/s", "time in model.forward"], rows))
    return results


# --------------------------------------------------------------------------------------
# (b) tiling overhead


def table_b(runner: Runner, args: argparse.Namespace) -> dict:
    model = runner.model
    size = args.b_size
    image = test_image(size)
    batch = torch.from_numpy(np.repeat(image[None, None], model.in_channels, axis=1)).to(runner.device)

    # the bare model on the whole image, condition computed as restore() does
    job, _ = api._prepare(image, model, None, size, 32, 1, runner.device, None)
    plane = job.layout.planes()[0]
    condition = job.condition(plane)

    def bare() -> None:
        with torch.inference_mode(), api._autocast(runner.device):
            model(batch, condition)
        if runner.device.type == "cuda":
            torch.cuda.synchronize()

    bare_s, bare_times = _common.timed(bare, args.repeats)
    measured = runner.measure_many({tile: (image, tile) for tile in [size] + list(args.b_tiles)})
    one = measured[size]
    rows = [["model forward only (1 x whole image)", 1, "1.00", f"{bare_s:.2f}", _common.spread(bare_times), "-", "-"],
            [f"restore, one pass (tile {size})", 1, "1.00", f"{one['wall']:.2f}", _common.spread(one["times"]),
             f"{100 * (one['wall'] / bare_s - 1):+.0f}%", "(reference)"]]
    results = {"bare": bare_s, "one_pass": one, "tiled": []}
    for tile in args.b_tiles:
        r = measured[tile]
        tiles, pixels = processed_pixels(model, size, size, tile)
        rows.append([f"restore, tile {tile} overlap 32", tiles, f"{pixels / size**2:.2f}", f"{r['wall']:.2f}",
                     _common.spread(r["times"]), f"{100 * (r['wall'] / bare_s - 1):+.0f}%",
                     f"{100 * (r['wall'] / one['wall'] - 1):+.0f}%"])
        results["tiled"].append({"tile": tile, **r, "processed_px": pixels})
        print(f"  (b) tile {tile}: {rows[-1]}", flush=True)
    print(_common.header(f"(b) tiling overhead on {size}x{size} float32 gray (target: tiled vs one pass < +15%; "
                         f"restore runs interleaved round-robin)",
                         f"batch {args.batch or 'auto'}, device {runner.device}, {args.model_label}"))
    print(_common.table(["run", "tiles", "processed px / image px", "median s", "min-max s", "vs bare model",
                         "vs one pass"], rows))
    return results


# --------------------------------------------------------------------------------------
# (c) MACs


def count_macs(model, tile: int, device: torch.device) -> tuple[float, dict[str, float]]:
    """MACs of one forward of a (1, C, tile, tile) batch with a precomputed condition, by layer type."""
    per_kind: dict[str, float] = {}

    def add(kind: str, value: float) -> None:
        per_kind[kind] = per_kind.get(kind, 0.0) + float(value)

    def conv_hook(module: nn.Conv2d, _inputs, output) -> None:
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        add(f"conv{module.kernel_size[0]}x{module.kernel_size[1]}", output.numel() * k)

    def linear_hook(module: nn.Linear, _inputs, output) -> None:
        add("linear", output.numel() * module.in_features)

    def attention_hook(module, inputs, _output) -> None:
        # q @ k^T and attn @ v: each n * heads * (c/heads)^2 * h * w MACs
        n, c, h, w = inputs[0].shape
        add("sgm attention matmuls", 2 * n * c * (c // module.heads) * h * w)

    from perceive_ir.models.sgm import GuidanceBlock

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
        elif isinstance(module, GuidanceBlock):
            handles.append(module.register_forward_hook(attention_hook))
    x = torch.rand(1, model.in_channels, tile, tile, device=device)
    with torch.inference_mode():
        condition = model.condition_from_crops(x[:, :, :128, :128]) if model.sgm is not None else None
        per_kind.clear()  # the condition is computed once per plane, not per tile
        model(x, condition)
    for handle in handles:
        handle.remove()
    return sum(per_kind.values()), per_kind


def conv_peak(device: torch.device, repeats: int, quick: bool) -> list[list]:
    """MAC/s of plain convolutions and a matmul of representative sizes."""
    cases = [("conv 32->32 3x3, 256x256, batch 4", (4, 32, 256, 256), (32, 32, 3, 3)),
             ("conv 64->64 3x3, 128x128, batch 4", (4, 64, 128, 128), (64, 64, 3, 3)),
             ("conv 128->128 3x3, 64x64, batch 4", (4, 128, 64, 64), (128, 128, 3, 3))]
    if quick:
        cases = [("conv 32->32 3x3, 64x64, batch 1", (1, 32, 64, 64), (32, 32, 3, 3))]
    rows = []
    for name, xs, ws in cases:
        x = torch.rand(xs, device=device)
        w = torch.rand(ws, device=device)
        macs = xs[0] * ws[0] * xs[2] * xs[3] * ws[1] * ws[2] * ws[3]

        def run(x=x, w=w):
            with torch.inference_mode():
                F.conv2d(x, w, padding=1)
            if device.type == "cuda":
                torch.cuda.synchronize()

        s, times = _common.timed(run, max(repeats, 5))
        rows.append([name, macs / 1e9, s * 1e3, macs / s / 1e9])
    n = 256 if quick else 2048
    a, b = torch.rand(n, n, device=device), torch.rand(n, n, device=device)

    def mm():
        torch.matmul(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()

    s, _ = _common.timed(mm, max(repeats, 5))
    rows.append([f"matmul {n}x{n} @ {n}x{n} float32", n**3 / 1e9, s * 1e3, n**3 / s / 1e9])
    return rows


def table_c(runner: Runner, args: argparse.Namespace) -> dict:
    model, device = runner.model, runner.device
    tile = args.c_tile
    macs, per_kind = count_macs(model, tile, device)
    per_pixel = macs / tile**2
    print(_common.header(f"(c1) model MACs per pixel (one {tile}x{tile} tile, condition precomputed)",
                         args.model_label))
    print(_common.table(["layer type", "MACs / pixel", "share"],
                        [[k, f"{v / tile**2:,.0f}", f"{100 * v / macs:.1f}%"]
                         for k, v in sorted(per_kind.items(), key=lambda kv: -kv[1])]
                        + [["total", f"{per_pixel:,.0f}", "100%"]]))

    peaks = conv_peak(device, args.repeats, args.quick)
    print(_common.header("(c2) machine peak, same thread count (median of >= 5)", f"device {device}"))
    print(_common.table(["kernel", "GMAC", "median ms", "GMAC/s"],
                        [[n, f"{g:.2f}", f"{ms:.1f}", f"{r:.1f}"] for n, g, ms, r in peaks]))
    conv_best = max(r for n, _, _, r in peaks if n.startswith("conv"))

    # achieved: one batch of tiles through the bare model (fp32 NCHW as restore() runs it), then variants
    batch = torch.rand((args.batch or 1), model.in_channels, tile, tile, device=device)
    with torch.inference_mode():
        condition = model.condition_from_crops(batch[:1, :, :128, :128]) if model.sgm is not None else None

    def forward(x=batch, cast=None):
        with torch.inference_mode():
            if cast is None:
                with api._autocast(device):
                    model(x, condition)
            else:
                with torch.autocast(device.type, dtype=cast):
                    model(x, condition)
        if device.type == "cuda":
            torch.cuda.synchronize()

    variants = [("fp32 NCHW (as restore() runs on CPU)" if device.type == "cpu"
                 else "autocast bf16 NCHW (as restore() runs on CUDA)", lambda: forward())]
    if not args.quick:
        cl = batch.contiguous(memory_format=torch.channels_last)

        def with_channels_last(cast=None):
            api.set_memory_format(model, torch.channels_last)
            try:
                forward(cl, cast)
            finally:
                api.set_memory_format(model, torch.contiguous_format)

        variants.append(("fp32 channels_last (model + input)", lambda: with_channels_last()))
        if device.type == "cpu":
            variants.append(("autocast bf16 NCHW", lambda: forward(batch, torch.bfloat16)))
            variants.append(("autocast bf16 channels_last", lambda: with_channels_last(torch.bfloat16)))
        else:
            variants.append(("autocast bf16 channels_last", lambda: with_channels_last(torch.bfloat16)))
    rows, results = [], {"macs_per_pixel": per_pixel, "per_kind": per_kind, "peaks": peaks, "variants": []}
    pixels = (args.batch or 1) * tile * tile
    all_times = _common.interleaved(dict(variants), args.repeats)  # round-robin: load hits all alike
    for name, _fn in variants:
        times = all_times[name]
        s = statistics.median(times)
        rate = per_pixel * pixels / s / 1e9
        rows.append([name, f"{s:.2f}", _common.spread(times), f"{pixels / 1e6 / s:.3f}", f"{rate:.1f}",
                     f"{rate / conv_best:.2f}", f"{per_pixel * pixels / min(times) / 1e9 / conv_best:.2f}"])
        results["variants"].append({"name": name, "s": s, "times": times, "gmacs": rate})
        print(f"  (c) {name}: {rows[-1]}", flush=True)
    # end to end: restore() of the (a1) image at this tile size, if measured
    for entry in getattr(args, "tile_sweep_results", []):
        if entry["tile"] == tile:
            rate = per_pixel * entry["processed_px"] / entry["wall"] / 1e9
            rows.append([f"restore() end to end, {args.a_size}^2, tile {tile} (from a1)", f"{entry['wall']:.2f}",
                         _common.spread(entry["times"]), f"{entry['processed_px'] / 1e6 / entry['wall']:.3f}",
                         f"{rate:.1f}", f"{rate / conv_best:.2f}",
                         f"{per_pixel * entry['processed_px'] / min(entry['times']) / 1e9 / conv_best:.2f}"])
    print(_common.header(f"(c3) achieved MAC/s (variants interleaved round-robin): batch of {args.batch or 1} tiles {tile}x{tile} "
                         f"({per_pixel:,.0f} MAC/px); ratio vs best plain conv ({conv_best:.1f} GMAC/s); "
                         f"target ratio >= 0.5", f"device {device}, {args.model_label}"))
    print(_common.table(["run", "median s", "min-max s", "processed MP/s", "model GMAC/s", "ratio to conv peak",
                         "ratio (fastest run)"], rows))

    # where time goes: profiler on one batch (fp32 NCHW, as restore() runs)
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    forward()
    with profile(activities=activities) as prof:
        forward()
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(_common.header(f"(c4) torch.profiler: top 10 ops by self time, one batch of {args.batch or 1} x {tile}^2",
                         f"device {device}"))
    print("```\n" + prof.key_averages().table(sort_by=sort, row_limit=10, max_name_column_width=40) + "```")
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    results["profile_top"] = [(e.key, e.self_cpu_time_total / 1e3, e.count) for e in events[:10]]
    results["profile_total_ms"] = total / 1e3
    return results


# --------------------------------------------------------------------------------------
# (d) thread count


def table_d(runner: Runner, args: argparse.Namespace) -> dict:
    """One batch through the bare model at 1 thread and at torch's default thread count."""
    import os

    model, device = runner.model, runner.device
    tile = args.c_tile
    batch = torch.rand((args.batch or 1), model.in_channels, tile, tile, device=device)
    with torch.inference_mode():
        condition = model.condition_from_crops(batch[:1, :, :128, :128]) if model.sgm is not None else None

    def forward() -> None:
        with torch.inference_mode():
            model(batch, condition)

    chosen = torch.get_num_threads()
    counts = sorted({1, args.default_threads, chosen})
    rows, results = [], []
    def with_threads(count: int):
        def run() -> None:
            torch.set_num_threads(count)
            forward()
        return run

    try:
        all_times = _common.interleaved({count: with_threads(count) for count in counts}, args.repeats)
    finally:
        torch.set_num_threads(chosen)
    for count in counts:
        times = all_times[count]
        s = statistics.median(times)
        mp = (args.batch or 1) * tile * tile / 1e6
        rows.append([count, f"{s:.2f}", _common.spread(times), f"{mp / s:.3f}", f"{mp / min(times):.3f}"])
        results.append({"threads": count, "s": s, "times": times})
        print(f"  (d) {rows[-1]}", flush=True)
    print(_common.header(f"(d) torch threads: one batch of {args.batch or 1} x {tile}^2 through the model (fp32 NCHW), "
                         f"thread counts interleaved round-robin",
                         f"torch default here: {args.default_threads}; OMP_WAIT_POLICY="
                         f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}"))
    print(_common.table(["threads", "median s", "min-max s", "processed MP/s (median)",
                         "processed MP/s (fastest run)"], rows))
    return {"threads": results}


# --------------------------------------------------------------------------------------
# (e) bare model: tile size x batch size


def table_e(runner: Runner, args: argparse.Namespace) -> dict:
    """Processed MP/s of the bare model vs tile side and batch size (working-set / cache effect)."""
    model, device = runner.model, runner.device
    with torch.inference_mode():
        condition = (model.condition_from_crops(torch.rand(1, model.in_channels, 128, 128, device=device))
                     if model.sgm is not None else None)
    rows, results = [], []
    fns = {}
    for tile, batch_size in args.e_cases:
        x = torch.rand(batch_size, model.in_channels, tile, tile, device=device)

        def forward(x=x) -> None:
            with torch.inference_mode(), api._autocast(device):
                model(x, condition)
            if device.type == "cuda":
                torch.cuda.synchronize()

        fns[(tile, batch_size)] = forward
    all_times = _common.interleaved(fns, args.repeats)  # round-robin: load hits all cases alike
    for tile, batch_size in args.e_cases:
        times = all_times[(tile, batch_size)]
        s = statistics.median(times)
        mp = batch_size * tile * tile / 1e6
        # largest activation of the forward: first level, width channels at half resolution
        width = getattr(model.backbone, "guidance_channels", (0, 0, 0))[-1]
        act_mb = batch_size * width * (tile // 2) ** 2 * 4 / 2**20
        rows.append([tile, batch_size, f"{mp:.2f}", f"{act_mb:.0f}", f"{s:.2f}", _common.spread(times),
                     f"{mp / s:.3f}", f"{mp / min(times):.3f}"])
        results.append({"tile": tile, "batch": batch_size, "s": s, "times": times})
        print(f"  (e) {rows[-1]}", flush=True)
    print(_common.header("(e) bare model throughput vs tile side and batch size (fp32 NCHW, condition precomputed; "
                         "cases interleaved round-robin)",
                         f"device {device}, {args.model_label}"))
    print(_common.table(["tile", "batch", "MP per call", "one level-1 feature map MB", "median s", "min-max s",
                         "processed MP/s (median)", "processed MP/s (fastest run)"], rows))
    return {"cases": results}


# --------------------------------------------------------------------------------------
# (f) restore() with other tile / batch choices


def table_f(runner: Runner, args: argparse.Namespace) -> dict:
    """restore() of the (a1) image with (tile, batch) pairs, interleaved: the current default vs
    small-working-set choices (tile 448 = the balanced grid of grid.py for tile 512 on 2048^2)."""
    model = runner.model
    size = args.a_size
    image = test_image(size)
    fns = {}
    for tile, batch_size in args.f_cases:
        def run(tile=tile, batch_size=batch_size) -> None:
            api.restore(image, model=model, tile_size=tile, tile_overlap=32, batch_size=batch_size,
                        device=runner.device)
            if runner.device.type == "cuda":
                torch.cuda.synchronize()
        fns[(tile, batch_size)] = run
    all_times = _common.interleaved(fns, args.repeats)
    rows, results = [], []
    for (tile, batch_size), times in all_times.items():
        _, pixels = processed_pixels(model, size, size, tile)
        s = statistics.median(times)
        rows.append([tile, batch_size, f"{pixels / size**2:.2f}", f"{s:.2f}", _common.spread(times),
                     f"{size * size / 1e6 / s:.3f}"])
        results.append({"tile": tile, "batch": batch_size, "s": s, "times": times})
        print(f"  (f) {rows[-1]}", flush=True)
    print(_common.header(f"(f) restore() of {size}x{size} with other tile / batch choices (interleaved round-robin)",
                         f"overlap 32, device {runner.device}, {args.model_label}"))
    print(_common.table(["tile", "batch", "processed px / image px", "median s", "min-max s", "image MP/s"], rows))
    return {"cases": results}


# --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one run each (smoke test)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda: bf16 autocast as restore() does)")
    parser.add_argument("--model", default=None, help="'random' (random weights of the bundled architecture), "
                        "'default', a registered name or a weights file (default: bundled if present, else random)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=None,
                        help="restore(batch_size=...) (default: restore's own choice for the device); "
                             "the bare-model tables (c, d) use this many tiles, 1 when unset")
    parser.add_argument("--only", default="abcdef", help="which tables: any of a-f (default abcdef)")
    parser.add_argument("--default-tile", type=int, default=None,
                        help="tile for the image-size sweep (default: api.choose_tile_size now)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.model is None:
        args.model = _common.default_model_choice()
    args.default_threads = torch.get_num_threads()
    threads = _common.set_threads(args.threads)
    device = api.resolve_device(args.device)
    if args.quick:
        args.repeats = 1
        args.a_size, args.tiles, args.sizes = 128, [64], [64, 128]
        args.default_tile = args.default_tile or 64
        args.b_size, args.b_tiles, args.c_tile = 128, [64], 64
        args.e_cases = [(64, 1), (64, 4)]
        args.f_cases = [(64, 1), (64, 4)]
    else:
        args.a_size, args.tiles, args.sizes = 2048, [128, 256, 512, 1024], [512, 1024, 2048, 4096]
        args.b_size, args.b_tiles, args.c_tile = 1024, [256, 512], 512
        args.e_cases = [(128, 4), (128, 16), (256, 1), (256, 4), (512, 1), (512, 4), (1024, 1)]
        args.f_cases = [(1024, 4), (512, 4), (512, 1), (448, 1), (256, 4)]
    model = _common.build_model(args.model, str(device))
    args.model_label = "random weights" if args.model == _common.RANDOM else f"model {args.model}"
    facts = _common.machine_facts()
    print(f"# speed.py  {facts}")
    print(f"# model: {_common.model_description(args.model)}; {sum(p.numel() for p in model.parameters()):,} params")
    print(f"# torch threads {threads}; device {device}; each figure is the median of {args.repeats} run(s)")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    runner = Runner(args, model, device)
    results: dict = {"facts": facts, "model": args.model}
    if "a" in args.only:
        results["a"] = table_a(runner, args)
        args.tile_sweep_results = results["a"]["tile_sweep"]
    if "b" in args.only:
        results["b"] = table_b(runner, args)
    if "c" in args.only:
        results["c"] = table_c(runner, args)
    if "d" in args.only and device.type == "cpu":
        results["d"] = table_d(runner, args)
    if "e" in args.only:
        results["e"] = table_e(runner, args)
    if "f" in args.only:
        results["f"] = table_f(runner, args)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
        print(f"\ntorch.cuda.max_memory_allocated over the whole run: {peak:.0f} MB")
        results["cuda_max_memory_allocated_mb"] = peak
    print(f"\n# finished {_common.machine_facts()['date_utc']}, loadavg {facts['loadavg']} at start, "
          f"{tuple(round(x, 2) for x in __import__('os').getloadavg())} at end")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
