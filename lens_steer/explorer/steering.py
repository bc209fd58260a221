"""The steering playground's one call: the same greedy continuations as ``lens-steer steer``
(:func:`lens_steer.forcing.steer_records`), for up to :data:`MAX_FACTORS` factors at once, written nowhere.

A factor is any of the grammar's (``lens-steer lss --help``), or one with ``best`` resolved from the run: ``best`` is
the LSS rule's choice (``lss_summary.json``), a method with ``best`` in place of a number (``diffmean*best``,
``resid:best``) the choice ``lens-steer compare`` made for it (``compare_summary.json``).
"""

from __future__ import annotations

import contextlib
from typing import Any

from lens_steer.configs import SteerConfig
from lens_steer.errors import LensSteerError
from lens_steer.explorer.data import ExploreData
from lens_steer.factors import parse_factor
from lens_steer.run import COMPARE_SUMMARY, Run

MAX_FACTORS = 3
"""Factors one playground run compares side by side."""
CLOZE_FACTS = 6
"""Cloze facts per language the playground offers (the first of each relation's list, CLDR's fixed order)."""


def resolve_factor(run: Run, text: str) -> str:
    """``text``, or the factor the run chose for it where it says ``best`` (module docstring)."""
    text = text.strip()
    if text == "best":
        return run.best_factor()
    if "best" not in text:
        return text
    how = f"run `lens-steer compare {run.path} --methods {text}` first, or give its number"
    if not run.has(COMPARE_SUMMARY):
        raise LensSteerError(f"{text}: the run has no {COMPARE_SUMMARY} to resolve best from; {how}")
    detail = run.summary(COMPARE_SUMMARY).get("methods", {}).get(text)
    if not isinstance(detail, dict) or not isinstance(detail.get("factor"), str):
        raise LensSteerError(f"{text}: {COMPARE_SUMMARY} has no choice for this method; {how}")
    return detail["factor"]


def split_factors(text: str | None) -> list[str]:
    """The comma-separated factors of the playground's factor box (1 to :data:`MAX_FACTORS`).

    >>> split_factors(" p_max, diffmean*2 ")
    ['p_max', 'diffmean*2']
    """
    factors = [t.strip() for t in (text or "").split(",") if t.strip()]
    if not factors:
        raise LensSteerError("give a factor, e.g. p_max (several: p_max, p_max*2, diffmean*4)")
    if len(factors) > MAX_FACTORS:
        raise LensSteerError(f"at most {MAX_FACTORS} factors at once, not {len(factors)}")
    return factors


def playground(data: ExploreData, prompt: str | None, target: str | None, factors: str | None,
               layers: str | None = "all", positions: str | None = "all", max_new_tokens: int | None = None,
               fact: str | None = None) -> tuple[list[dict[str, Any]], list[list[tuple[str, float]]] | None]:
    """The baseline record, then one per factor: what ``lens-steer steer RUN --to TARGET --factor F`` prints for
    each factor, checked before the model is touched (an empty prompt, a bad factor, target, layer or position).
    With a cloze ``fact`` (``"lang|fact id"``, :func:`cloze_options`) also, unsteered then per factor, the
    probability of each token of the target language's answer after the prompt (:func:`answer_probabilities`)."""
    # deferred: torch, only once a generation is asked for
    from lens_steer.factors import Intervention, parse_layers
    from lens_steer.forcing import steer_records
    from lens_steer.steer import Steerer

    if not (prompt or "").strip():
        raise LensSteerError("the prompt is empty or only whitespace; give some text to continue")
    if not (target or "").strip():
        raise LensSteerError("choose a target language")
    texts = [resolve_factor(data.run, t) for t in split_factors(factors)]
    parsed = [parse_factor(t) for t in texts]
    config = SteerConfig(to=target.strip(), factor=texts[0], layers=(layers or "all").strip(),
                         positions=(positions or "all").strip(),
                         max_new_tokens=int(max_new_tokens or data.config.max_new_tokens))
    source, chosen = cloze_fact(data, fact) if fact else (None, None)
    data.neurons.targets(config.to, strict=True)  # a target not in the run, or without neurons, says so first
    if chosen is not None and config.to not in chosen.answer:
        raise LensSteerError(f"the cloze fact {chosen.id} has no answer in {config.to}")
    with data.holder.locked():  # steer_records loads the model (data.holder.get) only once the settings are checked
        records = steer_records(data.run, prompt, config, data.holder.get, parsed)
        if chosen is None:
            return records, None
        model = data.holder.get()
        ivs = [None, *[Intervention(config.to, f, layers=parse_layers(config.layers), positions=config.positions)
                       for f in parsed]]
        return records, answer_probabilities(model, Steerer(model, data.neurons, data.stats), prompt,
                                             chosen.continuation(source, config.to), ivs)


