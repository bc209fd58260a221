#!/usr/bin/env python
"""lens_steer benchmarks P1-P8: speed and memory targets, each measured side by side with its baseline.

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

Compared runs are interleaved within each repeat (A B C, then C B A, ...); every ratio is taken per repeat and
reported as median, min and max over repeats. Results go to --out (JSON) and a Markdown table next to it.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # benchmarks.reference and the checkout's lens_steer

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from benchmarks import reference  # noqa: E402

BENCHMARKS = ("P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8")
# key -> (comparison, target, unit, what)
TARGETS: dict[str, tuple[str, float, str, str]] = {
    "P1_record_over_forward": ("<=", 1.10, "x", "recording time / plain HF forward (logits_to_keep=1, no hooks)"),
    "P1_record_over_headless_forward": ("<=", 1.05, "x", "P1': recording time / plain HF forward without logits"),
    "P2_speedup_vs_reference": (">=", 3.0, "x", "reference recording time / lens_steer recording time"),
    "P3_lss_speedup_vs_batch1": (">=", 8.0, "x", "LSS triples/s, lens_steer batched / batch-1 full-logits loop"),
    "P4_rss_growth_4x": ("<=", 1.05, "x", "peak RSS recording a 4x corpus / peak RSS recording the 1x corpus"),
    "P5_demo_seconds": ("<=", 900.0, "s", "`make demo` wall time after set-up"),
    "P6_torchrun_2_over_1": ("<=", 1.10, "x", "identify wall: torchrun 2 gloo ranks x 1 thread / 1 process x 2 threads"),
    "P6_merge_share": ("<=", 0.02, "x", "P6: merging the ranks' parts / the 2-rank identify wall time"),
    "P7_record_bf16_over_forward": ("<=", 1.05, "x", "GPU, bf16: recording time / plain HF forward without logits"),
    "P7_lss_over_forward": ("<=", 1.25, "x", "GPU, bf16: LSS time / plain HF forward of the same scoring batches"),
    # Measurements without a target (op "-"): what the --attention choice costs and saves.
    "P8_sdpa_over_eager_seconds": ("-", 0.0, "x", "recording long rows: --attention sdpa / eager, time"),
    "P8_sdpa_over_eager_peak": ("-", 0.0, "x", "recording long rows: --attention sdpa / eager, peak memory above the model"),
}
TINY_LANGS = "en,fr,ru,zh"
DEFAULT_LANGS = "en,fr,ja,ru"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def summary(values: list[float]) -> dict[str, Any]:
    """``{"median", "min", "max", "runs"}`` of per-repeat values (nulls when nothing ran)."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "runs": 0}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "runs": len(vals)}


def met(key: str, value: float | None) -> bool | None:
    if value is None:
        return None
    op, target, _, _ = TARGETS[key]
    if op == "-":
        return None  # a measurement, no target
    return value <= target if op == "<=" else value >= target


# --------------------------------------------------------------------------------------------- set-up helpers


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


