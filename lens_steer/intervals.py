"""Intervals on the numbers lens_steer reports: pure functions of small tensors.

Two kinds, one per kind of number (README: "which interval each column uses"):

* a share of independent trials (forcing success over generations, target wins over facts, accuracy over items):
  the Wilson score interval, :func:`wilson_ci`, which the share and its count (a CSV's ``n`` column) give again;
* a mean of per-fact or per-item values (LSS shift, gain, damage, log-likelihoods, perplexity ratios): the
  percentile bootstrap over those facts or items, :func:`bootstrap_mean_ci` (fixed seed: the same numbers every run).

>>> bootstrap_mean_ci(torch.tensor([1.0, 1.0, 1.0]))
(1.0, 1.0)
>>> tuple(round(x, 4) for x in wilson_ci(8, 10))
(0.4902, 0.9433)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

N_BOOT = 2000


def wilson_ci(successes: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of the share ``successes / n`` (95% with the default z = 1.96): NaN for ``n = 0``; at 0
    or n successes it still has width (unlike the normal approximation). ``successes`` may be fractional (a share times
    its count, e.g. a mean over pairs of equal size), the interval is then that of the share.

    >>> tuple(round(x, 4) for x in wilson_ci(8, 10))
    (0.4902, 0.9433)
    >>> tuple(round(x, 4) for x in wilson_ci(0, 10)), tuple(round(x, 4) for x in wilson_ci(10, 10))
    ((0.0, 0.2775), (0.7225, 1.0))
    >>> wilson_ci(0, 0)
    (nan, nan)
    """
    if not n or n != n or successes != successes:
        return float("nan"), float("nan")
    p = min(max(successes / n, 0.0), 1.0)
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # clamp: at p = 0 or 1 rounding can put a bound a hair outside [0, 1] or past the share itself
    return max(0.0, min(centre - half, p)), min(1.0, max(centre + half, p))


def wilson_share(successes: float, n: float) -> tuple[float, float, float]:
    """``(share, low, high)``: the share of ``n`` trials with its Wilson interval (NaN for ``n = 0``).

    >>> wilson_share(1, 2)[0]
    0.5
    """
    lo, hi = wilson_ci(successes, n)
    return (successes / n if n else float("nan")), lo, hi


def bootstrap_mean_ci(values: Tensor, n_boot: int = N_BOOT, seed: int = 0,
                      weights: Tensor | None = None) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean (fixed seed: the same numbers every run). With ``weights``,
    of the weighted mean ``sum(w x) / sum(w)`` (e.g. per-sentence NLL weighted by tokens: NLL per token), the
    items resampled with their weights.

    >>> lo, hi = bootstrap_mean_ci(torch.tensor([1.0, 1.0, 1.0]))
    >>> (lo, hi)
    (1.0, 1.0)
    >>> bootstrap_mean_ci(torch.tensor([2.0, 2.0]), weights=torch.tensor([1.0, 5.0]))
    (2.0, 2.0)
    """
    values = values.double().flatten()
    if weights is not None:
        keep = values == values
        values, weights = values[keep], weights.double().flatten()[keep]
    else:
        values = values[values == values]  # NaN cells (not measured) are in no mean
    if values.numel() == 0:
        return float("nan"), float("nan")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, values.numel(), (n_boot, values.numel()), generator=g)
    if weights is None:
        means = values[idx].mean(dim=1)
        return float(means.quantile(0.025)), float(means.quantile(0.975))
    w = weights[idx]
    means = (values[idx] * w).sum(dim=1) / w.sum(dim=1)  # a resample of weight 0 only: NaN, left out
    return float(means.nanquantile(0.025)), float(means.nanquantile(0.975))
