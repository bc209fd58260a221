"""Token rows padded into one batch: the one padding helper of lens_steer."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor


def pad_rows(rows: Sequence[Sequence[int]], pad: int, padding_side: str = "left", skip_first: bool | int = 0,
             ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"], Float[Tensor, "batch pos"]]:
    """Pad token rows into ``(input_ids, attention_mask, counted)``; ``counted`` excludes pads and the first
    ``skip_first`` tokens of each row (``True`` = 1, the BOS). The one padding helper of lens_steer.

    >>> ids, attn, counted = pad_rows([[5, 6, 7], [5, 8]], pad=0, padding_side="left", skip_first=True)
    >>> ids.tolist(), attn.tolist(), counted.tolist()
    ([[5, 6, 7], [0, 5, 8]], [[1, 1, 1], [0, 1, 1]], [[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    >>> pad_rows([[5, 6, 7]], pad=0, padding_side="right", skip_first=2)[2].tolist()
    [[0.0, 0.0, 1.0]]
    """
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    counted = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, row in enumerate(rows):
        start = width - len(row) if padding_side == "left" else 0
        ids[i, start : start + len(row)] = torch.tensor(list(row), dtype=torch.long)
        attn[i, start : start + len(row)] = 1
        counted[i, start + int(skip_first) : start + len(row)] = 1.0
    return ids, attn, counted
