"""Intervals on the numbers lens_steer reports: pure functions of small tensors.

>>> bootstrap_mean_ci(torch.tensor([1.0, 1.0, 1.0]))
(1.0, 1.0)
"""

from __future__ import annotations

import torch
from torch import Tensor

N_BOOT = 2000


def bootstrap_mean_ci(values: Tensor, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean (fixed seed: the same numbers every run).

    >>> lo, hi = bootstrap_mean_ci(torch.tensor([1.0, 1.0, 1.0]))
    >>> (lo, hi)
    (1.0, 1.0)
    """
    if values.numel() == 0:
        return float("nan"), float("nan")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, values.numel(), (n_boot, values.numel()), generator=g)
    means = values.double()[idx].mean(dim=1)
    return float(means.quantile(0.025)), float(means.quantile(0.975))
