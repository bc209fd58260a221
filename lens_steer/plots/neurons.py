"""Where language neurons live: counts per language and layer, and how many two languages share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lens_steer.errors import LensSteerError
from lens_steer.neurons import NeuronSet
from lens_steer.plots.languages import language_label, order_languages
from lens_steer.plots.style import DEFAULT_COLOURS, SEQUENTIAL, _style


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
