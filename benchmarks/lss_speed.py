"""P3: LSS throughput, lens_steer.lss.run_lss (one factor, and a k-factor sweep) against a batch-1 full-logits
loop (benchmarks/reference.py), and a check that both compute the same LSS pair by pair.
"""

from __future__ import annotations

import warnings
from typing import Any

from benchmarks import reference
from benchmarks.timing import interleave, log, summary
from benchmarks.workload import prepend_bos


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
