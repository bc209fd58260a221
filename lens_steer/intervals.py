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
from typing import Any

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


# ---------------------------------------------------------------------------------------------------------------
# Methods compared on the same items (issue 27): paired differences, verdicts, how often a method ranks first
# ---------------------------------------------------------------------------------------------------------------
def _weighted_means(values: Tensor, idx: Tensor, weights: Tensor | None) -> Tensor:
    """Means of ``values[..., idx]`` per resample (a row of ``idx``), weighted by ``weights[idx]`` if given."""
    picked = values.double()[..., idx]  # [..., n_boot, n]
    if weights is None:
        return picked.mean(dim=-1)
    w = weights.double()[idx]
    return (picked * w).sum(dim=-1) / w.sum(dim=-1).clamp(min=1e-300)


def weighted_mean(values: Tensor, weights: Tensor | None = None) -> float:
    """The mean of ``values``, weighted by ``weights`` if given (NaN when empty).

    >>> weighted_mean(torch.tensor([1.0, 3.0]), torch.tensor([3.0, 1.0]))
    1.5
    """
    if values.numel() == 0:
        return float("nan")
    if weights is None:
        return float(values.double().mean())
    w = weights.double()
    return float((values.double() * w).sum() / w.sum())


def paired_bootstrap(a: Tensor, b: Tensor, n_boot: int = N_BOOT, seed: int = 0, *, weights: Tensor | None = None,
                     transform: Any = None, paired: bool = True) -> tuple[float, float, float]:
    """The difference of two methods' means on the same items (``a - b``) with its percentile bootstrap 95% interval.

    ``a[i]`` and ``b[i]`` are the two methods' values on item ``i`` (a fact, a prompt, a text); each resample draws
    item indices once and applies them to both (``paired``; ``paired=False`` draws them apart, the interval of two
    independent samples, only to show what pairing buys). ``weights`` weight the items' means (the same for both);
    ``transform`` maps a mean before the difference (``torch.exp`` for a perplexity ratio from mean NLL changes).
    Fixed seed: the same numbers every run. Returns ``(mean_diff, low, high)``; NaN without items.

    >>> a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    >>> paired_bootstrap(a + 1, a)  # every item one higher: the difference is 1 in every resample
    (1.0, 1.0, 1.0)
    >>> paired_bootstrap(a, a)
    (0.0, 0.0, 0.0)
    >>> _, lo, hi = paired_bootstrap(a + 1, a, paired=False)  # apart, the items' spread enters the interval
    >>> lo < 1.0 < hi
    True
    """
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same items: {tuple(a.shape)} vs {tuple(b.shape)}")
    n = a.numel()
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    f = transform if transform is not None else (lambda x: x)
    diff = float(f(torch.tensor(weighted_mean(a, weights))) - f(torch.tensor(weighted_mean(b, weights))))
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (n_boot, n), generator=g)
    idx_b = idx if paired else torch.randint(0, n, (n_boot, n), generator=g)
    boot = f(_weighted_means(a, idx, weights)) - f(_weighted_means(b, idx_b, weights))
    return diff, float(boot.quantile(0.025)), float(boot.quantile(0.975))


def verdict(low: float, high: float, higher_is_better: bool = True) -> str:
    """``better``, ``worse`` or ``indistinguishable`` at 95%: a difference (method - reference) whose interval
    excludes 0 is better when it points the metric's good way; an interval without numbers gives ``""``.

    >>> verdict(0.1, 0.3), verdict(-0.3, -0.1), verdict(-0.1, 0.2), verdict(0.1, 0.3, higher_is_better=False)
    ('better', 'worse', 'indistinguishable', 'worse')
    >>> verdict(float("nan"), float("nan"))
    ''
    """
    if not (low == low and high == high):
        return ""
    if low > 0 or high < 0:
        return "better" if (low > 0) == higher_is_better else "worse"
    return "indistinguishable"


def rank_first(values: Tensor, weights: Tensor | None = None, n_boot: int = N_BOOT, seed: int = 0) -> Tensor:
    """Per method (a row of ``values[method, item]``), the share of paired resamples of the items in which its mean
    is the highest; a tie shares the resample equally among the tied, so the shares sum to 1.

    >>> rank_first(torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])).tolist()
    [1.0, 0.0]
    >>> rank_first(torch.tensor([[1.0, 0.0], [1.0, 0.0]])).tolist()  # always tied
    [0.5, 0.5]
    """
    m, n = values.shape
    if m == 0 or n == 0:
        return torch.full((m,), float("nan"), dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (n_boot, n), generator=g)
    means = _weighted_means(values, idx, weights)  # [methods, n_boot]
    top = means == means.max(dim=0, keepdim=True).values
    return (top.double() / top.sum(dim=0, keepdim=True)).mean(dim=1)
