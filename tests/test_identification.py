"""LAPE and the other identification methods on hand-made statistics with known answers."""

from __future__ import annotations

import pytest
import torch

from lens_steer.errors import LensSteerError
from lens_steer.identification import (activated, ap, ap_lape, ap_scores, average_precision, identify, lape,
                                 lape_from_probability, top_k_by_probability)
from lens_steer.stats import Stats


def make_stats(over_zero: torch.Tensor, n_tokens: list[int], languages: list[str],
               sent_means: torch.Tensor | None = None) -> Stats:
    layers, d, k = over_zero.shape
    if sent_means is None:
        sent_means = torch.zeros(k, 0, layers, d)
    return Stats(over_zero.long(), torch.tensor(n_tokens), torch.ones(k, dtype=torch.long),
                 torch.zeros(k, layers, d, dtype=torch.float64), torch.zeros(k, layers, d, dtype=torch.float64),
                 sent_means, {"languages": languages})


def reference_lape(over_zero, n, top_rate=0.01, filter_rate=0.95, bar=0.95):
    """Tang et al.'s identify.py transcribed (with bincount's minlength fix) as an independent oracle."""
    probs = over_zero / n
    normed = probs / probs.sum(dim=-1, keepdim=True)
    normed[torch.isnan(normed)] = 0
    log_probs = torch.where(normed > 0, normed.log(), 0)
    entropy = -torch.sum(normed * log_probs, dim=-1)
    flat = probs.flatten()
    top_prob_value = flat.kthvalue(round(len(flat) * filter_rate)).values.item()
    top_position = (probs > top_prob_value).sum(dim=-1)
    entropy[top_position == 0] = torch.inf
    flat_entropy = entropy.flatten()
    _, index = flat_entropy.topk(round(len(flat_entropy) * top_rate), largest=False)
    row, col = index // entropy.size(1), index % entropy.size(1)
    selected = probs[row, col].transpose(0, 1)
    bar_value = flat.kthvalue(round(len(flat) * bar)).values.item()
    lang, idx = torch.where(selected > bar_value)
    out = torch.zeros_like(probs, dtype=torch.bool)
    out[row[idx], col[idx], lang] = True
    return out


def test_lape_known_answer_with_a_language_that_gets_no_neurons():
    # 2 layers x 5 neurons x 3 languages; 100 tokens each. Language "c" fires nowhere specifically.
    oz = torch.full((2, 5, 3), 10)
    oz[0, 1] = torch.tensor([90, 5, 10])   # en-specific, layer 0
    oz[1, 3] = torch.tensor([4, 80, 10])   # fr-specific, layer 1
    oz[1, 0] = torch.tensor([60, 60, 10])  # shared by en and fr
    stats = make_stats(oz, [100, 100, 100], ["en", "fr", "c"])
    ns = lape(stats, top_rate=0.3, filter_rate=0.8, activation_bar_ratio=0.8)
    assert ns.languages == ["en", "fr", "c"]
    assert ns.neurons == {"en": [[1], [0]], "fr": [[], [0, 3]], "c": [[], []]}
    assert ns.totals() == {"en": 2, "fr": 2, "c": 0}
    assert ns.provenance["method"] == "lape" and ns.provenance["params"]["top_rate"] == 0.3


def test_lape_ranks_globally_not_per_layer():
    oz = torch.full((2, 4, 2), 50)
    oz[1, 0] = torch.tensor([99, 1])
    oz[1, 1] = torch.tensor([1, 99])
    oz[0, 2] = torch.tensor([70, 30])  # less specific than both layer-1 neurons
    mask = lape_from_probability(oz / 100.0, top_rate=0.25, filter_rate=0.75, activation_bar_ratio=0.75)
    assert mask[1].any() and not mask[0].any()  # both picks come from layer 1


def test_lape_matches_reference_implementation_on_random_counts():
    g = torch.Generator().manual_seed(0)
    oz = torch.randint(0, 1000, (4, 300, 6), generator=g).float()
    oz[..., 2] *= torch.rand(4, 300, generator=g) ** 3  # make some neurons language-specific
    n = torch.tensor([1000.0] * 6)
    ours = lape_from_probability(oz / n, top_rate=0.05)
    assert torch.equal(ours, reference_lape(oz, n, top_rate=0.05))
    assert ours.any()


