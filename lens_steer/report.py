"""One self-contained HTML page of a run, and the figures a run's artifacts allow.

:func:`run_figures` reads what a run directory holds (``neurons.json`` and the statistics always; ``lss.csv``,
``eval_*.csv`` when present) and builds every figure it can. :func:`build_report` puts them on one page with the
manifest, count tables, LSS and forcing tables and steered generations. plotly.js is embedded once in the page, so
it renders with no network (no ``<script src="http...">``).
"""

from __future__ import annotations

import contextlib
import html
import json
import warnings
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from lens_steer.version import __version__
from lens_steer.errors import LensSteerError
from lens_steer.factors import is_control
from lens_steer.languages import LANGUAGES
from lens_steer.neurons import NeuronSet
from lens_steer.paths import write_text
from lens_steer.run import (COMPARE_CSV, COMPARE_SUMMARY, EVAL_GLOB, FINGERPRINT, FORCING_CSV, GENERATIONS_FILE,
                            LSS_CSV, LSS_SUMMARY, REPORT_FILE, STABILITY_CSV, STATS_FILE, Run)
from lens_steer import plots
from lens_steer.stability import read_frequency, stable_share_per_layer
from lens_steer.stats import Stats

MAX_GENERATIONS = 80  # the newest records shown; the full file stays in the run directory
MAX_TABLE_ROWS = 400


def _load(run: Run) -> tuple[NeuronSet, Stats | None]:
    return run.neurons(), run.stats() if run.has(STATS_FILE) else None


def _as_run(run: str | Path | Run) -> Run:
    return run if isinstance(run, Run) else Run(run)


def eval_deltas(frame: pd.DataFrame) -> pd.DataFrame:
    """Change of each evaluation value against no intervention: rows (task, factor, intervened, eval_lang,
    metric, value, base, delta); ``frame`` is the long format of ``eval_<task>.csv``.

    >>> f = pd.DataFrame(dict(task="t", factor=["-", "p_max"], intervened=["none", "fr"], eval_lang="fr",
    ...                       metric="acc", value=[0.5, 0.7], n=10))
    >>> eval_deltas(f)["delta"].round(2).tolist()
    [0.2]
    """
    need = {"task", "factor", "intervened", "eval_lang", "metric", "value"}
    if not need <= set(frame.columns):
        raise LensSteerError(f"an evaluation table needs the columns {', '.join(sorted(need))}")
    base = frame[frame["intervened"] == "none"][["task", "eval_lang", "metric", "value"]]
    base = base.rename(columns={"value": "base"}).drop_duplicates(["task", "eval_lang", "metric"])
    steered = frame[frame["intervened"] != "none"]
    out = steered.merge(base, on=["task", "eval_lang", "metric"], how="inner")
    out["delta"] = out["value"] - out["base"]
    return out


def run_figures(run_dir: str | Path | Run, compare: str | Path | None = None) -> dict[str, go.Figure]:
    """Every figure the run directory's artifacts allow, by file stem, in reading order. Artifacts made from
    another neuron set than the run's (see :mod:`lens_steer.run`) are left out with a one-line warning."""
    run = _as_run(run_dir)
    run_dir = run.path
    neurons, stats = _load(run)
    figs: dict[str, go.Figure] = {}
    if compare:
        other, _ = _load(Run(compare))
        names = {f"{neurons.provenance.get('method', 'run')} ({run_dir.name})": neurons,
                 f"{other.provenance.get('method', 'other')} ({Path(compare).name})": other}
        if len(set(names)) < 2:
            names = {run_dir.name: neurons, Path(compare).name: other}
        figs["layer_distribution"] = plots.layer_distribution(names)
    else:
        figs["layer_distribution"] = plots.layer_distribution(neurons)
    figs["overlap_counts"] = plots.overlap_heatmap(neurons, "count")
    figs["overlap_jaccard"] = plots.overlap_heatmap(neurons, "jaccard")
    if stats is not None:
        figs["layer_inspector"] = plots.layer_inspector(stats, neurons, frequency=read_frequency(run))
    figs.update(_lss_figures(run))
    figs.update(_stability_figure(run, neurons))
    compare_table = run.table(COMPARE_CSV)
    if compare_table is not None:
        figs["compare_methods"] = plots.compare_methods(compare_table)
    figs.update(_eval_figures(run))
    return figs


