"""Intervals: the Wilson score interval against hand values and its edges, the (weighted) bootstrap."""

from __future__ import annotations

import math

import pytest
import torch

from lens_steer.intervals import bootstrap_mean_ci, wilson_ci, wilson_share


@pytest.mark.parametrize("k,n,low,high", [
    (8, 10, 0.4902, 0.9433),  # the textbook value
    (0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0),  # the edges still have width
    (1, 2, 0.0945, 0.9055), (50, 100, 0.4038, 0.5962), (1, 1, 0.2065, 1.0),
])
def test_wilson_hand_values(k, n, low, high):
    lo, hi = wilson_ci(k, n)
    assert (round(lo, 4), round(hi, 4)) == (low, high)


def test_wilson_by_formula_and_z():
    """The closed form for one case, z = 1 narrower than z = 1.96."""
    k, n, z = 3, 7, 1.96
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert wilson_ci(k, n) == pytest.approx((centre - half, centre + half))
    narrow = wilson_ci(k, n, z=1.0)
    assert narrow[0] > centre - half and narrow[1] < centre + half


def test_wilson_edges():
    assert all(math.isnan(x) for x in wilson_ci(0, 0))
    share, lo, hi = wilson_share(0, 0)
    assert math.isnan(share) and math.isnan(lo) and math.isnan(hi)
    assert wilson_share(3, 4) == (0.75, *wilson_ci(3, 4))


@pytest.mark.parametrize("n", [1, 2, 5, 12, 40])
def test_wilson_contains_the_share_inside_zero_one(n):
    for k in range(n + 1):
        lo, hi = wilson_ci(k, n)
        assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_bootstrap_contains_the_mean_is_seeded_and_skips_nan():
    x = torch.tensor([0.0, 1.0, 2.0, 3.0, float("nan")])
    lo, hi = bootstrap_mean_ci(x)
    assert lo <= 1.5 <= hi and (lo, hi) == bootstrap_mean_ci(x)
    assert all(math.isnan(v) for v in bootstrap_mean_ci(torch.tensor([])))


def test_weighted_bootstrap_is_the_interval_of_the_weighted_mean():
    """NLL per token: per-sentence NLL weighted by tokens; equal weights give the plain bootstrap."""
    x, w = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 1.0, 6.0])
    lo, hi = bootstrap_mean_ci(x, weights=w)
    assert lo <= float((x * w).sum() / w.sum()) <= hi
    assert bootstrap_mean_ci(x, weights=torch.ones(3)) == pytest.approx(bootstrap_mean_ci(x))
