"""How a comparison is timed: interleaved repeats, per-repeat figures summarised as median, min and max.

A busy or drifting machine slows every variant of a repeat alike when they run in turn (A B C, then C B A), so a
ratio taken within one repeat is steadier than a ratio of two separate averages.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def summary(values: list[float]) -> dict[str, Any]:
    """``{"median", "min", "max", "runs"}`` of per-repeat values (nulls when nothing ran)."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "runs": 0}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "runs": len(vals)}


def sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str) -> tuple[float, Any]:
    gc.collect()
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def interleave(runs: dict[str, Callable[[], Any]], repeats: int, device: str, label: str
               ) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Run every variant once per repeat, alternating the order (A B C / C B A); seconds per variant."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    last: dict[str, Any] = {}
    for r in range(repeats):
        order = list(runs) if r % 2 == 0 else list(reversed(runs))
        for name in order:
            seconds, last[name] = timed(runs[name], device)
            times[name].append(seconds)
        log(f"{label} repeat {r + 1}/{repeats}: " + ", ".join(f"{k} {times[k][-1]:.2f} s" for k in runs))
    return times, last
