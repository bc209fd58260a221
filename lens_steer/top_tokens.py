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

from lens_steer.corpora import load_corpus
from lens_steer.configs import InspectConfig  # noqa: F401 - declared there, torch-free, for the CLI
from lens_steer.errors import LensSteerError, check_neuron
from lens_steer.languages import parse_languages
from lens_steer.models import ACT_FNS, LoadConfig, ModelLike, as_model
from lens_steer.recorder import RecordConfig, tokenise
from lens_steer.run import Run
from lens_steer.stability import read_frequency


@dataclass(frozen=True)
class TokenHit:
    """One token occurrence: its neuron value, the token and a little context around it."""

    value: float
    token: str
    left: str
    right: str
    sentence: int  # index of the sentence in the language's kept sentences
    position: int  # token position in the sentence (BOS included)


def top_activating_tokens(model: ModelLike, texts: dict[str, Sequence[str]], layer: int, neuron: int, *,
                          site: str = "act", top_k: int = 10, config: RecordConfig | None = None, window: int = 4,
                          progress: bool = False) -> dict[str, list[TokenHit]]:
    """The ``top_k`` highest-value tokens of neuron (``layer``, ``neuron``) per language, highest first.

    >>> hits = top_activating_tokens(bridge, {"fr": texts["fr"]}, layer=1, neuron=5, top_k=3)
    >>> best = hits["fr"][0]  # Gemma-3-270M on the UDHR: e.g. layer=17, neuron=1932
    >>> len(hits["fr"]), best.value >= hits["fr"][1].value, best.token in best.left + best.token + best.right
    (3, True, True)
    """
    model = as_model(model)
    mlp = model.site
    check_neuron(layer, neuron, mlp.n_layers, mlp.d_mlp, flags=True)
    if top_k < 1:
        raise LensSteerError("top_k must be >= 1")
    config = config or RecordConfig(site=site)
    act_fn = ACT_FNS[mlp.act_fn]
    hook_name = mlp.name("hook_pre" if site == "act" else "hook_post", layer)
    skip_first = model.bos is not None
    tok = model.tokenizer
    out: dict[str, list[TokenHit]] = {}
    for code, sentences in texts.items():
        data = tokenise(model, sentences, config)
        heap: list[tuple[float, int, int]] = []  # (value, sentence, position), a min-heap of the best top_k
        captured: dict[str, Tensor] = {}

        def grab(act: Tensor, hook: Any) -> None:
            value = act[..., neuron].float()
            captured["v"] = act_fn(value) if site == "act" else value  # [batch, pos]

        order = sorted(range(len(data.ids)), key=lambda i: len(data.ids[i]))
        model.masked_logits_ok()  # probed before the hook is attached
        with torch.inference_mode(), model.bridge.hooks(fwd_hooks=[(hook_name, grab)]):
            for start in tqdm(range(0, len(order), config.batch_size), desc=code, disable=not progress, leave=False):
                batch = order[start : start + config.batch_size]
                ids, attn, counted = model.padded([data.ids[i] for i in batch], config.padding_side, skip_first)
                model(ids, attention_mask=attn, return_type=None, **model.no_logits(ids))
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


def neuron_profile(run: Run, layer: int, neuron: int) -> tuple[list[str], Any]:
    """The languages neuron (``layer``, ``neuron``) is assigned to, and its per-language table (probability,
    p_max, p_median, assigned) from the run's statistics."""
    from lens_steer.inspection import inspector_tables  # deferred: pandas and pyarrow, only for this table

    stats, neurons = run.stats(), run.neurons()
    check_neuron(layer, neuron, stats.n_layers, stats.d_mlp, flags=True)
    table = inspector_tables(stats, neurons, layer, which="all", frequency=read_frequency(run))
    owners = [c for c in neurons.languages if neuron in set(neurons.neurons[c][layer])]
    return owners, table[table["neuron"] == neuron]


def top_tokens_for_run(run: Run, config: InspectConfig, owners: Sequence[str] = (),
                       load: LoadConfig | str | None = None, model: ModelLike | None = None
                       ) -> dict[str, list[TokenHit]]:
    """The neuron's top tokens per language over the run's corpus (or ``config.corpus``), read at the run's site
    with its token budget and length limit; on ``model`` when given (one already loaded), else the run's."""
    manifest = run.stats().manifest
    corpus = manifest.get("corpus", {})
    name = config.corpus or corpus.get("name")
    if name in (None, "in-memory"):
        raise LensSteerError("this run's corpus was given in memory; pass --corpus (udhr, flores or files)")
    path = config.corpus_path if config.corpus else (None if name == "udhr" else corpus.get("path"))
    split = config.split or (None if config.corpus else corpus.get("split"))
    langs = parse_languages(config.langs) if config.langs else (list(owners) or run.neurons().languages)
    texts = load_corpus(name, langs, split=split, path=path)
    site = manifest.get("site", "act")
    record_config = RecordConfig(site=site, batch_size=config.batch_size,
                                 max_tokens=config.max_tokens or manifest.get("max_tokens"),
                                 max_length=manifest.get("max_length", 512))
    model = model if model is not None else run.model(load)
    return top_activating_tokens(model, texts, config.layer, config.neuron, site=site, top_k=config.top,
                                 config=record_config, progress=config.progress)
