"""The targets P1-P11 are held to, and whether a figure meets one.

Each key is a figure of results.json: ``(comparison, target, unit, what)``; comparison ``-`` marks a measurement
reported without a target.
"""

from __future__ import annotations


TARGETS: dict[str, tuple[str, float, str, str]] = {
    "P1_record_over_forward": ("<=", 1.10, "x", "recording time / plain HF forward (logits_to_keep=1, no hooks)"),
    "P1_record_over_headless_forward": ("<=", 1.05, "x", "P1': recording time / plain HF forward without logits"),
    "P2_speedup_vs_reference": (">=", 3.0, "x", "reference recording time / lens_steer recording time"),
    "P3_lss_speedup_vs_batch1": (">=", 8.0, "x", "LSS triples/s, lens_steer batched / batch-1 full-logits loop"),
    "P4_rss_growth_4x": ("<=", 1.05, "x", "peak RSS recording a 4x corpus / peak RSS recording the 1x corpus"),
    "P5_demo_seconds": ("<=", 900.0, "s", "`make demo` wall time after set-up"),
    "P6_torchrun_2_over_1": ("<=", 1.10, "x",
                             "identify wall: torchrun 2 gloo ranks x 1 thread / 1 process x 2 threads"),
    "P6_merge_share": ("<=", 0.02, "x", "P6: merging the ranks' parts / the 2-rank identify wall time"),
    "P7_record_bf16_over_forward": ("<=", 1.05, "x", "GPU, bf16: recording time / plain HF forward without logits"),
    "P7_lss_over_forward": ("<=", 1.25, "x", "GPU, bf16: LSS time / plain HF forward of the same scoring batches"),
    # Measurements without a target (op "-"): what the --attention choice costs and saves.
    "P8_sdpa_over_eager_seconds": ("-", 0.0, "x", "recording long rows: --attention sdpa / eager, time"),
    "P8_sdpa_over_eager_peak": ("-", 0.0, "x",
                                "recording long rows: --attention sdpa / eager, peak memory above the model"),
    # What issue 27's verdicts cost at the README settings (reported, no target; `make demo` holds the budget).
    "P9_compare_seconds_before": ("-", 0.0, "s", "compare, 1 hand-written forcing prompt per language, 1 split"),
    "P9_compare_seconds_after": ("-", 0.0, "s", "compare, 8 UDHR forcing prompts per language, 3 splits"),
    "P9_compare_after_over_before": ("-", 0.0, "x", "P9: compare after / before"),
    # P10, the explorer (lens-steer explore)
    "P10_neuron_page_seconds": ("<=", 1.0, "s", "explorer: one neuron page without the model (its two callbacks)"),
    "P10_steer_20_tokens_seconds": ("<=", 10.0, "s", "explorer: a 20-token steered generation, model loaded"),
    # P11, lm-evaluation-harness (lens_steer.harness)
    "P11_harness_over_hf": ("<=", 1.10, "x", "lm-evaluation-harness log-likelihood: lens_steer model under p_max /"
                            " the plain hf model, same requests"),
}


def met(key: str, value: float | None) -> bool | None:
    if value is None:
        return None
    op, target, _, _ = TARGETS[key]
    if op == "-":
        return None  # a measurement, no target
    return value <= target if op == "<=" else value >= target


def target_text(op: str, target: float, unit: str) -> str:
    if op == "-":
        return "-"
    return f"{op} {target:.0f} s" if unit == "s" else f"{op} {target:g}"
