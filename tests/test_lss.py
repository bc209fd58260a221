"""LSS: hand-made log-prob tables with known answers, batch invariance, files, and the summary rule."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from lens_steer.lss import ClozeItem, pair_stats, run_lss, summarise, write_lss
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
        out[s] = [ClozeItem(f"day:{i}", {s: PROMPTS[s].format(WORDS[s][i])},
                            {u: " " + WORDS[u][i + 1] for u in LANGS}) for i in range(4)]
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


def test_summary_rule_prefers_first_listed_within_interval():
    rows = [{"factor": f, "layers": "all", "lss": v, "mean_shift": 0.0}
            for f, vals in (("p_median", [0.90, 0.92, 0.94]), ("p_max", [0.91, 0.93, 0.95]), ("zero", [0.4, 0.5]))
            for v in vals]
    summary = summarise(rows, parse_factors("p_median,p_max,zero"))
    assert summary["best_factor"] == "p_median"  # within p_max's interval, listed first
    summary = summarise(rows, parse_factors("zero,p_max"))
    assert summary["best_factor"] == "p_max"


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
    assert [(r["source"], r["target"], r["lss"]) for r in one] == [(r["source"], r["target"], r["lss"]) for r in all_layer]
    assert len(one) == 2 * 3 * 2  # factors x sources x targets != source
    assert {r["note"] for r in one if r["target"] == "ru"} == {"skipped: target has no neurons"}
    assert {r["layers"] for r in many} == {"all", 0, 1}
    summary = summarise(one, factors)
    write_lss(tmp_path, one, summary)
    table = list(csv.DictReader((tmp_path / "lss.csv").open()))
    assert table[0]["factor"] == "set:3" and all(r["lss"] != "" for r in table)
    assert json.loads((tmp_path / "lss_summary.json").read_text())["best_factor"] in ("set:3", "zero")
