"""Language Steering Shift figures from ``lss.csv``: the source x target matrix, LSS against the factor's multiple
and against the intervened layer, and target gain against source damage."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from lens_steer.errors import LensSteerError
from lens_steer.factors import factor_or_none, is_control
from lens_steer.intervals import bootstrap_mean_ci
from lens_steer.plots.frames import _as_frame
from lens_steer.plots.languages import language_label, order_languages
from lens_steer.plots.style import CONTROL_COLOUR, SEQUENTIAL, _empty, _style


def _grid(frame: pd.DataFrame, factor: str, metric: str, langs: list[str]) -> np.ndarray:
    """Source x target means of ``metric`` for one factor (NaN on the diagonal and where a pair was not run)."""
    part = frame[frame["factor"] == factor].groupby(["source", "target"])[metric].mean()
    z = np.full((len(langs), len(langs)), np.nan)
    for (s, t), v in part.items():
        if s != t and s in langs and t in langs:
            z[langs.index(s), langs.index(t)] = v
    return z


def _ci_text(frame: pd.DataFrame, factor: str, metric: str, langs: list[str]) -> list[list[str]]:
    """Each cell's 95% interval for the hover (one row per cell: with several, e.g. control seeds, none)."""
    low, high = f"{metric}_low", f"{metric}_high"
    text = [["" for _ in langs] for _ in langs]
    if {low, high} <= set(frame):
        mine = frame[frame["factor"] == factor].groupby(["source", "target"]).filter(lambda g: len(g) == 1)
        for _, r in mine.iterrows():
            if r["source"] in langs and r["target"] in langs and r[low] == r[low]:
                text[langs.index(r["source"])][langs.index(r["target"])] = f" [{r[low]:.2f}, {r[high]:.2f}]"
    return text


def lss_matrix(lss: pd.DataFrame | Sequence[Mapping[str, Any]], factor: str | None = None, metric: str = "lss",
               order: str = "family", control: str | None = None) -> go.Figure:
    """Source x target matrix of ``metric`` (default LSS) per factor, all-layer interventions, diagonal blank.

    With several factors and ``factor=None`` a dropdown inside the figure switches between them. ``metric`` can be
    any numeric column of ``lss.csv`` whose natural range is 0..1 (``lss``, ``lss_nontie``, ``target_wins``...);
    other columns get a free colour scale.

    >>> rows = [dict(factor="p_max", layers="all", source=s, target=t, lss=0.9) for s in "ab" for t in "ab" if s != t]
    >>> z = lss_matrix(rows).data[0].z
    >>> bool(z[0][0] != z[0][0]), float(z[0][1])  # NaN diagonal
    (True, 0.9)
    """
    frame = _as_frame(lss)
    if frame.empty or metric not in frame:
        return _empty("Language Steering Shift", f"no {metric} rows in this run")
    frame = frame[frame["layers"] == "all"]
    if frame.empty:
        return _empty("Language Steering Shift", f"no all-layer {metric} rows in this run")
    factors = list(dict.fromkeys(frame["factor"]))
    if factor is not None:
        if factor not in factors:
            raise LensSteerError(f"factor {factor!r} is not in the table (it has {', '.join(factors)})")
        factors = [factor]
    langs = order_languages(list(dict.fromkeys(list(frame["source"]) + list(frame["target"]))), order)
    unit = metric in ("lss", "lss_nontie", "target_wins", "target_wins_base", "specificity", "forcing_strict")

    grids = {f: _grid(frame, f, metric, langs) for f in factors}
    texts = {f: _ci_text(frame, f, metric, langs) for f in factors}
    labels = [language_label(c) for c in langs]
    custom = np.dstack(np.meshgrid(labels, labels))
    first = factors[0]
    fig = go.Figure(go.Heatmap(
        z=grids[first], x=langs, y=langs, customdata=custom, colorscale=SEQUENTIAL, text=texts[first],
        zmin=0 if unit else None, zmax=1 if unit else None, texttemplate="%{z:.2f}" if len(langs) <= 20 else None,
        colorbar=dict(title=dict(text=_metric_label(metric))), hoverongaps=False,
        hovertemplate="source %{customdata[1]}<br>target %{customdata[0]}<br>" + metric
                      + " %{z:.3f}%{text}<extra></extra>",
    ))
    if len(factors) > 1:
        fig.update_layout(updatemenus=[dict(
            x=1.0, xanchor="right", y=1.12, yanchor="bottom", active=0,
            buttons=[dict(label=f, method="update", args=[{"z": [grids[f].tolist()], "text": [texts[f]]},
                                                          {"title.text": _lss_title(metric, f, control)}])
                     for f in factors])])
    fig.update_xaxes(title_text="target language (neurons amplified)")
    fig.update_yaxes(title_text="source language (prompt)", autorange="reversed")
    size = max(440, 36 * len(langs) + 200)
    return _style(fig, _lss_title(metric, first, control), height=size, width=size + 120)


