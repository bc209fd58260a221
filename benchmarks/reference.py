"""The paper's reference approach, re-implemented for the benchmarks (P2, P3). Never used by lens_steer itself.

How the authors' code (``tauimbz/lang-task-neuron``) records activations and scores LSS, kept as it is where it
costs time and aligned with lens_steer only where it decides the numbers, so that both sides compute the same
thing (the tests check that they do):

Recording (``get_activations.py`` + ``model.py:batch_tokenize/batch_inference``):

* a plain ``transformers`` ``AutoModelForCausalLM`` (no TransformerLens), default attention implementation;
* a ``register_forward_hook`` on every layer's ``mlp.act_fn``, registered anew for every batch;
* sentences in **corpus order** (no length sorting), batches of ``batch_size``, **left padded**;
* one forward per batch computing the **full-vocabulary logits** (the authors call ``generate(max_new_tokens=1)``;
  the benchmark issue specifies full logits, ``full_logits=False`` keeps only the last position instead);
* inside the hook, **per-sentence Python loops**: ``(output[i, start:end] > 0).sum(0)`` per row for over_zero,
  ``output[i, start:end].half().mean(0)`` per row for the sentence means, stacked and ``torch.cat``-ed onto a
  per-layer tensor (every sentence's mean is kept, in fp16).

Aligned with lens_steer so that the counts are comparable: the same token ids (BOS prepended when the model uses
it and excluded from counts; the authors had no BOS and skipped two tokens), the same per-language token budget
(whole sentences), and the position ids that ``generate`` derives from the attention mask for left padding.

LSS (``intervention_dod.py``): batch size 1; for every fact a full-logits forward of ``prompt + answer`` per
answer (all languages for the baseline, ``DOD_NINT``; the source's and the target's under the intervention,
``DOD_INT``), ``log_softmax`` over the whole vocabulary at every position, hooks on ``mlp.act_fn`` registered
per fact that write ``output[0, :, idx]``. Aligned with lens_steer: joint tokenisation of ``prompt + answer``
scoring every token that holds an answer character, and the intervention's per-neuron affine map
(``act' = alpha * act + beta``) taken from :meth:`lens_steer.steer.Steerer.plan`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


def act_fn_modules(hf: nn.Module) -> list[nn.Module]:
    """The per-layer MLP activation modules of a plain HF causal LM (``mlp.act_fn``; GPT-2's ``mlp.act``)."""
    inner = getattr(hf, "model", None)
    if inner is None:
        inner = getattr(hf, "transformer", None)
    blocks = getattr(inner, "layers", None)
    if blocks is None:
        blocks = getattr(inner, "h", None)
    if blocks is None:
        raise ValueError(f"{type(hf).__name__}: no decoder layers found (expected model.layers or transformer.h)")
    mods = []
    for block in blocks:
        act = getattr(block.mlp, "act_fn", None)
        if act is None:
            act = getattr(block.mlp, "act", None)
        if not isinstance(act, nn.Module):
            raise ValueError(f"{type(hf).__name__}: its MLP has no act_fn module to hook")
        mods.append(act)
    if len({id(m) for m in mods}) != len(mods):
        raise ValueError("the act_fn module is shared between layers; per-layer hooks would mix layers")
    return mods


def bos_id(tokenizer: Any, prepend_bos: bool) -> int | None:
    return tokenizer.bos_token_id if prepend_bos else None


def pad_id(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


# ----------------------------------------------------------------------------------------------------- recording


@dataclass
class ReferenceRecord:
    """One language as the reference records it."""

    over_zero: Tensor  # [layers, d_mlp] int64
    n_tokens: int  # counted tokens (the reference's `num`)
    n_sentences: int
    sent_means: Tensor  # [sentences, layers * d_mlp] fp16, every sentence in corpus order
    n_counted: list[int]  # counted tokens per sentence
    real_tokens: int  # non-pad tokens fed to the model (BOS included)
    slots: int  # batch slots (rows x padded width, summed over forwards)


def tokenise(tokenizer: Any, sentences: Sequence[str], bos: int | None, max_tokens: int | None,
             max_length: int = 512) -> list[list[int]]:
    """Sentence by sentence, BOS prepended when used, whole sentences up to the per-language token budget."""
    rows: list[list[int]] = []
    total = 0
    for text in sentences:
        row = ([bos] if bos is not None else []) + list(tokenizer(text, add_special_tokens=False)["input_ids"])
        row = row[:max_length]
        n = len(row) - (1 if bos is not None else 0)
        if n <= 0:
            continue
        if max_tokens is not None and total + n > max_tokens:
            break
        rows.append(row)
        total += n
    return rows


def record_language(hf: nn.Module, rows: Sequence[Sequence[int]], *, pad: int, skip_first: bool,
                    batch_size: int = 16, max_tokens: int | None = None, full_logits: bool = True) -> ReferenceRecord:
    """Record one language's token rows the reference's way (see the module docstring)."""
    layers = act_fn_modules(hf)
    device = next(hf.parameters()).device
    state: dict[str, Any] = {"over_zeros": None, "num": 0}
    raw_means: dict[int, Tensor] = {}
    shapes: list[tuple[int, int]] = []

    def make_hook(layer: int, slice_ranges: list[tuple[int, int]], do_overzero: bool, num_rows_oz: int) -> Callable:
        def hook_fn(module: nn.Module, inputs: Any, output: Tensor) -> None:
            if state["over_zeros"] is None:
                state["over_zeros"] = torch.zeros(len(layers), output.shape[-1], dtype=torch.int32)
            if do_overzero:
                per_row = [(output[i, start:end, :] > 0).detach().sum(dim=0).to(dtype=torch.int32).cpu()
                           for i, (start, end) in enumerate(slice_ranges[:num_rows_oz])]
                state["over_zeros"][layer, :] += sum(per_row)
            means = [output[i, start:end, :].half().mean(dim=0).cpu() for i, (start, end) in enumerate(slice_ranges)]
            avg = torch.stack(means, dim=0).cpu()
            raw_means[layer] = avg if layer not in raw_means else torch.cat([raw_means[layer], avg], dim=0)

        return hook_fn

    handles: list[Any] = []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            batch = [list(r) for r in rows[start : start + batch_size]]
            first = 1 if skip_first else 0
            slice_ranges = [(first, len(r)) for r in batch]
            token_lens = [end - s for s, end in slice_ranges]
            accumulated, cut_index = 0, len(batch)
            for i, n in enumerate(token_lens):  # the reference's budget cut (whole rows)
                if max_tokens is not None and state["num"] + accumulated + n > max_tokens:
                    cut_index = i
                    break
                accumulated += n
            do_overzero = cut_index > 0
            # tokenizer(texts, padding=True, padding_side="left"): shift every slice by its row's pad count
            width = max(len(r) for r in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            attn = torch.zeros((len(batch), width), dtype=torch.long)
            for i, r in enumerate(batch):
                ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
                attn[i, width - len(r) :] = 1
            slice_ranges = [(s + width - len(r), e + width - len(r)) for (s, e), r in zip(slice_ranges, batch)]
            state["num"] += accumulated if do_overzero else 0
            for h in handles:
                h.remove()
            handles.clear()
            for layer, module in enumerate(layers):
                handles.append(module.register_forward_hook(make_hook(layer, slice_ranges, do_overzero, cut_index)))
            try:
                # What generate() passes for a left-padded prompt.
                position_ids = attn.cumsum(-1) - 1
                position_ids.masked_fill_(attn == 0, 1)
                kwargs = {} if full_logits else {"logits_to_keep": 1}
                out = hf(input_ids=ids.to(device), attention_mask=attn.to(device),
                         position_ids=position_ids.to(device), **kwargs)
                out.logits[:, -1, :].argmax(dim=-1)  # the one generated token
            finally:
                for h in handles:
                    h.remove()
                handles.clear()
            shapes.append((len(batch), width))
    n_layers = len(layers)
    over = state["over_zeros"] if state["over_zeros"] is not None else torch.zeros(n_layers, 0, dtype=torch.int32)
    means = torch.cat([raw_means[layer] for layer in range(n_layers)], dim=-1) if raw_means else torch.zeros(0, 0)
    first = 1 if skip_first else 0
    return ReferenceRecord(over.to(torch.int64), int(state["num"]), len(rows), means,
                           [len(r) - first for r in rows], sum(len(r) for r in rows), sum(b * w for b, w in shapes))


def record(hf: nn.Module, tokenizer: Any, texts: Mapping[str, Sequence[str]], *, prepend_bos: bool,
           batch_size: int = 16, max_tokens: int | None = None, max_length: int = 512,
           full_logits: bool = True) -> dict[str, ReferenceRecord]:
    """Tokenise and record every language the reference's way (the timed unit of P2)."""
    bos = bos_id(tokenizer, prepend_bos)
    pad = pad_id(tokenizer)
    out = {}
    for lang, sentences in texts.items():
        rows = tokenise(tokenizer, sentences, bos, max_tokens, max_length)
        out[lang] = record_language(hf, rows, pad=pad, skip_first=bos is not None, batch_size=batch_size,
                                    max_tokens=max_tokens, full_logits=full_logits)
    return out


# ----------------------------------------------------------------------------------------------------- LSS


def encode(tokenizer: Any, bos: int | None, prompt: str, answer: str) -> tuple[list[int], int]:
    """``prompt + answer`` tokenised jointly; returns the ids and the index of the first token holding an answer
    character (the same span rule as :mod:`lens_steer.scoring`)."""
    enc = tokenizer(prompt + answer, add_special_tokens=False, return_offsets_mapping=True)
    ids = ([bos] if bos is not None else []) + list(enc["input_ids"])
    offsets = ([(0, 0)] if bos is not None else []) + [tuple(o) for o in enc["offset_mapping"]]
    first = next(i for i, (_, end) in enumerate(offsets) if end > len(prompt))
    return ids, first


def logprob(hf: nn.Module, ids: list[int], first: int) -> float:
    """Summed log-probability of tokens ``first..`` from one batch-1 forward with full logits (calculate_logprob)."""
    device = next(hf.parameters()).device
    x = torch.tensor([ids], dtype=torch.long, device=device)
    with torch.no_grad():
        logits = hf(input_ids=x).logits[:, :-1, :]
    log_probs = torch.nn.functional.log_softmax(logits.float(), dim=-1)
    token_log_probs = torch.gather(log_probs, 2, x[:, 1:].unsqueeze(-1)).squeeze(-1)[0]
    return float(token_log_probs[first - 1 :].sum().item())


LayerMaps = dict[int, tuple[Tensor, Tensor, Tensor]]  # layer -> (idx, alpha, beta)


def maps_from_plan(plan: Mapping[int, Any]) -> LayerMaps:
    """``Steerer.plan([iv])`` (one row) -> per-layer (idx, alpha, beta) for an act_fn hook."""
    return {layer: (p.idx.long(), p.alpha[0].clone(), p.beta[0].clone()) for layer, p in plan.items()}


def _intervene(maps: LayerMaps, layer: int) -> Callable:
    idx, alpha, beta = maps[layer]

    def hook_fn(module: nn.Module, inputs: Any, output: Tensor) -> None:
        i = idx.to(output.device)
        output[0, :, i] = alpha.to(output.device, output.dtype) * output[0, :, i] + beta.to(output.device, output.dtype)

    return hook_fn


@dataclass
class ReferenceLSS:
    """Per (source, target): the four per-fact log-probability vectors and the LSS sign test."""

    base_s: dict[tuple[str, str], Tensor]
    base_t: dict[tuple[str, str], Tensor]
    int_s: dict[tuple[str, str], Tensor]
    int_t: dict[tuple[str, str], Tensor]

    def lss(self, pair: tuple[str, str]) -> float:
        shift = (self.int_t[pair] - self.int_s[pair]) - (self.base_t[pair] - self.base_s[pair])
        return float((shift > 0).double().mean())  # eval_dod: count(diff > 0) / n

    def mean_shift(self, pair: tuple[str, str]) -> float:
        shift = (self.int_t[pair] - self.int_s[pair]) - (self.base_t[pair] - self.base_s[pair])
        return float(shift.double().mean())

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return list(self.base_s)


def lss(hf: nn.Module, tokenizer: Any, facts: Mapping[str, Sequence[Any]], languages: Sequence[str],
        maps: Mapping[str, LayerMaps], *, prepend_bos: bool) -> ReferenceLSS:
    """Batch-1 LSS with full logits. ``facts[s]``: facts (``.prompt[s]``, ``.continuation(s, u)``) for every
    language; ``maps[t]``: the intervention for target ``t`` (targets missing from ``maps`` are skipped)."""
    bos = bos_id(tokenizer, prepend_bos)
    layers = act_fn_modules(hf)
    base_s: dict[tuple[str, str], list[float]] = {}
    base_t: dict[tuple[str, str], list[float]] = {}
    int_s: dict[tuple[str, str], list[float]] = {}
    int_t: dict[tuple[str, str], list[float]] = {}
    for s in languages:
        targets = [t for t in languages if t != s and t in maps]
        for fact in facts.get(s, []):
            prompt = fact.prompt[s]
            # DOD_NINT: every language's answer, one forward each, no hooks.
            base = {u: logprob(hf, *encode(tokenizer, bos, prompt, fact.continuation(s, u))) for u in languages}
            for t in targets:
                base_s.setdefault((s, t), []).append(base[s])
                base_t.setdefault((s, t), []).append(base[t])
                # DOD_INT: hooks registered for this fact and target, then the two answers.
                handles = [layers[layer].register_forward_hook(_intervene(maps[t], layer)) for layer in maps[t]]
                try:
                    for u, store in ((s, int_s), (t, int_t)):
                        store.setdefault((s, t), []).append(
                            logprob(hf, *encode(tokenizer, bos, prompt, fact.continuation(s, u))))
                finally:
                    for h in handles:
                        h.remove()

    def tens(d: dict[tuple[str, str], list[float]]) -> dict[tuple[str, str], Tensor]:
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in d.items()}

    return ReferenceLSS(tens(base_s), tens(base_t), tens(int_s), tens(int_t))
