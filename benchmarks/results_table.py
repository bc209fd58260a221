"""The results as tables: the plain-text one bench.py prints, and the Markdown one (results.md) that the README's
Performance section shows, with the model, the machine and the command that reproduces it.
"""

from __future__ import annotations

from typing import Any

from benchmarks.targets import TARGETS, target_text


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":  # minutes-long runs to the second, sub-second answers (the explorer's) to the millisecond
        return f"{value:.0f} s" if value >= 100 else f"{value:.3g} s"
    return f"{value:.3f}"


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