def _axis_label(metric: str) -> str:
    return {"lss": "LSS (share of facts)", "lss_nontie": "LSS, ties left out (share of facts)",
            "target_wins": "target wins (share of facts)",
            "forcing_strict": "forcing success (share of outputs)"}.get(metric, metric.replace("_", " "))


def _metric_label(metric: str) -> str:
    return {"lss": "LSS<br>(share of facts)", "lss_nontie": "LSS, ties out<br>(share of facts)",
            "target_wins": "target wins<br>(share of facts)"}.get(metric, metric.replace("_", " "))


def _lss_title(metric: str, factor: str, control: str | None) -> str:
    name = {"lss": "Language Steering Shift"}.get(metric, metric.replace("_", " "))
    return f"{name}, factor {factor}" + (f" (control {control})" if control else "")


def factor_multiple(text: str) -> tuple[str, float] | None:
    """The family and multiple of a factor on a dose axis: ``p_max*2`` -> ``("p_max", 2.0)``, ``p_max`` ->
    ``("p_max", 1.0)``, ``scale:0.5`` -> ``("scale", 0.5)``, ``add:3`` -> ``("add", 3.0)``; other factors, and
    texts that are no factor: None. The factor's own :attr:`~lens_steer.factors.Factor.family` and ``multiple``.

    >>> factor_multiple("p_median*0.25"), factor_multiple("zero")
    (('p_median', 0.25), None)
    """
    factor = factor_or_none(text)
    if factor is None or factor.family is None or factor.multiple is None:
        return None
    return factor.family, factor.multiple


def _curves(frame: pd.DataFrame, x: str, metric: str, hover_x: str, mode: str) -> tuple[go.Figure, list[float]]:
    """One faint line per target (mean over sources), the 95% bootstrap band of the mean over pairs, and that mean
    as the last, bold trace. ``hover_x`` is a plotly template for the x value (``"layer %{x}"``)."""
    fig = go.Figure()
    for t in order_languages(list(dict.fromkeys(frame["target"]))):
        mine = frame[frame["target"] == t]
        curve = mine.groupby(x)[metric].mean().sort_index()
        fig.add_trace(go.Scatter(x=curve.index, y=curve.values, mode=mode, name=t, opacity=0.55,
                                 error_y=_row_error(mine, x, metric, curve),
                                 hovertemplate=f"target {language_label(t)}<br>{hover_x}<br>{metric}"
                                               " %{y:.3f}<extra></extra>"))
    xs, means, lows, highs = [], [], [], []
    for value, group in frame.groupby(x):
        vals = torch.tensor(group[metric].to_numpy(dtype=float))
        lo, hi = bootstrap_mean_ci(vals)
        xs.append(float(value))
        means.append(float(vals.mean()))
        lows.append(lo)
        highs.append(hi)
    fig.add_trace(go.Scatter(x=xs + xs[::-1], y=highs + lows[::-1], fill="toself", fillcolor="rgba(0,0,0,0.12)",
                             mode="lines", line=dict(width=0), hoverinfo="skip", name="95% CI (mean)"))
    fig.add_trace(go.Scatter(x=xs, y=means, mode="lines+markers", name="mean over pairs",
                             line=dict(color="black", width=3),
                             hovertemplate=f"{hover_x}<br>mean {metric} %{{y:.3f}}<extra></extra>"))
    return fig, xs


