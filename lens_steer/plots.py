"""Interactive plotly figures of a run: where language neurons live, how they overlap, how steering responds.

Every builder is a pure function of artifacts already on disk (a :class:`NeuronSet`, :class:`Stats`, the rows of
``lss.csv`` or an evaluation table) and returns a ``plotly.graph_objects.Figure``; nothing here runs a model.
Interactive controls (dropdowns, sliders, heatmap/bars toggles) live inside the figure's layout, so they work in
a static HTML file with no Python kernel behind it.

>>> ns = NeuronSet(["en", "fr"], {"en": [[1, 3], []], "fr": [[3], [0]]}, n_layers=2, d_mlp=4)
>>> fig = layer_distribution(ns)
>>> fig.data[0].z.shape  # [lang, layer]
(2, 2)

Static export (:func:`save_figure`) uses kaleido, which drives a Chromium on the machine (``make setup``
installs Debian's ``chromium``; ``BROWSER_PATH`` points kaleido at another one).
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lens_steer.errors import LensSteerError
from lens_steer.factors import factor_or_none, is_control
from lens_steer.languages import LANGUAGES
from lens_steer.inspection import InspectorData, inspector_tables  # noqa: F401 - re-exported
from lens_steer.neurons import NeuronSet
from lens_steer import run as run_artifacts
from lens_steer.paths import atomic_path
from lens_steer.stats import Stats

# Languages grouped by family, then script, so that related languages sit next to each other in matrices
# (Indonesian beside Malay, the Romance languages together, the CJK block at the end).
FAMILY_ORDER: tuple[str, ...] = (
    "en", "nl",                    # Germanic
    "fr", "it", "pt",              # Romance
    "ht",                          # French-based creole
    "ru",                          # Slavic (Cyrillic)
    "et",                          # Uralic
    "tr",                          # Turkic
    "id", "ms", "jv", "su",        # Austronesian
    "sw",                          # Bantu
    "qu",                          # Quechuan
    "ta",                          # Dravidian (Tamil script)
    "th",                          # Tai (Thai script)
    "vi",                          # Austroasiatic (Latin with diacritics)
    "ja", "zh",                    # Japanese, Sinitic (CJK)
)
FAMILY: dict[str, str] = {
    "en": "Germanic", "nl": "Germanic", "fr": "Romance", "it": "Romance", "pt": "Romance", "ht": "Creole",
    "ru": "Slavic", "et": "Uralic", "tr": "Turkic", "id": "Austronesian", "ms": "Austronesian",
    "jv": "Austronesian", "su": "Austronesian", "sw": "Bantu", "qu": "Quechuan", "ta": "Dravidian", "th": "Tai",
    "vi": "Austroasiatic", "ja": "Japonic", "zh": "Sinitic",
}

SEQUENTIAL = "Viridis"
DIVERGING = "RdBu"
CONTROL_COLOUR = "#7f7f7f"
DEFAULT_COLOURS = tuple(plotly.colors.qualitative.Plotly)  # plotly's default colorway, as in the templates


def language_label(code: str) -> str:
    """``"fr"`` -> ``"fr French"`` (the hover text of every language axis)."""
    lang = LANGUAGES.get(code)
    return f"{code} {lang.name}" if lang else code


def order_languages(codes: Sequence[str], order: str = "family",
                    similarity: np.ndarray | None = None) -> list[str]:
    """Order languages for a matrix axis.

    ``order`` is ``"run"`` (as given), ``"family"`` (:data:`FAMILY_ORDER`; unknown codes last, in run order) or
    ``"cluster"`` (greedy nearest-neighbour chain on ``similarity``, a K x K matrix in ``codes`` order, starting
    from the language with the highest total similarity).

    >>> order_languages(["zh", "en", "fr", "ms", "id"])
    ['en', 'fr', 'id', 'ms', 'zh']
    """
    codes = list(codes)
    if order == "run":
        return codes
    if order == "family":
        rank = {c: i for i, c in enumerate(FAMILY_ORDER)}
        return sorted(codes, key=lambda c: (rank.get(c, len(rank)), codes.index(c)))
    if order == "cluster":
        if similarity is None or similarity.shape != (len(codes), len(codes)):
            raise LensSteerError("order='cluster' needs a K x K similarity matrix in the languages' order")
        sim = np.nan_to_num(np.asarray(similarity, dtype=float))
        np.fill_diagonal(sim, -np.inf)
        left = set(range(len(codes)))
        cur = int(np.argmax(np.where(np.isfinite(sim), sim, 0).sum(axis=1))) if codes else 0
        chain = []
        while left:
            chain.append(cur)
            left.discard(cur)
            if left:
                cur = max(left, key=lambda j: (sim[cur, j], -j))
        return [codes[i] for i in chain]
    raise LensSteerError(f"unknown language order {order!r}; use run, family or cluster")


def _style(fig: go.Figure, title: str, **layout: Any) -> go.Figure:
    fig.update_layout(title=dict(text=title, x=0.01, xanchor="left"), template="plotly_white",
                      margin=dict(l=70, r=30, t=90, b=60), font=dict(size=13), **layout)
    return fig


def _empty(title: str, message: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font=dict(size=16))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _style(fig, title, height=300)


# ---------------------------------------------------------------------------------------------------------------
# Where language neurons live
# ---------------------------------------------------------------------------------------------------------------
def layer_distribution(neurons: NeuronSet | Mapping[str, NeuronSet], order: str = "family") -> go.Figure:
    """Language x layer heatmap of neuron counts, with a toggle to per-layer stacked bars.

    Pass one :class:`NeuronSet`, or a mapping ``{"LAPE": a, "activated": b}`` to compare sets side by side on
    one colour scale. Hover shows the language (code and name), layer, count and the share of that language's
    neurons in that layer (0 for a language with no neurons).

    >>> ns = NeuronSet(["en", "fr"], {"en": [[1, 3], []], "fr": [[3], [0]]}, n_layers=2, d_mlp=4)
    >>> [t.type for t in layer_distribution(ns).data]
    ['heatmap', 'bar', 'bar']
    """
    sets = {"neurons": neurons} if isinstance(neurons, NeuronSet) else dict(neurons)
    if not sets:
        raise LensSteerError("layer_distribution needs at least one neuron set")
    names = list(sets)
    first = sets[names[0]]
    langs = order_languages(first.languages, order)
    _check_comparable(sets)
    tables = {name: _counts_in_order(ns, langs) for name, ns in sets.items()}
    zmax = max(1.0, max(t.max() for t in tables.values()))
    axes = dict(langs=langs, labels=[language_label(c) for c in langs], layers=list(range(first.n_layers)))

    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names if len(names) > 1 else None,
                        shared_yaxes=True, horizontal_spacing=0.06)
    heat_idx, bar_idx = [], []
    for col, name in enumerate(names, start=1):
        z = tables[name]
        share = _row_share(z)
        heat_idx.append(len(fig.data))
        fig.add_trace(_count_heatmap(z, share, zmax=zmax, name=name, first_panel=col == 1, **axes), row=1, col=col)
        for bar in _count_bars(z, share, name=name, first_panel=col == 1, **axes):
            bar_idx.append(len(fig.data))
            fig.add_trace(bar, row=1, col=col)
    fig.update_layout(barmode="stack", updatemenus=[_view_toggle(len(fig.data), heat_idx, bar_idx)],
                      showlegend=False)
    fig.update_xaxes(title_text="layer", dtick=1 if first.n_layers <= 40 else None)
    fig.update_yaxes(autorange="reversed")  # family order reads top-down, as in the overlap matrices
    fig.update_yaxes(title_text="language", row=1, col=1)
    method = first.provenance.get("method", "")
    title = "Language-specific neurons per layer" + (f" ({method})" if method and len(names) == 1 else "")
    return _style(fig, title, height=max(360, 26 * len(langs) + 160), width=max(700, 520 * len(names)))


def _check_comparable(sets: Mapping[str, NeuronSet]) -> None:
    """Side-by-side panels share one language axis and one layer axis, so every set must match the first."""
    names = list(sets)
    first = sets[names[0]]
    for name, ns in sets.items():
        if ns.n_layers != first.n_layers or set(ns.languages) != set(first.languages):
            raise LensSteerError(f"neuron set {name!r} has other languages or layers than {names[0]!r};"
                                 " compare sets from the same model and languages")


def _counts_in_order(ns: NeuronSet, langs: Sequence[str]) -> np.ndarray:
    """Neuron counts [lang, layer] as floats with rows in ``langs`` order: each set may list its languages in its
    own order, but all panels share one language axis."""
    counts = ns.counts().numpy()  # [lang, layer]
    idx = [ns.languages.index(c) for c in langs]
    return counts[idx].astype(float)


def _row_share(z: np.ndarray) -> np.ndarray:
    """Each cell as a share of its row's total, 0 for an all-zero row (a language with no neurons must not
    show NaN in the hover)."""
    totals = z.sum(axis=1, keepdims=True)
    return np.divide(z, totals, out=np.zeros_like(z), where=totals > 0)


def _count_heatmap(z: np.ndarray, share: np.ndarray, *, langs: list[str], labels: list[str], layers: list[int],
                   zmax: float, name: str, first_panel: bool) -> go.Heatmap:
    """One panel's heatmap: every panel gets the same ``zmax`` so colours compare across sets, and only the first
    draws the colour bar (one bar for the shared scale)."""
    custom = np.dstack([np.array([labels] * len(layers)).T, share * 100])
    return go.Heatmap(
        z=z, x=layers, y=langs, customdata=custom, zmin=0, zmax=zmax, colorscale=SEQUENTIAL,
        showscale=first_panel, colorbar=dict(title=dict(text="neurons"), len=0.9),
        hovertemplate="%{customdata[0]}<br>layer %{x}<br>%{z:.0f} neurons<br>"
                      "%{customdata[1]:.1f}% of this language's neurons<extra>" + name + "</extra>",
    )


def _count_bars(z: np.ndarray, share: np.ndarray, *, langs: list[str], labels: list[str], layers: list[int],
                name: str, first_panel: bool) -> list[go.Bar]:
    """One panel's stacked bars, one trace per language, hidden until the toggle shows them. Only the first panel
    puts them in the legend (the legend groups tie each language's bars across panels)."""
    return [go.Bar(
        x=layers, y=z[i], name=code, legendgroup=code, showlegend=first_panel, visible=False,
        marker_color=DEFAULT_COLOURS[i % len(DEFAULT_COLOURS)],  # same colour in every panel
        customdata=np.stack([share[i] * 100], axis=-1),
        hovertemplate=f"{labels[i]}<br>layer %{{x}}<br>%{{y:.0f}} neurons<br>"
                      "%{customdata[0]:.1f}% of this language's neurons<extra>" + name + "</extra>",
    ) for i, code in enumerate(langs)]


def _view_toggle(n_traces: int, heat_idx: list[int], bar_idx: list[int]) -> dict[str, Any]:
    """The heatmap / stacked-bars buttons: each shows one kind of trace and hides the other, inside the figure so
    that the toggle works in a static HTML file."""
    show_heat = [i in heat_idx for i in range(n_traces)]
    show_bars = [i in bar_idx for i in range(n_traces)]
    return dict(
        type="buttons", direction="right", x=1.0, xanchor="right", y=1.13, yanchor="bottom",
        buttons=[dict(label="heatmap", method="update", args=[{"visible": show_heat}, {"showlegend": False}]),
                 dict(label="stacked bars", method="update", args=[{"visible": show_bars}, {"showlegend": True}])],
    )


def overlap_heatmap(neurons: NeuronSet, kind: str = "count", order: str = "family") -> go.Figure:
    """K x K heatmap of neurons shared by two languages (``kind="count"``) or their Jaccard similarity
    (``kind="jaccard"``), annotated; the diagonal of the count matrix is each language's own total.

    >>> ns = NeuronSet(["en", "fr"], {"en": [[1, 3], []], "fr": [[3], [0]]}, n_layers=2, d_mlp=4)
    >>> overlap_heatmap(ns, "jaccard").data[0].z.round(2).tolist()
    [[1.0, 0.33], [0.33, 1.0]]
    """
    if kind not in ("count", "jaccard"):
        raise LensSteerError(f"unknown overlap kind {kind!r}; use count or jaccard")
    matrix = (neurons.overlap() if kind == "count" else neurons.jaccard()).double().numpy()
    codes = neurons.languages
    if order == "cluster":
        langs = order_languages(codes, "cluster", neurons.jaccard().double().numpy())
    else:
        langs = order_languages(codes, order)
    idx = [codes.index(c) for c in langs]
    z = matrix[np.ix_(idx, idx)]
    labels = [language_label(c) for c in langs]
    custom = np.dstack(np.meshgrid(labels, labels))  # [row, col, (x label, y label)]
    text_fmt = "%{z:.0f}" if kind == "count" else "%{z:.2f}"
    title = "Neurons shared between languages" if kind == "count" else "Jaccard similarity of language neuron sets"
    fig = go.Figure(go.Heatmap(
        z=z, x=langs, y=langs, customdata=custom, colorscale=SEQUENTIAL, zmin=0,
        zmax=None if kind == "count" else 1, texttemplate=text_fmt if len(langs) <= 24 else None,
        colorbar=dict(title=dict(text="shared neurons" if kind == "count" else "Jaccard")),
        hovertemplate="%{customdata[1]} / %{customdata[0]}<br>" + ("%{z:.0f} shared neurons" if kind == "count"
                                                                   else "Jaccard %{z:.3f}") + "<extra></extra>",
    ))
    fig.update_xaxes(title_text="language", side="bottom")
    fig.update_yaxes(title_text="language", autorange="reversed")
    size = max(420, 34 * len(langs) + 180)
    return _style(fig, title, height=size, width=size + 80)


# ---------------------------------------------------------------------------------------------------------------
# Language Steering Shift
# ---------------------------------------------------------------------------------------------------------------
def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV artifact (``lss.csv``, ``forcing.csv``, ``eval_*.csv``) as a DataFrame, ``layers`` kept as text
    (:func:`lens_steer.run.read_table`; :meth:`lens_steer.run.Run.table` also checks it belongs to the run)."""
    return run_artifacts.read_table(path)


def _as_frame(rows: pd.DataFrame | Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    frame = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if "layers" in frame:
        frame["layers"] = frame["layers"].astype(str)
    return frame


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

    def grid(f: str) -> np.ndarray:
        part = frame[frame["factor"] == f].groupby(["source", "target"])[metric].mean()
        z = np.full((len(langs), len(langs)), np.nan)
        for (s, t), v in part.items():
            if s != t and s in langs and t in langs:
                z[langs.index(s), langs.index(t)] = v
        return z

    grids = {f: grid(f) for f in factors}
    labels = [language_label(c) for c in langs]
    custom = np.dstack(np.meshgrid(labels, labels))
    first = factors[0]
    fig = go.Figure(go.Heatmap(
        z=grids[first], x=langs, y=langs, customdata=custom, colorscale=SEQUENTIAL,
        zmin=0 if unit else None, zmax=1 if unit else None, texttemplate="%{z:.2f}" if len(langs) <= 20 else None,
        colorbar=dict(title=dict(text=_metric_label(metric))), hoverongaps=False,
        hovertemplate="source %{customdata[1]}<br>target %{customdata[0]}<br>" + metric + " %{z:.3f}<extra></extra>",
    ))
    if len(factors) > 1:
        fig.update_layout(updatemenus=[dict(
            x=1.0, xanchor="right", y=1.12, yanchor="bottom", active=0,
            buttons=[dict(label=f, method="update", args=[{"z": [grids[f].tolist()]},
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
    from lens_steer.intervals import bootstrap_mean_ci
    import torch

    fig = go.Figure()
    for t in order_languages(list(dict.fromkeys(frame["target"]))):
        curve = frame[frame["target"] == t].groupby(x)[metric].mean().sort_index()
        fig.add_trace(go.Scatter(x=curve.index, y=curve.values, mode=mode, name=t, opacity=0.55,
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
    logp of the source answer), with 95% intervals when ``lss.csv`` carries them. Needs the columns
    ``target_gain`` and ``source_damage``."""
    frame = _as_frame(lss)
    if frame.empty or not {"target_gain", "source_damage"} <= set(frame):
        return _empty("Target gain against source damage", "no target_gain / source_damage columns in this run")
    frame = frame[frame["layers"] == "all"]
    agg = frame.groupby("factor", sort=False)[["target_gain", "source_damage"]].mean()
    fig = go.Figure(go.Scatter(
        x=agg["source_damage"], y=agg["target_gain"], mode="markers+text", text=agg.index,
        textposition="top center", marker=dict(size=12, color=[CONTROL_COLOUR if is_control(f) else
                                                                 "#1f77b4" for f in agg.index]),
        hovertemplate="%{text}<br>source damage %{x:.2f} nats<br>target gain %{y:.2f} nats<extra></extra>"))
    fig.add_hline(y=0, line_color="#bbb")
    fig.add_vline(x=0, line_color="#bbb")
    fig.update_xaxes(title_text="source damage: mean change of logp(o_s | x_s) (nats)")
    fig.update_yaxes(title_text="target gain: mean change of logp(o_t | x_s) (nats)")
    return _style(fig, "Target gain against source damage, per factor", height=480, width=720)


def _joined_labels(points: pd.DataFrame, dx: float, dy: float = 0.05) -> dict[str, str]:
    """Point labels that do not print over each other: methods within ``dx`` and ``dy`` of an earlier one share its
    label ("prompt:en, prompt:native") and show none of their own.

    >>> _joined_labels(pd.DataFrame({"source_damage": [0.1, 0.2, -4.0], "forcing": [0.0, 0.0, 0.6]},
    ...                             index=["prompt:en", "prompt:native", "p_max"]), dx=0.5)
    {'prompt:en': 'prompt:en, prompt:native', 'prompt:native': '', 'p_max': 'p_max'}
    """
    labels: dict[str, str] = {}
    anchors: list[tuple[str, float, float]] = []
    for name, (x, y) in zip(points.index, points.itertuples(index=False)):
        hit = next((a for a, ax, ay in anchors if abs(x - ax) < dx and abs(y - ay) < dy), None)
        if hit is None:
            anchors.append((name, x, y))
            labels[name] = name
        else:
            labels[hit] += f", {name}"
            labels[name] = ""
    return labels


def compare_methods(rows: pd.DataFrame | Sequence[Mapping[str, Any]]) -> go.Figure:
    """``compare.csv`` as one picture: per method, forcing success (does it make the model write t?) against source
    damage (what it costs the source answer, nats), the method filled, its control hollow in the same colour and
    joined to it by a dotted line; ``none`` (no intervention) as a black cross.

    >>> rows = [dict(method="none", source_damage=0.0, forcing=0.1), dict(method="p_max", source_damage=-2.0,
    ...         forcing=0.4), dict(method="control:p_max", source_damage=-0.1, forcing=0.1)]
    >>> [t.name for t in compare_methods(rows).data]
    ['none', 'p_max', 'p_max (control)']
    """
    frame = _as_frame(rows)
    if frame.empty or not {"method", "source_damage", "forcing"} <= set(frame):
        return _empty("Forcing success against source damage", "no compare.csv rows")
    frame["method"] = frame["method"].astype(str)
    xs = pd.to_numeric(frame["source_damage"], errors="coerce").dropna()
    lo, hi = min(float(xs.min()) if len(xs) else 0.0, 0.0), max(float(xs.max()) if len(xs) else 0.0, 0.0)
    pad = 0.12 * (hi - lo) or 1.0  # room for the labels at both ends (plotly's autorange ignores text)
    fig = go.Figure()

    def hover(r: Mapping[str, Any]) -> str:
        parts = [f"{k} {r[k]:.3g}" for k in ("alpha", "lss", "target_wins", "repetition", "udhr_ppl_self")
                 if k in r and isinstance(r[k], (int, float)) and r[k] == r[k]]
        layer = r.get("layer")
        return ", ".join(parts + ([f"layer {layer}"] if layer not in (None, "", "-", "all") and layer == layer else []))

    base = frame[frame["method"] == "none"]
    for _, r in base.iterrows():
        fig.add_trace(go.Scatter(x=[r["source_damage"]], y=[r["forcing"]], mode="markers+text", name="none",
                                 text=["none"], textposition="bottom center",
                                 marker=dict(symbol="x", size=12, color="black"),
                                 hovertemplate="no intervention<br>forcing %{y:.2f}<extra></extra>"))
    methods = [m for m in frame["method"] if m != "none" and not m.startswith("control:")]
    # a tenth of the x span (0 included) apart, or their labels overlap
    labels = _joined_labels(frame.set_index("method").loc[methods, ["source_damage", "forcing"]],
                            dx=0.1 * (hi - lo) or 0.1)
    for i, m in enumerate(methods):
        colour = DEFAULT_COLOURS[i % len(DEFAULT_COLOURS)]
        r = frame[frame["method"] == m].iloc[0]
        fig.add_trace(go.Scatter(x=[r["source_damage"]], y=[r["forcing"]], mode="markers+text", name=m,
                                 text=[labels[m]], legendgroup=m,
                                 # a joined label is long: it grows toward the middle of the plot, never off its edge
                                 textposition=("top center" if ", " not in labels[m] else
                                               "top left" if r["source_damage"] > (lo + hi) / 2 else "top right"),
                                 marker=dict(size=13, color=colour, line=dict(width=1, color="white")),
                                 hovertemplate=f"{m}<br>damage %{{x:.2f}} nats, forcing %{{y:.2f}}<br>{hover(r)}"
                                               "<extra></extra>"))
        ctrl = frame[frame["method"] == f"control:{m}"]
        if not ctrl.empty:
            c = ctrl.iloc[0]
            fig.add_trace(go.Scatter(x=[r["source_damage"], c["source_damage"]], y=[r["forcing"], c["forcing"]],
                                     mode="lines+markers", name=f"{m} (control)", legendgroup=m, showlegend=False,
                                     line=dict(color=colour, dash="dot", width=1),
                                     marker=dict(size=[0, 11], symbol="circle-open", color=colour, line=dict(width=2)),
                                     hovertemplate=f"control:{m}<br>damage %{{x:.2f}} nats, forcing %{{y:.2f}}"
                                                   f"<br>{hover(c)}<extra></extra>"))
    fig.add_vline(x=0, line_color="#bbb")
    fig.update_xaxes(title_text="source damage: mean change of logp(o_s | x_s) (nats; left = more damage)",
                     range=[lo - pad, hi + pad])
    fig.update_yaxes(title_text="forcing success (outputs detected as the target)", range=[-0.03, 1.03])
    return _style(fig, "Steering methods: forcing success against source damage (hollow: the method's control)",
                  height=520, width=820)


# ---------------------------------------------------------------------------------------------------------------
# Downstream evaluation
# ---------------------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------------------
# Per-layer neuron inspector
# ---------------------------------------------------------------------------------------------------------------
def layer_inspector(stats: Stats, neurons: NeuronSet, layers: Sequence[int] | None = None,
                    order: str = "family", max_neurons: int = 400) -> go.Figure:
    """Neurons x languages activation-probability heatmap of one layer at a time, with a layer slider inside the
    figure. Crosses mark the language(s) each neuron is assigned to; hover shows p, p_max and p_median.

    Only neurons assigned to some language are shown (at most ``max_neurons`` per layer, by highest probability),
    so the page stays light: 18 layers of Gemma-3-270M add well under 1 MB.
    """
    layers = list(range(stats.n_layers)) if layers is None else list(layers)
    if not layers:
        raise LensSteerError("layer_inspector needs at least one layer")
    data = InspectorData(stats, neurons)
    langs = order_languages(neurons.languages, order)
    col = [neurons.languages.index(c) for c in langs]
    frames = {layer: _inspector_frame(data, layer, langs, col, max_neurons) for layer in layers}
    first = frames[layers[0]]
    fig = go.Figure([
        go.Heatmap(z=first["z"], x=langs, y=first["y"], customdata=first["custom"], colorscale=SEQUENTIAL, zmin=0,
                   zmax=1, colorbar=dict(title=dict(text="activation<br>probability")), hoverongaps=False,
                   hovertemplate="neuron %{customdata[3]} (assigned: %{customdata[4]})<br>%{customdata[0]}<br>"
                                 "p = %{z:.3f}<br>p_max = %{customdata[1]:.3f}<br>p_median = %{customdata[2]:.3f}"
                                 "<extra></extra>"),
        go.Scatter(x=first["mx"], y=first["my"], mode="markers", name="assigned",
                   marker=dict(symbol="x-thin", size=9, line=dict(width=2, color="white")), hoverinfo="skip"),
    ])
    height = max(520, min(1400, 12 * max(f["n"] for f in frames.values()) + 220))
    steps = _inspector_steps(frames, layers, langs)
    fig.update_layout(sliders=[dict(active=0, steps=steps, currentvalue=dict(prefix="layer "), pad=dict(t=50),
                                    x=0.0, len=1.0)], showlegend=False)
    fig.update_xaxes(title_text="language", side="top")
    fig.update_yaxes(title_text="neuron (index in the layer)", autorange="reversed", type="category")
    title = _inspector_title(layers[0], first["n"])
    fig = _style(fig, title, height=height, width=max(640, 40 * len(langs) + 260))
    fig.update_layout(margin=dict(t=110))
    return fig


def _inspector_title(layer: int, n: int) -> str:
    """The figure title for one layer; each slider step sets it, so it always names the layer on show."""
    return f"Layer {layer}: activation probability of its {n} language neurons (x = assigned)"


def _inspector_frame(data: InspectorData, layer: int, langs: list[str], col: list[int],
                     max_neurons: int) -> dict[str, Any]:
    """One layer's heatmap rows (z, y, hover data) and cross marks (mx, my), ``langs`` ordered columns (``col``:
    their indices in the data). A layer with no language neurons gets one blank placeholder row, so the slider
    can still show it."""
    if not 0 <= layer < data.n_layers:
        raise LensSteerError(f"layer {layer} is outside 0..{data.n_layers - 1}")
    idx = np.flatnonzero(data.mask[layer].any(axis=1))
    if len(idx) > max_neurons:  # the most active neurons, kept in index order
        top = np.argsort(-data.prob[layer][idx].max(axis=1), kind="stable")[:max_neurons]
        idx = np.sort(idx[top])
    if len(idx) == 0:
        return dict(z=[[None] * len(langs)], y=["(none)"], custom=[[["", 0, 0, -1, ""]] * len(langs)], mx=[], my=[],
                    n=0)
    labels = [language_label(c) for c in langs]
    prob = data.prob[layer][idx][:, col].round(4)                   # [n, lang]
    pmax = data.pmax[col][:, layer, idx].T.round(4)
    pmed = data.pmed[col][:, layer, idx].T.round(4)
    assigned = data.mask[layer][idx][:, col]
    owners = [",".join(c for c, a in zip(langs, row) if a) for row in assigned]
    custom = [[[labels[k], float(pmax[i, k]), float(pmed[i, k]), int(j), owners[i]] for k in range(len(langs))]
              for i, j in enumerate(idx)]
    ys = [f"n{j}" for j in idx]
    rows, cols = np.nonzero(assigned)
    return dict(z=prob.tolist(), y=ys, custom=custom, mx=[langs[c] for c in cols], my=[ys[r] for r in rows],
                n=len(idx))


def _inspector_steps(frames: Mapping[int, dict[str, Any]], layers: list[int],
                     langs: list[str]) -> list[dict[str, Any]]:
    """One slider step per entry of ``layers`` (in the caller's order): it restyles the heatmap (trace 0) and the
    crosses (trace 1) with that layer's data and retitles the figure, inside the figure so that it works in a
    static HTML file."""
    return [dict(label=str(layer), method="update",
                 args=[{"z": [frames[layer]["z"], None], "y": [frames[layer]["y"], frames[layer]["my"]],
                        "customdata": [frames[layer]["custom"], None], "x": [langs, frames[layer]["mx"]]},
                       {"title.text": _inspector_title(layer, frames[layer]["n"])}])
            for layer in layers]


# ---------------------------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------------------------
def browser_path() -> str | None:
    """The Chromium kaleido will use: ``$BROWSER_PATH`` or the first chromium/chrome on PATH."""
    env = os.environ.get("BROWSER_PATH")
    if env:
        return env if Path(env).exists() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _check_browser() -> None:
    if browser_path() is None:
        raise LensSteerError("static PNG/SVG export needs Chromium: run `make setup` (installs Debian's chromium) or"
                             " `apt-get install -y chromium`, or set BROWSER_PATH; .html export works without it")


def save_figure(fig: go.Figure, path: str | Path, width: int | None = None, height: int | None = None,
                scale: float = 2.0) -> Path:
    """Write ``fig`` as .png, .svg (kaleido + Chromium, offline) or a self-contained .html, atomically."""
    return save_figures([(fig, path)], width=width, height=height, scale=scale)[0]


def parse_formats(text: str) -> list[str]:
    """The file formats of ``lens-steer figures --format``.

    >>> parse_formats("PNG, svg")
    ['png', 'svg']
    """
    formats = [f.strip().lower() for f in text.split(",") if f.strip()]
    if not formats or any(f not in ("png", "svg", "html") for f in formats):
        raise LensSteerError(f"--format {text!r}: use png, svg or html (comma-separated)")
    return formats


def save_figures(items: Sequence[tuple[go.Figure, str | Path]], width: int | None = None, height: int | None = None,
                 scale: float = 2.0) -> list[Path]:
    """Write several figures; the static ones share one Chromium (about 0.8 s per PNG instead of 2.5 s)."""
    paths = [Path(p) for _, p in items]
    bad = [p for p in paths if p.suffix.lower() not in (".png", ".svg", ".html")]
    if bad:
        raise LensSteerError(f"cannot write {bad[0]}: use a .png, .svg or .html file name")
    static = [(f, p) for f, p in zip((f for f, _ in items), paths) if p.suffix.lower() != ".html"]
    for fig, p in zip((f for f, _ in items), paths):
        if p.suffix.lower() == ".html":
            p.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(p) as tmp:
                fig.write_html(tmp, include_plotlyjs=True, full_html=True)
    if static:
        _check_browser()
        import warnings

        import kaleido

        for _, p in static:
            p.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            started = False
            try:
                kaleido.start_sync_server(mathjax=False, silence_warnings=True)
                started = True
            except RuntimeError:
                pass  # a server is already running (e.g. started by the caller); use it
            try:
                for fig, p in static:
                    with atomic_path(p) as tmp:
                        fig.write_image(str(tmp), format=p.suffix.lower()[1:], width=width or fig.layout.width,
                                        height=height or fig.layout.height, scale=scale)
            except Exception as exc:  # kaleido raises many types; say what to do
                if isinstance(exc, LensSteerError):
                    raise
                raise LensSteerError(f"static export to {p} failed ({type(exc).__name__}: {str(exc)[:200]}); check"
                                     " that Chromium starts (`chromium --headless --version`) or write .html") from exc
            finally:
                if started:
                    kaleido.stop_sync_server(silence_warnings=True)
    return paths
