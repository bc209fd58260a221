"""The probes' results as Markdown: one run's table, and the README's before/after table of two runs."""

from __future__ import annotations

from typing import Any


MODEL_TEXT = {"no": "no", "checks": "no (refused in load_model)", "booting": "yes (failed loading)", "loaded": "yes"}


def one_line_text(r: dict[str, Any]) -> str:
    """The 'one line?' cell: yes, argparse, no (traceback: OSError), or - for exit 0."""
    kind = r["kind"]
    if kind == "one line":
        return "yes" + (" (on a progress bar's line)" if r.get("error_on_bar_line") else "")
    if kind == "ok":
        return "-"
    if kind == "traceback":
        exc = r.get("error", "").split(":")[0].split(".")[-1]
        return f"no (traceback{': ' + exc if exc else ''})"
    return {"argparse": "argparse usage", "noisy": "no (extra lines)"}.get(kind, kind)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(results: list[dict[str, Any]]) -> str:
    rows = ["| id | probe | exit | one line? | model loaded? | warning | s |", "|---|---|---|---|---|---|---|"]
    for r in results:
        warn = "yes" if r.get("warnings") else ""
        exit_text = "timeout" if r["kind"] == "timeout" else ("skipped" if r["kind"] == "skipped" else r["exit"])
        rows.append(f"| {r['id']} | {_cell(r['probe'])} | {exit_text} | {one_line_text(r)} |"
                    f" {MODEL_TEXT.get(r['model'], r['model'])} | {warn} | {r['seconds']:.1f} |")
    met = [r for r in results if r.get("meets") is not None]
    rows.append("")
    rows.append(f"{sum(bool(r['meets']) for r in met)} of {len(met)} probes answer as expected (a one-line refusal,"
                " before the model loads where nothing from it is needed, or a warning where one is asked for).")
    return "\n".join(rows)


def short(r: dict[str, Any] | None) -> str:
    """One compact cell: ``2, one line, no load``."""
    if r is None:
        return "-"
    if r["kind"] in ("timeout", "skipped"):
        return r["kind"]
    load = {"no": "no load", "checks": "no load", "booting": "in load", "loaded": "after load"}[r["model"]]
    warn = ", warning" if r.get("warnings") else ""
    return f"{r['exit']}, {one_line_text(r)}{warn}, {load}"


def compare_table(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> str:
    """The README's before/after table: one row per probe, each side as exit, kind, load."""
    b, a = {r["id"]: r for r in before}, {r["id"]: r for r in after}
    ids = list(dict.fromkeys([*b, *a]))
    rows = ["| probe | before | after |", "|---|---|---|"]
    for i in ids:
        what = (a.get(i) or b[i])["probe"]
        rows.append(f"| `{i}`: {_cell(what)} | {short(b.get(i))} | {short(a.get(i))} |")
    for name, side in (("before", before), ("after", after)):
        met = [r for r in side if r.get("meets") is not None]
        rows.append(f"\n{name}: {sum(bool(r['meets']) for r in met)} of {len(met)} as expected")
    return "\n".join(rows)
