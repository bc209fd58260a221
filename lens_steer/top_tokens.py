"""Which tokens of a corpus drive one neuron hardest, per language (``lens-steer inspect``).

Runs the model over the corpus with a single hook on the neuron's layer and keeps, per language, the ``top_k``
counted tokens (BOS and pads excluded, as in the recorder) with the highest neuron value. The value is the one the
run recorded: ``act_fn(gate)`` for ``site="act"`` (the paper), ``mlp.hook_post`` for ``site="post"``.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from lens_steer.errors import LensSteerError
from lens_steer.models import ACT_FNS, describe_mlp, masked_logits_ok, no_logits
from lens_steer.models import bos_id, pad_id, pad_rows
from lens_steer.record import RecordConfig, tokenise


@dataclass(frozen=True)
class TokenHit:
    """One token occurrence: its neuron value, the token and a little context around it."""

    value: float
    token: str
    left: str
    right: str
    sentence: int  # index of the sentence in the language's kept sentences
    position: int  # token position in the sentence (BOS included)


def top_activating_tokens(bridge: Any, texts: dict[str, Sequence[str]], layer: int, neuron: int, *,
                          site: str = "act", top_k: int = 10, config: RecordConfig | None = None, window: int = 4,
                          progress: bool = False) -> dict[str, list[TokenHit]]:
    """The ``top_k`` highest-value tokens of neuron (``layer``, ``neuron``) per language, highest first.

    >>> hits = top_activating_tokens(bridge, {"fr": texts["fr"]}, layer=1, neuron=5, top_k=3)
    >>> best = hits["fr"][0]  # Gemma-3-270M on the UDHR: e.g. layer=17, neuron=1932
    >>> len(hits["fr"]), best.value >= hits["fr"][1].value, best.token in best.left + best.token + best.right
    (3, True, True)
    """
    mlp = describe_mlp(bridge)
    if not 0 <= layer < mlp.n_layers:
        raise LensSteerError(f"--layer {layer} is outside 0..{mlp.n_layers - 1}")
    if not 0 <= neuron < mlp.d_mlp:
        raise LensSteerError(f"--neuron {neuron} is outside 0..{mlp.d_mlp - 1}")
    if top_k < 1:
        raise LensSteerError("top_k must be >= 1")
    config = config or RecordConfig(site=site)
    act_fn = ACT_FNS[mlp.act_fn]
    hook_name = mlp.name("hook_pre" if site == "act" else "hook_post", layer)
    pad, skip_first = pad_id(bridge), bos_id(bridge) is not None
    device = next(bridge.parameters()).device
    tok = bridge.tokenizer
    out: dict[str, list[TokenHit]] = {}
    for code, sentences in texts.items():
        data = tokenise(bridge, sentences, config)
        heap: list[tuple[float, int, int]] = []  # (value, sentence, position), a min-heap of the best top_k
        captured: dict[str, Tensor] = {}

        def grab(act: Tensor, hook: Any) -> None:
            value = act[..., neuron].float()
            captured["v"] = act_fn(value) if site == "act" else value  # [batch, pos]

        order = sorted(range(len(data.ids)), key=lambda i: len(data.ids[i]))
        masked_logits_ok(bridge)  # probed before the hook is attached
        with torch.inference_mode(), bridge.hooks(fwd_hooks=[(hook_name, grab)]):
            for start in tqdm(range(0, len(order), config.batch_size), desc=code, disable=not progress, leave=False):
                batch = order[start : start + config.batch_size]
                ids, attn, counted = pad_rows([data.ids[i] for i in batch], pad, config.padding_side, skip_first)
                ids = ids.to(device)
                bridge(ids, attention_mask=attn.to(device), return_type=None, **no_logits(bridge, ids))
                values = captured["v"].cpu()
                for r, i in enumerate(batch):
                    offset = ids.shape[1] - len(data.ids[i]) if config.padding_side == "left" else 0
                    for p in counted[r].nonzero().flatten().tolist():
                        item = (float(values[r, p]), i, p - offset)
                        if len(heap) < top_k:
                            heapq.heappush(heap, item)
                        elif item > heap[0]:
                            heapq.heapreplace(heap, item)
        hits = []
        for value, i, p in sorted(heap, key=lambda x: (-x[0], x[1], x[2])):
            row = data.ids[i]
            first = 1 if skip_first else 0
            hits.append(TokenHit(value, tok.decode([row[p]]), tok.decode(row[max(first, p - window) : p]),
                                 tok.decode(row[p + 1 : p + 1 + window]), i, p))
        out[code] = hits
    return out
