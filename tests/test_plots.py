"""Plots: every builder on small hand-made NeuronSets, Stats and lss.csv-like rows with known answers.

Figures are checked through their data (z grids, x/y, customdata, updatemenus, sliders, shapes), not by looking at
them; only the PNG/SVG export test needs Chromium.
"""

from __future__ import annotations

import os
import re
import struct

import numpy as np
import pandas as pd
import pytest
import torch

from lens_steer import plots
from lens_steer.errors import LensSteerError
from lens_steer.neurons import NeuronSet
from lens_steer.plots import (
    downstream_heatmap,
    factor_multiple,
    gain_damage,
    inspector_tables,
    language_label,
    layer_distribution,
    layer_inspector,
    layer_lss_curve,
    lss_curve,
    lss_matrix,
    order_languages,
    overlap_heatmap,
    read_table,
    save_figure,
    save_figures,
)
from lens_steer.stats import Stats


# ---------------------------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------------------------
def make_neurons(assign: dict[str, list[list[int]]], n_layers: int, d_mlp: int, method: str = "lape",
                 languages: list[str] | None = None) -> NeuronSet:
    """A NeuronSet from ``{lang: [[layer 0 indices], [layer 1], ...]}`` (copied, so callers can reuse dicts)."""
    langs = list(languages or assign)
    return NeuronSet(langs, {c: [list(idx) for idx in assign[c]] for c in assign}, n_layers=n_layers,
                     d_mlp=d_mlp, provenance={"method": method})


def make_stats(languages: list[str], n_layers: int, d_mlp: int, n_sent: int = 4, seed: int = 0) -> Stats:
    """Tiny random statistics honouring the tensor contract (distinct token counts, distinct sentence means)."""
    g = torch.Generator().manual_seed(seed)
    k = len(languages)
    n_tokens = torch.tensor([40 + 17 * i for i in range(k)], dtype=torch.int64)
    over_zero = (torch.rand(n_layers, d_mlp, k, generator=g) * n_tokens.double()).long()
    act_sum = torch.rand(k, n_layers, d_mlp, generator=g, dtype=torch.float64)
    sent_means = torch.rand(k, n_sent, n_layers, d_mlp, generator=g)
    return Stats(over_zero, n_tokens, torch.full((k,), n_sent, dtype=torch.int64), act_sum, act_sum**2,
                 sent_means, {"languages": list(languages)})


def lss_row(factor: str, source: str, target: str, value: float, layers: str | int = "all", **extra) -> dict:
    return dict(factor=factor, layers=layers, source=source, target=target, lss=value, **extra)


def heatmaps(fig):
    return [t for t in fig.data if t.type == "heatmap"]


def annotation_texts(fig) -> list[str]:
    return [a.text for a in fig.layout.annotations]


def assert_empty_figure(fig, words: str) -> None:
    """An annotated placeholder: no traces, a title, and a message mentioning ``words``."""
    assert len(fig.data) == 0
    assert fig.layout.title.text
    texts = annotation_texts(fig)
    assert len(texts) == 1 and words in texts[0], texts


# A 4-language, 3-layer set in non-family run order; ru has no neurons at all.
ASSIGN = {"zh": [[0, 1], [2], []], "fr": [[1], [], [3, 4, 5]], "en": [[], [0], [1]], "ru": [[], [], []]}
FAMILY_LANGS = ["en", "fr", "ru", "zh"]
COUNTS_FAMILY = np.array([[0, 1, 1], [1, 0, 3], [0, 0, 0], [2, 1, 0]], dtype=float)  # [lang, layer], family order


@pytest.fixture
def ns() -> NeuronSet:
    return make_neurons(ASSIGN, n_layers=3, d_mlp=8)


# ---------------------------------------------------------------------------------------------------------------
# Language order
# ---------------------------------------------------------------------------------------------------------------
def test_order_languages_family_puts_unknown_codes_last_in_run_order():
    assert order_languages(["zh", "yy", "ms", "en", "xx", "id", "fr"]) == ["en", "fr", "id", "ms", "zh", "yy", "xx"]
    assert order_languages([]) == []


def test_order_languages_run_keeps_the_given_order():
    assert order_languages(("zh", "en", "fr"), "run") == ["zh", "en", "fr"]


def test_order_languages_cluster_greedy_chain():
    sim = np.array([[1.0, 0.1, 0.9, 0.0],
                    [0.1, 1.0, 0.0, 0.8],
                    [0.9, 0.0, 1.0, 0.0],
                    [0.0, 0.8, 0.0, 1.0]])
    # start: highest off-diagonal total (a: 1.0); a -> c (0.9); c ties b/d at 0 -> lower index b; then d
    assert order_languages(["a", "b", "c", "d"], "cluster", sim) == ["a", "c", "b", "d"]
    # NaN similarities count as 0 and do not break the chain
    sim_nan = sim.copy()
    sim_nan[0, 1] = sim_nan[1, 0] = np.nan
    assert order_languages(["a", "b", "c", "d"], "cluster", sim_nan) == ["a", "c", "b", "d"]
    assert order_languages(["a"], "cluster", np.ones((1, 1))) == ["a"]


@pytest.mark.parametrize("similarity", [None, np.ones((2, 2))])
def test_order_languages_cluster_needs_a_matching_matrix(similarity):
    with pytest.raises(LensSteerError, match="similarity"):
        order_languages(["a", "b", "c"], "cluster", similarity)


def test_order_languages_unknown_order_raises():
    with pytest.raises(LensSteerError, match="unknown language order 'alphabet'"):
        order_languages(["en", "fr"], "alphabet")


def test_language_label():
    assert language_label("fr") == "fr French"
    assert language_label("xx") == "xx"


# ---------------------------------------------------------------------------------------------------------------
# layer_distribution
# ---------------------------------------------------------------------------------------------------------------
def test_layer_distribution_one_set_z_is_counts_in_family_order(ns):
    fig = layer_distribution(ns)
    assert [t.type for t in fig.data] == ["heatmap"] + ["bar"] * 4
    heat = fig.data[0]
    idx = [ns.languages.index(c) for c in FAMILY_LANGS]
    np.testing.assert_array_equal(heat.z, ns.counts().numpy()[idx])
    np.testing.assert_array_equal(heat.z, COUNTS_FAMILY)
    assert list(heat.y) == FAMILY_LANGS and list(heat.x) == [0, 1, 2]
    assert heat.zmin == 0 and heat.zmax == 3
    assert "(lape)" in fig.layout.title.text


def test_layer_distribution_run_order(ns):
    heat = layer_distribution(ns, order="run").data[0]
    assert list(heat.y) == ["zh", "fr", "en", "ru"]
    np.testing.assert_array_equal(heat.z, ns.counts().numpy())


