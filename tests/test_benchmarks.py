"""benchmarks/: the reference re-implementations compute what lens_steer computes, and bench.py runs end to end.

No timing is asserted: these tests only guard that the benchmarks compare equal computations and write the
results file in the agreed shape.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import helpers  # noqa: E402

from benchmarks import bench, reference  # noqa: E402

LANGS = ["en", "fr", "ru", "zh"]


@pytest.fixture(scope="module")
def plain_llama(tiny_dirs):
    """The tiny Llama as a plain HF model; eager attention like the bridge, so the two agree bit for bit."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"], dtype=torch.float32,
                                                attn_implementation="eager").eval()


def test_reference_recorder_counts_what_record_counts(tiny_models, plain_llama):
    from lens_steer.recorder import RecordConfig, record

    bridge = tiny_models["llama"]
    texts = {c: helpers.SENTENCES[c] * 3 for c in LANGS}  # 15 sentences: several batches, some padding
    config = RecordConfig(batch_size=4, max_tokens=200)  # the budget cuts every language mid-corpus
    stats = record(bridge, texts, config=config, progress=False)
    ref = reference.record(plain_llama, bridge.tokenizer, texts, prepend_bos=bench.prepend_bos(bridge),
                           batch_size=4, max_tokens=200)
    for k, lang in enumerate(LANGS):
        r = ref[lang]
        assert r.n_tokens == int(stats.n_tokens[k]) and r.n_sentences == int(stats.n_sentences[k])
        assert torch.equal(r.over_zero, stats.over_zero[..., k])
        assert r.sent_means.shape[0] == r.n_sentences  # the reference keeps every sentence mean
        assert r.real_tokens <= r.slots
    agreement = bench.compare_records(stats, ref)
    assert agreement["same_counts"] and agreement["over_zero_mismatches"] == 0
    assert agreement["sentence_mean_max_abs_diff"] < 1e-2  # the reference stores fp16 means


def test_reference_full_and_last_logits_count_the_same(tiny_models, plain_llama):
    bridge = tiny_models["llama"]
    texts = {"en": helpers.SENTENCES["en"], "ru": helpers.SENTENCES["ru"]}
    full = reference.record(plain_llama, bridge.tokenizer, texts, prepend_bos=True, batch_size=2)
    last = reference.record(plain_llama, bridge.tokenizer, texts, prepend_bos=True, batch_size=2, full_logits=False)
    assert all(torch.equal(full[c].over_zero, last[c].over_zero) for c in texts)


def test_reference_lss_loop_equals_run_lss(tiny_models, plain_llama):
    from lens_steer.cloze import load_cloze
    from lens_steer.identification import top_k_by_probability
    from lens_steer.lss import run_lss
    from lens_steer.recorder import RecordConfig, record
    from lens_steer.steer import Intervention, Steerer, parse_factor

    bridge = tiny_models["llama"]
    langs = ["en", "fr", "ru"]
    stats = record(bridge, {c: helpers.SENTENCES[c] for c in langs}, config=RecordConfig(batch_size=4),
                   progress=False)
    neurons = top_k_by_probability(stats, 8)
    cloze = load_cloze("cldr", langs, max_facts=3)
    facts = {s: [f for f in cloze.for_source(s) if all(u in f.answer for u in langs)] for s in langs}
    steerer = Steerer(bridge, neurons, stats)
    for text in ("p_max", "set:3"):
        factor = parse_factor(text)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows = run_lss(bridge, neurons, stats, facts, langs, [factor], progress=False)
        maps = {t: reference.maps_from_plan(steerer.plan([Intervention(t, factor)])) for t in langs}
        ref = reference.lss(plain_llama, bridge.tokenizer, facts, langs, maps, prepend_bos=bench.prepend_bos(bridge))
        assert len(ref.pairs) == len(rows) == 6
        for row in rows:
            pair = (row["source"], row["target"])
            assert row["lss"] == ref.lss(pair), (text, pair)
            assert row["mean_shift"] == pytest.approx(ref.mean_shift(pair), abs=1e-4)
        agreement = bench.compare_lss(rows, ref, text)
        assert agreement["pairs"] == 6 and agreement["lss_mismatched_pairs"] == 0


