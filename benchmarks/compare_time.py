"""P9: what the verdicts cost, ``lens-steer compare`` at the README's settings before issue 27 (one hand-written
forcing prompt per language, one fact split) and at ``make figures``' (8 UDHR prompts per language, 3 splits), on
the same neuron set, fresh processes, model load included.

Both runs compare the default methods on en, fr, ja, sw with 10 reported and 10 held-out facts, as the README's
table; the paired bootstrap, the intervals and the seed spread are computed in both (they add no model pass), so the
difference is the extra forcing generations and the extra fact splits.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.timing import log, summary
from benchmarks.workload import ROOT

LANGS = "en,fr,ja,sw"
BEFORE = ["--forcing-prompts", "1", "--forcing-bank", "handwritten", "--seeds", "1"]
AFTER = ["--forcing-prompts", "8", "--forcing-bank", "udhr", "--seeds", "3"]  # the Makefile's COMPARE_* settings


def bench_compare(ctx: dict[str, Any]) -> dict[str, Any]:
    """One identify of the whole identification split (not timed), copied twice; then compare before, then after,
    once each: minutes each, so one repeat (the figures are reported without a target)."""
    args = ctx["args"]
    if args.model == "tiny":  # a random model has no language to force and no cloze facts: nothing to time
        log("P9: skipped on the tiny model")
        return {"details": {"P9_skipped": "tiny model"}}
    work = Path(tempfile.mkdtemp(prefix="lens-steer-bench-p9-"))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cli = [sys.executable, "-m", "lens_steer.cli"]
    identify = [*cli, "identify", "--model", ctx["model_path"], "--langs", LANGS, "--quiet", "--device", args.device,
                "--out", str(work / "run")]
    log("P9: identify (not timed)")
    _run(identify, env)
    seconds = {}
    for name, settings in (("before", BEFORE), ("after", AFTER)):
        shutil.copytree(work / "run", work / name)
        cmd = [*cli, "compare", str(work / name), "--langs", LANGS, "--max-facts", "10", "--quiet", *settings]
        start = time.perf_counter()
        _run(cmd, env)
        seconds[name] = time.perf_counter() - start
        log(f"P9: compare {' '.join(settings)}: {seconds[name]:.0f} s")
    shutil.rmtree(work, ignore_errors=True)
    return {"P9_compare_seconds_before": summary([seconds["before"]]),
            "P9_compare_seconds_after": summary([seconds["after"]]),
            "P9_compare_after_over_before": summary([seconds["after"] / seconds["before"]]),
            "details": {"P9_before": " ".join(BEFORE), "P9_after": " ".join(AFTER), "P9_langs": LANGS}}


def _run(cmd: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