def test_layer_distribution_bars_are_stacked_rows_of_the_table(ns):
    fig = layer_distribution(ns)
    assert fig.layout.barmode == "stack"
    bars = [t for t in fig.data if t.type == "bar"]
    assert [b.name for b in bars] == FAMILY_LANGS
    for bar, row in zip(bars, COUNTS_FAMILY):
        np.testing.assert_array_equal(bar.y, row)
        assert list(bar.x) == [0, 1, 2]
        assert bar.visible is False  # the heatmap is what shows first
    assert fig.data[0].visible in (None, True)


def test_layer_distribution_hover_share_is_zero_for_an_empty_language(ns):
    custom = layer_distribution(ns).data[0].customdata  # [lang, layer, (label, share %)]
    assert custom.shape == (4, 3, 2)
    assert [custom[i, 0, 0] for i in range(4)] == [language_label(c) for c in FAMILY_LANGS]
    share = custom[..., 1].astype(float)
    assert not np.isnan(share).any()
    np.testing.assert_allclose(share, [[0, 50, 50], [25, 0, 75], [0, 0, 0], [200 / 3, 100 / 3, 0]])
    bars = [t for t in layer_distribution(ns).data if t.type == "bar"]
    np.testing.assert_allclose(np.asarray(bars[2].customdata, dtype=float)[:, 0], [0, 0, 0])  # ru
    np.testing.assert_allclose(np.asarray(bars[1].customdata, dtype=float)[:, 0], [25, 0, 75])  # fr


def test_layer_distribution_zmax_at_least_one_when_all_sets_are_empty():
    empty = make_neurons({"en": [[], []], "fr": [[], []]}, n_layers=2, d_mlp=4)
    heat = layer_distribution(empty).data[0]
    assert heat.zmax == 1.0
    np.testing.assert_array_equal(heat.z, np.zeros((2, 2)))
    assert not np.isnan(heat.customdata[..., 1].astype(float)).any()


def test_layer_distribution_toggle_buttons_select_heatmaps_or_bars(ns):
    other = make_neurons({"en": [[0, 1, 2, 3, 4], [], []], "ru": [[], [7], []], "zh": [[], [], [6]],
                          "fr": [[], [], []]}, n_layers=3, d_mlp=8)
    for fig, n_heat in ((layer_distribution(ns), 1), (layer_distribution({"LAPE": ns, "activated": other}), 2)):
        menu = fig.layout.updatemenus[0]
        assert menu.type == "buttons"
        assert [b.label for b in menu.buttons] == ["heatmap", "stacked bars"]
        heat_vis = menu.buttons[0].args[0]["visible"]
        bar_vis = menu.buttons[1].args[0]["visible"]
        assert len(heat_vis) == len(bar_vis) == len(fig.data) == n_heat * 5
        assert heat_vis == [t.type == "heatmap" for t in fig.data]
        assert bar_vis == [t.type == "bar" for t in fig.data]
        assert sum(heat_vis) == n_heat and sum(bar_vis) == 4 * n_heat
        assert menu.buttons[0].args[1] == {"showlegend": False}
        assert menu.buttons[1].args[1] == {"showlegend": True}


def test_layer_distribution_two_sets_side_by_side_on_one_scale(ns):
    # the second set lists its languages in another order: each must still land on its own row
    other = make_neurons({"en": [[0, 1, 2, 3, 4], [], []], "ru": [[], [7], []], "zh": [[], [], [6]],
                          "fr": [[], [], []]}, n_layers=3, d_mlp=8)
    fig = layer_distribution({"LAPE": ns, "activated": other})
    assert [t.type for t in fig.data] == (["heatmap"] + ["bar"] * 4) * 2
    h1, h2 = heatmaps(fig)
    np.testing.assert_array_equal(h1.z, COUNTS_FAMILY)
    np.testing.assert_array_equal(h2.z, [[5, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 1]])
    assert list(h1.y) == list(h2.y) == FAMILY_LANGS
    assert h1.zmax == h2.zmax == 5 and h1.zmin == h2.zmin == 0  # shared scale: the larger of the two maxima
    assert (h1.xaxis, h2.xaxis) == ("x", "x2")  # side by side
    assert h1.showscale is True and h2.showscale is False
    assert [a.text for a in fig.layout.annotations] == ["LAPE", "activated"]
    assert "(lape)" not in fig.layout.title.text  # the method name only titles a single set
    bars = [t for t in fig.data if t.type == "bar"]
    # one legend entry per language; the same language has the same colour in both panels
    assert [b.showlegend for b in bars] == [True] * 4 + [False] * 4
    assert [b.marker.color for b in bars[:4]] == [b.marker.color for b in bars[4:]]
    assert len({b.marker.color for b in bars[:4]}) == 4
    assert [b.legendgroup for b in bars[:4]] == [b.legendgroup for b in bars[4:]] == FAMILY_LANGS


@pytest.mark.parametrize("other", [
    make_neurons({"en": [[], []], "fr": [[], []], "ru": [[], []], "zh": [[], []]}, n_layers=2, d_mlp=8),
    make_neurons({"en": [[], [], []], "fr": [[], [], []], "ru": [[], [], []]}, n_layers=3, d_mlp=8),
    make_neurons({"en": [[], [], []], "fr": [[], [], []], "ru": [[], [], []], "zh": [[], [], []],
                  "ja": [[], [], []]}, n_layers=3, d_mlp=8),
], ids=["other-layers", "fewer-languages", "more-languages"])
def test_layer_distribution_mismatching_sets_raise(ns, other):
    with pytest.raises(LensSteerError, match="other languages or layers"):
        layer_distribution({"a": ns, "b": other})


def test_layer_distribution_needs_a_set():
    with pytest.raises(LensSteerError, match="at least one"):
        layer_distribution({})


# ---------------------------------------------------------------------------------------------------------------
# overlap_heatmap
# ---------------------------------------------------------------------------------------------------------------
OVERLAP = {"zh": [[0, 1, 2], [5]], "fr": [[1, 2], []], "en": [[2], [5, 6]], "ru": [[], [7]]}


def test_overlap_heatmap_count_matches_neuronset_overlap():
    ns = make_neurons(OVERLAP, n_layers=2, d_mlp=8)
    fig = overlap_heatmap(ns, "count")
    heat = fig.data[0]
    idx = [ns.languages.index(c) for c in FAMILY_LANGS]
    expected = ns.overlap().numpy()[np.ix_(idx, idx)]
    np.testing.assert_array_equal(heat.z, expected)
    # by hand, family order en fr ru zh: en={0:2, 1:5, 1:6}, fr={0:1, 0:2}, ru={1:7}, zh={0:0, 0:1, 0:2, 1:5}
    np.testing.assert_array_equal(heat.z, [[3, 1, 0, 2], [1, 2, 0, 2], [0, 0, 1, 0], [2, 2, 0, 4]])
    totals = ns.totals()
    assert list(np.diag(heat.z)) == [totals[c] for c in FAMILY_LANGS]
    assert list(heat.x) == list(heat.y) == FAMILY_LANGS
    assert heat.zmin == 0 and heat.zmax is None
    # customdata[row][col] = (x label, y label)
    assert tuple(heat.customdata[0][3]) == ("zh Chinese", "en English")


