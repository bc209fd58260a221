"""Matched random-neuron controls: the null that LSS and the other steering metrics are compared against.

For each language t and layer l, the control draws as many neurons as t's set has in l, from the neurons of l that
belong to **no** language's set, preferring those whose activation probability on t lies inside the range of t's own
neurons in that layer (so the control is as "active on t" as the real set, only not specific). When too few
qualify, the nearest ones outside the range fill the count. The draw is reproducible from ``seed``; the factor
``control:p_max`` then sets these neurons to their own p_max for t, exactly as ``p_max`` does for the real set.
"""

from __future__ import annotations

import zlib

import torch

from lens_steer.errors import LensSteerError
from lens_steer.neurons import NeuronSet
from lens_steer.stats import Stats


def matched_control(neurons: NeuronSet, stats: Stats, seed: int = 0) -> NeuronSet:
    """A control neuron set with the same per-language, per-layer counts as ``neurons``.

    >>> ctrl = matched_control(neurons, stats, seed=1)
    >>> ctrl.counts().equal(neurons.counts())
    True
    """
    if neurons.n_layers != stats.n_layers or neurons.d_mlp != stats.d_mlp:
        raise LensSteerError("the neuron set and the statistics come from different models")
    missing = [c for c in neurons.languages if c not in stats.languages]
    if missing:
        raise LensSteerError(f"the statistics have no {', '.join(missing)}; use the run's own statistics")
    prob = stats.probability()  # [layer, d_mlp, lang]
    used = neurons.mask().any(dim=-1)  # [layer, d_mlp]: in some language's set
    out: dict[str, list[list[int]]] = {}
    for code in neurons.languages:
        k = stats.languages.index(code)
        layers: list[list[int]] = []
        for layer, idx in enumerate(neurons.neurons[code]):
            n = len(idx)
            if n == 0:
                layers.append([])
                continue
            pool = (~used[layer]).nonzero().flatten()
            if pool.numel() < n:
                raise LensSteerError(f"layer {layer} has only {pool.numel()} neurons outside every language set, fewer"
                                     f" than the {n} of {code}; a matched control is impossible")
            p = prob[layer, :, k]
            lo, hi = float(p[idx].min()), float(p[idx].max())
            # distance of each candidate's probability to [lo, hi]: 0 inside the range
            dist = (lo - p[pool]).clamp(min=0) + (p[pool] - hi).clamp(min=0)
            # Per (seed, language, layer) generator: adding a language or layer never reshuffles the others.
            g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(f"{code}:{layer}".encode()))
            noise = torch.rand(pool.numel(), generator=g)
            # In-range candidates first in random order, then the nearest outside it.
            order = torch.argsort(dist * 1e6 + noise)
            layers.append(sorted(pool[order[:n]].tolist()))
        out[code] = layers
    prov = {"method": "matched_control", "params": {"seed": seed, "of": neurons.provenance.get("method")},
            "stats": neurons.provenance.get("stats", {})}
    return NeuronSet(list(neurons.languages), out, neurons.n_layers, neurons.d_mlp, prov)
