"""LSS: hand-made log-prob tables with known answers, batch invariance, files, and the summary rule."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from lens_steer.cloze import Fact
from lens_steer.lss import pair_stats, run_lss, summarise, write_lss
from lens_steer.neurons import NeuronSet
from lens_steer.steer import parse_factor, parse_factors

LANGS = ["en", "fr", "ru"]
WORDS = {"en": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"],
         "fr": ["lundi", "mardi", "mercredi", "jeudi", "vendredi"],
         "ru": ["понедельник", "вторник", "среда", "четверг", "пятница"]}
PROMPTS = {"en": "After {} comes", "fr": "Après {} vient", "ru": "После {} идёт"}


def facts():
    out = {}
    for s in LANGS:
        out[s] = [Fact(f"day:{i}", "day", {s: PROMPTS[s].format(WORDS[s][i])},
                       {u: WORDS[u][i + 1] for u in LANGS}) for i in range(4)]
    return out


def test_pair_stats_known_answer():
    base_s, base_t = torch.tensor([-1.0, -1.0, -2.0, -3.0]), torch.tensor([-5.0, -4.0, -2.0, -3.0])
    int_s, int_t = torch.tensor([-2.0, -1.0, -2.0, -3.0]), torch.tensor([-3.0, -5.0, -2.0, -3.0])
    identical = torch.tensor([False, False, True, False])
    row = pair_stats(base_s, base_t, int_s, int_t, identical)
    # shifts: +3, -1, 0, 0 -> one up of four; nontie facts 0, 1, 3 -> one of three
    assert row["lss"] == 0.25 and row["lss_nontie"] == pytest.approx(1 / 3)
    assert row["mean_shift"] == pytest.approx(0.5) and row["n_ties"] == 2 and row["n_facts"] == 4
    assert row["ci_low"] <= 0.5 <= row["ci_high"]


def test_best_lss_factor_is_the_highest_mean_lss():
    """The paper's choice "by LSS alone" is the highest mean LSS, not the first factor within the top one's CI."""
    rows = [{"factor": f, "layers": "all", "lss": v, "mean_shift": 0.0}
            for f, vals in (("p_median", [0.90, 0.92, 0.94]), ("p_max", [0.91, 0.93, 0.95]), ("zero", [0.4, 0.5]))
            for v in vals]
    summary = summarise(rows, parse_factors("p_median,p_max,zero"))
    assert summary["best_lss_factor"] == "p_max"  # 0.93 > 0.92, although p_median lies within p_max's interval
    assert summarise(rows, parse_factors("zero,p_max"))["best_lss_factor"] == "p_max"


def test_skipped_targets_enter_no_mean(tiny_models):
    """A target without neurons gets rows with an empty LSS and a note; the factor mean, its interval, n_pairs and
    the choice use scored pairs only, and the summary names the skipped target."""
    model = tiny_models["qwen2"]
    d = model.cfg.d_mlp
    neurons = NeuronSet(LANGS, {"en": [[1, 2], [3]], "fr": [[4], [5, 6]], "ru": [[], []]}, 2, d)
    factors = [parse_factor("set:3")]
    with pytest.warns(UserWarning, match="no neurons for ru"):
        rows = run_lss(model, neurons, None, facts(), LANGS, factors, progress=False)
    scored = [r for r in rows if r["target"] != "ru"]
    skipped = [r for r in rows if r["target"] == "ru"]
    assert len(skipped) == 2 and all(r["lss"] != r["lss"] for r in skipped)  # NaN, not 0
    summary = summarise(rows, factors)
    entry = summary["factors"]["set:3"]
    assert entry["n_pairs"] == len(scored) == 4
    assert entry["mean_lss"] == pytest.approx(sum(r["lss"] for r in scored) / len(scored))
    assert summary["skipped_targets"] == ["ru"]


@pytest.mark.parametrize("join, spaced", [("auto", {"en": True, "ja": False}), ("reference", {"en": True, "ja": True})])
def test_the_separator_is_a_property_of_the_prompt(tiny_models, monkeypatch, join, spaced):
    """Every answer of one prompt gets the prompt language's separator, whatever the answer's language: an en prompt
    with a ja answer is "...is 火曜日" (not "...is火曜日"), a ja prompt with an en answer "...明日はTuesday"."""
    import lens_steer.lss as lss_module
    from lens_steer.cloze import load_cloze

    seen: list[tuple[str, list[str]]] = []
    real = lss_module.score

    def spy(model, prompts, answers, **kwargs):
        seen.extend(zip(prompts, answers))
        return real(model, prompts, answers, **kwargs)

    monkeypatch.setattr(lss_module, "score", spy)
    langs = ["en", "ja"]
    cloze = load_cloze("cldr", langs, max_facts=2)
    model = tiny_models["qwen2"]
    d = model.cfg.d_mlp
    neurons = NeuronSet(langs, {"en": [[1], [2]], "ja": [[3], [4]]}, 2, d)
    facts_by = {s: cloze.for_source(s) for s in langs}
    run_lss(model, neurons, None, facts_by, langs, [parse_factor("zero")], join=join, progress=False)
    for s in langs:
        answers = [a for p, ans in seen if p in {f.prompt[s] for f in facts_by[s]} for a in ans]
        assert answers and all(a.startswith(" ") == spaced[s] for a in answers), (s, answers[:4])
        assert all(not a[1:].startswith(" ") for a in answers)


def test_lss_batch_1_equals_batch_32_and_files(tiny_models, tmp_path):
    model = tiny_models["qwen2"]
    d = model.cfg.d_mlp
    g = torch.Generator().manual_seed(1)
    neurons = NeuronSet(LANGS, {c: [torch.randperm(d, generator=g)[:8].tolist() for _ in range(2)] for c in LANGS},
                        2, d)
    neurons.neurons["ru"] = [[], []]
    factors = [parse_factor("set:3"), parse_factor("zero")]
    with pytest.warns(UserWarning, match="no neurons for ru"):
        one = run_lss(model, neurons, None, facts(), LANGS, factors, batch_size=1, progress=False)
    with pytest.warns(UserWarning):
        many = run_lss(model, neurons, None, facts(), LANGS, factors, batch_size=32, progress=False, per_layer=True)
    all_layer = [r for r in many if r["layers"] == "all"]
    def key(rows):
        return [(r["source"], r["target"], r["lss"] if r["lss"] == r["lss"] else "nan") for r in rows]

    assert key(one) == key(all_layer)
    assert len(one) == 2 * 3 * 2  # factors x sources x targets != source
    assert {r["note"] for r in one if r["target"] == "ru"} == {"skipped: target has no neurons"}
    assert {r["layers"] for r in many} == {"all", 0, 1}
    summary = summarise(one, factors)
    neurons.save(tmp_path)  # a derived artifact carries its neuron set's fingerprint
    write_lss(tmp_path, one, summary)
    table = list(csv.DictReader((tmp_path / "lss.csv").open()))
    assert table[0]["factor"] == "set:3"
    assert all((r["lss"] == "") == (r["target"] == "ru") for r in table)  # skipped targets: empty, not 0
    assert json.loads((tmp_path / "lss_summary.json").read_text())["best_factor"] in ("set:3", "zero")


def test_kept_baselines_are_scored_once_and_change_nothing(tiny_models, monkeypatch):
    """run_lss(baselines=cache) scores each source's baseline on the first call only and gives the rows of a call
    without the cache; other facts for a source are scored again (the cache never answers for different facts)."""
    import lens_steer.lss as lss_module

    model = tiny_models["qwen2"]
    d = model.cfg.d_mlp
    neurons = NeuronSet(LANGS, {c: [[1 + i, 2 + i], [3 + i]] for i, c in enumerate(LANGS)}, 2, d)
    scored: list[str] = []
    real = lss_module._Source.score.__func__

    def counting(cls, model, s, *args):
        scored.append(s)
        return real(cls, model, s, *args)

    monkeypatch.setattr(lss_module._Source, "score", classmethod(counting))
    cache: dict = {}
    first = run_lss(model, neurons, None, facts(), LANGS, [parse_factor("set:3")], baselines=cache, progress=False)
    second = run_lss(model, neurons, None, facts(), LANGS, [parse_factor("zero"), parse_factor("set:3")],
                     baselines=cache, progress=False)
    assert scored == LANGS  # the second call reused all three
    plain = run_lss(model, neurons, None, facts(), LANGS, [parse_factor("zero"), parse_factor("set:3")],
                    progress=False)
    assert second == plain and [r for r in second if r["factor"] == "set:3"] == first
    fewer = {s: v[:2] for s, v in facts().items()}
    run_lss(model, neurons, None, fewer, LANGS, [parse_factor("zero")], baselines=cache, progress=False)
    assert scored == LANGS + LANGS + LANGS  # the plain call scored again, and so did the other facts


# every share column of lss.csv and the interval it carries; the count its Wilson interval is over
SHARES = {"lss": "n_facts", "lss_nontie": "n_nontie", "target_wins": "n_facts", "target_wins_base": "n_facts"}
MEANS = {"mean_shift": ("ci_low", "ci_high"), "target_gain": ("target_gain_low", "target_gain_high"),
         "source_damage": ("source_damage_low", "source_damage_high"),
         "specificity": ("specificity_low", "specificity_high")}


def test_every_share_has_its_interval_and_count(tiny_models, tmp_path):
    """Wilson for the shares (recomputed from the share and its count), the bootstrap for the means; each interval
    contains its number, n_facts is the number of facts, and the columns sit right after their metric."""
    from lens_steer.intervals import wilson_ci
    from lens_steer.lss import LSS_COLUMNS

    model = tiny_models["qwen2"]
    d = model.cfg.d_mlp
    g = torch.Generator().manual_seed(2)
    neurons = NeuronSet(LANGS, {c: [torch.randperm(d, generator=g)[:8].tolist() for _ in range(2)] for c in LANGS},
                        2, d)
    factors = [parse_factor("set:3"), parse_factor("zero")]
    rows = run_lss(model, neurons, None, facts(), LANGS, factors, progress=False)
    for metric in SHARES:
        i = LSS_COLUMNS.index(metric)
        assert LSS_COLUMNS[i + 1:i + 3] == (f"{metric}_low", f"{metric}_high")
    for r in rows:
        assert r["n_facts"] == len(facts()[r["source"]]) and 0 <= r["n_nontie"] <= r["n_facts"]
        for metric, count in SHARES.items():
            assert r[f"{metric}_low"] <= r[metric] <= r[f"{metric}_high"], metric
            expect = wilson_ci(r[metric] * r[count], r[count])
            assert (r[f"{metric}_low"], r[f"{metric}_high"]) == pytest.approx(expect), metric
        for metric, (low, high) in MEANS.items():
            assert r[low] - 1e-9 <= r[metric] <= r[high] + 1e-9, metric
    neurons.save(tmp_path)
    write_lss(tmp_path, rows, summarise(rows, factors))
    header = next(csv.reader((tmp_path / "lss.csv").open()))
    assert tuple(header) == (*LSS_COLUMNS, "run_fingerprint")