def _lss_figures(run: Run) -> dict[str, go.Figure]:
    """The figures of ``lss.csv`` (and ``forcing.csv`` when it has a sweep): matrix, curves, per layer, gain/damage."""
    lss = _lss_table(run)
    figs: dict[str, go.Figure] = {}
    if lss is None:
        return figs
    best = _best_factor(run)
    factors = list(dict.fromkeys(lss.loc[lss["layers"] == "all", "factor"]))
    if factors:
        ordered = [best, *[f for f in factors if f != best]] if best in factors else factors
        first = lss[lss["factor"].isin(ordered)].copy()
        first["factor"] = pd.Categorical(first["factor"], ordered, ordered=True)
        figs["lss_matrix"] = plots.lss_matrix(first.sort_values("factor").astype({"factor": str}))
    doses = [plots.factor_multiple(f) for f in factors]
    families = pd.Series([d[0] for d in doses if d]).value_counts()
    if not families.empty and families.iloc[0] >= 2:
        figs["lss_vs_factor"] = plots.lss_curve(lss, null=_control_mean(lss))
    if len(families) and families.iloc[0] >= 2 and "target_wins" in lss.columns:
        figs["target_wins_vs_factor"] = plots.lss_curve(lss, metric="target_wins",
                                                        null=_control_mean(lss, "target_wins"))
    forcing = run.table(FORCING_CSV) if len(families) and families.iloc[0] >= 2 else None
    if forcing is not None:
        forcing = fill_intervals(forcing).assign(layers="all", source="-")
        if forcing["factor"].map(plots.factor_multiple).notna().sum() >= 2:
            figs["forcing_vs_factor"] = plots.lss_curve(forcing, metric="forcing_strict",
                                                        null=_control_mean(forcing, "forcing_strict"))
    if (lss["layers"] != "all").any():
        figs["lss_per_layer"] = plots.layer_lss_curve(lss)
    if {"target_gain", "source_damage"} <= set(lss.columns):
        figs["gain_vs_damage"] = plots.gain_damage(lss)
    return figs


def _stability_figure(run: Run, neurons: Any) -> dict[str, go.Figure]:
    """``set_stability`` when ``lens-steer stability`` has run on this neuron set."""
    figs: dict[str, go.Figure] = {}
    stability = run.table(STABILITY_CSV)
    if stability is not None:
        frequency = read_frequency(run)
        per_layer = None if frequency is None else stable_share_per_layer(neurons.mask(), frequency).numpy()
        figs["set_stability"] = plots.set_stability(stability, per_layer)
    return figs


def _eval_figures(run: Run) -> dict[str, go.Figure]:
    """Per ``eval_<task>.csv``: the change under amplification (heatmap) and the values with their intervals."""
    figs: dict[str, go.Figure] = {}
    # one task per eval_<task>.csv; eval_harness.csv holds every harness task run (one figure pair each)
    frames = [part for frame in _eval_tables(run).values() for _, part in frame.groupby("task", sort=False)]
    for frame in frames:
        deltas = eval_deltas(frame)
        if deltas.empty:
            continue
        task = str(frame["task"].iloc[0])
        metric = str(deltas["metric"].iloc[0])
        part = deltas[deltas["metric"] == metric]
        figs[f"downstream_{task.replace('-', '_')}"] = plots.downstream_heatmap(
            part, title=f"{task}: change of {metric} under amplification (self-language outlined)", unit=metric)
        figs[f"downstream_{task.replace('-', '_')}_values"] = plots.downstream_values(
            frame, metric, title=f"{task}: {metric} per evaluation language, with 95% intervals")
    return figs