def test_overlap_heatmap_jaccard_matches_neuronset_jaccard():
    ns = make_neurons(OVERLAP, n_layers=2, d_mlp=8)
    heat = overlap_heatmap(ns, "jaccard").data[0]
    idx = [ns.languages.index(c) for c in FAMILY_LANGS]
    np.testing.assert_allclose(heat.z, ns.jaccard().double().numpy()[np.ix_(idx, idx)])
    np.testing.assert_allclose(heat.z[0], [1, 1 / 4, 0, 2 / 5], rtol=1e-6)  # en against en, fr, ru, zh
    np.testing.assert_allclose(np.diag(heat.z), 1.0)
    assert heat.zmin == 0 and heat.zmax == 1


def test_overlap_heatmap_jaccard_of_an_empty_language_is_zero(ns):
    heat = overlap_heatmap(ns, "jaccard").data[0]
    ru = FAMILY_LANGS.index("ru")
    np.testing.assert_array_equal(heat.z[ru], [0, 0, 0, 0])
    assert not np.isnan(heat.z).any()


def test_overlap_heatmap_bad_kind_raises(ns):
    with pytest.raises(LensSteerError, match="unknown overlap kind 'dice'"):
        overlap_heatmap(ns, "dice")


def test_overlap_heatmap_cluster_puts_the_most_similar_languages_side_by_side():
    # en and zh share 4 of 5 neurons (Jaccard 0.8), fr and ru 1 of 3; family order puts en first and zh last
    ns = make_neurons({"fr": [[5, 6]], "en": [[0, 1, 2, 3]], "ru": [[6, 7]], "zh": [[0, 1, 2, 3, 4]]},
                      n_layers=1, d_mlp=8)
    family = list(overlap_heatmap(ns, "jaccard").data[0].x)
    assert abs(family.index("en") - family.index("zh")) == 3
    for kind in ("count", "jaccard"):
        heat = overlap_heatmap(ns, kind, order="cluster").data[0]
        order = list(heat.x)
        assert order == ["en", "zh", "fr", "ru"]
        assert abs(order.index("en") - order.index("zh")) == 1
        assert abs(order.index("fr") - order.index("ru")) == 1
        full = (ns.overlap() if kind == "count" else ns.jaccard()).double().numpy()
        idx = [ns.languages.index(c) for c in order]
        np.testing.assert_allclose(heat.z, full[np.ix_(idx, idx)])


# ---------------------------------------------------------------------------------------------------------------
# lss_matrix
# ---------------------------------------------------------------------------------------------------------------
def lss_table() -> tuple[list[dict], dict[str, np.ndarray]]:
    """Rows for sources/targets zh, en, fr (first seen in that order) and two factors, with the expected grids
    in family order (en, fr, zh)."""
    langs = ["en", "fr", "zh"]
    rows, grids = [], {}
    for f, base in (("p_max", 0.1), ("p_median", 0.5)):
        z = np.full((3, 3), np.nan)
        for s in ["zh", "en", "fr"]:
            for t in ["zh", "en", "fr"]:
                if s == t:
                    rows.append(lss_row(f, s, t, 0.99))  # a self pair must never reach the diagonal
                    continue
                v = base + 0.1 * langs.index(s) + 0.01 * langs.index(t)
                rows.append(lss_row(f, s, t, v))
                z[langs.index(s), langs.index(t)] = v
                rows.append(lss_row(f, s, t, 0.0, layers=langs.index(t)))  # per-layer rows are ignored
        grids[f] = z
    # duplicate rows of one pair are averaged
    rows.append(lss_row("p_max", "en", "fr", 0.31))
    grids["p_max"][0, 1] = (0.11 + 0.31) / 2
    return rows, grids


def test_lss_matrix_cells_equal_the_input_and_the_diagonal_is_blank():
    rows, grids = lss_table()
    fig = lss_matrix(rows, factor="p_max")
    heat = fig.data[0]
    assert list(heat.x) == list(heat.y) == ["en", "fr", "zh"]
    z = np.asarray(heat.z, dtype=float)
    assert np.isnan(np.diag(z)).all()
    np.testing.assert_allclose(z, grids["p_max"])  # NaN positions must agree too
    assert z[0, 1] == pytest.approx(0.21)
    assert not fig.layout.updatemenus  # one factor, no dropdown
    assert "p_max" in fig.layout.title.text


def test_lss_matrix_dropdown_has_one_button_per_factor_with_its_grid():
    rows, grids = lss_table()
    fig = lss_matrix(pd.DataFrame(rows))
    np.testing.assert_allclose(np.asarray(fig.data[0].z, dtype=float), grids["p_max"])  # first factor shows first
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == ["p_max", "p_median"]
    for b in buttons:
        np.testing.assert_allclose(np.asarray(b.args[0]["z"][0], dtype=float), grids[b.label])
        assert b.label in b.args[1]["title.text"]
    assert fig.layout.updatemenus[0].active == 0


def test_lss_matrix_unit_range_for_lss_and_free_range_otherwise():
    rows, _ = lss_table()
    heat = lss_matrix(rows).data[0]
    assert (heat.zmin, heat.zmax) == (0, 1)
    for r in rows:
        r["mean_shift"] = -2.0 * r["lss"]
    heat = lss_matrix(rows, metric="mean_shift", factor="p_median").data[0]
    assert heat.zmin is None and heat.zmax is None
    assert np.nanmin(np.asarray(heat.z, dtype=float)) == pytest.approx(-2 * 0.71)  # zh -> fr: 0.5 + 0.2 + 0.01


def test_lss_matrix_unknown_factor_raises():
    rows, _ = lss_table()
    with pytest.raises(LensSteerError, match="factor 'zero' is not in the table"):
        lss_matrix(rows, factor="zero")


def test_lss_matrix_control_in_title():
    rows, _ = lss_table()
    assert "(control random)" in lss_matrix(rows, control="random").layout.title.text


@pytest.mark.parametrize("rows, metric, words", [
    ([], "lss", "no lss rows"),
    (pd.DataFrame(), "lss", "no lss rows"),
    ([lss_row("p_max", "en", "fr", 0.5)], "lss_nontie", "no lss_nontie rows"),
    ([lss_row("p_max", "en", "fr", 0.5, layers=0), lss_row("p_max", "en", "fr", 0.5, layers=1)], "lss",
     "no all-layer lss rows"),
], ids=["empty-list", "empty-frame", "missing-metric", "only-per-layer-rows"])
def test_lss_matrix_without_data_is_an_annotated_empty_figure(rows, metric, words):
    assert_empty_figure(lss_matrix(rows, metric=metric), words)