def test_lape_is_nan_safe_for_dead_neurons_and_empty_languages():
    oz = torch.zeros(1, 6, 2)
    oz[0, 0, 0] = 50
    stats = make_stats(oz, [100, 0], ["en", "xx"])
    ns = lape(stats, top_rate=0.5, filter_rate=0.5, activation_bar_ratio=0.5)
    assert ns.neurons["en"] == [[0]] and ns.neurons["xx"] == [[]]


@pytest.mark.parametrize("bad", [0.0, 1.5, -0.1])
def test_lape_rejects_bad_rates(bad):
    with pytest.raises(LensSteerError, match="top_rate"):
        lape_from_probability(torch.rand(1, 4, 2), top_rate=bad)


def test_activated_requires_every_sentence_positive():
    means = torch.tensor([[[[1.0, -1.0, 0.5]], [[2.0, 0.1, 0.0]]]])  # [1 lang, 2 sentences, 1 layer, 3 neurons]
    stats = make_stats(torch.zeros(1, 3, 1), [10], ["en"], sent_means=means)
    assert activated(stats).neurons == {"en": [[0]]}
    assert identify(stats, "activated").neurons == {"en": [[0]]}
    with pytest.raises(LensSteerError, match="unknown method"):
        identify(stats, "magic")


def test_top_k_by_probability():
    oz = torch.tensor([[[5, 1], [9, 0], [1, 8]]])
    ns = top_k_by_probability(make_stats(oz, [10, 10], ["en", "fr"]), k=2)
    assert ns.neurons == {"en": [[0, 1]], "fr": [[0, 2]]}


def test_activation_bar_is_independent_of_the_filter_rate():
    # tau (filter 0.8) = 0.1; beta = 0.05 lets every candidate join each language above 0.05, "c" included.
    oz = torch.full((2, 5, 3), 10)
    oz[0, 1] = torch.tensor([90, 5, 10])
    oz[1, 3] = torch.tensor([4, 80, 10])
    oz[1, 0] = torch.tensor([60, 60, 10])
    stats = make_stats(oz, [100, 100, 100], ["en", "fr", "c"])
    same = lape(stats, top_rate=0.3, filter_rate=0.8, activation_bar_ratio=0.8)
    low = lape(stats, top_rate=0.3, filter_rate=0.8, activation_bar_ratio=0.05)
    assert same.neurons["c"] == [[], []]
    assert low.neurons == {"en": [[1], [0]], "fr": [[], [0, 3]], "c": [[1], [0, 3]]}
    assert low.provenance["params"] == {"top_rate": 0.3, "filter_rate": 0.8, "activation_bar_ratio": 0.05}


# ---- AP and AP & LAPE ----

def test_average_precision_equals_sklearn_with_ties_and_duplicates(monkeypatch):
    from sklearn.metrics import average_precision_score

    import sys

    g = torch.Generator().manual_seed(1)
    k, n, layers, d = 3, 8, 2, 40
    means = (torch.randn(k, n, layers, d, generator=g) * 0.05).half().float()
    means[..., :20] = torch.randint(-2, 3, (k, n, layers, 20), generator=g).float() / 4  # heavy ties
    means[:, 1] = means[:, 0]  # duplicate sentences within a language
    means[1, 2] = means[0, 2]  # and across languages
    means[2, 3, 0, 25] = -0.0  # -0.0 ties with 0.0, as in numpy
    means[2, 4, 0, 25] = 0.0
    stats = make_stats(torch.zeros(layers, d, k), [1] * k, ["a", "b", "c"], sent_means=means)
    scores = ap_scores(stats)
    labels = torch.arange(k).repeat_interleave(n).numpy()
    flat = stats.sent_means.reshape(k * n, layers, d).double().numpy()
    for layer in range(layers):
        for j in range(d):
            for lang in range(k):
                want = average_precision_score(labels == lang, flat[:, layer, j])
                assert abs(float(scores[lang, layer, j]) - want) < 1e-12, (lang, layer, j)
    # Chunking (bounded memory) does not change a single bit.
    monkeypatch.setattr(sys.modules["lens_steer.identification"], "AP_CHUNK_ELEMENTS", 50)
    assert torch.equal(ap_scores(stats), scores)


