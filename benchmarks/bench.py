#!/usr/bin/env python
"""lens_steer benchmarks P1-P11: speed and memory targets, each measured side by side with its baseline.

    python benchmarks/bench.py                       # the whole suite on the embedded Gemma-3-270M (make bench)
    python benchmarks/bench.py --model tiny --skip-demo --repeats 1     # a tiny random Llama, seconds
    python benchmarks/bench.py --model Qwen/Qwen2.5-7B --device cuda --dtype bfloat16 --skip-demo

P1 recording overhead   lens_steer.recorder vs the plain HF module's forward (logits_to_keep=1, no hooks) over the
                        exact batches record runs (captured from it); P1' the same over the head-less forward
                        (no logits at all, as record runs it). Also record through the bridge (the reference
                        path), the bridge without hooks, and the plain HF module with the bridge's eager attention,
                        to show where the ratio comes from.
P2 vs the reference     lens_steer.recorder vs benchmarks/reference.py (the paper's approach) on the same tokens.
P3 LSS throughput       lens_steer.lss.run_lss (1 factor; a k-factor sweep) vs a batch-1 full-logits loop.
P4 memory               peak RSS while recording a 4x corpus / while recording the 1x corpus (fresh processes).
P5 demo wall time       `make demo` into a fresh run directory, after `make setup` (set-up not timed).
P6 scale-out            `identify` under torchrun on 2 gloo ranks (1 thread each) vs one process (2 threads), the
                        same corpus, fresh processes: wall ratio, and the merge's own time over the recording.
P7 GPU (CUDA only)      recording in bfloat16 and LSS, each over a plain HF forward of the same batches; one
                        "skipped: no GPU" line elsewhere (--p7-device cpu runs the code path on the CPU).
P8 attention kernels    recording with --attention sdpa vs eager on long rows (sentences joined to ~500 tokens),
                        fresh processes: time and peak memory.
P9 compare time         `lens-steer compare` at the README's settings before issue 27 (1 hand-written forcing prompt
                        per language, 1 fact split) and at `make figures`' (8 UDHR prompts, 3 splits), fresh
                        processes on one neuron set: both wall times and their ratio.
P10 explorer            `lens-steer explore`: a neuron page without the model (its HTTP callbacks), and a 20-token
                        steered generation on the run's model (explorer.py).
P11 harness             lm-evaluation-harness log-likelihood requests: the `lens_steer` harness model under p_max
                        vs the harness's plain `hf` model, same requests (harness_speed.py).

Compared runs are interleaved within each repeat (A B C, then C B A, ...); every ratio is taken per repeat and
reported as median, min and max over repeats. Results go to --out (JSON) and a Markdown table next to it.

This file is the entry point: the command line and the order of the suite. Each benchmark lives in a module of its
own (P1/P2 recording.py, P3 lss_speed.py, P4 memory.py, P5 demo_time.py, P6 scaleout.py, P7 gpu.py, P8
attention_kernels.py, P9 compare_time.py, P10 explorer.py, P11 harness_speed.py), on the shared pieces:
workload.py (model, corpus), timing.py (interleaved repeats), targets.py, machine.py and results_table.py.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the benchmarks package and the checkout's lens_steer

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from benchmarks.attention_kernels import bench_attention  # noqa: E402
from benchmarks.compare_time import bench_compare  # noqa: E402
from benchmarks.demo_time import bench_demo  # noqa: E402
from benchmarks.explorer import bench_explorer  # noqa: E402 - P10, the explorer
from benchmarks.gpu import bench_gpu  # noqa: E402
from benchmarks.harness_speed import bench_harness  # noqa: E402
from benchmarks.lss_speed import bench_lss, compare_lss  # noqa: E402
from benchmarks.machine import machine_info  # noqa: E402
from benchmarks.memory import bench_memory, p4_child  # noqa: E402
from benchmarks.recording import bench_recording, compare_records  # noqa: E402
from benchmarks.results_table import markdown, table  # noqa: E402
from benchmarks.scaleout import bench_scaleout  # noqa: E402
from benchmarks.targets import TARGETS, met, target_text  # noqa: E402
from benchmarks.timing import log, summary  # noqa: E402
from benchmarks.workload import (  # noqa: E402
    DEFAULT_LANGS,
    TINY_LANGS,
    describe_model,
    load_bridge,
    load_plain_hf,
    load_texts,
    prepend_bos,
    record_config,
    resolve_model,
)

# Re-exported for tests/test_benchmarks.py, which calls them as bench.X.
__all__ = ["TARGETS", "bench_demo", "bench_gpu", "build_parser", "compare_lss", "compare_records", "main", "met",
           "prepend_bos", "summary"]

# The benchmarks that start their own processes or models, in the order they run, after P1-P3 (which share one
# loaded model, see run_with_model) have let theirs go. A new benchmark is a module with a function of the
# context ({"args", "model_path"}) returning its figures and {"details": ...}, and one line here.
FRESH: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "P4": bench_memory,
    "P5": lambda ctx: bench_demo(ctx["args"]),
    "P6": bench_scaleout,
    "P7": bench_gpu,
    "P8": bench_attention,
    "P9": bench_compare,
    "P10": bench_explorer,  # the explorer: a neuron page without the model, a 20-token steered generation
    "P11": bench_harness,  # lm-evaluation-harness under a factor vs the plain hf model (issue 29)
}
BENCHMARKS = ("P1", "P2", "P3", *FRESH)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="gemma-3-270m",
                   help="gemma-3-270m (embedded), a HF directory, a hub id, or 'tiny' (a tiny random Llama)")
    p.add_argument("--langs", default=None, help=f"languages (default: {DEFAULT_LANGS}; tiny: {TINY_LANGS})")
    p.add_argument("--corpus", default=None, help="udhr (default), files or flores (tiny: its own sentences)")
    p.add_argument("--corpus-path", default=None, help="directory for --corpus files / a local FLORES+ copy")
    p.add_argument("--split", default=None, help="corpus split (udhr default: identify)")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="per-language token budget of P1/P2, the P3 statistics and P4's 1x corpus (default 600;"
                        " tiny: all)")
    p.add_argument("--batch-size", type=int, default=16, help="recording batch size (default 16, as identify)")
    p.add_argument("--repeats", type=int, default=3, help="repeats of every comparison (default 3)")
    p.add_argument("--facts", type=int, default=None,
                   help="P3: CLDR facts per source language for lens_steer (default 10; tiny: 4)")
    p.add_argument("--reference-facts", type=int, default=3,
                   help="P3: the first N of them for the batch-1 loop (its cost per triple does not depend on N;"
                        " default 3)")
    p.add_argument("--factor", default="p_max", help="P3: the factor of the speed comparison (default p_max)")
    p.add_argument("--factors", default="p_max,p_median,zero,p_max*0.5,p_max*2",
                   help="P3: the k-factor sweep (default: the demo's 5)")
    p.add_argument("--lss-batch-size", type=int, default=32, help="P3: lens_steer LSS batch size (default 32, as lss)")
    p.add_argument("--top-rate", type=float, default=0.01, help="P3: LAPE top rate for the neuron set")
    p.add_argument("--reference-logits", choices=("full", "last"), default="full",
                   help="P2: the reference computes full-vocabulary logits (default, as the issue specifies) or"
                        " only the last position's (what generate() does in recent transformers)")
    p.add_argument("--only", default=None, help="comma-separated subset of P1,...,P11")
    p.add_argument("--skip-demo", action="store_true", help="skip P5")
    p.add_argument("--demo-cmd", default=None, help="P5: time this shell command instead of `make demo`")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's choice, the number of cores)")
    p.add_argument("--dtype", default=None, help="float32 (default) or bfloat16 (GPU)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results.json"), help="results JSON")
    p.add_argument("--markdown", default=None, help="Markdown table (default: --out with .md)")
    p.add_argument("--attention", default="eager", choices=["eager", "sdpa"],
                   help="attention kernel of the recorder's model (default eager, as identify)")
    p.add_argument("--p7-device", default=None,
                   help="P7: run the GPU benchmark on this device (default: cuda when present, else skipped)")
    p.add_argument("--p4-child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--join-rows", type=int, default=None, help=argparse.SUPPRESS)
    return p


def run_with_model(ctx: dict[str, Any], which: set[str], phase: Callable[..., dict[str, Any]]) -> None:
    """P1-P3 on the model loaded once into ``ctx``: P3 reuses the statistics P1/P2 recorded (or records them)."""
    stats = None
    recording = which & {"P1", "P2"}
    if recording:
        stats = phase("P1/P2" if len(recording) == 2 else min(recording),
                      lambda: bench_recording(ctx, recording))["stats"]
    if "P3" in which:
        def lss() -> dict[str, Any]:
            from lens_steer.recorder import record

            recorded = stats if stats is not None else record(ctx["bridge"], ctx["texts"],
                                                               config=record_config(ctx["args"]), progress=False)
            return bench_lss(ctx, recorded)

        phase("P3", lss)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tiny = args.model == "tiny"
    args.langs = args.langs or (TINY_LANGS if tiny else DEFAULT_LANGS)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.p4_child is not None:
        p4_child(args)
        return 0
    if args.max_tokens is None and not tiny:
        args.max_tokens = 600
    args.facts = args.facts or (4 if tiny else 10)
    which = set(BENCHMARKS) if not args.only else {x.strip().upper() for x in args.only.split(",")}
    unknown = which - set(BENCHMARKS)
    if unknown:
        raise SystemExit(f"--only: unknown {', '.join(sorted(unknown))}; use {','.join(BENCHMARKS)}")
    if args.skip_demo:
        which.discard("P5")
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    command = "python benchmarks/bench.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    model_path = resolve_model(args)
    machine = machine_info(args)
    load = machine.get("loadavg_start", [0.0])[0]
    if load > 0.5 * (machine["cores"] or 1):
        log(f"WARNING: load average {load} on {machine['cores']} cores before starting: other processes compete for"
            " the CPU (torch's threads then stall) and every timing below is polluted; run on a quiet machine")
    ctx: dict[str, Any] = {"args": args, "model_path": model_path}
    results: dict[str, Any] = {}
    details: dict[str, Any] = {}
    model_info: dict[str, Any] = {"spec": args.model, "path": model_path}
    if which & {"P1", "P2", "P3"}:
        log(f"loading {args.model} (bridge and plain HF) on {args.device}")
        ctx["bridge"] = load_bridge(model_path, args)
        ctx["hf"] = load_plain_hf(model_path, ctx["bridge"], args.device)
        ctx["texts"] = load_texts(args)
        model_info.update(describe_model(ctx["bridge"], ctx["hf"]))
    phases: dict[str, float] = {"load": time.perf_counter() - t0}

    def phase(name: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Time one benchmark, merge its figures into results and its details into details."""
        start = time.perf_counter()
        out = run()
        phases[name] = time.perf_counter() - start
        details.update(out.pop("details"))
        results.update({k: v for k, v in out.items() if k != "stats"})
        return out

    run_with_model(ctx, which, phase)
    ctx.pop("bridge", None), ctx.pop("hf", None)
    gc.collect()
    for pid, run in FRESH.items():
        if pid in which:
            phase(pid, lambda run=run: run(ctx))
    if tiny:
        shutil.rmtree(Path(model_path).parent, ignore_errors=True)
    details["phase_seconds"] = {k: round(v, 1) for k, v in phases.items()}
    with contextlib.suppress(OSError):
        machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    final: dict[str, Any] = {}
    for key in TARGETS:
        final[key] = results.get(key) or {**summary([]), "skipped": True}
    final["targets"] = {k: target_text(op, t, u) for k, (op, t, u, _) in TARGETS.items()}
    final["met"] = {k: met(k, final[k]["median"]) for k in TARGETS}
    final.update(machine=machine, model=model_info, details=details, command=command, started=started,
                 wall_seconds=time.perf_counter() - t0,
                 config={k: v for k, v in vars(args).items() if k not in ("p4_child",)})
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(final, indent=2, default=str) + "\n", encoding="utf-8")
    md_path = Path(args.markdown) if args.markdown else out_path.with_suffix(".md")
    md_path.write_text(markdown(final), encoding="utf-8")
    print(table(final))
    print(f"\n{out_path} and {md_path} written ({final['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