def test_read_table_round_trip_feeds_lss_matrix(tmp_path):
    rows, grids = lss_table()
    path = tmp_path / "lss.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    frame = read_table(path)
    assert set(frame["layers"]) == {"all", "0", "1", "2"}
    np.testing.assert_allclose(np.asarray(lss_matrix(frame, factor="p_median").data[0].z, dtype=float),
                               grids["p_median"])
    with pytest.raises(LensSteerError, match="not found"):
        read_table(tmp_path / "missing.csv")


# ---------------------------------------------------------------------------------------------------------------
# factor_multiple, lss_curve, layer_lss_curve
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("p_max", ("p_max", 1.0)),
    ("p_max*2", ("p_max", 2.0)),
    (" p_median * 0.25 ", ("p_median", 0.25)),
    ("mean*1e-1", ("mean", 0.1)),
    ("scale:0.5", ("scale", 0.5)),
    ("scale: 3", ("scale", 3.0)),
    ("add:3", ("add", 3.0)),
    ("add:-1.5", ("add", -1.5)),
    ("control:p_max*2", ("control:p_max", 2.0)),
    ("zero", None),
    ("set:0", None),
    ("scale", None),
    ("p_min*2", None),
    ("p_max*two", None),
    ("", None),
])
def test_factor_multiple(text, expected):
    assert factor_multiple(text) == expected


def dose_rows() -> list[dict]:
    """p_max at four multiples for pairs en->fr, fr->en, en->zh, zh->en (given out of order), plus noise the
    curve must ignore: a non-dose factor, a one-multiple family, per-layer rows and a NaN row."""
    values = {0.5: [0.1, 0.2, 0.3, 0.0], 1.0: [0.4, 0.5, 0.6, 0.3], 2.0: [0.7, 0.8, 0.6, 0.5],
              4.0: [0.9, 1.0, 0.8, 0.7]}
    pairs = [("en", "fr"), ("fr", "en"), ("en", "zh"), ("zh", "en")]
    names = {0.5: "p_max*0.5", 1.0: "p_max", 2.0: "p_max*2", 4.0: "p_max*4"}
    rows = []
    for a in (2.0, 0.5, 4.0, 1.0):
        for (s, t), v in zip(pairs, values[a]):
            rows.append(lss_row(names[a], s, t, v))
            rows.append(lss_row(names[a], s, t, 0.0, layers=3))
    rows.append(lss_row("p_max*2", "fr", "zh", float("nan")))
    rows += [lss_row("zero", s, t, 0.0) for s, t in pairs]
    rows += [lss_row("scale:2", s, t, 0.5) for s, t in pairs * 3]
    return rows


def test_lss_curve_mean_line_band_and_one_line_per_target():
    fig = lss_curve(dose_rows())
    *targets, band, mean = fig.data
    assert [t.name for t in targets] == ["en", "fr", "zh"]  # family order
    assert band.name == "95% CI (mean)" and band.fill == "toself"
    assert mean.name == "mean over pairs"
    assert list(mean.x) == [0.5, 1.0, 2.0, 4.0]
    np.testing.assert_allclose(mean.y, [0.15, 0.45, 0.65, 0.85])
    # per target: mean over sources at each multiple
    np.testing.assert_allclose(targets[0].y, [(0.2 + 0.0) / 2, (0.5 + 0.3) / 2, (0.8 + 0.5) / 2, (1.0 + 0.7) / 2])
    np.testing.assert_allclose(targets[1].y, [0.1, 0.4, 0.7, 0.9])
    np.testing.assert_allclose(targets[2].y, [0.3, 0.6, 0.6, 0.8])
    for t in targets:
        assert list(t.x) == [0.5, 1.0, 2.0, 4.0]
    # band = highs forward then lows backward; it contains the mean at every multiple
    n = len(mean.x)
    assert list(band.x) == list(mean.x) + list(mean.x)[::-1]
    highs, lows = np.array(band.y[:n]), np.array(band.y[n:][::-1])
    assert (lows <= np.array(mean.y) + 1e-12).all() and (np.array(mean.y) <= highs + 1e-12).all()
    assert (highs > lows).all()
    assert fig.layout.xaxis.type == "log"  # 4 / 0.5 >= 4
    assert "p_max" in fig.layout.title.text and "p_max" in fig.layout.xaxis.title.text
    assert tuple(fig.layout.yaxis.range) == (-0.02, 1.02)
    assert not fig.layout.shapes


def test_lss_curve_explicit_family_and_unknown_family():
    fig = lss_curve(dose_rows(), family="scale")
    assert list(fig.data[-1].x) == [2.0]
    assert fig.data[-1].y[0] == pytest.approx(0.5)
    assert fig.layout.xaxis.type == "linear"
    with pytest.raises(LensSteerError, match="'add'"):
        lss_curve(dose_rows(), family="add")


def test_lss_curve_default_family_has_the_most_multiples_not_the_most_rows():
    # scale has 2 multiples over 20 pairs (40 rows); p_max has 3 multiples over 1 pair (3 rows)
    rows = [lss_row(f, "en", "fr", v) for f, v in (("p_max", 0.2), ("p_max*2", 0.4), ("p_max*3", 0.5))]
    rows += [lss_row(f"scale:{a}", f"s{i}", "fr", 0.1) for a in (1, 2) for i in range(20)]
    fig = lss_curve(rows)
    assert list(fig.data[-1].x) == [1.0, 2.0, 3.0]
    assert "(p_max)" in fig.layout.title.text


@pytest.mark.parametrize("rows", [
    [lss_row("p_max", s, t, 0.5) for s in "abc" for t in "abc" if s != t],  # many pairs, one multiple
    [lss_row("zero", "a", "b", 0.0), lss_row("set:1", "a", "b", 0.2)],  # no dose factor at all
    [lss_row("p_max", "a", "b", 0.5), lss_row("p_max*2", "a", "b", 0.6, layers=1)],  # second multiple per-layer
    [],
], ids=["one-multiple", "no-dose-factor", "per-layer-only-multiple", "empty"])
def test_lss_curve_too_few_factors_is_an_annotated_empty_figure(rows):
    fig = lss_curve(rows)
    assert len(fig.data) == 0 and len(fig.layout.annotations) == 1 and fig.layout.title.text


def test_lss_curve_missing_metric_is_an_annotated_empty_figure():
    assert_empty_figure(lss_curve(dose_rows(), metric="target_wins"), "no target_wins rows")


