"""Matched random-neuron controls, the non-saturating steering metrics and the factor-choice rule."""

from __future__ import annotations

import pytest
import torch

from lens_steer.control import matched_control
from lens_steer.errors import LensSteerError
from lens_steer.choice import choose_factor, summarise
from lens_steer.lss import pair_stats, win_stats
from lens_steer.neurons import NeuronSet
from lens_steer.stats import Stats
from lens_steer.steer import SWEEPS, parse_factor, sweep_factors

LANGS = ["en", "fr", "ja"]


def _stats(n_layers=3, d_mlp=40, seed=0) -> Stats:
    g = torch.Generator().manual_seed(seed)
    k = len(LANGS)
    n_tokens = torch.tensor([100, 120, 90])
    over = (torch.rand(n_layers, d_mlp, k, generator=g) * n_tokens).round().long()
    sent = torch.rand(k, 4, n_layers, d_mlp, generator=g)
    return Stats(over, n_tokens, torch.tensor([5, 5, 5]), torch.zeros(k, n_layers, d_mlp),
                 torch.zeros(k, n_layers, d_mlp), sent, {"languages": LANGS})


def _neurons() -> NeuronSet:
    return NeuronSet(LANGS, {"en": [[1, 2], [], [3]], "fr": [[2, 5, 7], [8], []], "ja": [[], [9, 10], [11, 12, 13]]},
                     n_layers=3, d_mlp=40, provenance={"method": "lape"})


def test_control_matches_counts_and_avoids_every_language_set():
    neurons, stats = _neurons(), _stats()
    ctrl = matched_control(neurons, stats, seed=0)
    assert torch.equal(ctrl.counts(), neurons.counts())
    used = neurons.mask().any(dim=-1)
    assert not (ctrl.mask().any(dim=-1) & used).any()
    assert ctrl.provenance["method"] == "matched_control"


def test_control_is_reproducible_by_seed_and_seeds_differ():
    neurons, stats = _neurons(), _stats()
    a, b, c = (matched_control(neurons, stats, seed=s) for s in (0, 0, 1))
    assert a.neurons == b.neurons
    assert a.neurons != c.neurons


def test_control_prefers_the_targets_probability_range():
    neurons, stats = _neurons(), _stats()
    prob = stats.probability()
    ctrl = matched_control(neurons, stats, seed=3)
    for code in LANGS:
        k = LANGS.index(code)
        for layer, idx in enumerate(neurons.neurons[code]):
            if not idx:
                continue
            lo, hi = float(prob[layer, idx, k].min()), float(prob[layer, idx, k].max())
            used = neurons.mask()[layer].any(dim=-1)
            in_range = [j for j in range(40) if not used[j] and lo <= float(prob[layer, j, k]) <= hi]
            picked = ctrl.neurons[code][layer]
            # as many picks inside the range as the range can supply
            assert sum(lo <= float(prob[layer, j, k]) <= hi for j in picked) == min(len(idx), len(in_range))


def test_control_refuses_an_impossible_match():
    full = NeuronSet(["en"], {"en": [list(range(39))]}, n_layers=1, d_mlp=40)
    stats = Stats(torch.ones(1, 40, 1, dtype=torch.long), torch.tensor([10]), torch.tensor([1]),
                  torch.zeros(1, 1, 40), torch.zeros(1, 1, 40), torch.zeros(1, 1, 1, 40), {"languages": ["en"]})
    with pytest.raises(LensSteerError, match="matched control is impossible"):
        matched_control(full, stats)


def test_control_factor_equals_p_max_on_the_control_set(tiny_models):
    """control:p_max through the Steerer == p_max with the matched set as the neuron set."""
    from helpers import SENTENCES
    from lens_steer.identification import lape
    from lens_steer.recorder import RecordConfig, record
    from lens_steer.steer import Intervention, Steerer

    model = tiny_models["llama"]
    stats = record(model, {c: SENTENCES[c] for c in ("en", "fr", "ru")},
                   config=RecordConfig(n_sentence_means=2, min_sentence_tokens=2), progress=False)
    neurons = lape(stats, top_rate=0.2)
    tokens = model.to_tokens(SENTENCES["en"][0])
    steerer = Steerer(model, neurons, stats)
    with torch.inference_mode(), steerer.apply(Intervention("fr", "control:p_max", seed=2)):
        got = model(tokens, return_type="logits")
    plain = Steerer(model, matched_control(neurons, stats, seed=2), stats)
    with torch.inference_mode(), plain.apply(Intervention("fr", "p_max")):
        want = model(tokens, return_type="logits")
    with torch.inference_mode(), steerer.apply(Intervention("fr", "p_max")):
        real = model(tokens, return_type="logits")
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got, real)


