"""`lens-steer compare`: the method grammar, the held-out choice, the table round trip, and every bad input."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from helpers import SENTENCES, tiny_run
from lens_steer.cli import main
from lens_steer.compare import (COMPARE_COLUMNS, LAYER_STRIDE, CompareConfig, Method, control_of, parse_method,
                                parse_methods, ppl_ratios, search, split_facts)
from lens_steer.errors import LensSteerError
from lens_steer.factors import parse_factor

LANGS = ("en", "fr", "ru", "zh")
METHODS = "p_max,diffmean*best,resid:best,prompt:en,scale:2"


# ---------------------------------------------------------------------------------------------------------------
# The method grammar (no model)
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,chosen,factor", [
    ("p_max", "-", "p_max"), ("diffmean*4", "-", "diffmean*4"), ("prompt:native", "-", "prompt:native"),
    ("diffmean*best", "alpha", "diffmean*2"), ("add:mean*best", "alpha", "add:mean*2"),
    ("p_max*best", "alpha", "p_max*2"),
    ("scale:best", "alpha", "scale:2"), ("resid:3*best", "alpha", "resid:3*2"), ("resid:best*4", "layer", "resid:6*4"),
    ("resid:best", "layer+alpha", "resid:6*2"), ("testmax*best", "alpha", "testmax*2"),
])
def test_methods_parse(text, chosen, factor):
    m = parse_method(text)
    assert m.text == text and m.chosen == chosen
    assert m.factor(alpha=2.0, layer=6).text == factor


def test_candidates_are_bounded():
    assert [f.value for f in parse_method("diffmean*best").candidates(18)] == [1.0, 2.0, 4.0, 8.0]
    grid = parse_method("resid:best").candidates(18)
    assert sorted({f.layer for f in grid}) == list(range(0, 18, LAYER_STRIDE)) and len(grid) == 6 * 4
    assert [f.layer for f in parse_method("resid:best*4").candidates(7)] == [0, 3, 6]
    assert [f.text for f in parse_method("p_max").candidates(18)] == ["p_max"]


@pytest.mark.parametrize("bad,message", [
    ("control:p_max", "adds each method's control itself"), ("zero*best", "best stands for"),
    ("prompt:best", "best stands for"), ("p_max*bestest", "cannot parse factor"), ("best", "best stands for"),
    ("p_max*best*2", "best stands for"), ("resid:best:best", "best stands for"), ("{alpha}*best", "best stands for"),
    ("p_maximum", "cannot parse factor"), ("p_max,p_max", "listed twice"), (" , ", "no method given"),
])
def test_bad_methods_are_one_error(bad, message):
    with pytest.raises(LensSteerError, match=message):
        parse_methods(bad)


def test_controls_follow_the_grammar():
    assert control_of(parse_factor("p_max*2")).text == "control:p_max*2"
    assert control_of(parse_factor("resid:3*4")).text == "control:resid:3*4"
    assert control_of(parse_factor("prompt:en")).text == "control:prompt:en"
    assert control_of(parse_factor("scale:2")) is None and control_of(parse_factor("zero")) is None


@pytest.mark.parametrize("text", ["p_max", "p_max*best", "add:mean*best", "diffmean*best", "scale:best", "add:best",
                                  "set:best", "testmax*best", "testmax+*best", "resid:3*best", "resid:best*4",
                                  "resid:best", "resid: best * -2", "prompt:en", "prompt:native"])
def test_methods_build_the_factors_parsing_gives(text):
    """Method.factor and control_of build factors as values: equal (type included) to parsing their text."""
    for f in parse_method(text).candidates(7):
        again = parse_factor(f.text)
        assert f == again and type(f) is type(again)
        control = control_of(f)
        assert control is None or (control == parse_factor(f"control:{f.text}") and type(control) is type(f))
    assert control_of(parse_factor("control:p_max")) is None  # a control has no control of its own


def test_held_out_facts_follow_the_reported_ones():
    facts = {"en": list(range(30)), "fr": list(range(5))}
    reported, held = split_facts(facts, 10, 10)
    assert reported["en"] == list(range(10)) and held["en"] == list(range(10, 20))
    assert reported["fr"] == list(range(5)) and held["fr"] == []
    assert not set(reported["en"]) & set(held["en"])


def _fake_rows(factors, best_layer=6, best_alpha=4.0):
    """Held-out LSS rows whose target wins peak at (best_layer, best_alpha): what run_lss returns, in small."""
    rows = []
    for f in factors:
        wins = 1.0 - 0.1 * abs((f.layer or 0) - best_layer) - 0.05 * abs(math.log2(f.value / best_alpha))
        rows.append({"factor": f.text, "layers": "all", "lss": 0.9, "target_wins": wins, "source_damage": -1.0,
                     "target_gain": 1.0, "mean_shift": 1.0, "target_wins_base": 0.1, "chance": 0.25,
                     "specificity": 0.2})
    return rows


def test_resid_best_searches_layers_then_multiples():
    """resid:best measures every 3rd layer at the smallest multiple, then the multiples at the chosen layer:
    layers + multiples - 1 candidates (not their product), and ends on the best of both."""
    measured: list[list[str]] = []

    def measure(factors):
        measured.append([f.text for f in factors])
        return _fake_rows(factors, best_layer=6, best_alpha=2.0)

    best, reason, table = search(parse_method("resid:best"), 18, measure, damage_bound=10.0)
    assert measured[0] == [f"resid:{layer}*1" for layer in range(0, 18, 3)]
    assert measured[1] == ["resid:6*2", "resid:6*4", "resid:6*8"]
    assert best.text == "resid:6*2" and "layer 6" in reason
    assert [r["factor"] for r in table] == measured[0] + measured[1]


def test_a_choice_respects_the_damage_bound():
    def measure(factors):
        rows = _fake_rows(factors, best_alpha=8.0)
        for r in rows:
            r["source_damage"] = -20.0 if r["factor"].endswith("*8") else -1.0
        return rows

    best, _, _ = search(parse_method("diffmean*best"), 4, measure, damage_bound=10.0)
    assert best.text == "diffmean*4"  # *8 wins most but damages beyond the bound


def test_ppl_ratios_by_hand():
    rows = [dict(intervened="none", eval_lang=e, metric="nll_macro", value=v) for e, v in (("a", 2.0), ("b", 3.0))]
    rows += [dict(intervened="a", eval_lang="a", metric="nll_macro", value=2.5),
             dict(intervened="a", eval_lang="b", metric="nll_macro", value=3.1),
             dict(intervened="b", eval_lang="a", metric="nll_macro", value=2.3),
             dict(intervened="a", eval_lang="a", metric="ppl_macro", value=99.0)]
    got = ppl_ratios(rows)
    assert got["self"] == pytest.approx(math.exp(0.5))
    assert got["cross"] == pytest.approx(math.exp((0.1 + 0.3) / 2))


def test_config_checks_itself():
    with pytest.raises(LensSteerError, match="detector"):
        CompareConfig(methods="p_max", detector="nope")
    with pytest.raises(LensSteerError, match="seeds"):
        CompareConfig(methods="p_max", seeds=0)
    assert [m.text for m in CompareConfig().parsed][:2] == ["p_max", "add:mean*best"]
    assert isinstance(CompareConfig(methods="resid:best", reference="resid:best").parsed[0], Method)


# ---------------------------------------------------------------------------------------------------------------
# On a tiny model
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run(tiny_dirs, tmp_path_factory) -> Path:
    return tiny_run(tiny_dirs["llama"], tmp_path_factory.mktemp("compare"), LANGS)


@pytest.fixture
def udhr(monkeypatch):
    """A UDHR-shaped stand-in (our own sentences): the tests never need the real declaration."""
    from lens_steer.evals import data

    monkeypatch.setattr(data, "load_udhr_eval", lambda langs, limit=None: {c: SENTENCES[c][:limit] for c in langs})


COMPARE = ["--langs", "en,fr,ru", "--max-facts", "2", "--held-out-facts", "2", "--forcing-tokens", "3", "--quiet"]


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == (*COMPARE_COLUMNS, "run_fingerprint")
        return list(reader)


@pytest.fixture(scope="module")
def compared(run, tiny_dirs):
    """One comparison of five methods on the tiny run (the UDHR stand-in patched for the module)."""
    from lens_steer.evals import data

    mp = pytest.MonkeyPatch()
    mp.setattr(data, "load_udhr_eval", lambda langs, limit=None: {c: SENTENCES[c][:limit] for c in langs})
    try:
        assert main(["compare", str(run), "--methods", METHODS, *COMPARE]) == 0
    finally:
        mp.undo()
    return run


def test_compare_table_round_trips(compared):
    from lens_steer.plots import read_table

    rows = _csv(compared / "compare.csv")
    assert [r["method"] for r in rows] == ["none", "p_max", "control:p_max", "diffmean*best", "control:diffmean*best",
                                           "resid:best", "control:resid:best", "control-iso:resid:best", "prompt:en",
                                           "control:prompt:en", "scale:2"]
    by = {r["method"]: r for r in rows}
    for method in ("p_max", "diffmean*best", "resid:best", "prompt:en"):
        assert by[f"control:{method}"]["factor"] == f"control:{by[method]['factor']}"
        assert by[f"control:{method}"]["alpha"] == by[method]["alpha"]
        assert by[f"control:{method}"]["layer"] == by[method]["layer"]
    iso = by["control-iso:resid:best"]  # the isotropic null beside the covariance-matched one, same dose and layer
    assert iso["factor"] == f"control-iso:{by['resid:best']['factor']}"
    assert (iso["alpha"], iso["layer"]) == (by["resid:best"]["alpha"], by["resid:best"]["layer"])
    assert "isotropic" in iso["note"] and "covariance-matched" in by["control:resid:best"]["note"]
    assert by["diffmean*best"]["factor"] in {f"diffmean*{a}" for a in ("1", "2", "4", "8")}
    assert float(by["diffmean*best"]["alpha"]) == parse_factor(by["diffmean*best"]["factor"]).value
    assert by["resid:best"]["layer"] == "0" and by["resid:best"]["chosen"] == "layer+alpha"  # 2 layers: only 0
    assert by["p_max"]["layer"] == "all" and by["prompt:en"]["layer"] == "-" and by["prompt:en"]["alpha"] == ""
    assert by["scale:2"]["note"] and by["none"]["udhr_ppl_self"] == "1"
    for r in rows[1:]:
        assert 0 <= float(r["lss"]) <= 1 and 0 <= float(r["forcing"]) <= 1 and float(r["udhr_ppl_self"]) > 0
    frame = read_table(compared / "compare.csv")  # what the report and figures read
    assert list(frame["method"]) == [r["method"] for r in rows]
    summary = json.loads((compared / "compare_summary.json").read_text())
    assert summary["n_facts"] == {"en": 2, "fr": 2, "ru": 2} and summary["n_held_out"] == {"en": 2, "fr": 2, "ru": 2}
    chosen = summary["methods"]["diffmean*best"]
    assert chosen["factor"] == by["diffmean*best"]["factor"] and len(chosen["candidates"]) == 4
    assert "candidates" not in summary["methods"]["p_max"]


def test_compare_numbers_are_the_lss_numbers(compared, tmp_path, udhr):
    """A method's LSS, wins, gain and damage are exactly what `lss` reports for its factor on the same facts."""
    import shutil

    rows = {r["method"]: r for r in _csv(compared / "compare.csv")}
    factor = rows["diffmean*best"]["factor"]
    copy = tmp_path / "run"
    shutil.copytree(compared, copy, ignore=shutil.ignore_patterns("partial"))
    assert main(["lss", str(copy), "--langs", "en,fr,ru", "--max-facts", "2", "--factors", factor, "--quiet"]) == 0
    summary = json.loads((copy / "lss_summary.json").read_text())["factors"][factor]
    for col, key in (("lss", "mean_lss"), ("target_wins", "target_wins"), ("target_gain", "target_gain"),
                     ("source_damage", "source_damage")):
        assert float(rows["diffmean*best"][col]) == pytest.approx(summary[key], rel=1e-5, abs=1e-9), col


