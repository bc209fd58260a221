"""The per-layer neuron inspector: one layer's language neurons against every language, a layer slider inside the
figure so that it works in a static HTML file."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from lens_steer.errors import LensSteerError, check_neuron
from lens_steer.inspection import InspectorData
from lens_steer.neurons import NeuronSet
from lens_steer.plots.languages import language_label, order_languages
from lens_steer.plots.style import SEQUENTIAL, _style
from lens_steer.stats import Stats


def layer_inspector(stats: Stats, neurons: NeuronSet, layers: Sequence[int] | None = None,
                    order: str = "family", max_neurons: int = 400, frequency: Any = None) -> go.Figure:
    """Neurons x languages activation-probability heatmap of one layer at a time, with a layer slider inside the
    figure. Crosses mark the language(s) each neuron is assigned to; hover shows p, p_max and p_median.

    Only neurons assigned to some language are shown (at most ``max_neurons`` per layer, by highest probability),
    so the page stays light: 18 layers of Gemma-3-270M add well under 1 MB. With ``frequency`` (``lens-steer
    stability``'s [lang, layer, d_mlp]) hover also shows how often resamples choose the neuron for the language.
    """
    layers = list(range(stats.n_layers)) if layers is None else list(layers)
    if not layers:
        raise LensSteerError("layer_inspector needs at least one layer")
    data = InspectorData(stats, neurons, frequency)
    langs = order_languages(neurons.languages, order)
    col = [neurons.languages.index(c) for c in langs]
    frames = {layer: _inspector_frame(data, layer, langs, col, max_neurons) for layer in layers}
    first = frames[layers[0]]
    fig = go.Figure([
        go.Heatmap(z=first["z"], x=langs, y=first["y"], customdata=first["custom"], colorscale=SEQUENTIAL, zmin=0,
                   zmax=1, colorbar=dict(title=dict(text="activation<br>probability")), hoverongaps=False,
                   hovertemplate="neuron %{customdata[3]} (assigned: %{customdata[4]})<br>%{customdata[0]}<br>"
                                 "p = %{z:.3f}<br>p_max = %{customdata[1]:.3f}<br>p_median = %{customdata[2]:.3f}"
                                 + ("<br>chosen in %{customdata[5]:.0%} of resamples" if data.freq is not None else "")
                                 + "<extra></extra>"),
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
    check_neuron(layer, None, data.n_layers, 0)
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
    if data.freq is not None:  # the selection frequency of lens-steer stability, per (neuron, language)
        freq = data.freq[col][:, layer, idx].T.round(4)
        custom = [[cell + [float(freq[i, k])] for k, cell in enumerate(row)] for i, row in enumerate(custom)]
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


def probability_distribution(frame: Any, languages: Sequence[str], layer: int) -> go.Figure:
    """The distribution of the activation probability p of one layer's language neurons, one histogram per
    language (``frame``: :meth:`InspectorData.neurons_table`, with a ``p_<lang>`` column per language).

    >>> import pandas as pd
    >>> fig = probability_distribution(pd.DataFrame({"p_en": [0.1, 0.9], "p_fr": [0.2, 0.3]}), ["en", "fr"], 3)
    >>> [t.name for t in fig.data]
    ['en', 'fr']
    """
    fig = go.Figure([go.Histogram(x=frame[f"p_{code}"], name=code, opacity=0.6, xbins=dict(start=0, end=1, size=0.05),
                                  hovertemplate=f"{language_label(code)}<br>p %{{x}}<br>%{{y}} neurons<extra></extra>")
                     for code in languages])
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title_text="activation probability p", range=[0, 1])
    fig.update_yaxes(title_text="neurons")
    return _style(fig, f"Activation probability of layer {layer}'s language neurons", height=340)