def test_control_factor_parsing():
    f = parse_factor("control:p_median*2")
    assert (f.kind, f.stat, f.value, f.control) == ("stat", "median", 2.0, True)
    for bad in ("control:zero", "control:scale:2", "control:control:p_max"):
        with pytest.raises(LensSteerError, match="control"):
            parse_factor(bad)


def test_sweeps_are_monotone_grids():
    for name in SWEEPS:
        values = [f.value for f in sweep_factors(name)]
        assert values == sorted(values) and len(set(values)) == len(values) and len(values) >= 5
    assert [f.text for f in sweep_factors("p_max")][2] == "p_max"
    with pytest.raises(LensSteerError, match="unknown sweep"):
        sweep_factors("scale")


def test_gain_damage_on_a_hand_made_table():
    base_s, base_t = torch.tensor([-1.0, -2.0]), torch.tensor([-5.0, -6.0])
    int_s, int_t = torch.tensor([-4.0, -4.0]), torch.tensor([-2.0, -4.0])
    row = pair_stats(base_s, base_t, int_s, int_t, torch.tensor([False, False]))
    assert row["target_gain"] == pytest.approx(2.5) and row["source_damage"] == pytest.approx(-2.5)
    assert row["target_gain_low"] <= 2.5 <= row["target_gain_high"]
    assert row["lss"] == 1.0 and row["mean_shift"] == pytest.approx(5.0)


def test_target_wins_and_specificity_known_answer():
    # 4 facts x 3 languages (s=0, t=1, u=2); summed = normalised here
    base = torch.tensor([[0.0, -3.0, -4.0], [0.0, -1.0, -5.0], [-2.0, -1.0, -3.0], [0.0, -6.0, -1.0]])
    steered = torch.tensor([[-2.0, -1.0, -5.0], [-1.0, -2.0, -4.0], [-3.0, 0.0, -1.0], [-1.0, -2.0, -0.5]])
    w = win_stats(base, steered, base, steered, si=0, ti=1)
    assert w["target_wins"] == 0.5  # facts 0 and 2
    assert w["target_wins_base"] == 0.25  # fact 2 already
    assert w["chance"] == pytest.approx(1 / 3)
    # u's D = l_u - l_s rises in every fact: -4 -> -3, -5 -> -3, -1 -> 2, -1 -> 0.5
    assert w["specificity"] == 1.0


def _per(**kw):
    base = dict(mean_lss=0.99, source_damage=-5.0, target_wins=0.2, control=False)
    base.update(kw)
    return base


def test_rule_prefers_forcing_then_less_damage():
    per = {"p_max": _per(forcing=0.6, source_damage=-9.0), "p_median": _per(forcing=0.595, source_damage=-7.0),
           "p_max*2": _per(forcing=0.9, source_damage=-15.0), "zero": _per(kind="zero", forcing=1.0),
           "control:p_max": _per(mean_lss=0.6, control=True, forcing=0.0)}
    best, why = choose_factor(per, [parse_factor(f) for f in per])
    assert best == "p_median"  # within 0.01 of p_max's forcing, less damage; p_max*2 out of the damage bound
    assert "forcing success" in why and "control" in why
    assert choose_factor(per, [parse_factor(f) for f in per], damage_bound=20)[0] == "p_max*2"


def test_rule_needs_lss_above_the_control_and_falls_back():
    per = {"p_max": _per(mean_lss=0.55, target_wins=0.3), "p_median": _per(mean_lss=0.7, target_wins=0.1),
           "control:p_max": _per(mean_lss=0.6, control=True)}
    assert choose_factor(per, [parse_factor(f) for f in per])[0] == "p_median"  # p_max is below the control
    per["p_median"]["mean_lss"] = 0.5
    best, why = choose_factor(per, [parse_factor(f) for f in per])
    assert best == "p_max" and why.startswith("no factor")


def test_summarise_uses_target_wins_without_forcing():
    rows = []
    for f, wins, dmg in (("p_max", 0.2, -3.0), ("p_max*2", 0.5, -4.0)):
        rows += [dict(factor=f, layers="all", lss=1.0, mean_shift=1.0, target_gain=1.0, source_damage=dmg,
                      target_wins=wins, target_wins_base=0.0, chance=0.25, specificity=0.1) for _ in range(3)]
    summary = summarise(rows, [parse_factor("p_max"), parse_factor("p_max*2")])
    assert summary["best_factor"] == "p_max*2" and "target wins" in summary["reason"]
    assert summary["best_lss_factor"] == "p_max"  # LSS ties: the paper-style rule cannot separate them