def _ap_case() -> Stats:
    """2 languages x 2 sentences, 2 layers x 3 neurons, with known AP and a LAPE set of 2 neurons per language."""
    means = torch.zeros(2, 2, 2, 3)
    means[0, :, 0, 0], means[1, :, 0, 0] = torch.tensor([1.0, 2.0]), 0.0  # en AP 1,    fr AP 0.5
    means[0, :, 0, 1], means[1, :, 0, 1] = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])  # 0.5, 0.5 (ties)
    means[:, :, 0, 2] = 3.0                                               # all tied:  0.5, 0.5
    means[0, :, 1, 0], means[1, :, 1, 0] = 0.0, 5.0                       # en 0.5,    fr 1
    means[0, :, 1, 1], means[1, :, 1, 1] = torch.tensor([2.0, 0.5]), torch.tensor([1.0, 0.0])  # 5/6, 0.5
    means[0, :, 1, 2], means[1, :, 1, 2] = torch.tensor([1.0, 2.0]), 0.0  # en AP 1 (ties with layer 0 neuron 0)
    p = torch.tensor([[[9, 1], [1, 9], [5, 5]], [[1, 8], [8, 1], [5, 5]]])  # p x 10: en (0,0),(1,1); fr (0,1),(1,0)
    return make_stats(p, [10, 10], ["en", "fr"], sent_means=means)


def test_ap_top_k_and_tie_order_on_a_hand_made_case():
    stats = _ap_case()
    scores = ap_scores(stats)
    want = torch.tensor([[[1.0, 0.5, 0.5], [0.5, 5 / 6, 1.0]], [[0.5, 0.5, 0.5], [1.0, 0.5, 0.5]]], dtype=torch.float64)
    torch.testing.assert_close(scores, want, rtol=0, atol=1e-15)
    # Equal AP goes to the lower (layer, neuron), as the reference's stable sort does.
    assert ap(stats, k=1).neurons == {"en": [[0], []], "fr": [[], [0]]}
    assert ap(stats, k=2).neurons == {"en": [[0], [2]], "fr": [[0], [0]]}
    assert ap(stats, k=4).neurons == {"en": [[0, 1], [1, 2]], "fr": [[0, 1, 2], [0]]}
    assert ap(stats, k=2).provenance["params"] == {"k": 2, "k_rule": "explicit"}


def test_ap_k_defaults_to_the_largest_lape_language_and_ap_lape_intersects():
    stats = _ap_case()
    params = dict(top_rate=0.7, filter_rate=0.5, activation_bar_ratio=0.5)
    assert lape(stats, **params).neurons == {"en": [[0], [1]], "fr": [[1], [0]]}
    default = ap(stats, **params)
    assert default.neurons == ap(stats, k=2).neurons
    assert default.provenance["method"] == "ap"
    assert default.provenance["params"] == {"k": 2, "k_rule": "largest LAPE language", **params}
    both = ap_lape(stats, **params)
    assert both.neurons == {"en": [[0], []], "fr": [[], [0]]}  # per layer: AP set & LAPE set
    assert both.provenance["method"] == "ap-lape" and both.provenance["params"]["k"] == 2
    assert identify(stats, "ap-lape", **params).neurons == both.neurons


def test_ap_errors_are_one_line():
    stats = _ap_case()
    with pytest.raises(LensSteerError, match="k must be"):
        ap(stats, k=7)
    with pytest.raises(LensSteerError, match="LAPE set is empty"):
        ap(make_stats(torch.zeros(1, 2, 2), [10, 10], ["en", "fr"], sent_means=torch.zeros(2, 1, 1, 2)))
    with pytest.raises(LensSteerError, match="kept sentence means"):
        ap(make_stats(torch.zeros(1, 2, 2), [10, 10], ["en", "fr"]), k=1)
    with pytest.raises(LensSteerError, match="class ids"):
        average_precision(torch.zeros(3, 1), torch.tensor([0, 1, 2]), 2)


