"""How stable a neuron set is (``lens-steer stability``): per language, the Jaccard of resampled sets with the
full set (95% interval) and the split-half Jaccard; per language and layer, the share of stable neurons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lens_steer.plots.languages import language_label, order_languages
from lens_steer.plots.style import DEFAULT_COLOURS, SEQUENTIAL, _style


def set_stability(table: pd.DataFrame, stable_per_layer: np.ndarray | None = None, order: str = "family") -> go.Figure:
    """Left: per language, the mean Jaccard of the resampled sets with the full set with its 95% interval
    (whiskers) and the split-half Jaccard (diamond). Right (with ``stable_per_layer``, [lang, layer] in the
    table's language order): the share of each layer's neurons chosen in >= 90% of resamples.

    >>> t = pd.DataFrame({"lang": ["en", "fr"], "n_neurons": [5, 3], "jaccard_mean": [0.9, 0.7],
    ...                   "jaccard_low": [0.8, 0.5], "jaccard_high": [1.0, 0.9], "split_half_jaccard": [0.85, 0.6],
    ...                   "share_stable": [0.8, 0.33], "resamples": [200, 200], "folds": [10, 10]})
    >>> [t.type for t in set_stability(t, np.array([[1.0, 0.5], [np.nan, 0.2]])).data]
    ['scatter', 'scatter', 'heatmap']
    """
    langs = order_languages(list(table["lang"]), order)
    rows = table.set_index("lang").loc[langs]
    labels = [language_label(c) for c in langs]
    panels = 2 if stable_per_layer is not None else 1
    fig = make_subplots(rows=1, cols=panels, column_widths=[0.4, 0.6][:panels] if panels == 2 else None,
                        subplot_titles=["Jaccard with the full set", "share of stable neurons per layer"][:panels],
                        horizontal_spacing=0.12)
    mean = rows["jaccard_mean"].to_numpy(float)
    fig.add_trace(go.Scatter(
        x=mean, y=labels, mode="markers", name="resampled sets (mean, 95% interval)",
        marker=dict(color=DEFAULT_COLOURS[0], size=9),
        error_x=dict(type="data", symmetric=False, array=rows["jaccard_high"].to_numpy(float) - mean,
                     arrayminus=mean - rows["jaccard_low"].to_numpy(float)),
        customdata=np.stack([rows["n_neurons"], rows["share_stable"]], axis=1),
        hovertemplate="%{y}: Jaccard %{x:.3f}<br>%{customdata[0]} neurons, %{customdata[1]:.0%} stable"
                      "<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=rows["split_half_jaccard"].to_numpy(float), y=labels, mode="markers",
                             name="split half (even vs odd folds)",
                             marker=dict(color=DEFAULT_COLOURS[1], symbol="diamond", size=9),
                             hovertemplate="%{y}: split-half Jaccard %{x:.3f}<extra></extra>"), row=1, col=1)
    fig.update_xaxes(title_text="Jaccard", range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    if stable_per_layer is not None:
        order_idx = [list(table["lang"]).index(c) for c in langs]
        z = np.asarray(stable_per_layer, dtype=float)[order_idx]
        fig.add_trace(go.Heatmap(z=z, x=list(range(z.shape[1])), y=labels, colorscale=SEQUENTIAL, zmin=0, zmax=1,
                                 colorbar=dict(title="stable", tickformat=".0%"),
                                 hovertemplate="%{y}, layer %{x}: %{z:.0%} stable<extra></extra>"), row=1, col=2)
        fig.update_xaxes(title_text="layer", row=1, col=2)
        fig.update_yaxes(autorange="reversed", showticklabels=False, row=1, col=2)
    first = table.iloc[0] if len(table) else {}
    title = (f"Neuron-set stability ({int(first['resamples'])} bootstrap resamples of {int(first['folds'])} folds)"
             if len(table) else "Neuron-set stability")
    return _style(fig, title, height=max(360, 26 * len(langs) + 160), width=1000 if panels == 2 else 650,
                  legend=dict(orientation="h", y=-0.15))

