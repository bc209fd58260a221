"""P8: what the ``--attention`` choice costs and saves: recording long rows (sentences joined to ~500 tokens) with
sdpa and with eager attention, in fresh P4 children, time and peak memory above the loaded model.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from typing import Any

from benchmarks.memory import child_command, mib, peak_of
from benchmarks.timing import log, summary
from benchmarks.workload import ROOT


def bench_attention(ctx: dict[str, Any]) -> dict[str, Any]:
    """Recording long rows with sdpa and with eager attention, fresh processes, interleaved: time and peak memory
    (CUDA max_memory_allocated on a GPU, else peak RSS above the loaded model)."""
    args = ctx["args"]
    got: dict[str, list[dict[str, Any]]] = {"eager": [], "sdpa": []}
    for r in range(args.repeats):
        for kernel in (("eager", "sdpa") if r % 2 == 0 else ("sdpa", "eager")):
            cmd = child_command(args, ctx["model_path"], 1) + ["--attention", kernel, "--join-rows", "24"]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if proc.returncode != 0:
                raise RuntimeError(f"P8 child ({kernel}) failed:\n{proc.stderr[-3000:]}")
            got[kernel].append(json.loads(proc.stdout.strip().splitlines()[-1]))
        log(f"P8 repeat {r + 1}/{args.repeats}: " + ", ".join(
            f"{k} {got[k][-1]['seconds']:.1f} s peak {mib(above(got[k][-1], args)):.0f} MiB" for k in got))
    e, s = got["eager"], got["sdpa"]
    det = {"P8_rows_tokens": e[0]["tokens"], "P8_longest_row": e[0].get("longest_row"),
           **{f"P8_seconds_{k}": summary([x["seconds"] for x in v]) for k, v in got.items()},
           **{f"P8_peak_mib_above_model_{k}": summary([mib(above(x, args)) for x in v]) for k, v in got.items()}}
    return {"P8_sdpa_over_eager_seconds": summary([b["seconds"] / a["seconds"] for a, b in zip(e, s)]),
            "P8_sdpa_over_eager_peak": summary([above(b, args) / max(above(a, args), 1) for a, b in zip(e, s)]),
            "details": det}


def above(result: dict[str, Any], args: argparse.Namespace) -> int:
    """Peak memory while recording above what the loaded model held before."""
    if str(args.device).startswith("cuda"):
        return result["cuda_peak"] - result["cuda_baseline"]
    return peak_of(result, args) - result["rss_baseline"]
