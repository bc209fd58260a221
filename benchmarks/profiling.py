#!/usr/bin/env python
"""Profile one benchmarked operation with torch.profiler (operator level) and cProfile (Python level).

    python benchmarks/profiling.py record               # lens_steer.recorder on the embedded Gemma-3-270M
    python benchmarks/profiling.py forward              # the plain HF forward over record's batches (the P1 floor)
    python benchmarks/profiling.py bridge               # the bridge forward without hooks over the same batches
    python benchmarks/profiling.py lss --facts 10       # lens_steer.lss.run_lss, one factor
    python benchmarks/profiling.py record --model tiny --threads 1 --top 15

Prints the operators with the most self CPU time (CUDA time on a GPU) and the Python functions with the most
cumulative time; ``--trace out.json`` also writes a Chrome trace. Sizes take the same flags as bench.py.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks import recording, workload  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("record", "forward", "bridge", "lss"))
    p.add_argument("--model", default="gemma-3-270m")
    p.add_argument("--langs", default=None)
    p.add_argument("--corpus", default=None)
    p.add_argument("--corpus-path", default=None)
    p.add_argument("--split", default=None)
    p.add_argument("--max-tokens", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--facts", type=int, default=10)
    p.add_argument("--factor", default="p_max")
    p.add_argument("--lss-batch-size", type=int, default=32)
    p.add_argument("--top-rate", type=float, default=0.01)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--top", type=int, default=25, help="rows per table")
    p.add_argument("--trace", default=None, help="write a Chrome trace here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.langs = args.langs or (workload.TINY_LANGS if args.model == "tiny" else workload.DEFAULT_LANGS)
    path = workload.resolve_model(args)
    bridge = workload.load_bridge(path, args)
    texts = workload.load_texts(args)
    config = workload.record_config(args)
    from lens_steer.recorder import record

    batches, stats = recording.capture_batches(bridge, texts, config)  # also the warm-up
    if args.what == "record":
        def fn():
            return record(bridge, texts, config=config, progress=False)
    elif args.what == "bridge":
        def fn():
            return recording.bridge_forward(bridge, batches, args.device)
    elif args.what == "forward":
        hf = workload.load_plain_hf(path, bridge, args.device)
        recording.plain_forward(hf, batches[:1], args.device)

        def fn():
            return recording.plain_forward(hf, batches, args.device)
    else:
        from lens_steer.cloze import load_cloze
        from lens_steer.identification import lape, top_k_by_probability
        from lens_steer.lss import run_lss
        from lens_steer.steer import parse_factors

        neurons = lape(stats, top_rate=args.top_rate)
        if any(v == 0 for v in neurons.totals().values()):
            neurons = top_k_by_probability(stats, max(8, round(args.top_rate * neurons.n_layers * neurons.d_mlp)))
        langs = list(stats.languages)
        cloze = load_cloze("cldr", langs, max_facts=args.facts)
        facts = {s: [f for f in cloze.for_source(s) if all(u in f.answer for u in langs)] for s in langs}
        factors = parse_factors(args.factor)
        warnings.simplefilter("ignore")

        def fn():
            return run_lss(bridge, neurons, stats, facts, langs, factors, batch_size=args.lss_batch_size,
                           progress=False)

        fn()  # warm-up
    activities = [torch.profiler.ProfilerActivity.CPU]
    if str(args.device).startswith("cuda"):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    start = time.perf_counter()
    prof = cProfile.Profile()
    with torch.profiler.profile(activities=activities, record_shapes=False) as tprof:
        prof.enable()
        fn()
        prof.disable()
    wall = time.perf_counter() - start
    sort = "self_cuda_time_total" if str(args.device).startswith("cuda") else "self_cpu_time_total"
    print(f"== {args.what}: {wall:.2f} s wall under both profilers (threads {torch.get_num_threads()}) ==\n")
    print(tprof.key_averages().table(sort_by=sort, row_limit=args.top))
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(args.top)
    print(out.getvalue())
    if args.trace:
        tprof.export_chrome_trace(args.trace)
        print(f"trace: {args.trace}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
