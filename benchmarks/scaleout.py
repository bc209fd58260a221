"""P6: scale-out, ``identify`` under torchrun on 2 gloo ranks (1 thread each) against one process with 2 threads,
fresh processes on the same corpus: the wall ratio, and the merge's share of the 2-rank wall time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.timing import log, summary
from benchmarks.workload import ROOT, load_texts


def bench_scaleout(ctx: dict[str, Any]) -> dict[str, Any]:
    """`identify` as a user runs it, fresh processes, same corpus and budget: one process with 2 threads, then
    torchrun --standalone with 2 gloo ranks (torchrun gives each rank 1 thread). Interleaved per repeat."""
    args = ctx["args"]
    work = Path(tempfile.mkdtemp(prefix="lens-steer-bench-p6-"))
    corpus = work / "corpus"
    corpus.mkdir()
    for lang, sentences in load_texts(args).items():
        (corpus / f"{lang}.txt").write_text("\n".join(s.replace("\n", " ") for s in sentences) + "\n", encoding="utf-8")
    common = ["identify", "--model", ctx["model_path"], "--corpus", "files", "--corpus-path", str(corpus),
              "--langs", args.langs, "--batch-size", str(args.batch_size), "--quiet", "--device", args.device]
    if args.max_tokens:
        common += ["--max-tokens", str(args.max_tokens)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}

    def one(k: int) -> tuple[float, str]:
        cmd = [sys.executable, "-m", "lens_steer.cli", *common, "--out", str(work / f"one{k}")]
        return _timed_cli(cmd, {**env, "OMP_NUM_THREADS": "2"})

    def two(k: int) -> tuple[float, str]:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "lens_steer.cli", *common, "--out", str(work / f"two{k}")]
        return _timed_cli(cmd, {k: v for k, v in env.items() if k != "OMP_NUM_THREADS"})

    ratios, shares, walls = [], [], {"one": [], "two": []}
    for k in range(args.repeats):
        order = [("one", one), ("two", two)] if k % 2 == 0 else [("two", two), ("one", one)]
        got = {name: fn(k) for name, fn in order}
        walls["one"].append(got["one"][0])
        walls["two"].append(got["two"][0])
        ratios.append(got["two"][0] / got["one"][0])
        merge = float(got["two"][1].split("merging their parts took ")[1].split(" s")[0])
        shares.append(merge / got["two"][0])
        log(f"P6 repeat {k + 1}/{args.repeats}: 1 process {got['one'][0]:.1f} s, 2 ranks {got['two'][0]:.1f} s,"
            f" merge {merge:.3f} s")
    same = _same_neurons(work / "one0", work / "two0")
    shutil.rmtree(work, ignore_errors=True)
    return {"P6_torchrun_2_over_1": summary(ratios), "P6_merge_share": summary(shares),
            "details": {"P6_seconds_one_process": summary(walls["one"]), "P6_seconds_two_ranks": summary(walls["two"]),
                        "P6_same_neurons": same}}


def _timed_cli(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"P6: {' '.join(cmd[:6])}... failed:\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout


def _same_neurons(a: Path, b: Path) -> bool:
    def read(run: Path) -> dict:
        return json.loads((run / "neurons.json").read_text())["neurons"]

    return read(a) == read(b)
