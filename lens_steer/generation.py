"""Greedy generation, batched, with a different intervention per row.

Our own decoding loop rather than ``bridge.generate``: it pads prompts on the left with an explicit attention
mask, runs the prompt once, then one token per step on the KV cache (``logits_to_keep=1`` throughout), stops each
row at EOS, and keeps every row in the batch so per-row interventions stay aligned. Greedy only: steering results
must be reproducible (``bridge.generate`` samples unless ``do_sample=False``).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from lens_steer.distributed import run_dealt
from lens_steer.errors import LensSteerError
from lens_steer.models import Model, ModelLike, as_model


def cut_generation(text: str, stop: str | None = "\n") -> str:
    """The generation proper, the one rule wherever a generated text is cut (translation, forcing, steer): leading
    whitespace and newlines are skipped, then everything from the first ``stop`` on is dropped (``None``: nothing
    is), then trailing whitespace. An empty result is an empty output: callers count it, never score it silently.

    >>> cut_generation("\\n\\n Bonjour.\\nEnglish: next"), cut_generation(" \\n "), cut_generation(" a\\nb", None)
    ('Bonjour.', '', 'a\\nb')
    """
    body = text.lstrip()
    if stop:
        body = body.split(stop, 1)[0]
    return body.rstrip()


def is_empty_generation(text: str, stop: str | None = "\n") -> bool:
    """Whether :func:`cut_generation` leaves nothing of ``text``.

    >>> is_empty_generation("\\n\\n"), is_empty_generation("\\nOui\\n"), is_empty_generation("")
    (True, False, True)
    """
    return not cut_generation(text, stop)


def reached_stop(text: str, stop: str) -> bool:
    """Whether a row that has generated ``text`` so far may stop: ``stop`` occurs after the first non-whitespace
    character, exactly where :func:`cut_generation` cuts (so stopping there never changes the cut output).

    >>> reached_stop("\\n", "\\n"), reached_stop("\\n Hola", "\\n"), reached_stop("\\n Hola\\n", "\\n")
    (False, False, True)
    """
    return stop in text.lstrip()


def greedy_generate(model: ModelLike, prompts: Sequence[str], *, max_new_tokens: int = 30, steerer: Any = None,
                    interventions: Sequence[Any] | None = None, batch_size: int = 16,
                    stop_at_eos: bool = True, stop_text: str | None = None,
                    progress: bool = False, desc: str = "generating", split: bool = False,
                    chat: bool = False, max_prompt_tokens: int | None = None) -> list[str]:
    """Greedy continuations of ``prompts`` (without the prompt), one intervention (or None) per prompt.

    ``stop_text`` (e.g. ``"\\n"``) ends a row once the text generated so far holds it after its first non-whitespace
    character (:func:`reached_stop`), the point from which :func:`cut_generation` drops the rest anyway, so
    generating further only costs time. A newline *before* any text never ends a row: models often open an answer
    with one, and stopping there left the translation empty. The intervention acts on every position it selects
    (``positions="all"``: prompt and generated tokens; the prompt ends where generation starts, so
    ``prompt``/``generated``/``last:K`` work too).

    A prompt longer than ``max_prompt_tokens``, or than the model's context less ``max_new_tokens``, keeps its last
    tokens (the end is what is continued), with a one-line warning. Generated text never shows special or control
    tokens (:meth:`~lens_steer.models.Model.decode`).

    >>> from lens_steer.steer import Intervention, Steerer
    >>> prompts = ["Once upon a time"] * 2  # the second row with fr's neurons set to their p_max
    >>> out = greedy_generate(bridge, prompts, max_new_tokens=5, steerer=Steerer(bridge, neurons, stats),
    ...                       interventions=[None, Intervention("fr", "p_max")])
    >>> len(out), type(out[0])  # the continuations without the prompt, e.g. " there was a ..."
    (2, <class 'str'>)
    """
    if max_new_tokens < 1:
        raise LensSteerError(f"--max-new-tokens must be >= 1, not {max_new_tokens}")
    if interventions is not None and (steerer is None or len(interventions) != len(prompts)):
        raise LensSteerError("interventions need a steerer and one entry per prompt")
    model = as_model(model)
    if any(not p.strip() for p in prompts):
        raise LensSteerError("a prompt is empty or only whitespace; give every prompt some text")
    encoded = _prompt_ids(model, prompts, steerer, interventions, chat, max_new_tokens, max_prompt_tokens)
    eos = model.tokenizer.eos_token_id
    out: list[str] = [""] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    bar = tqdm(total=len(batches), desc=desc, unit="batch", disable=not progress, leave=False)

    def one(batch: list[int]) -> list[list[int]]:
        rows = [interventions[i] for i in batch] if interventions is not None else None
        new = _generate_batch(model, [encoded[i] for i in batch], eos if stop_at_eos else None, max_new_tokens,
                              steerer, rows, (model, stop_text) if stop_text else None)
        bar.update(1)
        return new

    # split: under torchrun the batches, planned as one process plans them, are dealt to the ranks (same shapes,
    # same greedy tokens); every rank gets every continuation.
    costs = [len(b) * (max(len(encoded[i]) for i in b) + max_new_tokens) for b in batches]
    results = run_dealt(batches, costs, one)[0] if split else [one(b) for b in batches]
    bar.close()
    for batch, new in zip(batches, results):
        for i, ids in zip(batch, new):
            out[i] = model.decode(ids)
    return out


def _prompt_ids(model: Model, prompts: Sequence[str], steerer: Any, interventions: Sequence[Any] | None, chat: bool,
                max_new_tokens: int, max_prompt_tokens: int | None) -> list[list[int]]:
    """The token ids each row starts from: the prompt cut to fit, its instruction (:meth:`Steerer.prepare
    <lens_steer.steer.Steerer.prepare>`) and chat template around it, BOS first."""
    tok, bos = model.tokenizer, model.bos
    room = prompt_room(model, max_new_tokens)
    # Cut the text itself, before an instruction or a chat template is put around it: those must stay whole.
    prompts = cut_prompts(model, prompts, max_prompt_tokens, room)
    # prompt:en / prompt:native ask in the prompt itself (their control names another of the run's languages)
    if interventions is not None:
        prompts = steerer.prepare(prompts, interventions).prompts
    if chat:  # an instruct model's own template around each (instructed) prompt, as its user turn
        prompts = chat_prompts(model, prompts)
    encoded = [([bos] if bos is not None else []) + tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    if room is not None and any(len(e) > room for e in encoded):  # what an instruction or template added
        encoded = [(e[:1] + e[len(e) - room + 1:]) if bos is not None and len(e) > room else e[-room:]
                   for e in encoded]
    return encoded


def prompt_room(model: ModelLike, max_new_tokens: int) -> int | None:
    """How many prompt tokens (BOS included) fit the model's context with ``max_new_tokens`` after them; None for a
    model whose context is unknown."""
    model = as_model(model)
    context = model.context
    if context is None:
        return None
    if max_new_tokens >= context:
        raise LensSteerError(f"--max-new-tokens {max_new_tokens} leaves no room for a prompt: this model reads at most"
                             f" {context} tokens; ask for fewer new tokens")
    return context - max_new_tokens


def cut_prompts(model: ModelLike, prompts: Sequence[str], max_prompt_tokens: int | None,
                room: int | None = None) -> list[str]:
    """Each prompt cut to its last ``max_prompt_tokens`` tokens, and to ``room`` with the BOS; one warning line
    for all of them, saying which limit cut and how to change it.

    >>> import warnings
    >>> ids = bridge.tokenizer("a b c d e f g h", add_special_tokens=False)["input_ids"]
    >>> with warnings.catch_warnings(record=True) as seen:
    ...     warnings.simplefilter("always")
    ...     cut = cut_prompts(bridge, ["a b c d e f g h"], 2)
    >>> cut == [bridge.tokenizer.decode(ids[-2:])], str(seen[0].message).endswith("raise it to keep more)")
    (True, True)
    """
    model = as_model(model)
    tok = model.tokenizer
    limits = [n for n in (max_prompt_tokens, None if room is None else room - (model.bos is not None)) if n]
    if not limits:
        return list(prompts)
    limit = max(1, min(limits))
    out, longest = [], 0
    for p in prompts:
        if 2 * len(p.encode("utf-8")) < limit:  # far fewer bytes than the limit: no tokenizer gets past it
            out.append(p)
            continue
        ids = tok(p, add_special_tokens=False)["input_ids"]
        if len(ids) > limit:
            longest = max(longest, len(ids))
            p = tok.decode(ids[-limit:])
        out.append(p)
    if longest:
        why = (f"--max-prompt-tokens {limit}; raise it to keep more" if max_prompt_tokens == limit
               else f"the model reads at most {model.context} tokens and {model.context - room} of them are new"
                    " ones; ask for fewer new tokens to keep more")
        warnings.warn(f"a prompt of {longest} tokens was cut to its last {limit} ({why})", stacklevel=2)
    return out


def chat_prompts(model: ModelLike, prompts: Sequence[str]) -> list[str]:
    """Each prompt as the user turn of the tokenizer's own chat template, with the generation prompt appended; the
    template's leading BOS text is dropped (generation prepends the BOS id itself). One line for a model without a
    template (a base model such as the embedded Gemma-3-270M)."""
    model = as_model(model)
    tok = model.tokenizer
    if not getattr(tok, "chat_template", None):
        name = model.identity.get("model", "this model")
        raise LensSteerError(f"{name} has no chat template (a base model); drop --chat-template, or use an instruct"
                             " model whose tokenizer has one")
    bos_text = tok.bos_token if model.bos is not None and tok.bos_token else None
    out = []
    for p in prompts:
        text = tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        out.append(text[len(bos_text):] if bos_text and text.startswith(bos_text) else text)
    return out


def _generate_batch(model: Model, rows_ids: list[list[int]], eos: int | None, max_new: int, steerer,
                    rows_iv, stop=None) -> list[list[int]]:
    b, pad = len(rows_ids), model.pad
    ids, mask, _ = model.padded(rows_ids, "left")
    width = ids.shape[1]
    ctx = (steerer.apply(rows_iv, prompt_end=width) if steerer is not None and rows_iv is not None
           else contextlib.nullcontext())
    generated = torch.zeros((b, 0), dtype=torch.long)
    done = torch.zeros(b, dtype=torch.bool)
    with torch.inference_mode(), ctx:
        logits, cache = model(ids, attention_mask=mask, return_type="logits_and_cache", logits_to_keep=1)
        for _ in range(max_new):
            nxt = logits[:, -1].argmax(dim=-1).cpu()
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            generated = torch.cat([generated, nxt[:, None]], dim=1)
            if eos is not None:
                done |= nxt == eos
            if stop is not None:
                done |= _stopped(stop, generated, done)
            if bool(done.all()) or generated.shape[1] == max_new:
                break
            # Finished rows keep stepping (on pad tokens, masked out) so the batch and its per-row plans stay aligned.
            mask = torch.cat([mask, (~done).long()[:, None].to(mask.device)], dim=1)
            logits, cache = model(nxt[:, None].to(model.device), past_key_values=cache, attention_mask=mask,
                                  return_type="logits_and_cache", logits_to_keep=1)
    # Cut at EOS; the pads that fill finished rows come after it.
    return [row[: row.index(eos)] if eos is not None and eos in row else row for row in generated.tolist()]


def _stopped(stop: tuple[Any, str], generated: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
    """Rows still running whose text so far reached the stop. The whole row is decoded (not the last token alone):
    whether text came before the stop is a property of the text, and a character split over tokens decodes right
    only as a whole."""
    model, text = stop
    return torch.tensor([not d and reached_stop(model.decode(row), text)
                         for d, row in zip(done.tolist(), generated.tolist())])