def test_summary_met_and_demo_timing(tmp_path):
    assert bench.summary([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "runs": 3}
    assert bench.summary([]) == {"median": None, "min": None, "max": None, "runs": 0}
    assert bench.met("P1_record_over_forward", 1.05) and not bench.met("P1_record_over_forward", 1.2)
    assert bench.met("P2_speedup_vs_reference", 3.5) and bench.met("P5_demo_seconds", None) is None
    args = bench.build_parser().parse_args(["--demo-cmd", f"{sys.executable} -c pass"])
    out = bench.bench_demo(args)
    assert out["P5_demo_seconds"]["runs"] == 1 and out["P5_demo_seconds"]["median"] > 0


def test_bench_runs_end_to_end_on_a_tiny_model(tmp_path):
    out = tmp_path / "results.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--model", "tiny", "--repeats", "1", "--skip-demo",
           "--threads", "1", "--facts", "2", "--reference-facts", "1", "--p7-device", "cpu", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore"},
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    for key in ("P1_record_over_forward", "P2_speedup_vs_reference", "P3_lss_speedup_vs_batch1", "P4_rss_growth_4x",
                "P5_demo_seconds"):
        assert set(results[key]) >= {"median", "min", "max", "runs"}, key
    for key in ("P1_record_over_forward", "P1_record_over_headless_forward", "P2_speedup_vs_reference",
                "P3_lss_speedup_vs_batch1", "P4_rss_growth_4x", "P6_torchrun_2_over_1", "P6_merge_share",
                "P7_record_bf16_over_forward", "P7_lss_over_forward",  # the GPU code path, run on the CPU here
                "P8_sdpa_over_eager_seconds", "P8_sdpa_over_eager_peak", "P10_neuron_page_seconds",
                "P10_steer_20_tokens_seconds", "P11_harness_over_hf"):
        assert results[key]["runs"] == 1 and results[key]["median"] > 0, key
    assert results["details"]["P6_same_neurons"]
    assert results["P5_demo_seconds"]["runs"] == 0 and results["met"]["P5_demo_seconds"] is None
    assert results["P9_compare_seconds_after"]["runs"] == 0 and results["details"]["P9_skipped"] == "tiny model"
    assert results["machine"]["cores"] and results["model"]["n_layers"] == 2
    details = results["details"]
    assert details["P2_agreement"]["same_counts"]
    assert details["P3_agreement"]["lss_mismatched_pairs"] == 0 and details["P3_agreement"]["pairs"] > 0
    assert 0 < details["P1_padding_efficiency"] <= 1
    assert details["P1_direct_forward"] and details["P1_direct_same_stats"]  # the direct forward counts the same
    assert details["P7_device"] == "cpu" and details["P7_lss_forwards"] > 0
    for key in ("P1_record_bridge_path_over_headless_forward", "P1_headless_over_hf", "P1_bridge_over_headless_forward",
                "P1_record_over_bridge", "P2_ceiling_reference_over_plain_forward",
                "P2_ceiling_reference_over_headless_forward"):  # where P1 and P2 come from
        assert details[key]["runs"] == 1 and details[key]["median"] > 0, key
    assert (out.with_suffix(".md")).read_text().count("| `P") == len(bench.TARGETS) == 18
    assert "P1_record_over_forward" in proc.stdout  # the printed table


def test_gpu_benchmark_is_one_skipped_line_without_a_gpu(monkeypatch, capsys):
    """P7 without CUDA (and without --p7-device): one "skipped: no GPU" line, no figures, nothing loaded."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = bench.build_parser().parse_args([])
    out = bench.bench_gpu({"args": args, "model_path": "never-loaded"})
    assert out == {"details": {"P7": "skipped: no GPU"}}
    assert capsys.readouterr().err.strip().endswith("P7 skipped: no GPU")
