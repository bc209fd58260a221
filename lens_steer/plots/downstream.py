"""Downstream evaluation under amplification: the change of a task's metric per evaluation language and intervened
language, self-language cells outlined."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from lens_steer.errors import LensSteerError
from lens_steer.plots.languages import language_label, order_languages
from lens_steer.plots.style import DIVERGING, _empty, _style


def downstream_heatmap(deltas: pd.DataFrame, value: str = "delta", title: str | None = None,
                       order: str = "family", unit: str = "") -> go.Figure:
    """Diverging heatmap centred at 0: evaluation language (rows) x intervened language (columns).

    ``deltas`` has columns ``eval_lang``, ``intervened`` and ``value`` (the change against no intervention).
    The diagonal (self-language) is outlined.

    >>> d = pd.DataFrame(dict(eval_lang=["en", "fr"], intervened=["en", "en"], delta=[0.1, -0.2]))
    >>> downstream_heatmap(d).data[0].zmid
    0
    """
    if deltas.empty:
        return _empty(title or "Downstream change under amplification", "no evaluation rows")
    for col in ("eval_lang", "intervened", value):
        if col not in deltas:
            raise LensSteerError(f"downstream_heatmap needs a column {col!r} (it has {', '.join(deltas.columns)})")
    rows = order_languages(list(dict.fromkeys(deltas["eval_lang"])), order)
    cols = order_languages(list(dict.fromkeys(deltas["intervened"])), order)
    z = np.full((len(rows), len(cols)), np.nan)
    for (e, t), v in deltas.groupby(["eval_lang", "intervened"])[value].mean().items():
        z[rows.index(e), cols.index(t)] = v
    bound = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    bound = bound or 1.0  # all-zero changes still get a usable colour range
    labels_r = [language_label(c) for c in rows]
    labels_c = [language_label(c) for c in cols]
    custom = np.dstack(np.meshgrid(labels_c, labels_r))
    fig = go.Figure(go.Heatmap(
        z=z, x=cols, y=rows, customdata=custom, colorscale=DIVERGING, zmid=0, zmin=-bound, zmax=bound,
        texttemplate="%{z:+.2f}" if len(rows) * len(cols) <= 400 else None, hoverongaps=False,
        colorbar=dict(title=dict(text=f"change{(' (' + unit + ')') if unit else ''}")),
        hovertemplate="evaluated in %{customdata[1]}<br>amplified %{customdata[0]}<br>change %{z:+.4f}"
                      "<extra></extra>"))
    for i, code in enumerate(rows):
        if code in cols:
            j = cols.index(code)
            fig.add_shape(type="rect", x0=j - 0.5, x1=j + 0.5, y0=i - 0.5, y1=i + 0.5, line=dict(color="black", width=2))
    fig.update_xaxes(title_text="intervened language (neurons amplified)")
    fig.update_yaxes(title_text="evaluation language", autorange="reversed")
    size = max(420, 36 * max(len(rows), len(cols)) + 200)
    return _style(fig, title or "Downstream change under amplification (self-language outlined)", height=size,
                  width=size + 120)


def downstream_values(frame: pd.DataFrame, metric: str, title: str | None = None,
                      order: str = "family") -> go.Figure:
    """The values themselves with their 95% intervals: per evaluation language, one bar per setting (no
    intervention first, then each intervened language), error bars from the table's ``low`` and ``high``
    (``interval`` says which: Wilson for accuracy, the bootstrap over sentences for perplexity; none for BLEU).

    >>> f = pd.DataFrame(dict(intervened=["none", "fr"], eval_lang="fr", metric="acc", value=[0.5, 0.7],
    ...                       low=[0.3, 0.5], high=[0.7, 0.85], n=20))
    >>> [t.error_y.array for t in downstream_values(f, "acc").data]
    [(0.2,), (0.15,)]
    """
    part = frame[frame["metric"] == metric] if "metric" in frame else frame.iloc[0:0]
    if part.empty:
        return _empty(title or f"{metric} per evaluation language", f"no {metric} rows")
    langs = order_languages(list(dict.fromkeys(part["eval_lang"])), order)
    settings = ["none", *order_languages([t for t in dict.fromkeys(part["intervened"]) if t != "none"], order)]
    has_ci = {"low", "high"} <= set(part)
    fig = go.Figure()
    for name in settings:
        mine = part[part["intervened"] == name].drop_duplicates("eval_lang").set_index("eval_lang")
        mine = mine.reindex([c for c in langs if c in mine.index])
        if mine.empty:
            continue
        value = mine["value"].astype(float)
        error = None
        if has_ci and mine["low"].notna().any():
            error = dict(type="data", symmetric=False, thickness=1.2, width=4,
                         array=[round(v, 12) for v in (mine["high"].astype(float) - value).clip(lower=0).fillna(0)],
                         arrayminus=[round(v, 12) for v in (value - mine["low"].astype(float)).clip(lower=0).fillna(0)])
        label = "no intervention" if name == "none" else f"{language_label(name)} amplified"
        fig.add_trace(go.Bar(x=list(mine.index), y=value.tolist(), name=label, error_y=error,
                             marker_color="#888" if name == "none" else None,
                             hovertemplate=f"{label}<br>evaluated in %{{x}}<br>{metric} %{{y:.4g}}<extra></extra>"))
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="evaluation language")
    fig.update_yaxes(title_text=metric)
    return _style(fig, title or f"{metric} per evaluation language (95% intervals)", height=460,
                  width=max(620, 90 * len(langs) * max(len(settings), 1) // 2 + 300))