def _row_error(rows: pd.DataFrame, x: str, metric: str, curve: pd.Series) -> dict[str, Any] | None:
    """Error bars of one target's line from the rows' own 95% interval (``<metric>_low``, ``<metric>_high``: Wilson
    for a share) where each point is a single row (one source, or forcing's one row per factor and target); None
    where a point averages several rows (their intervals do not add up to the mean's: the band says that) or the
    table has no interval columns (a run written before they existed).

    >>> rows = pd.DataFrame(dict(a=[1.0, 2.0], lss=[0.5, 0.8], lss_low=[0.2, 0.5], lss_high=[0.8, 0.9]))
    >>> [round(v, 2) for v in _row_error(rows, "a", "lss", rows.set_index("a")["lss"])["array"]]
    [0.3, 0.1]
    """
    low, high = f"{metric}_low", f"{metric}_high"
    if not {low, high} <= set(rows) or rows.groupby(x).size().max() > 1:
        return None
    by = rows.set_index(x).loc[curve.index]
    return dict(type="data", symmetric=False, array=(by[high] - by[metric]).clip(lower=0).tolist(),
                arrayminus=(by[metric] - by[low]).clip(lower=0).tolist(), thickness=1, width=3)


def lss_curve(lss: pd.DataFrame | Sequence[Mapping[str, Any]], family: str | None = None, metric: str = "lss",
              null: float | None = None) -> go.Figure:
    """Mean ``metric`` over source languages against the factor's multiple a (``p_max*a``, ``scale:a``,
    ``add:b``), one line per target language, plus the mean over all pairs with its bootstrap 95% band.

    ``family`` picks the dose axis (default: the one with most factors). ``null`` draws a dashed reference line
    (e.g. the random-neuron control's mean).

    >>> rows = [dict(factor=f, layers="all", source="a", target="b", lss=v) for f, v in [("p_max", .5), ("p_max*2", .9)]]
    >>> [float(x) for x in lss_curve(rows).data[-1].x]
    [1.0, 2.0]
    """
    frame = _as_frame(lss)
    if frame.empty or metric not in frame:
        return _empty("LSS against the factor", f"no {metric} rows in this run")
    frame = frame[(frame["layers"] == "all") & frame[metric].notna()].copy()
    doses = frame["factor"].map(factor_multiple)
    frame["family"] = [d[0] if d else None for d in doses]
    frame["a"] = [d[1] if d else math.nan for d in doses]
    # distinct multiples per family (not rows: one factor over many pairs is still a single point)
    families = (frame.dropna(subset=["family"]).groupby("family", sort=False)["a"].nunique()
                .sort_values(ascending=False, kind="stable"))
    if families.empty or (family is None and families.iloc[0] < 2):
        return _empty("LSS against the factor", "needs at least two multiples of one factor (e.g. p_max*0.5,p_max,p_max*2)")
    family = family or str(families.index[0])
    part = frame[frame["family"] == family]
    if part.empty:
        raise LensSteerError(f"no factors of the family {family!r} in the table (it has {', '.join(families.index)})")
    fig, xs = _curves(part, "a", metric, f"{family} x%{{x}}", "lines+markers")
    if null is not None and math.isfinite(null):
        fig.add_hline(y=null, line_dash="dash", line_color=CONTROL_COLOUR, annotation_text="control",
                      annotation_position="bottom right")
    positive = all(x > 0 for x in xs)
    fig.update_xaxes(title_text=f"multiple a of {family}" if family not in ("add",) else "added value b",
                     type="log" if positive and family != "add" and max(xs) / min(xs) >= 4 else "linear",
                     tickvals=xs, ticktext=[f"{x:g}" for x in xs])
    unit = metric in ("lss", "lss_nontie", "target_wins", "specificity", "forcing_strict", "forcing_lenient")
    fig.update_yaxes(title_text=_axis_label(metric),
                     range=[-0.02, 1.02] if unit else None)
    return _style(fig, f"{'LSS' if metric == 'lss' else metric.replace('_', ' ')} against the factor ({family})",
                  height=460, width=760, legend=dict(title=dict(text="target")))


