"""Peak memory of disk-to-disk restoration vs image size, and interrupt safety.

For each size N in (2048, 4096, 8192, 16384) a uint16 N x N tiled, zlib-compressed TIFF is
generated band by band (smooth gradient + noise; the parent never holds the image), then
restored in a FRESH subprocess with ``restore(in_path, out=out_path, tile_size=512)``,
measured by ``/usr/bin/time -v`` (maximum resident set size) and, as a cross-check, by
polling the child's RSS with psutil. The child also reports its RSS after importing torch
and building the model (the floor no streaming can remove), and optionally the
tracemalloc peak (``--tracemalloc``; numpy buffers are traced, torch's are not).

Then a restore is interrupted mid-run (SIGINT, SIGTERM, SIGKILL of the child) and the
output directory is listed: nothing may exist under the output name.

Usage::

    cd /work/main && PYTHONPATH=src .venv/bin/python benchmarks/memory.py
    PYTHONPATH=src .venv/bin/python benchmarks/memory.py --quick        # 512^2 and 1024^2
    PYTHONPATH=src .venv/bin/python benchmarks/memory.py --sizes 16384  # one size

Targets: peak RSS < 1.5 GB at 16384^2, and flat in image size.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

GNU_TIME = "/usr/bin/time"


# --------------------------------------------------------------------------------------
# input generation (parent): never more than one 512 x 512 tile in memory


def make_input(path: Path, size: int, tile: int = 512, seed: int = 0) -> None:
    """Write a ``size`` x ``size`` uint16 tiled zlib TIFF of a smooth gradient + noise."""
    import numpy as np
    import tifffile

    tile = min(tile, size)
    rng = np.random.default_rng(seed)

    def tiles():
        for y0 in range(0, size, tile):
            for x0 in range(0, size, tile):
                yy = (np.arange(y0, y0 + tile, dtype=np.float32) / size)[:, None]
                xx = (np.arange(x0, x0 + tile, dtype=np.float32) / size)[None, :]
                smooth = 8000 + 20000 * xx + 10000 * yy + 6000 * np.sin(12 * xx) * np.cos(9 * yy)
                noisy = smooth + rng.normal(0, 800, (tile, tile)).astype(np.float32)
                yield np.clip(noisy, 0, 65535).astype(np.uint16)

    tifffile.imwrite(path, data=tiles(), shape=(size, size), dtype=np.uint16, tile=(tile, tile),
                     compression="zlib", compressionargs={"level": 1}, bigtiff=size * size * 2 > 2**31)


# --------------------------------------------------------------------------------------
# child: one restore, reports JSON on its last stdout line


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def child(args: argparse.Namespace) -> None:
    import resource

    # a child of a background job (nohup ... &) inherits SIGINT as ignored, and Python then
    # keeps ignoring it: restore Ctrl-C's usual meaning (KeyboardInterrupt), as in a terminal
    signal.signal(signal.SIGINT, signal.default_int_handler)

    import torch

    threads = _common.set_threads(args.threads)
    from perceive_ir.api import restore

    model = _common.build_model(args.model)
    baseline = _rss_mb()
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start()

    def progress(done: int, total: int) -> None:
        print(f"PROGRESS {done} {total}", flush=True)
        if args.pause:  # interrupt rows of tiny images: make sure the signal lands mid-run
            time.sleep(args.pause)

    start = time.perf_counter()
    restore(args.child[0], out=args.child[1], model=model, tile_size=args.tile, tile_overlap=32,
            batch_size=args.batch, device="cpu", progress=progress)
    wall = time.perf_counter() - start
    report = {
        "wall_s": wall,
        "baseline_rss_mb": baseline,
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": threads,
        "torch": torch.__version__,
    }
    if args.tracemalloc:
        import tracemalloc

        report["tracemalloc_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
    print("RESULT " + json.dumps(report), flush=True)


# --------------------------------------------------------------------------------------
# parent: run children, measure


def child_command(args: argparse.Namespace, in_path: Path, out_path: Path, use_time: bool,
                  pause: float = 0.0) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(in_path), str(out_path),
           "--tile", str(args.tile), "--model", args.model]
    if args.batch is not None:
        cmd += ["--batch", str(args.batch)]
    if pause:
        cmd += ["--pause", str(pause)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.tracemalloc:
        cmd += ["--tracemalloc"]
    return ([GNU_TIME, "-v"] if use_time else []) + cmd


class RssPoller:
    """Peak RSS of a process and its descendants, sampled every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        import psutil

        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.process] + self.process.children(recursive=True)
                # the python child (not /usr/bin/time) is what matters; take the largest
                rss = max(p.memory_info().rss for p in procs)
                self.peak = max(self.peak, rss)
            except psutil.Error:
                pass
            self._stop.wait(self.interval)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak / 2**20


