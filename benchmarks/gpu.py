"""P7: recording in bfloat16 and LSS on a GPU, each over a plain HF forward of the very calls it makes.

LSS's scoring forwards (KV cache included) are captured with a pre-hook and replayed on the plain model, so the
floor is the same work without lens_steer. Without CUDA it is one "skipped" line; ``--p7-device cpu`` runs the
code path on the CPU (the tests do).
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.recording import capture_batches, plain_forward
from benchmarks.timing import interleave, log, summary
from benchmarks.workload import hf_source, load_texts, record_config


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