def test_lss_curve_null_draws_a_dashed_reference_line():
    fig = lss_curve(dose_rows(), null=0.25)
    assert len(fig.layout.shapes) == 1
    line = fig.layout.shapes[0]
    assert line.y0 == line.y1 == 0.25 and line.line.dash == "dash"
    assert (line.xref, line.x0, line.x1) == ("x domain", 0, 1)
    assert not lss_curve(dose_rows(), null=float("nan")).layout.shapes


def test_lss_curve_add_family_uses_a_linear_value_axis():
    rows = [lss_row(f"add:{b}", "en", "fr", v) for b, v in ((1, 0.2), (2, 0.4), (8, 0.9))]
    fig = lss_curve(rows)
    assert list(fig.data[-1].x) == [1.0, 2.0, 8.0]
    assert fig.layout.xaxis.type == "linear" and fig.layout.xaxis.title.text == "added value b"


def layer_rows() -> list[dict]:
    rows = []
    for layer in (2, 0, 1):  # out of order on purpose
        rows.append(lss_row("p_max", "en", "fr", 0.1 * layer, layers=layer))
        rows.append(lss_row("p_max", "zh", "fr", 0.1 * layer + 0.2, layers=str(layer)))
        rows.append(lss_row("p_max", "fr", "en", 0.5, layers=layer))
        rows.append(lss_row("scale:2", "fr", "en", 0.9, layers=layer))
    rows.append(lss_row("p_max", "en", "fr", 1.0))  # an all-layer row: not a layer
    return rows


def test_layer_lss_curve_x_is_the_layer_and_y_the_mean():
    fig = layer_lss_curve(layer_rows())
    *targets, band, mean = fig.data
    assert [t.name for t in targets] == ["en", "fr"]
    assert list(mean.x) == [0, 1, 2]
    np.testing.assert_allclose(mean.y, [(0.0 + 0.2 + 0.5) / 3, (0.1 + 0.3 + 0.5) / 3, (0.2 + 0.4 + 0.5) / 3])
    np.testing.assert_allclose(targets[0].y, [0.5, 0.5, 0.5])
    np.testing.assert_allclose(targets[1].y, [0.1, 0.2, 0.3])
    assert list(band.x) == [0, 1, 2, 2, 1, 0]
    n = 3
    highs, lows = np.array(band.y[:n]), np.array(band.y[n:][::-1])
    assert (lows <= np.array(mean.y) + 1e-12).all() and (np.array(mean.y) <= highs + 1e-12).all()
    assert "p_max" in fig.layout.title.text


def test_layer_lss_curve_other_factor_and_unknown_factor():
    fig = layer_lss_curve(layer_rows(), factor="scale:2")
    np.testing.assert_allclose(fig.data[-1].y, [0.9, 0.9, 0.9])
    assert "scale:2" in fig.layout.title.text
    with pytest.raises(LensSteerError, match="factor 'zero' has no per-layer rows"):
        layer_lss_curve(layer_rows(), factor="zero")


def test_layer_lss_curve_without_per_layer_rows_is_an_annotated_empty_figure():
    rows = [lss_row("p_max", "en", "fr", 0.5), lss_row("p_max", "fr", "en", 0.4)]
    assert_empty_figure(layer_lss_curve(rows), "--per-layer")
    assert_empty_figure(layer_lss_curve([]), "no lss rows")
    assert_empty_figure(layer_lss_curve(layer_rows(), metric="lss_nontie"), "no lss_nontie rows")


# ---------------------------------------------------------------------------------------------------------------
# gain_damage
# ---------------------------------------------------------------------------------------------------------------
def test_gain_damage_points_are_per_factor_means():
    rows = [lss_row("p_max", "en", "fr", 0.5, target_gain=1.0, source_damage=-2.0),
            lss_row("p_max", "fr", "en", 0.5, target_gain=3.0, source_damage=-1.0),
            lss_row("p_max", "fr", "en", 0.5, layers=4, target_gain=99.0, source_damage=99.0),  # ignored
            lss_row("control:p_max", "en", "fr", 0.1, target_gain=0.5, source_damage=-0.5),
            lss_row("scale:2", "en", "fr", 0.7, target_gain=-1.0, source_damage=0.0),
            lss_row("scale:2", "fr", "en", 0.7, target_gain=2.0, source_damage=-3.0)]
    fig = gain_damage(rows)
    point = fig.data[0]
    assert list(point.text) == ["p_max", "control:p_max", "scale:2"]
    np.testing.assert_allclose(point.x, [-1.5, -0.5, -1.5])  # source damage
    np.testing.assert_allclose(point.y, [2.0, 0.5, 0.5])  # target gain
    assert list(point.marker.color) == ["#1f77b4", plots.CONTROL_COLOUR, "#1f77b4"]
    assert sorted((s.type, s.x0, s.y0) for s in fig.layout.shapes) == [("line", 0, 0), ("line", 0, 0)]


@pytest.mark.parametrize("rows", [
    [],
    [lss_row("p_max", "en", "fr", 0.5)],
    [lss_row("p_max", "en", "fr", 0.5, target_gain=1.0)],
])
def test_gain_damage_without_columns_is_an_annotated_empty_figure(rows):
    assert_empty_figure(gain_damage(rows), "target_gain / source_damage")


# ---------------------------------------------------------------------------------------------------------------
# downstream_heatmap
# ---------------------------------------------------------------------------------------------------------------
def test_downstream_heatmap_diverging_symmetric_and_self_language_outlined():
    d = pd.DataFrame(dict(eval_lang=["zh", "fr", "en", "en", "fr", "zh", "en"],
                          intervened=["en", "en", "en", "fr", "fr", "fr", "en"],
                          delta=[0.3, -0.2, 0.5, 0.1, -1.5, 0.0, 0.7]))
    fig = downstream_heatmap(d, unit="pp")
    heat = fig.data[0]
    assert list(heat.y) == ["en", "fr", "zh"] and list(heat.x) == ["en", "fr"]
    np.testing.assert_allclose(heat.z, [[0.6, 0.1], [-0.2, -1.5], [0.3, 0.0]])  # (0.5 + 0.7) / 2 averaged
    assert heat.zmid == 0 and heat.zmax == 1.5 and heat.zmin == -1.5
    assert heat.colorscale[0][1] != heat.colorscale[-1][1]  # a real diverging scale
    assert heat.colorbar.title.text == "change (pp)"
    cells = sorted((s.x0 + 0.5, s.y0 + 0.5, s.x1 - s.x0, s.y1 - s.y0) for s in fig.layout.shapes)
    assert cells == [(0, 0, 1, 1), (1, 1, 1, 1)]  # en/en and fr/fr, not zh (never intervened)
    assert fig.layout.yaxis.autorange == "reversed"