# Fields that say how long or where something ran, not what it found: left out of run_results, so two runs of the
# same code and settings give the same file (issue 26 compares it before and after a refactor).
_VOLATILE = ("seconds", "wall", "elapsed", "placement", "lens_steer_version")


def run_results(run_dir: str | Path | Run) -> dict[str, Any]:
    """The numbers behind :func:`run_figures` as one JSON-ready object (``lens-steer figures`` writes it as
    ``results.json`` beside the figures): the neuron counts per language and layer, the LSS summary and table, forcing,
    the comparison and every evaluation table, each only when the run has it for its current neuron set. Timings
    and placements are left out, so equal results give an equal file."""
    run = _as_run(run_dir)
    neurons = run.neurons()
    out: dict[str, Any] = {
        "run_fingerprint": run.fingerprint(),
        "identification": {"method": neurons.provenance.get("method"), **neurons.provenance.get("params", {})},
        "neurons": {code: row for code, row in zip(neurons.languages, neurons.counts().tolist())},
    }
    for key, name in (("lss_summary", LSS_SUMMARY), ("compare_summary", COMPARE_SUMMARY)):
        summary = _summary(run, name)
        if summary:
            out[key] = _stable(summary)
    for key, name in (("lss", LSS_CSV), ("forcing", FORCING_CSV), ("compare", COMPARE_CSV),
                      ("stability", STABILITY_CSV)):
        frame = run.table(name)
        if frame is not None:
            out[key] = _records(fill_intervals(frame))
    evals = _eval_tables(run)
    if evals:
        out["eval"] = {name: _records(frame) for name, frame in evals.items()}
    return out


# (share, its count) pairs whose Wilson interval a table written before the interval columns can still be given
_WILSON_FROM_COUNTS = (("lss", "n_facts"), ("target_wins", "n_facts"), ("target_wins_base", "n_facts"),
                       ("forcing_strict", "n"), ("forcing_lenient", "n"), ("baseline_strict", "n"))


