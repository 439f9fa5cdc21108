"""Shared helpers of the benchmark scripts: model choice, machine facts, timing, tables.

Not part of the package; imported by the scripts of ``benchmarks/``
(which put this folder on ``sys.path`` themselves, so run them as plain scripts).
"""

from __future__ import annotations

import copy
import datetime as _dt
import functools
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from perceive_ir.zoo import DEFAULT_RESTORER as BUNDLED

#: Architecture of ``--model random`` when no bundled weights file is installed (that of
#: the first bundled model, compact-allinone.v1, without its semantic tower).
FALLBACK_ARCH = dict(
    in_channels=3,
    backbone="compact",
    backbone_args=dict(width=32, encoder_blocks=(2, 2), latent_blocks=4, decoder_blocks=(2, 2)),
    cfe=True,
    sgm=True,
    semantic="none",
)

RANDOM = "random"  # --model value: random weights of random_architecture()


def default_model_choice() -> str:
    """``"default"`` when the bundled weights file exists, else ``"random"``."""
    try:
        from perceive_ir.zoo import get_entry

        return "default" if get_entry(BUNDLED).available else RANDOM
    except Exception:  # no table, unknown name...
        return RANDOM


def random_architecture() -> tuple[dict[str, Any], str]:
    """(config, where it comes from) of ``--model random``: the bundled default's architecture,
    read from its weights file (once per process), else :data:`FALLBACK_ARCH`."""
    config, source = _read_architecture()
    return copy.deepcopy(config), source


@functools.lru_cache(maxsize=1)
def _read_architecture() -> tuple[dict[str, Any], str]:
    try:
        from perceive_ir.zoo import get_entry, read_weights

        entry = get_entry(BUNDLED)
        if entry.available:
            return read_weights(entry.path, "restorer")[1], f"the {BUNDLED} architecture"
    except Exception:  # no table, unreadable file: fall back
        pass
    return dict(FALLBACK_ARCH), "the compact-allinone.v1 architecture without semantic tower (no bundled file)"


def model_description(choice: str) -> str:
    if choice == RANDOM:
        config, source = random_architecture()
        return (f"RANDOM weights of {source} (backbone {config.get('backbone')} {config.get('backbone_args')}, "
                f"semantic {config.get('semantic')})")
    if choice == "default":
        return f"bundled trained model {BUNDLED}"
    return f"model {choice}"


def build_model(choice: str, device: str = "cpu"):
    """A :class:`perceive_ir.models.Restorer` in eval mode for ``--model`` ``choice``.

    ``"random"`` builds :func:`random_architecture` with random weights; the zero-initialised
    residual scales / FiLM / attention projections / junctions are perturbed so every path
    computes (cost does not depend on values, but this keeps the model from being trivially
    the identity). Any other value goes to :func:`perceive_ir.zoo.load_restorer` (a registered
    name or a weights file path).
    """
    import torch

    if choice == RANDOM:
        from perceive_ir.models import Restorer, RestorerConfig

        torch.manual_seed(0)
        model = Restorer(RestorerConfig.from_dict(random_architecture()[0]))
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.01)
        return model.eval().to(device)
    from perceive_ir.zoo import load_restorer

    return load_restorer(choice, device=device)


def set_threads(threads: int | None) -> int:
    """Apply ``--threads`` (None: keep torch's default) and return the thread count in use."""
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def held_out_restorer(description: str, argv: list[str] | None = None,
                      add_arguments: Callable[[Any], None] | None = None):
    """``(arguments, restorer)`` for the held-out quality benchmarks (``color_head.py``,
    ``experts.py``, ``fine_structure.py``, ``haze_global_error.py``, ``motion_blur.py``,
    ``set12_images.py``): ``--model`` (zoo name or weights file) or ``--run`` (a training run
    folder), ``--images`` (held-out images per task) and ``--threads``, plus what
    ``add_arguments(parser)`` adds. ``arguments.source`` names
    the restorer (the run folder or the model)."""
    import argparse

    from perceive_ir.zoo import load_restorer

    parser = argparse.ArgumentParser(description=description)
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--model", default="default", help="restorer: zoo name or weights file")
    choice.add_argument("--run", default=None, metavar="FOLDER",
                        help="the restorer of a training run folder (its restorer.pt) instead of --model")
    parser.add_argument("--images", type=int, default=12, help="held-out images per task")
    parser.add_argument("--threads", type=int, default=None)
    if add_arguments is not None:
        add_arguments(parser)
    arguments = parser.parse_args(argv)
    arguments.source = arguments.run or arguments.model  # what the restorer is, for messages
    set_threads(arguments.threads)
    if arguments.run is not None:
        from run import load_run  # training/ is on the held-out benchmarks' path (for evaluate.py)

        restorer = load_run(Path(arguments.run))[3]
        if restorer is None:
            raise SystemExit(f"'{arguments.run}' has no stage-2 checkpoint (restorer.pt)")
        return arguments, restorer
    return arguments, load_restorer(arguments.model)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_facts() -> dict[str, Any]:
    import torch

    facts = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "loadavg": tuple(round(x, 2) for x in os.getloadavg()),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    try:
        import psutil

        facts["ram_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:
        pass
    return facts


def header(title: str, extra: str = "") -> str:
    """Table header line: title, load average, torch threads (+ anything else)."""
    import torch

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    text = f"\n### {title}\n\n`loadavg {load} | torch threads {torch.get_num_threads()}"
    if extra:
        text += f" | {extra}"
    return text + "`\n"


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-markdown table."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def timed(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time of ``fn()`` over ``repeats`` runs (after ``warmup`` untimed runs)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int = 3, warmup: int = 1) -> dict[str, list[float]]:
    """Wall times of several functions run round-robin (A B C A B C ...), so that load that
    comes and goes (other jobs on a shared machine) hits every case alike. Returns the times
    per name; take the median (typical) and the minimum (least disturbed)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def spread(times: Sequence[float]) -> str:
    """``min-max`` of a list of seconds, for the tables."""
    return f"{min(times):.2f}-{max(times):.2f}"