def test_downstream_heatmap_other_value_column_and_title():
    d = pd.DataFrame(dict(eval_lang=["en", "fr"], intervened=["fr", "fr"], acc=[-0.25, 0.1]))
    fig = downstream_heatmap(d, value="acc", title="Accuracy change")
    np.testing.assert_allclose(fig.data[0].z, [[-0.25], [0.1]])
    assert (fig.data[0].zmin, fig.data[0].zmax) == (-0.25, 0.25)
    assert fig.layout.title.text == "Accuracy change"
    assert len(fig.layout.shapes) == 1 and fig.layout.shapes[0].y0 == 0.5  # fr is the second row


@pytest.mark.parametrize("missing", ["eval_lang", "intervened", "delta"])
def test_downstream_heatmap_missing_column_raises(missing):
    d = pd.DataFrame(dict(eval_lang=["en"], intervened=["fr"], delta=[0.1])).drop(columns=missing)
    with pytest.raises(LensSteerError, match=f"needs a column '{missing}'"):
        downstream_heatmap(d)


def test_downstream_heatmap_empty_is_an_annotated_empty_figure():
    assert_empty_figure(downstream_heatmap(pd.DataFrame()), "no evaluation rows")


# ---------------------------------------------------------------------------------------------------------------
# inspector_tables and layer_inspector
# ---------------------------------------------------------------------------------------------------------------
STATS_LANGS = ["fr", "ru", "en"]  # another order than the neuron set's, and one extra language
INSPECT = {"en": [[], [2, 5], [0]], "fr": [[], [5, 6], [7]]}


@pytest.fixture
def stats() -> Stats:
    return make_stats(STATS_LANGS, n_layers=3, d_mlp=8, n_sent=4)


@pytest.fixture
def ins() -> NeuronSet:
    return make_neurons(INSPECT, n_layers=3, d_mlp=8)