# ---- a cloze fact: the per-token probability of the target language's answer ----
def _cldr(data: ExploreData) -> tuple[list[str], Any]:
    """The run's languages the CLDR cloze (offline, built in) covers, and its first facts in them."""
    from lens_steer.cloze import load_cloze, supported_languages

    langs = [c for c in data.languages if c in supported_languages("cldr")]
    return langs, (load_cloze("cldr", langs, max_facts=CLOZE_FACTS) if langs else None)


def cloze_options(data: ExploreData) -> list[dict[str, str]]:
    """The cloze facts askable in the run's languages, as the playground lists them: ``{"label", "value"}``, the
    value ``"lang|fact id"``."""
    langs, cloze = _cldr(data)
    return [{"label": f"{c}: {fact.prompt[c]} ({fact.id})", "value": f"{c}|{fact.id}"}
            for c in langs for fact in cloze.for_source(c)]


def cloze_fact(data: ExploreData, value: str) -> tuple[str, Any]:
    """The source language and :class:`~lens_steer.cloze.Fact` of a ``"lang|fact id"`` option."""
    source, _, fact_id = (value or "").partition("|")
    langs, cloze = _cldr(data)
    if source not in langs:
        raise LensSteerError(f"cloze fact {value!r}: {source!r} is not a run language the cldr cloze covers")
    fact = next((f for f in cloze.for_source(source) if f.id == fact_id), None)
    if fact is None:
        raise LensSteerError(f"no cldr fact {fact_id!r} in {source}")
    return source, fact


def answer_probabilities(model: Any, steerer: Any, prompt: str, continuation: str,
                         interventions: list[Any]) -> list[list[tuple[str, float]]]:
    """Per intervention (None: unsteered), each token of ``continuation`` after ``prompt`` with its probability given
    everything before it: one forward of prompt + continuation, tokenised together as LSS scores it (the answer's
    tokens are those ending after the prompt), the intervention's positions counted from the prompt's end."""
    import torch  # deferred: only once a cloze fact is scored

    tok, bos = model.tokenizer, model.bos
    out = []
    for text, iv in zip(steerer.prepare([prompt] * len(interventions), interventions).prompts, interventions):
        enc = tok(text + continuation, add_special_tokens=False, return_offsets_mapping=True)
        ids = ([bos] if bos is not None else []) + list(enc["input_ids"])
        ends = ([0] if bos is not None else []) + [end for _, end in enc["offset_mapping"]]
        first = next((i for i, end in enumerate(ends) if end > len(text)), None)
        if first is None or first < 1:
            raise LensSteerError(f"the answer {continuation!r} gives no token to score after the prompt")
        rows = torch.tensor([ids], device=model.device)
        steered = steerer.apply(iv, prompt_end=first) if iv is not None else contextlib.nullcontext()
        with torch.inference_mode(), steered:
            logp = model(rows).float().log_softmax(-1)[0]
        out.append([(tok.decode([ids[i]]), float(logp[i - 1, ids[i]].exp())) for i in range(first, len(ids))])
    return out