def test_compare_figure_and_report(compared):
    from lens_steer.report import build_report, run_figures

    fig = run_figures(compared)["compare_methods"]
    names = [t.name for t in fig.data]
    assert names[0] == "none" and "resid:best" in names and "resid:best (control)" in names
    html = build_report(compared).read_text(encoding="utf-8")
    assert "Steering methods compared" in html and "Chosen on held-out facts" in html


@pytest.mark.parametrize("bad,message", [
    ("control:p_max", "adds each method's control itself"), ("zero*best", "best stands for"),
    ("p_maximum", "cannot parse factor"), ("resid:9*2", "out of range"),
])
def test_bad_methods_are_one_line_and_write_nothing(run, udhr, capsys, bad, message, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("partial", "compare*"))
    capsys.readouterr()
    assert main(["compare", str(copy), "--methods", f"p_max,{bad}", *COMPARE]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (copy / "compare.csv").exists()


def test_runs_without_residual_means_refuse_resid_methods(run, udhr, capsys, tmp_path):
    import shutil

    from lens_steer.stats import Stats

    copy = tmp_path / "old"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("partial", "compare*"))
    s = Stats.load(copy)
    Stats(s.over_zero, s.n_tokens, s.n_sentences, s.act_sum, s.act_sqsum, s.sent_means, s.manifest).save(copy)
    neurons = json.loads((copy / "neurons.json").read_text())  # a run of that time named no statistics
    del neurons["provenance"]["stats_fingerprint"]
    (copy / "neurons.json").write_text(json.dumps(neurons))
    capsys.readouterr()
    assert main(["compare", str(copy), "--methods", "p_max,resid:best", *COMPARE]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "record the run again" in err
    assert not (copy / "compare.csv").exists()


def test_no_held_out_facts_is_one_line(run, udhr, capsys):
    assert main(["compare", str(run), "--methods", "diffmean*best", "--reference", "diffmean*best", "--langs",
                 "en,fr", "--max-facts", "500", "--quiet"]) == 2
    assert "no held-out facts" in capsys.readouterr().err


def test_compare_intervals_and_counts(compared):
    """Every number with an interval lies inside it; forcing's Wilson interval is recomputable from n_generations,
    target wins' from n_facts (pairs x facts per pair); the figure draws the whiskers."""
    from lens_steer.intervals import wilson_ci
    from lens_steer.report import run_figures

    rows = _csv(compared / "compare.csv")
    for metric in ("lss", "target_wins", "target_wins_base", "target_gain", "source_damage", "specificity",
                   "forcing", "udhr_ppl_self", "udhr_ppl_cross"):
        i = COMPARE_COLUMNS.index(metric)
        assert COMPARE_COLUMNS[i + 1:i + 3] == (f"{metric}_low", f"{metric}_high")
        for r in rows:
            if r[metric] and r[f"{metric}_low"]:
                assert float(r[f"{metric}_low"]) - 1e-5 <= float(r[metric]) <= float(r[f"{metric}_high"]) + 1e-5, \
                    (r["method"], metric)
    by = {r["method"]: r for r in rows}
    for method in ("none", "p_max", "control:p_max"):
        r = by[method]
        n = int(r["n_generations"])
        assert n > 0 and int(r["n_facts"]) == 2 * int(r["n_pairs"])  # 2 reported facts per source
        assert (float(r["forcing_low"]), float(r["forcing_high"])) == pytest.approx(
            wilson_ci(float(r["forcing"]) * n, n), abs=1e-5)
    assert by["p_max"]["udhr_ppl_self_low"] and int(by["p_max"]["n_ppl_self"]) >= 1
    fig = run_figures(compared)["compare_methods"]
    method = next(t for t in fig.data if t.name == "p_max")
    assert method.error_y.array is not None and method.error_x.array is not None


def test_seeded_splits_shuffle_each_source():
    """Seed 0 is the cloze's order; seed s a deterministic shuffle per source, the reported and held-out facts
    disjoint and of the same sizes."""
    facts = {"en": list(range(20)), "fr": list(range(100, 120))}
    assert split_facts(facts, 5, 5, seed=0) == split_facts(facts, 5, 5)
    one, again = split_facts(facts, 5, 5, seed=1), split_facts(facts, 5, 5, seed=1)
    assert one == again and one != split_facts(facts, 5, 5) and one != split_facts(facts, 5, 5, seed=2)
    for s in facts:
        assert len(one[0][s]) == len(one[1][s]) == 5 and not set(one[0][s]) & set(one[1][s])
        assert set(one[0][s]) | set(one[1][s]) <= set(facts[s])
    assert facts["en"] == list(range(20))  # the caller's lists are left alone


def test_seeds_redraw_the_fact_split(compared, tmp_path):
    """--seeds 2: every method row gets its spread over the two fact splits, the summary the per-seed values, and
    seed 0's numbers are exactly those of --seeds 1; forcing used --forcing-prompts per compared language."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(compared, copy, ignore=shutil.ignore_patterns("partial"))
    mp = pytest.MonkeyPatch()
    from lens_steer.evals import data

    mp.setattr(data, "load_udhr_eval", lambda langs, limit=None: {c: SENTENCES[c][:limit] for c in langs})
    try:
        argv = ["compare", str(copy), "--methods", "p_max,diffmean*best", *COMPARE]
        assert main([*argv, "--seeds", "1"]) == 0
        one = {r["method"]: r for r in _csv(copy / "compare.csv")}
        assert main([*argv, "--seeds", "2"]) == 0
        two = {r["method"]: r for r in _csv(copy / "compare.csv")}
    finally:
        mp.undo()
    summary = json.loads((copy / "compare_summary.json").read_text())
    for m in ("p_max", "diffmean*best"):
        for col in ("factor", "lss", "lss_low", "lss_high", "target_wins", "source_damage", "forcing", "udhr_ppl_self"):
            assert two[m][col] == one[m][col], (m, col)
        assert one[m]["lss_seed_min"] == one[m]["lss_seed_max"] == one[m]["lss"]  # one split: its own LSS
        seeds = summary["methods"][m]["seeds"]
        assert [s["seed"] for s in seeds] == [0, 1]
        assert seeds[0]["lss"] == pytest.approx(float(one[m]["lss"]), rel=1e-5)
        values = [s["lss"] for s in seeds]
        assert float(two[m]["lss_seed_min"]) == pytest.approx(min(values), rel=1e-5)
        assert float(two[m]["lss_seed_max"]) == pytest.approx(max(values), rel=1e-5)
        wins = [s["target_wins"] for s in seeds]
        assert float(two[m]["target_wins_seed_min"]) == pytest.approx(min(wins), rel=1e-5, abs=1e-9)
        assert float(two[m]["target_wins_seed_max"]) == pytest.approx(max(wins), rel=1e-5, abs=1e-9)
    assert two["control:p_max"]["note"] == "seeds: 2" and two["none"]["lss_seed_min"] == ""
    # forcing: 2 prompts (the default) in each of the other 2 compared languages, for each of the 3 targets
    assert int(two["p_max"]["n_generations"]) == 3 * 2 * 2 and summary["forcing_bank"] == "udhr"
    assert sorted(summary["prompts"]) == ["en", "fr", "ru"] and all(len(v) == 2 for v in summary["prompts"].values())


def test_compare_forcing_prompts_too_many_is_one_line(run, udhr, capsys):
    assert main(["compare", str(run), "--methods", "p_max", "--langs", "en,fr", "--forcing-prompts", "999",
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--forcing-prompts 999: the udhr bank has" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------------------------
# Methods compared on the same items: paired differences against the reference (issue 27)
# ---------------------------------------------------------------------------------------------------------------
def _hand_items(lss, forcing, ppl_self):
    """method_items-shaped cells: LSS indicators on facts of one pair, forcing on 2 targets, NLL changes on texts."""
    return {"lss": {("en", "fr"): dict(enumerate(lss))}, "target_wins": {}, "target_gain": {},
            "source_damage": {("en", "fr"): dict(enumerate([-x for x in lss]))},
            "forcing": {t: dict(enumerate(forcing)) for t in ("fr", "ru")},
            "udhr_ppl_self": {("fr", "fr"): {("fr", j): v for j, v in enumerate(ppl_self)}}, "udhr_ppl_cross": {}}


def test_paired_columns_by_hand():
    from lens_steer.paired import PAIRED, paired_columns

    ref = _hand_items([0, 1, 0, 1, 0, 1, 0, 1], [0, 0, 1, 0], [0.1, 0.2, 0.3, 0.2])
    up = _hand_items([1] * 8, [1, 1, 1, 1], [0.0, 0.1, 0.2, 0.1])  # better everywhere but damage (more of it)
    got = paired_columns({"ref": ref, "same": ref, "up": up}, "ref", n_boot=500)
    for metric in PAIRED:
        assert got["ref"][f"verdict_{metric}"] == ("reference" if metric in ("lss", "source_damage", "forcing",
                                                                             "udhr_ppl_self") else "")
    assert got["same"]["diff_lss"] == 0 and got["same"]["verdict_lss"] == "indistinguishable"
    assert got["same"]["verdict_forcing"] == "indistinguishable" and got["same"]["diff_udhr_ppl_self"] == 0
    assert got["up"]["diff_lss"] == pytest.approx(0.5) and got["up"]["verdict_lss"] == "better"
    assert got["up"]["diff_forcing"] == pytest.approx(0.75) and got["up"]["verdict_forcing"] == "better"
    assert got["up"]["verdict_source_damage"] == "worse"  # damage is negative nats: lower is more damage
    assert got["up"]["diff_udhr_ppl_self"] == pytest.approx(math.exp(0.1) - math.exp(0.2))
    assert got["up"]["verdict_udhr_ppl_self"] == "better"  # a lower perplexity ratio
    assert math.isnan(got["up"]["diff_target_wins"]) and got["up"]["verdict_target_wins"] == ""
    assert sum(got[m]["rank_first"] for m in got) == pytest.approx(1.0)
    assert got["up"]["rank_first"] > 0.9
    assert repr(paired_columns({"ref": ref, "up": up}, "ref", n_boot=500)) == repr(paired_columns(
        {"ref": ref, "up": up}, "ref", n_boot=500))  # a fixed seed: the same numbers every run (NaN included)


def test_item_weights_give_the_reported_mean():
    """Cells of unequal size (a target scored on fewer prompts): the items' weighted mean is the mean of the cells'
    means, the number the row reports."""
    import torch

    from lens_steer.paired import item_values
    from lens_steer.intervals import weighted_mean

    cells = {"fr": {0: 1.0, 1: 0.0, 2: 0.0}, "ru": {0: 1.0, 2: float("nan")}, "ja": {}}
    keys, values, weights = item_values(cells)
    assert keys == [0, 1, 2]
    assert weighted_mean(torch.tensor(values), torch.tensor(weights)) == pytest.approx((1 / 3 + 1.0) / 2)


def test_pairing_narrows_the_interval_of_correlated_items():
    import torch

    from lens_steer.intervals import paired_bootstrap

    g = torch.Generator().manual_seed(1)
    hardness = torch.randn(40, generator=g) * 3  # items differ a lot, the same way for both methods
    a, b = hardness + 0.5 + 0.1 * torch.randn(40, generator=g), hardness + 0.1 * torch.randn(40, generator=g)
    diff, low, high = paired_bootstrap(a, b)
    _, u_low, u_high = paired_bootstrap(a, b, paired=False)
    assert diff == pytest.approx(float(a.mean() - b.mean()))
    assert 0 < low < diff < high and high - low < (u_high - u_low) / 5
    assert u_low < 0 < u_high  # unpaired, the same difference is lost in the items' spread


def test_rank_first_shares():
    import torch

    from lens_steer.intervals import rank_first

    values = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    shares = rank_first(values, n_boot=300)
    assert float(shares.sum()) == pytest.approx(1.0) and float(shares[2]) > 0.9


def test_compare_pairs_every_method_with_the_reference(compared):
    from lens_steer.paired import PAIRED

    rows = {r["method"]: r for r in _csv(compared / "compare.csv")}
    methods = [m for m in rows if m != "none" and not m.startswith(("control:", "control-iso:"))]
    ref = rows["p_max"]
    for metric in PAIRED:
        assert ref[f"verdict_{metric}"] == "reference" and float(ref[f"diff_{metric}"]) == 0
        for m in methods:
            r = rows[m]
            if r[f"diff_{metric}"] == "":  # a metric the method has no items for
                continue
            # the difference on the same items is the difference of the two rows' means
            assert float(r[f"diff_{metric}"]) == pytest.approx(float(r[metric]) - float(ref[metric]), abs=2e-5), \
                (m, metric)
            assert float(r[f"diff_{metric}_low"]) <= float(r[f"diff_{metric}"]) + 1e-9
            assert float(r[f"diff_{metric}_high"]) >= float(r[f"diff_{metric}"]) - 1e-9
            assert r[f"verdict_{metric}"] in {"better", "worse", "indistinguishable", "reference"}
    for m in ("none", *(m for m in rows if m.startswith(("control:", "control-iso:")))):
        assert all(rows[m][f"diff_{x}"] == "" and rows[m][f"verdict_{x}"] == "" for x in PAIRED)
        assert rows[m]["rank_first"] == ""
    assert sum(float(rows[m]["rank_first"]) for m in methods) == pytest.approx(1.0, abs=1e-6)
    assert rows["control:p_max"]["lss_seed_min"] == rows["control:p_max"]["lss"]  # one draw: no spread
    summary = json.loads((compared / "compare_summary.json").read_text())
    assert summary["reference"] == "p_max"
    paired = summary["methods"]["diffmean*best"]["paired"]
    assert paired["lss"]["diff"] == pytest.approx(float(rows["diffmean*best"]["diff_lss"]), rel=1e-5, abs=1e-9)
    assert paired["forcing"]["verdict"] == rows["diffmean*best"]["verdict_forcing"]
    assert summary["methods"]["p_max"]["paired"]["lss"]["verdict"] == "reference"


def test_unknown_reference_is_one_line(run, udhr, capsys):
    capsys.readouterr()
    assert main(["compare", str(run), "--methods", "p_max,prompt:en", "--reference", "diffmean*best", *COMPARE]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--reference diffmean*best is not among --methods (p_max, prompt:en)" in err
    with pytest.raises(LensSteerError, match="add it to --methods"):
        CompareConfig(methods="diffmean*best")  # the default reference, p_max, is not listed