def expected_cell(stats: Stats, layer: int, j: int, code: str) -> tuple[float, float, float]:
    """probability, p_max and the lower median, computed by hand from the raw tensors."""
    k = STATS_LANGS.index(code)
    prob = int(stats.over_zero[layer, j, k]) / int(stats.n_tokens[k])
    means = sorted(stats.sent_means[k, :, layer, j].tolist())
    return prob, means[-1], means[(len(means) - 1) // 2]


def test_inspector_tables_rows_values_and_assignment(stats, ins):
    table = inspector_tables(stats, ins, layer=1)
    assert list(table.columns) == ["layer", "neuron", "language", "probability", "p_max", "p_median", "assigned",
                                   "assigned_to"]
    assert list(zip(table["neuron"], table["language"])) == [(2, "en"), (2, "fr"), (5, "en"), (5, "fr"),
                                                             (6, "en"), (6, "fr")]
    assert (table["layer"] == 1).all()
    assert list(table["assigned"]) == [True, False, True, True, False, True]
    assert list(table["assigned_to"]) == ["en", "en", "en,fr", "en,fr", "fr", "fr"]
    lower_differs = False
    for r in table.itertuples():
        prob, pmax, pmed = expected_cell(stats, 1, r.neuron, r.language)
        assert r.probability == pytest.approx(prob, rel=1e-6)
        assert r.p_max == pytest.approx(pmax, rel=1e-6)
        assert r.p_median == pytest.approx(pmed, rel=1e-6)
        k = STATS_LANGS.index(r.language)
        means = sorted(stats.sent_means[k, :, 1, r.neuron].tolist())
        lower_differs |= r.p_median != pytest.approx(means[2])
    assert lower_differs  # the data can tell the lower median from the upper one


def test_inspector_tables_all_neurons(stats, ins):
    table = inspector_tables(stats, ins, layer=2, which="all")
    assert len(table) == 8 * 2
    assert list(table["neuron"]) == [j for j in range(8) for _ in range(2)]
    assert set(table.loc[table["assigned"], "neuron"]) == {0, 7}
    row = table[(table["neuron"] == 3) & (table["language"] == "fr")].iloc[0]
    prob, pmax, pmed = expected_cell(stats, 2, 3, "fr")
    assert (row.probability, row.p_max, row.p_median) == pytest.approx((prob, pmax, pmed), rel=1e-6)
    assert row.assigned_to == ""


def test_inspector_tables_layer_without_neurons_is_an_empty_table(stats, ins):
    table = inspector_tables(stats, ins, layer=0)
    assert table.empty and "probability" in table.columns


@pytest.mark.parametrize("layer", [-1, 3])
def test_inspector_tables_layer_out_of_range_raises(stats, ins, layer):
    with pytest.raises(LensSteerError, match=r"outside 0\.\.2"):
        inspector_tables(stats, ins, layer)


def test_inspector_tables_bad_selection_and_foreign_languages_raise(stats, ins):
    with pytest.raises(LensSteerError, match="unknown neuron selection"):
        inspector_tables(stats, ins, 1, which="some")
    foreign = make_neurons({"en": [[], [], []], "zh": [[], [], []]}, n_layers=3, d_mlp=8)
    with pytest.raises(LensSteerError, match="statistics have no zh"):
        inspector_tables(stats, foreign, 1)


def test_layer_inspector_slider_one_step_per_layer_with_that_layers_data(stats):
    ns = make_neurons(INSPECT, n_layers=3, d_mlp=8, languages=["fr", "en"])  # x axis must be family order
    fig = layer_inspector(stats, ns)
    heat, marks = fig.data
    langs = ["en", "fr"]
    assert list(heat.x) == langs
    assert heat.zmin == 0 and heat.zmax == 1
    steps = fig.layout.sliders[0].steps
    assert [s.label for s in steps] == ["0", "1", "2"]
    neurons_of = {1: [2, 5, 6], 2: [0, 7]}
    assigned_of = {1: [("en", "n2"), ("en", "n5"), ("fr", "n5"), ("fr", "n6")], 2: [("en", "n0"), ("fr", "n7")]}
    for layer, step in enumerate(steps):
        data, layout = step.args
        z, y, custom = data["z"][0], data["y"][0], data["customdata"][0]
        if layer == 0:  # no neurons: a placeholder row, not a crash
            assert y == ["(none)"] and z == [[None, None]]
            assert data["x"][1] == [] and data["y"][1] == []
            assert "its 0 language neurons" in layout["title.text"]
            continue
        idx = neurons_of[layer]
        assert y == [f"n{j}" for j in idx]
        assert data["x"][0] == langs
        expected = [[round(expected_cell(stats, layer, j, c)[0], 4) for c in langs] for j in idx]
        np.testing.assert_allclose(z, expected, atol=1e-4)
        assert sorted(zip(data["x"][1], data["y"][1])) == assigned_of[layer]
        # hover data: (label, p_max, p_median, neuron, assigned_to)
        label, pmax, pmed, j, owners = custom[0][1]
        _, emax, emed = expected_cell(stats, layer, idx[0], "fr")
        assert (label, j) == ("fr French", idx[0])
        assert (pmax, pmed) == pytest.approx((round(emax, 4), round(emed, 4)), abs=1e-4)
        assert owners == ",".join(c for c in ["en", "fr"] if idx[0] in INSPECT[c][layer])
        assert f"Layer {layer}: activation probability of its {len(idx)} language neurons" in layout["title.text"]
    # the figure opens on the first layer
    assert list(heat.y) == ["(none)"]
    assert fig.layout.title.text.startswith("Layer 0:")
    assert fig.layout.sliders[0].active == 0


def test_layer_inspector_marks_and_first_layer_shown(stats, ins):
    fig = layer_inspector(stats, ins, layers=[1, 2])
    heat, marks = fig.data
    assert [s.label for s in fig.layout.sliders[0].steps] == ["1", "2"]
    assert list(heat.y) == ["n2", "n5", "n6"]
    assert sorted(zip(marks.x, marks.y)) == [("en", "n2"), ("en", "n5"), ("fr", "n5"), ("fr", "n6")]
    np.testing.assert_allclose(heat.z, [[round(expected_cell(stats, 1, j, c)[0], 4) for c in ("en", "fr")]
                                        for j in (2, 5, 6)], atol=1e-4)


def test_layer_inspector_keeps_the_most_active_neurons(stats, ins):
    fig = layer_inspector(stats, ins, layers=[1], max_neurons=2)
    best = sorted((2, 5, 6), key=lambda j: -max(expected_cell(stats, 1, j, c)[0] for c in ("en", "fr")))[:2]
    assert list(fig.data[0].y) == [f"n{j}" for j in sorted(best)]
    assert "its 2 language neurons" in fig.layout.title.text


@pytest.mark.parametrize("layers", [[3], [0, -1]])
def test_layer_inspector_layer_out_of_range_raises(stats, ins, layers):
    with pytest.raises(LensSteerError, match="outside"):
        layer_inspector(stats, ins, layers=layers)


def test_layer_inspector_needs_a_layer(stats, ins):
    with pytest.raises(LensSteerError, match="at least one layer"):
        layer_inspector(stats, ins, layers=[])


# ---------------------------------------------------------------------------------------------------------------
# Every figure is labelled
# ---------------------------------------------------------------------------------------------------------------
def _figures() -> dict[str, object]:
    ns = make_neurons(ASSIGN, n_layers=3, d_mlp=8)
    rows, _ = lss_table()
    gd = [dict(r, target_gain=0.1, source_damage=-0.1) for r in rows]
    d = pd.DataFrame(dict(eval_lang=["en", "fr"], intervened=["en", "en"], delta=[0.1, -0.2]))
    stats = make_stats(STATS_LANGS, n_layers=3, d_mlp=8)
    return {
        "layer_distribution": lambda: layer_distribution(ns),
        "layer_distribution_two": lambda: layer_distribution({"a": ns, "b": ns}),
        "overlap_count": lambda: overlap_heatmap(ns, "count"),
        "overlap_jaccard": lambda: overlap_heatmap(ns, "jaccard", order="cluster"),
        "lss_matrix": lambda: lss_matrix(rows),
        "lss_matrix_other_metric": lambda: lss_matrix(gd, metric="target_gain"),
        "lss_curve": lambda: lss_curve(dose_rows()),
        "layer_lss_curve": lambda: layer_lss_curve(layer_rows()),
        "gain_damage": lambda: gain_damage(gd),
        "downstream": lambda: downstream_heatmap(d),
        "layer_inspector": lambda: layer_inspector(stats, make_neurons(INSPECT, n_layers=3, d_mlp=8)),
    }


@pytest.mark.parametrize("name", list(_figures()))
def test_every_figure_has_a_title_axis_titles_and_a_colourbar_title(name):
    fig = _figures()[name]()
    assert fig.layout.title.text and fig.layout.title.text.strip()
    assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text
    for heat in heatmaps(fig):
        assert heat.colorbar.title.text
    assert len(fig.data) > 0


# ---------------------------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------------------------
def small_figure():
    return overlap_heatmap(make_neurons(OVERLAP, n_layers=2, d_mlp=8))


def test_save_html_is_self_contained_and_atomic(tmp_path):
    out = tmp_path / "figs" / "overlap.html"  # the folder does not exist yet
    assert save_figure(small_figure(), out) == out
    text = out.read_text(encoding="utf-8")
    assert text.lstrip().lower().startswith("<!doctype html>") and text.rstrip().endswith("</html>")
    assert '<script src="http' not in text
    assert re.search(r"<script[^>]*\bsrc\s*=", text) is None  # no external script of any kind
    assert "Plotly.newPlot" in text and len(text) > 1_000_000  # plotly.js is inlined
    assert "Neurons shared between languages" in text
    # a second write replaces the file; no temporary file is left beside it
    save_figure(layer_distribution(make_neurons(ASSIGN, n_layers=3, d_mlp=8)), out)
    assert "Language-specific neurons per layer" in out.read_text(encoding="utf-8")
    assert sorted(p.name for p in out.parent.iterdir()) == ["overlap.html"]


def test_save_figures_writes_every_html_in_order(tmp_path):
    items = [(small_figure(), tmp_path / "a.html"), (small_figure(), tmp_path / "b" / "c.HTML")]
    paths = save_figures(items)
    assert paths == [tmp_path / "a.html", tmp_path / "b" / "c.HTML"]
    assert all(p.stat().st_size > 1_000_000 for p in paths)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.html", "c.HTML"]


@pytest.mark.parametrize("name", ["fig.jpg", "fig.pdf", "fig", "fig.html.gz"])
def test_save_unknown_suffix_raises_and_writes_nothing(tmp_path, name):
    with pytest.raises(LensSteerError, match="use a .png, .svg or .html"):
        save_figures([(small_figure(), tmp_path / "ok.html"), (small_figure(), tmp_path / name)])
    assert list(tmp_path.iterdir()) == []


def test_browser_path_env_and_path(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "chromium"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("BROWSER_PATH", str(fake))
    assert plots.browser_path() == str(fake)
    monkeypatch.delenv("BROWSER_PATH")
    monkeypatch.setenv("PATH", str(fake.parent))
    assert plots.browser_path() == str(fake)


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_static_export_without_chromium_raises_and_writes_nothing(tmp_path, monkeypatch, suffix):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-such-chromium"))
    monkeypatch.setenv("PATH", str(empty))
    assert plots.browser_path() is None

    def must_not_run(*args, **kwargs):  # without the up-front check kaleido would hunt for (or fetch) a browser
        raise AssertionError("kaleido was started although no Chromium was found")

    import kaleido
    import plotly.graph_objects as go

    monkeypatch.setattr(kaleido, "start_sync_server", must_not_run)
    monkeypatch.setattr(go.Figure, "write_image", must_not_run)
    out = tmp_path / "out" / f"fig{suffix}"
    with pytest.raises(LensSteerError) as err:
        save_figure(small_figure(), out)
    assert "chromium" in str(err.value).lower()
    assert not out.parent.exists()


def _require_chromium() -> None:
    if plots.browser_path() is None:
        message = "no Chromium for kaleido (install chromium or set BROWSER_PATH)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def test_static_export_png_and_svg(tmp_path):
    _require_chromium()
    png, svg = tmp_path / "fig.png", tmp_path / "sub" / "fig.svg"
    assert save_figures([(small_figure(), png), (small_figure(), svg)], width=300, height=200, scale=1) == [png, svg]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR" and struct.unpack(">II", data[16:24]) == (300, 200)
    text = svg.read_text(encoding="utf-8")
    assert "<svg" in text[:500] and 'width="300"' in text[:500] and 'height="200"' in text[:500]
    assert "Neurons shared between languages" in text
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["fig.png", "fig.svg"]


# ---------------------------------------------------------------------------------------------------------------
# 95% intervals drawn: bands, error bars, whiskers
# ---------------------------------------------------------------------------------------------------------------
def _wilson_rows(factors=("p_max*0.5", "p_max", "p_max*2"), sources=("en",)):
    from lens_steer.intervals import wilson_ci

    rows = []
    for k, f in enumerate(factors):
        for s in sources:
            for t in ("fr", "ru"):
                lo, hi = wilson_ci(4 + 2 * k, 10)
                rows.append(dict(factor=f, layers="all", source=s, target=t, lss=(4 + 2 * k) / 10, lss_low=lo,
                                 lss_high=hi, target_gain=1.0 + k + (t == "fr"), source_damage=-k - (t == "ru")))
    return rows


def test_lss_curve_has_a_band_and_per_target_error_bars_from_the_rows():
    fig = lss_curve(_wilson_rows()).to_dict()
    band = next(t for t in fig["data"] if t.get("fill") == "toself")
    assert len(band["x"]) == 6  # three multiples, there and back
    fr = next(t for t in fig["data"] if t.get("name") == "fr")
    rows = [r for r in _wilson_rows() if r["target"] == "fr"]
    assert fr["error_y"]["array"] == pytest.approx([r["lss_high"] - r["lss"] for r in rows])
    assert fr["error_y"]["arrayminus"] == pytest.approx([r["lss"] - r["lss_low"] for r in rows])


def test_lss_curve_averaging_several_sources_draws_no_per_row_bars():
    """A point that is a mean of rows has no single row's interval: only the band of the mean is drawn."""
    fig = lss_curve(_wilson_rows(sources=("en", "ja"))).to_dict()
    fr = next(t for t in fig["data"] if t.get("name") == "fr")
    assert "error_y" not in fr or not fr["error_y"].get("array")
    assert any(t.get("fill") == "toself" for t in fig["data"])


def test_layer_lss_curve_has_its_band():
    rows = [dict(factor="p_max", layers=str(layer), source="en", target=t, lss=0.5 + 0.1 * layer)
            for layer in range(3) for t in ("fr", "ru")]
    assert any(t.get("fill") == "toself" for t in layer_lss_curve(rows).to_dict()["data"])


def test_gain_damage_has_whiskers_of_the_mean_over_pairs():
    from lens_steer.intervals import bootstrap_mean_ci

    fig = gain_damage(_wilson_rows()).to_dict()
    point = fig["data"][0]
    gains = torch.tensor([1.0 + 1 + 1, 1.0 + 1])  # p_max: k = 1, fr and ru
    lo, hi = bootstrap_mean_ci(gains)
    assert point["error_y"]["array"][1] == pytest.approx(hi - float(gains.mean()))
    assert point["error_y"]["arrayminus"][1] == pytest.approx(float(gains.mean()) - lo)
    assert len(point["error_x"]["array"]) == 3


def test_lss_matrix_hover_gives_the_cell_interval():
    fig = lss_matrix(_wilson_rows(factors=("p_max",)))
    text = fig.data[0].text
    assert "%{text}" in fig.data[0].hovertemplate
    assert any("[" in cell for row in text for cell in row)


def test_compare_methods_whiskers_for_forcing_and_damage():
    from lens_steer.plots import compare_methods

    rows = [dict(method="none", source_damage=0.0, source_damage_low=0.0, source_damage_high=0.0, forcing=0.1,
                 forcing_low=0.02, forcing_high=0.3),
            dict(method="p_max", source_damage=-2.0, source_damage_low=-2.5, source_damage_high=-1.4, forcing=0.6,
                 forcing_low=0.4, forcing_high=0.75, lss=0.9, lss_low=0.8, lss_high=0.95),
            dict(method="control:p_max", source_damage=-0.1, source_damage_low=-0.3, source_damage_high=0.0,
                 forcing=0.1, forcing_low=0.05, forcing_high=0.2)]
    fig = compare_methods(rows).to_dict()
    by = {t["name"]: t for t in fig["data"]}
    assert by["p_max"]["error_y"]["array"] == pytest.approx([0.15])
    assert by["p_max"]["error_y"]["arrayminus"] == pytest.approx([0.2])
    assert by["p_max"]["error_x"]["array"] == pytest.approx([0.6])
    assert by["p_max (control)"]["error_y"]["array"] == pytest.approx([0.0, 0.1])  # the control's only
    assert by["none"]["error_y"]["array"] == pytest.approx([0.2])
    assert "lss 0.9 [0.8, 0.95]" in by["p_max"]["hovertemplate"]


def test_compare_methods_without_interval_columns_has_no_whiskers():
    from lens_steer.plots import compare_methods

    fig = compare_methods([dict(method="p_max", source_damage=-2.0, forcing=0.6)]).to_dict()
    assert "error_y" not in fig["data"][0]


def test_downstream_values_error_bars_from_low_and_high():
    from lens_steer.plots import downstream_values

    frame = pd.DataFrame(dict(intervened=["none", "fr", "none", "fr"], eval_lang=["fr", "fr", "ru", "ru"],
                              metric="acc", value=[0.5, 0.7, 0.4, 0.3], low=[0.3, 0.5, 0.2, 0.1],
                              high=[0.7, 0.85, 0.6, 0.5], interval="wilson", n=20))
    fig = downstream_values(frame, "acc").to_dict()
    assert [t["name"] for t in fig["data"]] == ["no intervention", f"{language_label('fr')} amplified"]
    assert fig["data"][1]["error_y"]["array"] == pytest.approx([0.15, 0.2])
    assert fig["data"][1]["error_y"]["arrayminus"] == pytest.approx([0.2, 0.2])
    empty = downstream_values(frame.assign(low=float("nan"), high=float("nan")), "acc").to_dict()
    assert "error_y" not in empty["data"][0]