# ---- the command line ----

def _identify(model_dir, corpus_dir, out, *extra) -> int:
    from lens_steer.cli import main

    return main(["identify", "--model", str(model_dir), "--corpus", "files", "--corpus-path", str(corpus_dir),
                 "--langs", "en,fr,ru,zh", "--out", str(out), "--quiet", "--top-rate", "0.1", *extra])


def _manifest(out) -> dict:
    import json

    return json.loads((out / "manifest.json").read_text())


def test_cli_activation_bar_changes_the_set_and_is_recorded(tiny_dirs, corpus_dir, tmp_path):
    from lens_steer.neurons import NeuronSet

    out = tmp_path / "run"
    assert _identify(tiny_dirs["qwen2"], corpus_dir, out) == 0
    default = NeuronSet.load(out)
    assert default.provenance["params"]["activation_bar_ratio"] == 0.95
    assert _manifest(out)["identification"] == {"method": "lape", "top_rate": 0.1, "filter_rate": 0.95,
                                                "activation_bar_ratio": 0.95}
    assert _identify(tiny_dirs["qwen2"], corpus_dir, out, "--activation-bar", "0.5") == 0  # resumes the stats
    low = NeuronSet.load(out)
    assert sum(low.totals().values()) > sum(default.totals().values())  # candidates join more languages
    assert low.provenance["params"]["activation_bar_ratio"] == 0.5
    assert _manifest(out)["identification"]["activation_bar_ratio"] == 0.5
    assert low.neurons == lape(Stats.load(out), top_rate=0.1, activation_bar_ratio=0.5).neurons


@pytest.mark.parametrize("bad", ["0", "1.5", "x", "nan"])
def test_cli_bad_activation_bar_is_one_line(bad, tmp_path, capsys):
    from lens_steer.cli import main

    assert main(["identify", "--out", str(tmp_path / "r"), "--activation-bar", bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lens-steer: error: --activation-bar"), err
    assert not (tmp_path / "r").exists()  # refused before anything was loaded or recorded


def test_cli_ap_and_ap_lape(tiny_dirs, corpus_dir, tmp_path):
    from lens_steer.neurons import NeuronSet

    out = tmp_path / "run"
    assert _identify(tiny_dirs["qwen2"], corpus_dir, out, "--method", "ap") == 0
    neurons = NeuronSet.load(out)
    stats = Stats.load(out)
    k = max(lape(stats, top_rate=0.1).totals().values())
    assert neurons.provenance["method"] == "ap"
    assert neurons.provenance["params"] == {"k": k, "k_rule": "largest LAPE language", "top_rate": 0.1,
                                            "filter_rate": 0.95, "activation_bar_ratio": 0.95}
    assert set(neurons.totals().values()) == {k}
    assert neurons.neurons == ap(stats, k=k).neurons  # the saved statistics give the same set
    assert _manifest(out)["identification"] == {"method": "ap", **neurons.provenance["params"]}
    assert _identify(tiny_dirs["qwen2"], corpus_dir, out, "--method", "ap-lape") == 0
    both = NeuronSet.load(out)
    expected = (neurons.mask() & lape(stats, top_rate=0.1).mask())
    assert torch.equal(both.mask(), expected) and both.provenance["method"] == "ap-lape"


def test_cli_reference_compat_is_in_the_manifest(tiny_dirs, corpus_dir, tmp_path):
    out = tmp_path / "run"
    assert _identify(tiny_dirs["llama"], corpus_dir, out, "--reference-compat") == 0
    manifest = _manifest(out)
    assert manifest["reference_compat"] is True and manifest["leading_tokens_skipped"] == 2
    assert manifest["text_prefix"] == "\n" + " " * 12 and manifest["bos"].startswith("none")