def resolve_model(args: argparse.Namespace) -> str:
    """``tiny`` builds a tiny random Llama (tests/helpers.py) in a temporary directory; anything else as given."""
    if args.model != "tiny":
        return args.model
    sys.path.insert(0, str(ROOT / "tests"))
    import helpers  # tests/helpers.py

    directory = Path(tempfile.mkdtemp(prefix="lens-steer-bench-tiny-"))
    with contextlib.redirect_stderr(open(os.devnull, "w")):
        helpers.save_tiny_hf("llama", directory / "llama")
    corpus = directory / "corpus"
    corpus.mkdir()
    for lang, sentences in helpers.SENTENCES.items():
        (corpus / f"{lang}.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    if args.corpus is None:
        args.corpus, args.corpus_path = "files", str(corpus)
    return str(directory / "llama")


def hf_source(spec: str) -> str:
    from lens_steer.models import EMBEDDED_MODEL, ensure_embedded_model

    return str(ensure_embedded_model()) if spec == EMBEDDED_MODEL else spec


def load_bridge(spec: str, args: argparse.Namespace):
    from lens_steer.models import load_model

    return load_model(spec, device=args.device, dtype=args.dtype, attention=getattr(args, "attention", "eager"))


def load_plain_hf(spec: str, bridge, device: str):
    """The same weights as a plain, unhooked ``AutoModelForCausalLM`` (default attention implementation)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    dtype = next(bridge.parameters()).dtype
    return AutoModelForCausalLM.from_pretrained(hf_source(spec), dtype=dtype).to(device).eval()


def load_texts(args: argparse.Namespace) -> dict[str, list[str]]:
    from lens_steer.corpora import load_corpus

    return load_corpus(args.corpus or "udhr", args.langs.split(","), split=args.split, path=args.corpus_path)


def prepend_bos(bridge) -> bool:
    return bool(getattr(bridge.cfg, "default_prepend_bos", False)) and bridge.tokenizer.bos_token_id is not None


def record_config(args: argparse.Namespace, max_tokens: int | None = -1):
    from lens_steer.recorder import RecordConfig

    return RecordConfig(batch_size=args.batch_size, max_tokens=args.max_tokens if max_tokens == -1 else max_tokens)


def machine_info(args: argparse.Namespace) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        ram = round(int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0]) / 2**20, 1)
    versions = {}
    for pkg in ("torch", "transformers", "transformer-lens", "lens-steer"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    info: dict[str, Any] = {
        "hostname": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
        "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "ram_gib": ram,
        "device": args.device, "versions": versions,
    }
    if str(args.device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    with contextlib.suppress(OSError):
        info["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


# --------------------------------------------------------------------------------------------- P1 / P2


def capture_batches(bridge, texts, config) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], Any]:
    """Run ``record`` once (also the warm-up) and capture every (input_ids, attention_mask) it feeds the bridge, so
    the floor replays exactly record's batches whatever record's batching is."""
    from lens_steer.models import as_model
    from lens_steer.recorder import record

    # record's one-time probes are forwards of their own: run them before the capture hook is attached.
    as_model(bridge).masked_logits_ok()
    as_model(bridge).direct_ok()
    captured = []
    handle = as_model(bridge).bridge.original_model.register_forward_pre_hook(_grab_into(captured), with_kwargs=True)
    try:
        stats = record(bridge, texts, config=config, progress=False)
    finally:
        handle.remove()
    return captured, stats


def _grab_into(captured: list[tuple[torch.Tensor, torch.Tensor]]) -> Callable[..., None]:
    """A forward pre-hook on the HF module keeping every (input_ids, attention_mask) it is called with: the direct
    forward calls it, and so does the bridge."""
    def grab(module, args, kwargs):
        ids = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else args[0]
        captured.append((ids.detach().clone().cpu(), kwargs["attention_mask"].detach().clone().cpu()))
    return grab


@contextlib.contextmanager
def bridge_path(bridge):
    """Record through the bridge's forward (the reference path), not the direct HF forward."""
    from lens_steer.models import as_model

    model = as_model(bridge)
    old, model._direct = model.direct_ok(), False
    try:
        yield
    finally:
        model._direct = old


def plain_forward(hf, batches, device: str, head: bool = True) -> None:
    """The plain HF module over ``batches``: ``logits_to_keep=1`` (P1's floor), or with ``head=False`` no logits at
    all (an empty boolean ``logits_to_keep``: what a recorder that needs no logits can reach)."""
    with torch.inference_mode():
        for ids, attn in batches:
            keep = 1 if head else torch.zeros(ids.shape, dtype=torch.bool, device=device)
            hf(input_ids=ids.to(device), attention_mask=attn.to(device), logits_to_keep=keep)


def bridge_forward(bridge, batches, device: str) -> None:
    """The bridge without hooks, called as record calls it (no logits where the model allows it)."""
    from lens_steer.models import as_model

    model = as_model(bridge)
    with torch.inference_mode():
        for ids, attn in batches:
            ids = ids.to(device)
            model(ids, attention_mask=attn.to(device), return_type=None, **model.no_logits(ids))


@contextlib.contextmanager
def attention(hf, implementation: str):
    old = hf.config._attn_implementation
    hf.set_attn_implementation(implementation)
    try:
        yield
    finally:
        hf.set_attn_implementation(old)


def bench_recording(ctx: dict[str, Any], which: set[str]) -> dict[str, Any]:
    from lens_steer.models import as_model
    from lens_steer.recorder import record

    args, bridge, hf, texts, device = ctx["args"], ctx["bridge"], ctx["hf"], ctx["texts"], ctx["args"].device
    config = record_config(args)
    batches, stats = capture_batches(bridge, texts, config)
    real = sum(int(a.sum()) for _, a in batches)
    slots = sum(a.numel() for _, a in batches)
    counted = int(stats.n_tokens.sum())
    log(f"recording: {len(texts)} languages, {counted} counted tokens, {len(batches)} batches, padding efficiency"
        f" {real / slots:.3f}")
    bos = prepend_bos(bridge)
    runs: dict[str, Callable[[], Any]] = {}
    kernel = getattr(getattr(bridge.original_model, "config", None), "_attn_implementation", None)
    other_kernel = "P1" in which and kernel is not None and kernel != hf.config._attn_implementation
    if "P1" in which:
        runs["hf"] = lambda: plain_forward(hf, batches, device)
        runs["hf_headless"] = lambda: plain_forward(hf, batches, device, head=False)
        runs["bridge"] = lambda: bridge_forward(bridge, batches, device)
        if other_kernel:  # the plain forward with the recorder's attention kernel (eager unless --attention sdpa)
            def hf_same_kernel() -> None:
                with attention(hf, kernel):
                    plain_forward(hf, batches, device, head=False)

            runs["hf_headless_same_kernel"] = hf_same_kernel
    runs["record"] = lambda: record(bridge, texts, config=config, progress=False)
    if "P1" in which:
        def record_bridge():
            with bridge_path(bridge):
                return record(bridge, texts, config=config, progress=False)

        runs["record_bridge"] = record_bridge
    if "P2" in which:
        runs["reference"] = lambda: reference.record(
            hf, bridge.tokenizer, texts, prepend_bos=bos, batch_size=config.batch_size, max_tokens=config.max_tokens,
            max_length=config.max_length, full_logits=args.reference_logits == "full")
    # Warm-up of the variants record's capture did not warm (first-call allocations, lazy init).
    if "P1" in which:
        plain_forward(hf, batches[:1], device)
        plain_forward(hf, batches[:1], device, head=False)
        bridge_forward(bridge, batches[:1], device)
    if "P2" in which:
        first = next(iter(texts))
        reference.record(hf, bridge.tokenizer, {first: texts[first][:2]}, prepend_bos=bos,
                         batch_size=config.batch_size, full_logits=args.reference_logits == "full")
    times, last = interleave(runs, args.repeats, device, "P1/P2" if len(which) == 2 else next(iter(which)))
    n = args.repeats
    out: dict[str, Any] = {"stats": last["record"], "details": {}}
    det = out["details"]
    det["recording_counted_tokens"] = counted
    det["recording_batches"] = len(batches)
    det["P1_padding_efficiency"] = round(real / slots, 4)
    for name, secs in times.items():
        det[f"recording_seconds_{name}"] = summary(secs)
        det[f"recording_tokens_per_s_{name}"] = summary([counted / s for s in secs])
    if "P1" in which:
        out["P1_record_over_forward"] = summary([times["record"][i] / times["hf"][i] for i in range(n)])
        # P1', the strict floor: the plain forward that computes no logits at all, as record does, with the
        # recorder's attention kernel (the kernel is a user's choice, --attention, not the recorder's overhead).
        floor = "hf_headless_same_kernel" if other_kernel else "hf_headless"
        out["P1_record_over_headless_forward"] = summary([times["record"][i] / times[floor][i] for i in range(n)])
        det["P1_attention_kernel"] = {"record": kernel, "hf_default": hf.config._attn_implementation}
        det["P1_record_over_headless_default_kernel"] = summary([times["record"][i] / times["hf_headless"][i]
                                                                 for i in range(n)])
        # The reference path (the bridge's forward and hooks) on the same batches, and that both count the same.
        det["P1_record_bridge_path_over_headless_forward"] = summary(
            [times["record_bridge"][i] / times[floor][i] for i in range(n)])
        det["P1_direct_forward"] = as_model(bridge).direct_ok()
        det["P1_direct_same_stats"] = same_stats(last["record"], last["record_bridge"])
        det["P1_headless_over_hf"] = summary([times["hf_headless"][i] / times["hf"][i] for i in range(n)])
        # Where the rest comes from (all without the head): the bridge's wrappers and attention, then the hooks.
        det["P1_bridge_over_headless_forward"] = summary([times["bridge"][i] / times[floor][i] for i in range(n)])
        det["P1_record_over_bridge"] = summary([times["record"][i] / times["bridge"][i] for i in range(n)])
        if other_kernel:
            det["P1_same_kernel_over_default_kernel"] = summary(
                [times["hf_headless_same_kernel"][i] / times["hf_headless"][i] for i in range(n)])
    if "P2" in which:
        out["P2_speedup_vs_reference"] = summary([times["reference"][i] / times["record"][i] for i in range(n)])
        agreement = compare_records(last["record"], last["reference"])
        bridge_attn = getattr(getattr(bridge.original_model, "config", None), "_attn_implementation", None)
        if agreement["over_zero_mismatches"] and bridge_attn and hf.config._attn_implementation != bridge_attn:
            # Rounding of sdpa vs the bridge's eager attention can flip a gate value at 0; rerun (not timed) with
            # the bridge's attention to show the two methods count the same.
            with attention(hf, bridge_attn):
                again = reference.record(hf, bridge.tokenizer, texts, prepend_bos=bos, batch_size=config.batch_size,
                                         max_tokens=config.max_tokens, max_length=config.max_length,
                                         full_logits=args.reference_logits == "full")
            same = compare_records(last["record"], again)
            agreement[f"over_zero_mismatches_with_{bridge_attn}_attention"] = same["over_zero_mismatches"]
            agreement["same_counts"] = same["same_counts"]
        det["P2_agreement"] = agreement
        ref_real = sum(r.real_tokens for r in last["reference"].values())
        ref_slots = sum(r.slots for r in last["reference"].values())
        det["P2_reference_padding_efficiency"] = round(ref_real / ref_slots, 4)
        det["P2_reference_logits"] = args.reference_logits
        if "hf" in times:  # what a zero-overhead recorder gains: the plain forward (P1's floor), and without the head
            det["P2_ceiling_reference_over_plain_forward"] = summary(
                [times["reference"][i] / times["hf"][i] for i in range(n)])
            det["P2_ceiling_reference_over_headless_forward"] = summary(
                [times["reference"][i] / times["hf_headless"][i] for i in range(n)])
        if not det["P2_agreement"]["same_counts"]:
            log(f"WARNING: the reference and lens_steer disagree: {det['P2_agreement']}")
    return out


def same_stats(a, b) -> bool:
    """Equal counts and token numbers, sums and kept means equal to float rounding."""
    return (torch.equal(a.over_zero, b.over_zero) and torch.equal(a.n_tokens, b.n_tokens)
            and torch.allclose(a.act_sum, b.act_sum, rtol=1e-5, atol=1e-6)
            and torch.equal(a.sent_means, b.sent_means))


def compare_records(stats, ref: dict[str, reference.ReferenceRecord]) -> dict[str, Any]:
    """Do the reference and lens_steer compute the same statistics on the same tokens?"""
    mismatched = 0
    total = 0
    tokens_equal = True
    means_diff = 0.0
    n_keep = stats.sent_means.shape[1]
    min_tokens = int(stats.manifest.get("min_sentence_tokens", 8))
    for k, lang in enumerate(stats.languages):
        r = ref[lang]
        mismatched += int((stats.over_zero[..., k] != r.over_zero).sum())
        total += r.over_zero.numel()
        tokens_equal &= int(stats.n_tokens[k]) == r.n_tokens
        keep = [i for i, n in enumerate(r.n_counted) if n >= min_tokens][:n_keep]
        if keep:
            mine = stats.sent_means[k].reshape(n_keep, -1)[: len(keep)]
            means_diff = max(means_diff, float((mine - r.sent_means[keep].float()).abs().max()))
    return {"same_counts": mismatched == 0 and tokens_equal, "over_zero_mismatches": mismatched,
            "over_zero_entries": total, "n_tokens_equal": tokens_equal,
            "sentence_mean_max_abs_diff": means_diff, "note": "reference means are fp16, as in the paper's code"}


# --------------------------------------------------------------------------------------------- P3


def bench_lss(ctx: dict[str, Any], stats) -> dict[str, Any]:
    from lens_steer.cloze import load_cloze
    from lens_steer.identification import lape, top_k_by_probability
    from lens_steer.lss import run_lss
    from lens_steer.steer import Intervention, Steerer, parse_factors

    args, bridge, hf, device = ctx["args"], ctx["bridge"], ctx["hf"], ctx["args"].device
    langs = list(stats.languages)
    neurons = lape(stats, top_rate=args.top_rate)
    neuron_source = f"lape(top_rate={args.top_rate})"
    if any(v == 0 for v in neurons.totals().values()):  # a tiny random model: LAPE keeps ~1 neuron
        n_layers, d_mlp = neurons.n_layers, neurons.d_mlp
        k = max(8, round(args.top_rate * n_layers * d_mlp))
        neurons = top_k_by_probability(stats, k)
        neuron_source = f"top_k_by_probability(k={k}) (LAPE left a language empty)"
    cloze = load_cloze("cldr", langs, max_facts=args.facts)
    facts = {s: [f for f in cloze.for_source(s) if all(u in f.answer for u in langs)] for s in langs}
    # The batch-1 loop costs the same per triple whatever the number of facts, so it runs on the first
    # --reference-facts facts of each source; lens_steer's throughput depends on how full its batches are.
    ref_facts = {s: v[: args.reference_facts] for s, v in facts.items()}
    factor1 = parse_factors(args.factor)
    factors_k = parse_factors(args.factors)
    steerer = Steerer(bridge, neurons, stats)
    totals = neurons.totals()
    targets = [t for t in langs if totals[t] > 0]
    maps = {t: reference.maps_from_plan(steerer.plan([Intervention(t, factor1[0])])) for t in targets}

    def triples(fs: dict[str, list]) -> int:
        return sum(len(fs[s]) * len([t for t in targets if t != s]) for s in langs)

    n_triples, n_ref_triples = triples(facts), triples(ref_facts)
    bos = prepend_bos(bridge)
    log(f"LSS: {len(langs)} languages, {sum(len(v) for v in facts.values())} facts, {n_triples} (fact, source,"
        f" target) triples ({n_ref_triples} for the batch-1 loop); factor {factor1[0].text}; sweep of"
        f" {len(factors_k)}: {args.factors}")

    def lens(factors, subset=None):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return run_lss(bridge, neurons, stats, subset or facts, langs, factors, batch_size=args.lss_batch_size,
                           progress=False)

    runs = {
        "reference": lambda: reference.lss(hf, bridge.tokenizer, ref_facts, langs, maps, prepend_bos=bos),
        "lens_steer_1": lambda: lens(factor1),
        "lens_steer_k": lambda: lens(factors_k),
    }
    first = next(s for s in langs if facts[s])
    lens(factor1, {first: facts[first][:2]})  # warm-up
    reference.lss(hf, bridge.tokenizer, {first: facts[first][:1]}, langs, maps, prepend_bos=bos)
    times, last = interleave(runs, args.repeats, device, "P3")
    n = args.repeats
    ref_rate = [n_ref_triples / s for s in times["reference"]]
    lens_rate = [n_triples / s for s in times["lens_steer_1"]]
    det: dict[str, Any] = {
        "P3_triples": n_triples, "P3_triples_reference": n_ref_triples, "P3_factor": factor1[0].text,
        "P3_sweep_factors": args.factors, "P3_neurons": neuron_source, "P3_neurons_per_language": totals,
        "P3_facts_per_source": {s: len(v) for s, v in facts.items()},
        "P3_facts_per_source_reference": {s: len(v) for s, v in ref_facts.items()},
    }
    for name, secs in times.items():
        det[f"P3_seconds_{name}"] = summary(secs)
    det["P3_triples_per_s_reference"] = summary(ref_rate)
    det["P3_triples_per_s_lens_steer"] = summary(lens_rate)
    det["P3_sweep_cost_k_over_1"] = summary([times["lens_steer_k"][i] / times["lens_steer_1"][i] for i in range(n)])
    det["P3_sweep_factor_triples_per_s"] = summary([len(factors_k) * n_triples / s for s in times["lens_steer_k"]])
    # Same computation? lens_steer on the reference's facts, compared pair by pair (not timed).
    det["P3_agreement"] = compare_lss(lens(factor1, ref_facts), last["reference"], factor1[0].text)
    if det["P3_agreement"]["lss_mismatched_pairs"]:
        log(f"WARNING: reference and lens_steer LSS differ: {det['P3_agreement']}")
    return {"P3_lss_speedup_vs_batch1": summary([lens_rate[i] / ref_rate[i] for i in range(n)]), "details": det}


def compare_lss(rows: list[dict[str, Any]], ref: reference.ReferenceLSS, factor: str) -> dict[str, Any]:
    lss_diff, shift_diff, mismatched, pairs = 0.0, 0.0, 0, 0
    for row in rows:
        if row["factor"] != factor or row["layers"] != "all" or row["note"]:
            continue
        pair = (row["source"], row["target"])
        pairs += 1
        d = abs(row["lss"] - ref.lss(pair))
        lss_diff = max(lss_diff, d)
        mismatched += d > 1e-9
        shift_diff = max(shift_diff, abs(row["mean_shift"] - ref.mean_shift(pair)))
    return {"pairs": pairs, "pairs_reference": len(ref.pairs), "lss_mismatched_pairs": mismatched,
            "lss_max_abs_diff": lss_diff, "mean_shift_max_abs_diff": shift_diff}


# --------------------------------------------------------------------------------------------- P4


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
    cmd = [sys.executable, str(Path(__file__).resolve()), "--p4-child", str(scale), "--model", model,
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


# --------------------------------------------------------------------------------------------- P5


def bench_demo(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="lens-steer-bench-demo-"))
    logfile = workdir / "demo.log"
    with logfile.open("w") as fh:
        if args.demo_cmd:
            cmd = args.demo_cmd
        else:
            log("P5: make setup (not timed)")
            setup = subprocess.run(["make", "setup"], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
            if setup.returncode != 0:
                raise RuntimeError(f"make setup failed; see {logfile}")
            cmd = f"make demo RUN={shlex.quote(str(workdir / 'demo'))}"  # a fresh run directory: nothing resumes
        log(f"P5: {cmd} (log: {logfile})")
        start = time.perf_counter()
        proc = subprocess.run(cmd, shell=True, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = logfile.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"`{cmd}` failed (exit {proc.returncode}) after {seconds:.0f} s:\n{tail}")
    shutil.rmtree(workdir / "demo", ignore_errors=True)
    log(f"P5: {seconds:.0f} s")
    return {"P5_demo_seconds": summary([seconds]), "details": {"P5_command": cmd, "P5_log": str(logfile)}}


# --------------------------------------------------------------------------------------------- P7


def bench_gpu(ctx: dict[str, Any]) -> dict[str, Any]:
    """Recording in bfloat16 and LSS on a GPU, each over a plain HF forward (sdpa, like the recorder here) of the
    very batches it runs. Without CUDA one "skipped" line, unless --p7-device names a device (the CPU in tests)."""
    from transformers import AutoModelForCausalLM

    from lens_steer.models import load_model
    from lens_steer.recorder import record

    args = ctx["args"]
    device = args.p7_device or ("cuda" if torch.cuda.is_available() else None)
    if device is None:
        log("P7 skipped: no GPU")
        return {"details": {"P7": "skipped: no GPU"}}
    model = load_model(ctx["model_path"], device=device, dtype="bfloat16", attention="sdpa")
    hf = AutoModelForCausalLM.from_pretrained(hf_source(ctx["model_path"]), dtype=torch.bfloat16,
                                              attn_implementation="sdpa").to(device).eval()
    texts, config = ctx.get("texts") or load_texts(args), record_config(args)
    batches, stats = capture_batches(model, texts, config)
    plain_forward(hf, batches[:1], device, head=False)  # warm-up (kernels, allocator)
    times, _ = interleave({"hf": lambda: plain_forward(hf, batches, device, head=False),
                           "record": lambda: record(model, texts, config=config, progress=False)},
                          args.repeats, device, "P7 record")
    counted = int(stats.n_tokens.sum())
    neurons, facts, langs = lss_inputs(args, stats)
    factor = parse_factor_list(args.factor)
    score_calls: list[dict[str, Any]] = []
    handle = model.bridge.original_model.register_forward_pre_hook(_keep_call(score_calls), with_kwargs=True)
    try:
        run_lss_quiet(model, neurons, stats, facts, langs, factor, args)
    finally:
        handle.remove()
    lss_times, _ = interleave({"hf": lambda: replay(hf, score_calls),
                               "lss": lambda: run_lss_quiet(model, neurons, stats, facts, langs, factor, args)},
                              args.repeats, device, "P7 lss")
    n, triples = args.repeats, sum(len(facts[s]) * (len(langs) - 1) for s in langs)
    det = {"P7_device": str(model.device), "P7_gpu": torch.cuda.get_device_name() if device.startswith("cuda")
           else None, "P7_record_tokens_per_s": summary([counted / s for s in times["record"]]),
           "P7_hf_tokens_per_s": summary([counted / s for s in times["hf"]]),
           "P7_lss_triples_per_s": summary([triples / s for s in lss_times["lss"]]),
           "P7_lss_forwards": len(score_calls)}
    return {"P7_record_bf16_over_forward": summary([times["record"][i] / times["hf"][i] for i in range(n)]),
            "P7_lss_over_forward": summary([lss_times["lss"][i] / lss_times["hf"][i] for i in range(n)]),
            "details": det}


def _keep_call(calls: list[dict[str, Any]]) -> Callable[..., None]:
    """A forward pre-hook on the HF module keeping the tensors of every call (to replay them on a plain model)."""
    keep = ("input_ids", "attention_mask", "position_ids", "logits_to_keep")

    def grab(module, args, kwargs):
        call = {k: kwargs[k] for k in keep if k in kwargs and kwargs[k] is not None}
        if args:
            call["input_ids"] = args[0]
        call = {k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in call.items()}
        calls.append({**call, "cached": kwargs.get("past_key_values") is not None})
    return grab


def replay(hf, calls: list[dict[str, Any]]) -> None:
    """The captured forwards on a plain HF model: a call that continued a KV cache continues the previous call's
    (repeated per answer, as the scorer repeats it)."""
    cache = None
    with torch.inference_mode():
        for call in calls:
            kwargs = {k: v for k, v in call.items() if k != "cached"}
            if call["cached"]:
                cache.batch_repeat_interleave(kwargs["input_ids"].shape[0] // cache.layers[0].keys.shape[0])
                hf(**kwargs, past_key_values=cache, use_cache=True)
                cache = None
            else:
                cache = hf(**kwargs, use_cache=True).past_key_values


def lss_inputs(args: argparse.Namespace, stats):
    """A neuron set (LAPE, or the top-k by probability where LAPE leaves a language empty) and the CLDR facts."""
    from lens_steer.cloze import load_cloze
    from lens_steer.identification import lape, top_k_by_probability

    langs = list(stats.languages)
    neurons = lape(stats, top_rate=args.top_rate)
    if any(v == 0 for v in neurons.totals().values()):
        neurons = top_k_by_probability(stats, max(8, round(args.top_rate * neurons.n_layers * neurons.d_mlp)))
    cloze = load_cloze("cldr", langs, max_facts=args.facts)
    return neurons, {s: [f for f in cloze.for_source(s) if all(u in f.answer for u in langs)] for s in langs}, langs


def parse_factor_list(text: str):
    from lens_steer.steer import parse_factors

    return parse_factors(text)


def run_lss_quiet(model, neurons, stats, facts, langs, factors, args):
    from lens_steer.lss import run_lss

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_lss(model, neurons, stats, facts, langs, factors, batch_size=args.lss_batch_size, progress=False)


# --------------------------------------------------------------------------------------------- P8


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


# --------------------------------------------------------------------------------------------- P6


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
    return json.loads((a / "neurons.json").read_text())["neurons"] == json.loads((b / "neurons.json").read_text())["neurons"]


# --------------------------------------------------------------------------------------------- report


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:.0f} s" if unit == "s" else f"{value:.3f}"


def target_text(op: str, target: float, unit: str) -> str:
    if op == "-":
        return "-"
    return f"{op} {target:.0f} s" if unit == "s" else f"{op} {target:g}"


def met_text(op: str, result: dict[str, Any], ok: bool | None) -> str:
    if not result.get("runs"):
        return "skipped"
    if op == "-":
        return "n/a"
    return "yes" if ok else "no"


def table(results: dict[str, Any]) -> str:
    header = f"{'benchmark':<33} {'target':>9} {'median':>9} {'min':>9} {'max':>9} {'runs':>4}  met?"
    lines = [header, "-" * len(header)]
    for key, (op, target, unit, _) in TARGETS.items():
        r = results[key]
        ok = results["met"][key]
        lines.append(f"{key:<33} {target_text(op, target, unit):>9}"
                     f" {fmt(r['median'], unit):>9} {fmt(r['min'], unit):>9} {fmt(r['max'], unit):>9}"
                     f" {r['runs']:>4}  {met_text(op, r, ok).replace('no', 'NO')}")
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    m, model = results["machine"], results["model"]
    lines = ["| benchmark | what | target | median | min | max | runs | met? |", "|---|---|---|---|---|---|---|---|"]
    for key, (op, target, unit, what) in TARGETS.items():
        r = results[key]
        ok = results["met"][key]
        tgt = target_text(op, target, unit)
        lines.append(f"| `{key}` | {what} | {tgt} | {fmt(r['median'], unit)} | {fmt(r['min'], unit)} |"
                     f" {fmt(r['max'], unit)} | {r['runs']} | {met_text(op, r, ok)} |")
    d = results["details"]
    extra = []
    for key in ("P1_padding_efficiency", "P2_reference_padding_efficiency"):
        if key in d:
            extra.append(f"`{key}` {d[key]}")
    for key in ("P1_record_bridge_path_over_headless_forward", "P1_headless_over_hf", "P1_bridge_over_headless_forward",
                "P1_record_over_bridge", "P1_same_kernel_over_default_kernel", "P1_record_over_headless_default_kernel",
                "P2_ceiling_reference_over_plain_forward", "P2_ceiling_reference_over_headless_forward",
                "P3_sweep_cost_k_over_1",
                "P3_triples_per_s_lens_steer", "P3_triples_per_s_reference"):
        if key in d:
            extra.append(f"`{key}` {d[key]['median']:.3f} [{d[key]['min']:.3f}, {d[key]['max']:.3f}]")
    return "\n".join([
        f"Model: {model.get('spec')} ({model.get('n_layers')} layers x {model.get('d_mlp')} neurons, "
        f"{model.get('dtype')}); machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('ram_gib')} GiB RAM, "
        f"device {m.get('device')}{', ' + m['gpu'] if m.get('gpu') else ''}; torch {m['versions'].get('torch')}, "
        f"transformers {m['versions'].get('transformers')}; load average at start {m.get('loadavg_start')}, "
        f"at end {m.get('loadavg_end')}; {results['started']}, {results['wall_seconds']:.0f} s wall.",
        "", *lines, "", "Also: " + "; ".join(extra) + "." if extra else "",
        "", f"Reproduce: `{results['command']}`", ""])


# --------------------------------------------------------------------------------------------- main


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
    p.add_argument("--only", default=None, help="comma-separated subset of P1,...,P8")
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
        from lens_steer.models import describe_mlp

        site = describe_mlp(ctx["bridge"])
        model_info.update(n_layers=site.n_layers, d_mlp=site.d_mlp,
                          params=sum(p.numel() for p in ctx["hf"].parameters()),
                          dtype=str(next(ctx["bridge"].parameters()).dtype).removeprefix("torch."),
                          plain_hf_attention=ctx["hf"].config._attn_implementation)
    stats = None
    phases: dict[str, float] = {"load": time.perf_counter() - t0}

    def phase(name: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Time one benchmark, merge its figures into results and its details into details."""
        start = time.perf_counter()
        out = run()
        phases[name] = time.perf_counter() - start
        details.update(out.pop("details"))
        results.update({k: v for k, v in out.items() if k != "stats"})
        return out

    recording = which & {"P1", "P2"}
    if recording:
        stats = phase("P1/P2" if len(recording) == 2 else min(recording),
                      lambda: bench_recording(ctx, recording))["stats"]
    if "P3" in which:
        def lss() -> dict[str, Any]:
            from lens_steer.recorder import record

            recorded = stats if stats is not None else record(ctx["bridge"], ctx["texts"], config=record_config(args),
                                                               progress=False)
            return bench_lss(ctx, recorded)

        phase("P3", lss)
    ctx.pop("bridge", None), ctx.pop("hf", None)
    gc.collect()
    if "P4" in which:
        phase("P4", lambda: bench_memory(ctx))
    if "P5" in which:
        phase("P5", lambda: bench_demo(args))
    if "P6" in which:
        phase("P6", lambda: bench_scaleout(ctx))
    if "P7" in which:
        phase("P7", lambda: bench_gpu(ctx))
    if "P8" in which:
        phase("P8", lambda: bench_attention(ctx))
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