def fill_intervals(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the Wilson 95% intervals an older ``lss.csv`` or ``forcing.csv`` lacks (written before every
    share had one) computed from the share and its count; a table that has them is returned as it is. Bootstrap
    intervals need the per-fact values, which an older table does not hold: those stay absent.

    >>> f = fill_intervals(pd.DataFrame(dict(lss=[0.8], n_facts=[10])))
    >>> [round(float(f[c].iloc[0]), 4) for c in ("lss_low", "lss_high")]
    [0.4902, 0.9433]
    """
    from lens_steer.intervals import wilson_ci  # deferred: torch

    out = frame
    for share, count in _WILSON_FROM_COUNTS:
        if {share, count} <= set(frame.columns) and f"{share}_low" not in frame.columns:
            bounds = [wilson_ci(float(v) * float(n), float(n)) if v == v and n == n else (float("nan"),) * 2
                      for v, n in zip(frame[share], frame[count])]
            out = out.copy() if out is frame else out
            position = list(out.columns).index(share) + 1
            out.insert(position, f"{share}_low", [b[0] for b in bounds])
            out.insert(position + 1, f"{share}_high", [b[1] for b in bounds])
    return out


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    frame = frame.drop(columns=[c for c in frame.columns if c in _VOLATILE or c == FINGERPRINT])
    return [_stable(r) for r in json.loads(frame.to_json(orient="records", double_precision=6))]


def _stable(obj: Any) -> Any:
    """``obj`` without the volatile keys, at any depth."""
    if isinstance(obj, dict):
        return {k: _stable(v) for k, v in obj.items() if k not in _VOLATILE and k != FINGERPRINT}
    if isinstance(obj, list):
        return [_stable(v) for v in obj]
    return obj


def _lss_table(run: Run) -> pd.DataFrame | None:
    frame = run.table(LSS_CSV)
    return fill_intervals(frame) if frame is not None and not frame.empty else None


def _eval_tables(run: Run) -> dict[str, pd.DataFrame]:
    """Every ``eval_<task>.csv`` of this neuron set, by file name."""
    tables = {path.name: run.table(path.name) for path in sorted(run.path.glob(EVAL_GLOB))}
    return {name: frame for name, frame in tables.items() if frame is not None}


def _summary(run: Run, name: str) -> dict[str, Any] | None:
    """A JSON summary of this neuron set, or None (missing, or made from another one: then a warning)."""
    if not run.has(name):
        return None
    try:
        return run.summary(name)
    except LensSteerError as exc:
        warnings.warn(f"left out: {exc}", stacklevel=2)
        run.left_out(name)
        return None


def _best_factor(run: Run) -> str | None:
    summary = _summary(run, LSS_SUMMARY)
    return summary.get("best_factor") if summary else None


def _control_mean(frame: pd.DataFrame, metric: str = "lss") -> float | None:
    """The mean ``metric`` of the matched random-neuron controls' all-layer rows: a dose curve's null line."""
    ctrl = frame[(frame["layers"] == "all") & frame["factor"].map(is_control).astype(bool)]
    return float(ctrl[metric].mean()) if not ctrl.empty else None


# ---------------------------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------------------------
_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1250px;
       padding: 1rem 2rem 4rem; color: #222; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #ddd; padding-top: 1rem; }
.meta { color: #666; } nav a { margin-right: 1rem; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
th { background: #f4f4f4; } td.text, th.text { text-align: left; max-width: 560px; }
.figure { margin: 1rem 0 2rem; } details { margin: 0.5rem 0; } pre { background: #f7f7f7; padding: 0.8rem; overflow: auto; }
.hit { color: #0a7a2f; font-weight: 600; } .miss { color: #b3261e; }
"""


# (value, low, high) column triples shown as one cell "0.620 [0.410, 0.790]": besides every <c>, <c>_low, <c>_high
_SPECIAL_INTERVALS = (("mean_shift", "ci_low", "ci_high"), ("mean_lss", "ci_low", "ci_high"), ("value", "low", "high"))


def with_intervals(frame: pd.DataFrame, float_format: str = "{:.3f}") -> pd.DataFrame:
    """``frame`` with each number that has a 95% interval beside it (``<c>_low``, ``<c>_high``; ``ci_low``,
    ``ci_high`` of ``mean_shift`` and ``mean_lss``; ``low``, ``high`` of an evaluation's ``value``) as one text cell
    "value [low, high]", the bound columns dropped: the tables of the report page.

    >>> f = pd.DataFrame(dict(lss=[0.62], lss_low=[0.41], lss_high=[0.79], n_facts=[20]))
    >>> with_intervals(f).iloc[0].to_dict()
    {'lss': '0.620 [0.410, 0.790]', 'n_facts': 20}
    """
    out = frame.copy()
    triples = [(c, f"{c}_low", f"{c}_high") for c in frame.columns] + list(_SPECIAL_INTERVALS)
    for value, low, high in triples:
        if not {value, low, high} <= set(out.columns):
            continue

        def cell(r: pd.Series) -> Any:
            v, lo, hi = r[value], r[low], r[high]
            if not isinstance(v, (int, float)) or v != v:
                return "" if v != v else v
            text = float_format.format(v)
            return text + (f" [{float_format.format(lo)}, {float_format.format(hi)}]" if lo == lo and hi == hi else "")

        out[value] = out.apply(cell, axis=1) if len(out) else out[value]
        out = out.drop(columns=[low, high])
    return out


def _table(frame: pd.DataFrame, float_format: str = "{:.3f}") -> str:
    frame = with_intervals(frame, float_format)
    if len(frame) > MAX_TABLE_ROWS:
        note = f"<p class='meta'>first {MAX_TABLE_ROWS} of {len(frame)} rows; the full table is in the CSV file</p>"
        frame = frame.head(MAX_TABLE_ROWS)
    else:
        note = ""
    return frame.to_html(index=False, escape=True, border=0, na_rep="",
                         float_format=lambda v: float_format.format(v)) + note


def _figure_html(fig: go.Figure, div_id: str) -> str:
    body = fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": False})
    return f"<div class='figure'>{body}</div>"


def _counts_table(neurons: NeuronSet, stats: Stats | None) -> pd.DataFrame:
    counts = neurons.counts().numpy()
    rows = []
    for i, code in enumerate(neurons.languages):
        row: dict[str, Any] = {"lang": code, "name": LANGUAGES[code].name if code in LANGUAGES else ""}
        if stats is not None and code in stats.languages:
            row["tokens"] = int(stats.n_tokens[stats.languages.index(code)])
        row["neurons"] = int(counts[i].sum())
        row.update({f"L{layer}": int(c) for layer, c in enumerate(counts[i])})
        rows.append(row)
    return pd.DataFrame(rows)


def _generations(run: Run) -> str:
    records = run.read_jsonl(GENERATIONS_FILE)  # a torn last line of an interrupted append is skipped
    if not records:
        return ""
    shown = records[-MAX_GENERATIONS:]
    rows = []
    for r in shown:
        steered = r.get("steered")
        verdict = "" if not steered else ("<span class='hit'>target</span>" if r.get("match_strict") else
                                          "<span class='hit'>lenient</span>" if r.get("match_lenient") else
                                          "<span class='miss'>miss</span>")
        rows.append("<tr>" + "".join([
            f"<td class='text'>{html.escape(str(r.get('kind', '')))}</td>",
            f"<td class='text'>{html.escape(str(r.get('target') or 'baseline'))}</td>",
            f"<td class='text'>{html.escape(str(r.get('factor') or ''))}</td>",
            f"<td class='text'>{html.escape(str(r.get('detected') or '??'))} {verdict}</td>",
            f"<td class='text'>{html.escape(str(r.get('prompt', '')))}</td>",
            f"<td class='text'>{html.escape(str(r.get('text', '')))}</td>"]) + "</tr>")
    head = "".join(f"<th class='text'>{h}</th>" for h in ("kind", "target", "factor", "detected", "prompt", "text"))
    more = f"<p class='meta'>the newest {len(shown)} of {len(records)} records</p>" if len(records) > len(shown) else ""
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>{more}"


def build_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``RUN_DIR/report.html`` (or ``out``) and return its path.

    Works on an identify-only run (counts, layer, overlap and Jaccard figures, the inspector) and adds LSS,
    forcing, generations and downstream sections when their files are present.
    """
    run = Run(run_dir)
    if not run.path.is_dir():
        raise LensSteerError(f"{run.path} is not a directory; give a run directory made by `lens-steer identify`")
    target = Path(out) if out else run.file(REPORT_FILE)
    inside = target.resolve().parent == run.path.resolve()
    with run.writing("report") if inside else contextlib.nullcontext(run):
        return _build_report(run, target)


def _build_report(run: Run, target: Path) -> Path:
    run_dir = run.path
    neurons, stats = _load(run)
    figs = run_figures(run)
    manifest = stats.manifest if stats is not None else neurons.provenance.get("stats", {})
    sections: list[tuple[str, str, str]] = [  # (anchor, title, html)
        ("neurons", "Language neurons", _overview_html(neurons, stats, manifest)),
        ("where", "Where they live and how they overlap",
         _figures_html(figs, ("layer_distribution", "overlap_counts", "overlap_jaccard"))),
    ]
    if "layer_inspector" in figs:
        sections.append(("inspector", "Per-layer neuron inspector",
                         "<p>Drag the slider to pick a layer. Hover a cell for the neuron's activation probability,"
                         " p_max and p_median in that language; crosses mark the languages it is assigned to."
                         " <code>lens-steer inspect RUN --layer L --neuron J</code> lists the tokens that drive one"
                         " neuron.</p>" + _figure_html(figs["layer_inspector"], "fig-layer_inspector")))
    lss = _lss_table(run)
    if lss is not None:
        sections.append(("lss", "Language Steering Shift", _lss_html(run, lss, figs)))
    forcing = run.table(FORCING_CSV)
    if forcing is not None:
        sections.append(("forcing", "Language forcing on neutral prompts", _table(fill_intervals(forcing))))
    gens = _generations(run)
    if gens:
        sections.append(("generations", "Steered generations (greedy, language detected by CLD2)", gens))
    if "set_stability" in figs:
        sections.append(("stability", "How stable the neuron set is (lens-steer stability)",
                         "<p>Each language's neurons identified again from bootstrap resamples of the folds of"
                         " sentences (no new model pass): the mean Jaccard of a resampled set with the full set and its"
                         " 95% interval, the Jaccard of the sets of the even and of the odd folds (split half), and"
                         " per layer the share of neurons chosen in at least 90% of resamples. The inspector's hover"
                         " shows each neuron's own share.</p>"
                         + _figure_html(figs["set_stability"], "fig-set_stability") + _table(run.table(STABILITY_CSV))))
    if "compare_methods" in figs:
        sections.append(("compare", "Steering methods compared (lens-steer compare)", _compare_html(run, figs)))
    evals = [k for k in figs if k.startswith("downstream_")]
    if evals:
        sections.append(("downstream", "Downstream evaluation under amplification",
                         _downstream_html(run, figs, evals)))
    left_out = run.left_out()
    if left_out:  # say on the page what it does not show, and why
        sections.insert(1, ("stale", "Left out: results of another neuron set",
                            "<p class='miss'>These files in the run directory were made from another neuron set than"
                            " the one shown here (their run_fingerprint differs), so this page leaves them out: "
                            + ", ".join(f"<code>{html.escape(n)}</code>" for n in left_out)
                            + ". Run the commands that write them again.</p>"))
    page = _page(run_dir.name, manifest, sections, get_plotlyjs(), run.fingerprint())
    write_text(target, page)
    return target


def _figures_html(figs: dict[str, go.Figure], keys: Sequence[str]) -> str:
    """The figures of ``keys`` that the run has, in that order; a section lists what it may hold and shows what its
    artifacts allowed."""
    return "".join(_figure_html(figs[k], f"fig-{k}") for k in keys if k in figs)


def _overview_html(neurons: NeuronSet, stats: Stats | None, manifest: dict[str, Any]) -> str:
    """The first section: what was identified and how, the per-language counts and the manifest, so the page
    says what run it describes before any figure."""
    total = sum(neurons.totals().values())
    overview = (f"<p>{total} language-neuron assignments ({html.escape(str(neurons.provenance.get('method', '?')))},"
                f" {html.escape(json.dumps(neurons.provenance.get('params', {})))}) over {neurons.n_layers} layers x"
                f" {neurons.d_mlp} neurons, {len(neurons.languages)} languages.</p>")
    overview += _table(_counts_table(neurons, stats))
    overview += ("<details><summary>run manifest</summary><pre>"
                 + html.escape(json.dumps(manifest, indent=2, ensure_ascii=False)) + "</pre></details>")
    return overview


def _lss_html(run: Run, lss: pd.DataFrame, figs: dict[str, go.Figure]) -> str:
    """The LSS section: the factor choice (when lss_summary.json records one), the LSS figures, then the raw table
    folded away (it can be long)."""
    summary = _summary(run, LSS_SUMMARY)
    part = _lss_summary_html(summary) if summary else ""
    part += _figures_html(figs, ("lss_matrix", "lss_vs_factor", "target_wins_vs_factor", "forcing_vs_factor",
                                 "gain_vs_damage", "lss_per_layer"))
    part += "<details><summary>lss.csv</summary>" + _table(lss) + "</details>"
    return part


def _lss_summary_html(summary: dict[str, Any]) -> str:
    """Which factor was chosen and why, next to the paper's LSS-only choice, and the per-factor summary numbers
    (nested values are left out: they do not fit a table cell)."""
    rows = [{"factor": f, **{k: v for k, v in vals.items() if not isinstance(v, (dict, list))}}
            for f, vals in summary.get("factors", {}).items()]
    part = (f"<p>Chosen factor: <b>{html.escape(str(summary.get('best_factor')))}</b>"
            f" ({html.escape(str(summary.get('reason', '')))}). Rule:"
            f" {html.escape(str(summary.get('rule', '')))}. By LSS alone (the paper's choice):"
            f" {html.escape(str(summary.get('best_lss_factor', summary.get('best_factor'))))}."
            f" Cloze: {html.escape(str(summary.get('cloze')))}.</p>")
    if rows:
        part += _table(pd.DataFrame(rows))
    return part


def _compare_html(run: Run, figs: dict[str, go.Figure]) -> str:
    """The comparison: the figure, the table, and the held-out choices of the ``best`` methods."""
    part = _figure_html(figs["compare_methods"], "fig-compare_methods")
    part += _table(run.table(COMPARE_CSV))
    summary = _summary(run, COMPARE_SUMMARY)
    if summary:
        chosen = [f"<li><b>{html.escape(m)}</b>: {html.escape(str(d.get('factor')))} ({html.escape(str(d['reason']))})"
                  "</li>" for m, d in summary.get("methods", {}).items() if isinstance(d, dict) and "reason" in d]
        if chosen:
            part += "<p>Chosen on held-out facts:</p><ul>" + "".join(chosen) + "</ul>"
    return part


def _downstream_html(run: Run, figs: dict[str, go.Figure], evals: list[str]) -> str:
    """The downstream heatmaps, then every evaluation table folded away under its file name."""
    part = _figures_html(figs, evals)
    for name, frame in _eval_tables(run).items():
        part += f"<details><summary>{html.escape(name)}</summary>{_table(frame)}</details>"
    return part


def _page(name: str, manifest: dict[str, Any], sections: list[tuple[str, str, str]], plotlyjs: str,
          fingerprint: str) -> str:
    """The whole page around ``sections`` (anchor, title, html): header with the model, corpus and site, a
    navigation bar, then the sections in order."""
    model = manifest.get("model", {})
    corpus = manifest.get("corpus", {})
    nav = "".join(f"<a href='#{a}'>{html.escape(t)}</a>" for a, t, _ in sections)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join([
        "<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
        f"<meta name='lens-steer-run-fingerprint' content='{html.escape(fingerprint)}'>",  # what it describes
        f"<title>lens_steer report: {html.escape(name)}</title>",
        f"<style>{_CSS}</style>",
        # plotly.js once, inline: the page must render with no network.
        f"<script type='text/javascript'>{plotlyjs}</script>",
        "</head><body>",
        f"<h1>lens_steer report: {html.escape(name)}</h1>",
        f"<p class='meta'>model {html.escape(str(model.get('model', '?')))} ({html.escape(str(model.get('source', '')))}),"
        f" corpus {html.escape(str(corpus.get('name', '?')))} {html.escape(str(corpus.get('split') or ''))},"
        f" site {html.escape(str(manifest.get('site', '?')))}; written {stamp} by lens_steer {__version__}</p>",
        f"<nav>{nav}</nav>",
        *[f"<h2 id='{a}'>{html.escape(t)}</h2>{h}" for a, t, h in sections],
        "</body></html>",
    ])
