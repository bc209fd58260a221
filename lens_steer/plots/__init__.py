"""Interactive plotly figures of a run: where language neurons live, how they overlap, how steering responds.

Every builder is a pure function of artifacts already on disk (a :class:`NeuronSet`, :class:`Stats`, the rows of
``lss.csv`` or an evaluation table) and returns a ``plotly.graph_objects.Figure``; nothing here runs a model.
Interactive controls (dropdowns, sliders, heatmap/bars toggles) live inside the figure's layout, so they work in
a static HTML file with no Python kernel behind it.

>>> from lens_steer.neurons import NeuronSet
>>> ns = NeuronSet(["en", "fr"], {"en": [[1, 3], []], "fr": [[3], [0]]}, n_layers=2, d_mlp=4)
>>> fig = layer_distribution(ns)
>>> fig.data[0].z.shape  # [lang, layer]
(2, 2)

One idea per module, every public name re-exported here:

* :mod:`~lens_steer.plots.languages`: the language axis (family order, labels).
* :mod:`~lens_steer.plots.style`: palettes, the shared look, the placeholder for "nothing to draw".
* :mod:`~lens_steer.plots.frames`: the CSV artifacts as DataFrames (:func:`read_table`).
* :mod:`~lens_steer.plots.neurons`: :func:`layer_distribution`, :func:`overlap_heatmap`.
* :mod:`~lens_steer.plots.lss`: :func:`lss_matrix`, :func:`lss_curve`, :func:`layer_lss_curve`,
  :func:`gain_damage`.
* :mod:`~lens_steer.plots.compare`: :func:`compare_methods`.
* :mod:`~lens_steer.plots.downstream`: :func:`downstream_heatmap`, :func:`downstream_values`.
* :mod:`~lens_steer.plots.inspector`: :func:`layer_inspector`, :func:`probability_distribution`.
* :mod:`~lens_steer.plots.stability`: :func:`set_stability` (``lens-steer stability``).
* :mod:`~lens_steer.plots.export`: :func:`save_figure`, :func:`save_figures` (kaleido + Chromium for PNG/SVG).
"""

from __future__ import annotations

from lens_steer.inspection import InspectorData, inspector_tables  # noqa: F401 - re-exported
from lens_steer.plots.compare import compare_methods  # noqa: F401 - re-exported
from lens_steer.plots.downstream import downstream_heatmap, downstream_values  # noqa: F401 - re-exported
from lens_steer.plots.export import browser_path, parse_formats, save_figure, save_figures  # noqa: F401
from lens_steer.plots.frames import read_table  # noqa: F401 - re-exported
from lens_steer.plots.inspector import layer_inspector, probability_distribution  # noqa: F401 - re-exported
from lens_steer.plots.languages import FAMILY, FAMILY_ORDER, language_label, order_languages  # noqa: F401
from lens_steer.plots.lss import (  # noqa: F401 - re-exported
    factor_multiple,
    gain_damage,
    layer_lss_curve,
    lss_curve,
    lss_matrix,
)
from lens_steer.plots.neurons import layer_distribution, overlap_heatmap  # noqa: F401 - re-exported
from lens_steer.plots.stability import set_stability  # noqa: F401 - re-exported
from lens_steer.plots.style import CONTROL_COLOUR, DEFAULT_COLOURS, DIVERGING, SEQUENTIAL  # noqa: F401
