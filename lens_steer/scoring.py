"""Continuation log-probabilities: log p(answer | prompt), batched, padding-correct, span-exact, KV-shared.

For each prompt and each of its candidate answers the text ``prompt + answer`` is tokenised **jointly** and the
answer span is read from the character offsets: every token that contains a character of the answer is scored
(so a BPE merge across the prompt/answer boundary is scored, not lost or double counted).

Speed: the prompt is run once per row (left-padded, length-bucketed batches) and its KV cache is shared by all
of its answers; single-token answers need no second pass at only the prompt's last-position logits
(``logits_to_keep=1``), and the continuation pass projects to the vocabulary only the positions it scores.
Interventions (:mod:`lens_steer.steer`) can differ per prompt row.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from jaxtyping import Float, Int
from torch import Tensor

from lens_steer.distributed import run_dealt
from lens_steer.errors import LensSteerError
from lens_steer.models import Model, ModelLike, as_model, pad_rows


@dataclass
class Scores:
    """Per prompt and answer: summed log-probability (nats) and number of scored tokens.

    >>> s = Scores(torch.tensor([[-2.0, -3.0]]), torch.tensor([[1, 2]]))
    >>> s.normalised().tolist()
    [[-2.0, -1.5]]
    """

    logp: Float[Tensor, "prompt answer"]
    n_tokens: Int[Tensor, "prompt answer"]

    def normalised(self) -> Float[Tensor, "prompt answer"]:
        """Mean log-probability per answer token."""
        return self.logp / self.n_tokens.clamp(min=1)


@dataclass
class _Encoded:
    prefix: list[int]  # shared by every answer of the prompt (BOS included)
    conts: list[list[int]]  # per answer: tokens after the prefix
    first_scored: list[int]  # per answer: index in conts[a] of the first scored token


def _encode(tokenizer, bos: int | None, prompt: str, answers: Sequence[str]) -> _Encoded:
    if not answers:
        raise LensSteerError("every prompt needs at least one answer to score")
    ids_list, firsts = [], []
    for answer in answers:
        if not answer:
            raise LensSteerError(f"empty answer for prompt {prompt[:40]!r}; every answer needs at least one character")
        enc = tokenizer(prompt + answer, add_special_tokens=False, return_offsets_mapping=True)
        ids = ([bos] if bos is not None else []) + list(enc["input_ids"])
        offsets = ([(0, 0)] if bos is not None else []) + [tuple(o) for o in enc["offset_mapping"]]
        first = next((i for i, (_, end) in enumerate(offsets) if end > len(prompt)), None)
        if first is None:
            raise LensSteerError(f"the answer {answer!r} produced no tokens after prompt {prompt[:40]!r}")
        ids_list.append(ids)
        firsts.append(first)
    # The shared prefix must stop before every answer's first scored token (its logits come from the prefix's
    # last position) and at the first token where the joint tokenisations disagree.
    cut = min(firsts)
    for ids in ids_list[1:]:
        common = next((i for i, (x, y) in enumerate(zip(ids_list[0], ids)) if x != y), min(len(ids), len(ids_list[0])))
        cut = min(cut, common)
    if cut < 1:
        raise LensSteerError(f"prompt {prompt[:40]!r} is empty; the scorer needs a context to condition on")
    return _Encoded(ids_list[0][:cut], [ids[cut:] for ids in ids_list], [f - cut for f in firsts])


def score(model: ModelLike, prompts: Sequence[str], answers: Sequence[Sequence[str]], *, steerer=None,
          interventions: Sequence | None = None, batch_size: int = 32, progress: bool = False,
          split: bool = False) -> Scores:
    """Score every answer of every prompt under an optional per-prompt intervention.

    Args:
        model: a :class:`~lens_steer.models.Model` or a TransformerBridge.
        prompts: N prompt strings.
        answers: N lists of answers, all of the same length A (append them to the prompt verbatim).
        steerer: a :class:`~lens_steer.steer.Steerer`; needed when ``interventions`` is given.
        interventions: N interventions (or None per row), applied at every position of prompt and answer.
        batch_size: prompts per forward.
        split: under torchrun, deal the batches (planned as one process plans them) to the ranks; every rank
            gets every score.

    Returns:
        :class:`Scores` with ``[N, A]`` tensors. Identical (to float tolerance) for any batch size.
    """
    if len(prompts) != len(answers):
        raise LensSteerError(f"{len(prompts)} prompts but {len(answers)} answer lists")
    if interventions is not None and (steerer is None or len(interventions) != len(prompts)):
        raise LensSteerError("interventions need a steerer and one entry per prompt")
    n_ans = {len(a) for a in answers}
    if len(n_ans) > 1:
        raise LensSteerError("every prompt needs the same number of answers")
    n_a = n_ans.pop() if n_ans else 0
    model = as_model(model)
    # prompt:en / prompt:native ask in the prompt itself (their control names another of the run's languages)
    prepared = steerer.prepare(prompts, interventions) if interventions is not None else None
    prompts = prepared.prompts if prepared is not None else list(prompts)
    encoded = [_encode(model.tokenizer, model.bos, p, a) for p, a in zip(prompts, answers)]
    logp = torch.zeros(len(prompts), n_a, dtype=torch.float64)
    counts = torch.zeros(len(prompts), n_a, dtype=torch.long)
    # Length buckets: sorting by prefix length keeps left padding (and wasted compute) small.
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i].prefix))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    # Test-time factors (testmax, p10) take their statistic over the whole row, prompt and answer, in one forward
    # (as the reference scores prompt + answer): a cached prompt pass would see the prompt alone.
    whole = prepared is not None and prepared.test_time
    run_batch = _score_batch_whole if whole else _score_batch
    bar = tqdm(total=len(batches), desc="scoring", disable=not progress, leave=False)

    def one(batch: list[int]) -> tuple[Tensor, Tensor]:
        rows_iv = [interventions[i] for i in batch] if interventions is not None else None
        out = run_batch(model, [encoded[i] for i in batch], steerer, rows_iv)
        bar.update(1)
        return out

    if split:
        costs = [len(b) * max(len(encoded[i].prefix) for i in b) for b in batches]
        results = run_dealt(batches, costs, one)[0]
    else:
        results = [one(b) for b in batches]
    bar.close()
    for batch, (lp, n) in zip(batches, results):
        logp[batch] = lp
        counts[batch] = n
    return Scores(logp.float(), counts)


def _steered(steerer, rows, prompt_end, start_offset: int = 0):
    """The steering context of one forward (nothing when there is no intervention)."""
    if steerer is None or rows is None:
        return contextlib.nullcontext()
    return steerer.apply(rows, prompt_end=prompt_end, start_offset=start_offset)


def _continuations(batch: list[_Encoded], pad: int) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded continuation rows (row ``r * n_a + a`` is answer a of prompt r), their mask, and which target
    positions are scored (from each answer's first scored token to its end)."""
    n_a = len(batch[0].conts)
    conts, cmask, _ = pad_rows([c for e in batch for c in e.conts], pad, "right")
    scored = torch.zeros(conts.shape, dtype=torch.bool)
    for r, e in enumerate(batch):
        for a, (c, f) in enumerate(zip(e.conts, e.first_scored)):
            scored[r * n_a + a, f : len(c)] = True
    return conts, cmask, scored & cmask.bool()


