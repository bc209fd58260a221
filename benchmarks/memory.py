"""P4: peak memory while recording a 4x corpus over the 1x corpus, each in a fresh process.

A child is ``bench.py --p4-child SCALE`` (:func:`child_command`): a fresh process has no allocator history, and
the kernel's peak-RSS mark is reset after the model loads, so the peak is recording's own. P8 runs the same child
on long rows.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.timing import log, summary
from benchmarks.workload import ROOT, load_bridge, load_texts, prepend_bos, record_config

BENCH = Path(__file__).resolve().with_name("bench.py")  # the entry point the child runs


def _status_bytes(key: str) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _maxrss_bytes() -> int:
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _budget_prefix(tokenizer, sentences: list[str], bos: bool, budget: int | None, max_length: int) -> list[str]:
    """The sentences record keeps under ``budget`` (whole sentences, corpus order)."""
    if budget is None:
        return list(sentences)
    total = 0
    for i, text in enumerate(sentences):
        n = min(len(tokenizer(text, add_special_tokens=False)["input_ids"]) + bos, max_length) - bos
        if n > 0 and total + n > budget:
            return list(sentences[:i])
        total += max(n, 0)
    return list(sentences)


def p4_child(args: argparse.Namespace) -> None:
    """One P4 measurement in this (fresh) process: print a JSON line."""
    from lens_steer.recorder import record

    scale = args.p4_child
    bridge = load_bridge(args.model, args)
    texts = load_texts(args)
    config = record_config(args)
    bos = prepend_bos(bridge)
    base = {lang: _budget_prefix(bridge.tokenizer, s, bos, config.max_tokens, config.max_length)
            for lang, s in texts.items()}
    scaled = {lang: s * scale for lang, s in base.items()}
    if args.join_rows:  # P8: long rows, where the attention kernel's memory shows
        k = args.join_rows
        scaled = {lang: [" ".join(s[i : i + k]) for i in range(0, len(s), k)] for lang, s in scaled.items()}
    first = next(iter(base))
    record(bridge, {first: base[first][:2]}, config=record_config(args, None), progress=False)  # weights paged in
    gc.collect()
    baseline = _status_bytes("VmRSS")
    reset = _reset_peak_rss()
    cuda = str(args.device).startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_base = torch.cuda.memory_allocated()
    start = time.perf_counter()
    stats = record(bridge, scaled, config=record_config(args, None), progress=False)
    seconds = time.perf_counter() - start
    peak = _status_bytes("VmHWM") if reset else None
    result = {"scale": scale, "tokens": int(stats.n_tokens.sum()), "sentences": int(stats.n_sentences.sum()),
              "seconds": seconds, "rss_baseline": baseline, "rss_peak_record": peak, "peak_reset": reset,
              "ru_maxrss": _maxrss_bytes(),
              "longest_row": max(len(bridge.tokenizer(t)["input_ids"]) for v in scaled.values() for t in v)}
    if cuda:
        result.update(cuda_baseline=cuda_base, cuda_peak=torch.cuda.max_memory_allocated())
    print(json.dumps(result), flush=True)


def child_command(args: argparse.Namespace, model: str, scale: int) -> list[str]:
    cmd = [sys.executable, str(BENCH), "--p4-child", str(scale), "--model", model,
           "--langs", args.langs, "--batch-size", str(args.batch_size), "--device", args.device]
    for flag, value in (("--max-tokens", args.max_tokens), ("--dtype", args.dtype), ("--corpus", args.corpus),
                        ("--attention", args.attention),
                        ("--threads", args.threads),
                        ("--corpus-path", args.corpus_path), ("--split", args.split)):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd


def bench_memory(ctx: dict[str, Any]) -> dict[str, Any]:
    args = ctx["args"]
    results: dict[int, list[dict[str, Any]]] = {1: [], 4: []}
    for r in range(args.repeats):
        for scale in ((1, 4) if r % 2 == 0 else (4, 1)):
            proc = subprocess.run(child_command(args, ctx["model_path"], scale), capture_output=True, text=True,
                                  cwd=ROOT)
            if proc.returncode != 0:
                raise RuntimeError(f"P4 child (scale {scale}) failed:\n{proc.stderr[-3000:]}")
            results[scale].append(json.loads(proc.stdout.strip().splitlines()[-1]))
        one, four = results[1][-1], results[4][-1]
        log(f"P4 repeat {r + 1}/{args.repeats}: 1x {one['tokens']} tokens peak {mib(peak_of(one, args)):.0f} MiB,"
            f" 4x {four['tokens']} tokens peak {mib(peak_of(four, args)):.0f} MiB")
    cuda = str(args.device).startswith("cuda")
    ratio = [peak_of(b, args) / peak_of(a, args) for a, b in zip(results[1], results[4])]
    det: dict[str, Any] = {"P4_memory": "CUDA max_memory_allocated while recording" if cuda else
                           "peak RSS (VmHWM, reset after model load and warm-up) while recording"}
    for scale in (1, 4):
        rs = results[scale]
        det[f"P4_tokens_{scale}x"] = rs[0]["tokens"]
        det[f"P4_peak_mib_{scale}x"] = summary([mib(peak_of(x, args)) for x in rs])
        det[f"P4_baseline_mib_{scale}x"] = summary([mib(x["cuda_baseline"] if cuda else x["rss_baseline"]) for x in rs])
        det[f"P4_growth_above_baseline_mib_{scale}x"] = summary(
            [mib(peak_of(x, args) - (x["cuda_baseline"] if cuda else x["rss_baseline"])) for x in rs])
        det[f"P4_process_max_rss_mib_{scale}x"] = summary([mib(x["ru_maxrss"]) for x in rs])
        det[f"P4_record_seconds_{scale}x"] = summary([x["seconds"] for x in rs])
    return {"P4_rss_growth_4x": summary(ratio), "details": det}


def peak_of(result: dict[str, Any], args: argparse.Namespace) -> int:
    if str(args.device).startswith("cuda"):
        return result["cuda_peak"]
    return result["rss_peak_record"] if result["rss_peak_record"] is not None else result["ru_maxrss"]


def mib(n: int | float) -> float:
    return n / 2**20
