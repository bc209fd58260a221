"""Finding language-specific neurons: pure functions of a :class:`~lens_steer.stats.Stats`.

* :func:`lape` - Language Activation Probability Entropy (Tang et al. 2024), exactly as the reference algorithm,
  minus its bugs (languages without neurons keep their slot; NaN-safe).
* :func:`activated` - the paper's "language-activated" baseline: sentence-mean > 0 for every kept sentence.
* :func:`top_k_by_probability` - the k neurons with the highest activation probability per language.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from lens_steer.errors import LensSteerError
from lens_steer.neurons import NeuronSet
from lens_steer.stats import Stats

METHODS = ("lape", "activated")


def lape_from_probability(
    p: Float[Tensor, "layer d_mlp lang"], top_rate: float = 0.01, filter_rate: float = 0.95,
    activation_bar_ratio: float = 0.95,
) -> Bool[Tensor, "layer d_mlp lang"]:
    """LAPE on an activation-probability tensor; returns the membership mask ``[layer, d_mlp, lang]``.

    1. q = p normalised over languages (NaN -> 0); H = -sum_k q log q (0 log 0 = 0).
    2. tau = the ``round(filter_rate * N)``-th smallest of all N = L*d*K values of p; neurons whose max p <= tau
       get H = +inf.
    3. Keep the ``round(top_rate * L * d)`` neurons of lowest H, ranked across ALL layers.
    4. Assign each kept neuron to every language k with p > beta, beta = the ``round(activation_bar_ratio * N)``-th
       smallest p.

    >>> p = torch.tensor([[[0.9, 0.0], [0.5, 0.5], [0.0, 0.8], [0.1, 0.1]]])  # 1 layer, 4 neurons, 2 languages
    >>> lape_from_probability(p, top_rate=0.5, filter_rate=0.5, activation_bar_ratio=0.5)[0].int().tolist()
    [[1, 0], [0, 0], [0, 1], [0, 0]]
    """
    if p.ndim != 3:
        raise LensSteerError(f"activation probability must be [layer, d_mlp, lang], got shape {tuple(p.shape)}")
    for name, rate in (("top_rate", top_rate), ("filter_rate", filter_rate),
                       ("activation_bar_ratio", activation_bar_ratio)):
        if not 0.0 < rate <= 1.0:
            raise LensSteerError(f"{name} must be in (0, 1], got {rate}")
    p = torch.nan_to_num(p.double(), nan=0.0)
    layers, d, k = p.shape
    q = p / p.sum(dim=-1, keepdim=True)
    q = torch.nan_to_num(q, nan=0.0)  # a neuron that never fires has 0/0
    entropy = -(torch.where(q > 0, q * q.log(), torch.zeros_like(q))).sum(dim=-1)  # [layer, d_mlp]
    flat = p.flatten().sort().values
    n = flat.numel()

    def kth_smallest(ratio: float) -> float:
        # The reference's torch.kthvalue(round(ratio * N)) is 1-based; clamp so tiny tensors stay in range.
        return float(flat[min(max(round(ratio * n), 1), n) - 1])

    tau = kth_smallest(filter_rate)
    beta = kth_smallest(activation_bar_ratio)
    entropy[p.amax(dim=-1) <= tau] = float("inf")
    n_keep = round(top_rate * layers * d)
    flat_h = entropy.flatten()
    # Stable sort: ties in entropy are broken by (layer, index), so the result never depends on the sort backend.
    order = torch.sort(flat_h, stable=True).indices[:n_keep]
    # Filtered (+inf) neurons never become candidates, even when fewer than n_keep survive the filter; the
    # reference's topk would take them, but with beta == tau they could never be assigned anyway.
    order = order[torch.isfinite(flat_h[order])]
    candidate = torch.zeros(layers * d, dtype=torch.bool)
    candidate[order] = True
    return candidate.view(layers, d, 1) & (p > beta)


def lape(stats: Stats, top_rate: float = 0.01, filter_rate: float = 0.95,
         activation_bar_ratio: float = 0.95) -> NeuronSet:
    """LAPE language-specific neurons of a run (the paper uses top_rate 0.01). See :func:`lape_from_probability`."""
    mask = lape_from_probability(stats.probability(), top_rate, filter_rate, activation_bar_ratio)
    params = {"top_rate": top_rate, "filter_rate": filter_rate, "activation_bar_ratio": activation_bar_ratio}
    return NeuronSet.from_mask(mask, stats.languages, _provenance("lape", params, stats))


def activated(stats: Stats) -> NeuronSet:
    """The language-activated baseline: neuron j belongs to k when its mean over every kept sentence of k is > 0."""
    if stats.sent_means.shape[1] == 0:
        raise LensSteerError("the 'activated' method needs kept sentence means, but this run kept none; record with"
                             " more text per language")
    mask = (stats.sent_means > 0).all(dim=1).permute(1, 2, 0)  # [lang, layer, d] -> [layer, d, lang]
    return NeuronSet.from_mask(mask, stats.languages, _provenance("activated", {}, stats))


def top_k_by_probability(stats: Stats, k: int) -> NeuronSet:
    """Per language, the ``k`` neurons (across all layers) with the highest activation probability."""
    p = stats.probability()
    layers, d, n_lang = p.shape
    if not 0 < k <= layers * d:
        raise LensSteerError(f"k must be in 1..{layers * d}, got {k}")
    mask = torch.zeros(layers * d, n_lang, dtype=torch.bool)
    top = p.reshape(layers * d, n_lang).topk(k, dim=0).indices  # [k, lang]
    mask.scatter_(0, top, True)
    return NeuronSet.from_mask(mask.view(layers, d, n_lang), stats.languages,
                               _provenance("top_k_by_probability", {"k": k}, stats))


def identify(stats: Stats, method: str = "lape", **params: Any) -> NeuronSet:
    """Dispatch by method name (``lape`` or ``activated``)."""
    if method == "lape":
        return lape(stats, **params)
    if method == "activated":
        return activated(stats)
    raise LensSteerError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")


def _provenance(method: str, params: dict[str, Any], stats: Stats) -> dict[str, Any]:
    m = stats.manifest
    return {"method": method, "params": params,
            "stats": {key: m.get(key) for key in ("model", "corpus", "site", "dtype", "max_tokens",
                                                   "n_sentence_means", "lens_steer_version")}}