def layer_lss_curve(lss: pd.DataFrame | Sequence[Mapping[str, Any]], factor: str | None = None,
                    metric: str = "lss") -> go.Figure:
    """Mean ``metric`` when only one layer is intervened on, against the layer: one line per target language
    and the mean over pairs with its bootstrap band. Needs ``lens-steer lss --per-layer``."""
    frame = _as_frame(lss)
    if frame.empty or metric not in frame:
        return _empty("LSS per layer", f"no {metric} rows in this run")
    frame = frame[(frame["layers"] != "all") & frame[metric].notna()].copy()
    if frame.empty:
        return _empty("LSS per layer", "no per-layer rows: run `lens-steer lss RUN --per-layer`")
    factors = list(dict.fromkeys(frame["factor"]))
    factor = factor or factors[0]
    if factor not in factors:
        raise LensSteerError(f"factor {factor!r} has no per-layer rows (per-layer factors: {', '.join(factors)})")
    frame = frame[frame["factor"] == factor]
    frame["layer"] = frame["layers"].astype(int)
    fig, xs = _curves(frame, "layer", metric, "layer %{x}", "lines")
    fig.update_xaxes(title_text="intervened layer (only this one)", dtick=1 if max(xs) < 40 else None,
                     range=[min(xs) - 0.5, max(xs) + 0.5])
    fig.update_yaxes(title_text=_axis_label(metric),
                     range=[-0.02, 1.02] if metric.startswith("lss") else None)
    return _style(fig, f"{'LSS' if metric == 'lss' else metric} per layer, factor {factor}", height=460, width=760,
                  legend=dict(title=dict(text="target")))


def gain_damage(lss: pd.DataFrame | Sequence[Mapping[str, Any]]) -> go.Figure:
    """Per factor: mean target gain (change of logp of the target answer) against mean source damage (change of
    logp of the source answer), each with whiskers: the 95% bootstrap interval of the mean over pairs. Needs the columns
    ``target_gain`` and ``source_damage``."""
    frame = _as_frame(lss)
    if frame.empty or not {"target_gain", "source_damage"} <= set(frame):
        return _empty("Target gain against source damage", "no target_gain / source_damage columns in this run")
    frame = frame[frame["layers"] == "all"]
    agg = frame.groupby("factor", sort=False)[["target_gain", "source_damage"]].mean()
    # whiskers: the 95% bootstrap interval of each mean over the factor's pairs
    ci = {k: [bootstrap_mean_ci(torch.tensor(frame.loc[frame["factor"] == f, k].to_numpy(dtype=float)))
              for f in agg.index] for k in ("target_gain", "source_damage")}

    def bars(k: str) -> dict[str, Any]:
        return dict(type="data", symmetric=False, thickness=1, width=3,
                    array=[max(hi - v, 0.0) for (_, hi), v in zip(ci[k], agg[k])],
                    arrayminus=[max(v - lo, 0.0) for (lo, _), v in zip(ci[k], agg[k])])

    fig = go.Figure(go.Scatter(
        x=agg["source_damage"], y=agg["target_gain"], mode="markers+text", text=agg.index,
        error_x=bars("source_damage"), error_y=bars("target_gain"),
        textposition="top center", marker=dict(size=12, color=[CONTROL_COLOUR if is_control(f) else
                                                                 "#1f77b4" for f in agg.index]),
        hovertemplate="%{text}<br>source damage %{x:.2f} nats<br>target gain %{y:.2f} nats<extra></extra>"))
    fig.add_hline(y=0, line_color="#bbb")
    fig.add_vline(x=0, line_color="#bbb")
    fig.update_xaxes(title_text="source damage: mean change of logp(o_s | x_s) (nats)")
    fig.update_yaxes(title_text="target gain: mean change of logp(o_t | x_s) (nats)")
    return _style(fig, "Target gain against source damage, per factor", height=480, width=720)
