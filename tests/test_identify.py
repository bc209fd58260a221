"""LAPE and the other identification methods on hand-made statistics with known answers."""

from __future__ import annotations

import pytest
import torch

from lens_steer.errors import LensSteerError
from lens_steer.identify import activated, identify, lape, lape_from_probability, top_k_by_probability
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