def _score_batch(model: Model, batch: list[_Encoded], steerer, rows_iv) -> tuple[Tensor, Tensor]:
    """One prompt pass per row (its KV cache shared by all answers), then one pass over the continuations."""
    b, n_a = len(batch), len(batch[0].conts)
    ids, mask, _ = model.padded([e.prefix for e in batch], "left")
    width = ids.shape[1]
    conts, cmask, scored = _continuations(batch, model.pad)
    multi = conts.shape[1] > 1
    masked = multi and model.masked_logits_ok()
    with torch.inference_mode():
        with _steered(steerer, rows_iv, width):
            if multi:
                last, cache = model(ids, attention_mask=mask, return_type="logits_and_cache", logits_to_keep=1)
            else:
                last = model(ids, attention_mask=mask, return_type="logits", logits_to_keep=1)
        first_lp = torch.log_softmax(last[:, -1].float(), dim=-1)  # [b, vocab]: predicts each continuation's 1st token
        token_lp = torch.zeros(conts.shape, dtype=torch.float32)
        token_lp[:, 0] = first_lp.repeat_interleave(n_a, dim=0).gather(1, conts[:, :1].to(first_lp.device))[:, 0].cpu()
        if multi:
            cache.batch_repeat_interleave(n_a)
            full_mask = torch.cat([mask.repeat_interleave(n_a, dim=0), cmask[:, :-1].to(model.device)], dim=1)
            rows = [iv for iv in rows_iv for _ in range(n_a)] if rows_iv is not None else None
            # The continuation pass starts at position `width` of the same sequences (positions matter for
            # prompt-only / generated-only interventions).
            with _steered(steerer, rows, width, start_offset=width):
                token_lp[:, 1:] = _continuation_logp(model, conts, cache, full_mask, scored, masked)
        token_lp = torch.where(scored, token_lp, torch.zeros_like(token_lp))
    return token_lp.sum(dim=1).double().view(b, n_a), scored.sum(dim=1).view(b, n_a)