def run_child(args: argparse.Namespace, in_path: Path, out_path: Path) -> dict:
    use_time = os.path.exists(GNU_TIME)
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else src
    proc = subprocess.Popen(child_command(args, in_path, out_path, use_time), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    poller = RssPoller(proc.pid)
    stdout, stderr = proc.communicate()
    polled = poller.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"child failed (rc {proc.returncode}):\n{stderr[-3000:]}")
    result = json.loads([line for line in stdout.splitlines() if line.startswith("RESULT ")][-1][7:])
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    result["time_v_maxrss_mb"] = int(match.group(1)) / 1024 if match else float("nan")
    result["polled_rss_mb"] = polled
    return result


def interrupt_child(args: argparse.Namespace, in_path: Path, out_path: Path, sig: int, after_tiles: int) -> dict:
    """Start a restore, send ``sig`` once ``after_tiles`` tiles are done, list what is left."""
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else src
    before = set(os.listdir(out_path.parent))
    pause = 1.0 if args.quick else 0.0
    proc = subprocess.Popen(child_command(args, in_path, out_path, False, pause), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    done = total = 0
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("PROGRESS"):
            done, total = map(int, line.split()[1:3])
            if done >= after_tiles:
                break
    proc.send_signal(sig)
    try:
        proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
    left = sorted(set(os.listdir(out_path.parent)) - before)
    for name in left:  # clean up for the next row
        path = out_path.parent / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return {"signal": signal.Signals(sig).name, "at": f"{done}/{total} tiles", "rc": proc.returncode,
            "finished_first": proc.returncode == 0,
            "final_exists": out_path.name in left, "left": [n for n in left if n != out_path.name]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="512^2 and 1024^2 only, one run each (smoke test)")
    parser.add_argument("--sizes", type=int, nargs="+", help="image sides (default 2048 4096 8192 16384)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per size up to --repeat-max-size (larger sizes run once; default 3)")
    parser.add_argument("--repeat-max-size", type=int, default=4096,
                        help="larger images run once (default 4096)")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--batch", type=int, default=None,
                        help="tiles per forward pass (default: restore()'s own choice, one 512 tile on a CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads in the child (default: torch's)")
    parser.add_argument("--model", default=None, help="'random' (random weights of the bundled architecture), "
                        "'default', a registered name or a weights file (default: bundled if present, else random)")
    parser.add_argument("--tracemalloc", action="store_true", help="also report the child's tracemalloc peak")
    parser.add_argument("--no-interrupt", action="store_true", help="skip the interrupt rows")
    parser.add_argument("--interrupt-only", action="store_true", help="only the interrupt rows")
    parser.add_argument("--tmp", default=None, help="folder for the temporary images (default: system temp)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--signals", nargs="+", default=["INT", "TERM", "KILL"],
                        help="signals for the interrupt rows (default INT TERM KILL)")
    parser.add_argument("--interrupt-size", type=int, default=None,
                        help="image side for the interrupt rows (default 2048; --quick: the largest size)")
    parser.add_argument("--pause", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--child", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.model is None:
        args.model = _common.default_model_choice()
    if args.child:
        child(args)
        return 0

    # a SIGTERM of this script (not of the child) still removes the temporary folder
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sizes = args.sizes or ([512, 1024] if args.quick else [2048, 4096, 8192, 16384])
    threads = _common.set_threads(args.threads)
    facts = _common.machine_facts()
    print(f"# memory.py  {facts}")
    print(f"# model: {_common.model_description(args.model)}")
    print(f"# restore(in.tif, out=out.tif, tile_size={args.tile}, tile_overlap=32, batch_size={args.batch} (None: default), "
          f"device='cpu'), each run in a fresh subprocess; RSS by {GNU_TIME} -v "
          f"({'present' if os.path.exists(GNU_TIME) else 'MISSING: psutil polling only'})")
    rows, results = [], []
    workdir = Path(tempfile.mkdtemp(prefix="perceive_ir_bench_", dir=args.tmp))
    try:
        for size in [] if args.interrupt_only else sizes:
            in_path = workdir / f"in_{size}.tif"
            start = time.perf_counter()
            make_input(in_path, size)
            made = time.perf_counter() - start
            repeats = 1 if args.quick or size > args.repeat_max_size else args.repeats
            runs = []
            for _ in range(repeats):
                out_path = workdir / f"out_{size}.tif"
                runs.append(run_child(args, in_path, out_path))
                import tifffile

                with tifffile.TiffFile(out_path) as tf:
                    shape, dtype = tf.series[0].shape, tf.series[0].dtype
                assert shape == (size, size) and str(dtype) == "uint16", (shape, dtype)
                out_mb = out_path.stat().st_size / 2**20
                out_path.unlink()
            med = {key: statistics.median(r[key] for r in runs) for key in runs[0]
                   if isinstance(runs[0][key], (int, float))}
            mp = size * size / 1e6
            row = [f"{size}x{size}", f"{mp:.1f}", f"{in_path.stat().st_size / 2**20:.0f}", f"{out_mb:.0f}",
                   f"{med['time_v_maxrss_mb']:.0f}", f"{med['polled_rss_mb']:.0f}", f"{med['baseline_rss_mb']:.0f}",
                   f"{med['time_v_maxrss_mb'] - med['baseline_rss_mb']:.0f}",
                   f"{med['wall_s']:.1f}", f"{mp / med['wall_s']:.3f}", len(runs)]
            if args.tracemalloc:
                row.insert(8, f"{med['tracemalloc_peak_mb']:.0f}")
            rows.append(row)
            results.append({"size": size, "runs": runs, "input_s": made, "load_at_end": os.getloadavg()})
            print(f"  {size}^2 done: {row}  (input written in {made:.1f} s)", flush=True)
            in_path.unlink()
        columns = [] if args.interrupt_only else ["image", "MP", "in MB", "out MB", "peak RSS MB (time -v)", "peak RSS MB (psutil poll)",
                   "RSS after import+model MB", "peak - baseline MB", "wall s", "MP/s", "runs"]
        if args.tracemalloc and columns:
            columns.insert(8, "tracemalloc peak MB")
        if rows:
            print(_common.header("Peak memory of restore(tif -> tif) vs image size (median of runs)",
                                 f"tile {args.tile}, overlap 32, batch {args.batch or 'default'}, "
                                 f"{'random weights' if args.model == _common.RANDOM else args.model}"))
            print(_common.table(columns, rows))

        if not args.no_interrupt:
            size = args.interrupt_size or (max(sizes) if args.quick else 2048)
            in_path = workdir / f"in_{size}.tif"
            make_input(in_path, size)
            out_path = workdir / f"out_{size}_interrupted.tif"
            irows = []
            for sig in [getattr(signal, "SIG" + name.upper().removeprefix("SIG")) for name in args.signals]:
                r = interrupt_child(args, in_path, out_path, sig, after_tiles=args.batch or 1)
                results.append({"interrupt": r})
                irows.append([f"{size}x{size}", r["signal"], r["at"],
                              f"{r['rc']} (finished before the signal)" if r["finished_first"] else r["rc"],
                              "YES (bad)" if r["final_exists"] else "no",
                              ", ".join(r["left"]) if r["left"] else "none"])
            print(_common.header("Interrupting the child mid-run (restore(..., out=...))"))
            print(_common.table(["image", "signal", "sent after", "child rc", "file under output name?",
                                 "other files left in the output folder"], irows))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"facts": facts, "model": args.model, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