def _continuation_logp(model: Model, conts: Tensor, cache, full_mask: Tensor, scored: Tensor,
                       masked: bool) -> Float[Tensor, "row pos_minus_1"]:
    """log p of continuation tokens 1.. given the cached prompt; unscored positions hold any value."""
    out = torch.zeros(conts.shape[0], conts.shape[1] - 1, dtype=torch.float32)
    inputs = conts[:, :-1].to(model.device)
    if masked:
        # The model projects to the vocabulary only the positions whose next token is scored (a boolean
        # logits_to_keep): pads, unscored positions and the last position would cost a [d_model x vocab]
        # product each (262k entries for Gemma), and nothing else is projected.
        need = scored[:, 1:]  # target token j+1 is predicted at input position j
        logits = model(inputs, past_key_values=cache, attention_mask=full_mask, return_type="logits",
                       logits_to_keep=need.to(model.device))
        r, j = need.nonzero(as_tuple=True)  # row-major: the order of the kept logits
        if r.numel():
            logits = logits.reshape(r.numel(), -1).float()
            target = conts[r, j + 1].to(logits.device)
            out[r, j] = (logits.gather(1, target[:, None])[:, 0] - logits.logsumexp(dim=-1)).cpu()
        return out
    logits = model(inputs, past_key_values=cache, attention_mask=full_mask, return_type="logits").float()
    # gather - logsumexp: never materialises a second [rows, pos, vocab] tensor (262k-entry vocabularies).
    return (logits.gather(2, conts[:, 1:, None].to(logits.device))[..., 0] - logits.logsumexp(dim=-1)).cpu()


def _score_batch_whole(model: Model, batch: list[_Encoded], steerer, rows_iv) -> tuple[Tensor, Tensor]:
    """Like :func:`_score_batch`, but every (prompt, answer) is one left-padded row of its own, prompt and answer in
    one forward with no shared KV cache: what a test-time statistic of the whole row needs."""
    b, n_a = len(batch), len(batch[0].conts)
    seqs = [e.prefix + c for e in batch for c in e.conts]  # row r * n_a + a
    ids, mask, _ = model.padded(seqs, "left")
    width = ids.shape[1]
    scored = torch.zeros((len(seqs), width), dtype=torch.bool)  # target positions whose token is scored
    prompt_end = torch.zeros(len(seqs), dtype=torch.long)
    for r, e in enumerate(batch):
        for a, (c, f) in enumerate(zip(e.conts, e.first_scored)):
            i = r * n_a + a
            prompt_end[i] = width - len(c)
            scored[i, prompt_end[i] + f :] = True
    rows = [iv for iv in rows_iv for _ in range(n_a)] if rows_iv is not None else None
    need = scored[:, 1:]  # the token at j + 1 is predicted at position j
    r, j = need.nonzero(as_tuple=True)  # row-major: the order of the kept logits
    masked = model.masked_logits_ok()  # probed (once) before the steering hooks exist
    with torch.inference_mode(), _steered(steerer, rows, prompt_end):
        if masked:  # project only the scored positions (a [d_model x vocab] product each)
            keep = torch.cat([need, torch.zeros(len(seqs), 1, dtype=torch.bool)], dim=1)
            picked = model(ids, attention_mask=mask, return_type="logits",
                           logits_to_keep=keep.to(model.device)).reshape(r.numel(), -1).float()
        else:
            logits = model(ids, attention_mask=mask, return_type="logits")
            picked = logits[r.to(logits.device), j.to(logits.device)].float()
    targets = ids[r.to(ids.device), (j + 1).to(ids.device)]
    lp = picked.gather(1, targets.to(picked.device)[:, None])[:, 0] - picked.logsumexp(dim=-1)
    token_lp = torch.zeros(need.shape, dtype=torch.float64)
    token_lp[r, j] = lp.double().cpu()
    return token_lp.sum(dim=1).view(b, n_a), need.sum(dim=1).view(b, n_a)
