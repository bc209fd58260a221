"""The evaluation protocol: a task's items scored without and with each intervention, as long-format rows
(:data:`EVAL_COLUMNS`).

Every (item, setting) pair is one batch row with its own intervention, so the baseline and all intervened languages
are scored in the same batched forwards; results do not depend on the batch size (tested)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from sacrebleu.metrics import BLEU, CHRF
from tqdm.auto import tqdm

from lens_steer.errors import LensSteerError
from lens_steer.evals.registry import TASKS, task_label
from lens_steer.evals.tasks import Choice, max_new_tokens_for, mt_prompt
from lens_steer.factors import Factor, Intervention
from lens_steer.generation import cut_generation, greedy_generate
from lens_steer.intervals import bootstrap_mean_ci, wilson_share
from lens_steer.models import ModelLike, as_model
from lens_steer.scoring import score

# low, high: the value's 95% interval; interval: which one ("wilson" for a share of the n items, "bootstrap" over
# the sentences for NLL and perplexity, "" for a corpus metric such as BLEU or chrF++, which has none here).
EVAL_COLUMNS = ("task", "factor", "intervened", "eval_lang", "metric", "value", "low", "high", "interval", "n")


def settings(factor: Factor | None, targets: Sequence[str], layers: str | int = "all",
             positions: str = "all") -> list[tuple[str, Intervention | None]]:
    """The baseline (``"none"``) and one intervention per target language."""
    out: list[tuple[str, Intervention | None]] = [("none", None)]
    if factor is not None:
        out += [(t, Intervention(t, factor, layers=layers, positions=positions)) for t in targets]
    return out


def _row(task: str, factor: str, intervened: str, lang: str, metric: str, value: float, n: int,
         ci: tuple[float, float] | None = None, interval: str = "") -> dict[str, Any]:
    """One long-format row; ``ci`` is the value's 95% interval and ``interval`` says which (none: NaN and "")."""
    low, high = ci if ci is not None else (float("nan"), float("nan"))
    return {"task": task, "factor": factor if intervened != "none" else "-", "intervened": intervened,
            "eval_lang": lang, "metric": metric, "value": value, "low": low, "high": high,
            "interval": interval if ci is not None else "", "n": n}


def _share_row(task: str, factor: str, intervened: str, lang: str, metric: str, hits: int, n: int) -> dict[str, Any]:
    """A share of ``n`` independent items (accuracy, empty outputs) with its Wilson interval.

    >>> r = _share_row("t", "f", "fr", "fr", "acc", 8, 10)
    >>> r["value"], round(r["low"], 4), round(r["high"], 4), r["interval"], r["n"]
    (0.8, 0.4902, 0.9433, 'wilson', 10)
    """
    value, low, high = wilson_share(hits, n)
    return _row(task, factor, intervened, lang, metric, value, n, (low, high), "wilson")


# ---------------------------------------------------------------------------------------------------------------
# Multiple choice
# ---------------------------------------------------------------------------------------------------------------
def choice_logps(model: ModelLike, items: Sequence[Choice], ivs: Sequence[Intervention | None], steerer: Any,
                 batch_size: int = 16) -> torch.Tensor:
    """Summed log-probability of every choice of every item under its row's intervention: ``[items, choices]``.

    Items whose choices share one context (XCOPA, Include) are one prompt row with all continuations (the prompt's
    KV cache is shared); items with a context per choice (XWinograd) are one row per choice.
    """
    if not items:
        return torch.zeros(0, 0)
    n_c = len(items[0].continuations)
    if any(len(c.continuations) != n_c for c in items):
        raise LensSteerError("every item of a task needs the same number of choices")
    use = ivs if steerer is not None else None
    if all(len(set(c.contexts)) == 1 for c in items):
        got = score(model, [c.contexts[0] for c in items], [list(c.continuations) for c in items], steerer=steerer,
                    interventions=use, batch_size=batch_size, split=True)
        return got.logp
    prompts = [ctx for c in items for ctx in c.contexts]
    answers = [[cont] for c in items for cont in c.continuations]
    rows = [iv for iv in ivs for _ in range(n_c)] if use is not None else None
    got = score(model, prompts, answers, steerer=steerer, interventions=rows, batch_size=batch_size, split=True)
    return got.logp.view(len(items), n_c)


def eval_choice(task: str, model: ModelLike, steerer: Any, items: dict[str, list[Choice]],
                setups: list[tuple[str, Intervention | None]], factor_text: str, batch_size: int = 16,
                progress: bool = False) -> list[dict[str, Any]]:
    """Accuracy per (setting, evaluation language)."""
    rows = []
    for lang in tqdm(list(items), desc=task, disable=not progress):
        lang_items = items[lang]
        flat = [c for _ in setups for c in lang_items]
        ivs = [iv for _, iv in setups for _ in lang_items]
        logp = choice_logps(model, flat, ivs, steerer, batch_size).view(len(setups), len(lang_items), -1)
        gold = torch.tensor([c.gold for c in lang_items])
        for k, (name, _) in enumerate(setups):
            hits = int((logp[k].argmax(dim=-1) == gold).sum())
            rows.append(_share_row(task, factor_text, name, lang, "acc", hits, len(lang_items)))
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Perplexity
# ---------------------------------------------------------------------------------------------------------------
def _split_for_nll(model: ModelLike, text: str) -> tuple[str, str]:
    """(context, scored part): with a BOS the whole text is scored; without one the first token is the context."""
    if as_model(model).bos is not None:
        return "", text
    enc = model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    cut = enc["offset_mapping"][0][1] if enc["input_ids"] else len(text)
    return text[:cut], text[cut:]


def eval_ppl(task: str, model: ModelLike, steerer: Any, texts: dict[str, list[str]],
             setups: list[tuple[str, Intervention | None]], factor_text: str, batch_size: int = 16,
             progress: bool = False) -> list[dict[str, Any]]:
    """Negative log-likelihood over real tokens (pads never scored): the paper's macro average (mean of per-sentence
    mean NLL) and the micro average over tokens, each with its perplexity exp(NLL)."""
    rows = []
    for lang in tqdm(list(texts), desc=task, disable=not progress):
        pairs = [_split_for_nll(model, t) for t in texts[lang]]
        pairs = [(c, s) for c, s in pairs if s.strip()]
        if not pairs:
            raise LensSteerError(f"no text to score for {lang}; check the data")
        prompts = [c for _ in setups for c, _ in pairs]
        answers = [[s] for _ in setups for _, s in pairs]
        ivs = [iv for _, iv in setups for _ in pairs]
        got = score(model, prompts, answers, steerer=steerer if steerer is not None else None,
                    interventions=ivs if steerer is not None else None, batch_size=batch_size, split=True)
        logp = got.logp[:, 0].double().view(len(setups), len(pairs))
        n_tok = got.n_tokens[:, 0].double().view(len(setups), len(pairs))
        for k, (name, _) in enumerate(setups):
            per_sentence = -logp[k] / n_tok[k].clamp(min=1)
            macro = float(per_sentence.mean())
            micro = float(-logp[k].sum() / n_tok[k].sum().clamp(min=1))
            n = len(pairs)
            # the bootstrap over sentences; micro: each sentence weighted by its tokens (NLL per token)
            ma_ci = bootstrap_mean_ci(per_sentence)
            mi_ci = bootstrap_mean_ci(per_sentence, weights=n_tok[k].clamp(min=1))
            exp = (lambda ci: (math.exp(ci[0]), math.exp(ci[1])))  # noqa: E731 - exp is monotone
            rows += [_row(task, factor_text, name, lang, "ppl_macro", math.exp(macro), n, exp(ma_ci), "bootstrap"),
                     {**_row(task, factor_text, name, lang, "nll_macro", macro, n, ma_ci, "bootstrap"),
                      "per_text": per_sentence.tolist()},  # per text: what compare pairs
                     _row(task, factor_text, name, lang, "ppl_micro", math.exp(micro), int(n_tok[k].sum()),
                          exp(mi_ci), "bootstrap"),
                     _row(task, factor_text, name, lang, "nll_micro", micro, int(n_tok[k].sum()), mi_ci,
                          "bootstrap")]
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Translation
# ---------------------------------------------------------------------------------------------------------------
def mt_scores(hypotheses: Sequence[str], references: Sequence[str], spbleu: bool = True) -> dict[str, float]:
    """Corpus chrF++ (sacreBLEU ``CHRF(word_order=2)``), BLEU (``BLEU()``: the default ``13a`` tokenizer, as the
    reference) and spBLEU (``BLEU(tokenize="flores200")``) of one cell, over the hypotheses as given.

    One corpus score per cell: the reference averages per-batch ``corpus_bleu`` scores, which depends on the batch
    size. ``13a`` splits on spaces and punctuation, so BLEU is near meaningless for ja, zh and th (a sentence is one
    "word"); spBLEU is the comparable one. spBLEU needs sacreBLEU's FLORES-200 SentencePiece model, which sacreBLEU
    downloads once into ``~/.sacrebleu``; offline and not cached, it is left out (NaN) with a warning rather than
    failing the run.

    >>> got = mt_scores(["le chat est noir"], ["le chat est noir"], spbleu=False)
    >>> round(got["chrf++"], 1), round(got["bleu"], 1), "spbleu" in got
    (100.0, 100.0, False)
    """
    hyps, refs = list(hypotheses), [list(references)]
    out = {"chrf++": float(CHRF(word_order=2).corpus_score(hyps, refs).score),
           "bleu": float(BLEU().corpus_score(hyps, refs).score)}
    if spbleu:
        try:
            out["spbleu"] = float(BLEU(tokenize="flores200").corpus_score(hyps, refs).score)
        except Exception as exc:  # sacrebleu raises URLError/OSError/RuntimeError when it cannot fetch the model
            warnings.warn(f"spBLEU skipped: sacreBLEU's flores200 tokenizer is unavailable offline ({type(exc).__name__})",
                          stacklevel=2)
            out["spbleu"] = float("nan")
    return out


def _mt_cell(task: str, factor_text: str, name: str, lang: str, items: list[tuple[str, str]], hyps: list[str],
             spbleu: bool) -> list[dict[str, Any]]:
    """One (setting, language) cell: the quality metrics, then ``empty_share``, the share of outputs that
    :func:`lens_steer.generation.cut_generation` left empty (scored as empty strings, so say how many)."""
    rows = [_row(task, factor_text, name, lang, metric, value, len(items))
            for metric, value in mt_scores(hyps, [ref for _, ref in items], spbleu=spbleu).items()]
    empty = sum(not h for h in hyps)
    if empty:  # never silently: an empty hypothesis is scored as an empty string
        warnings.warn(f"{task} {lang} (intervened: {name}): {empty} of {len(hyps)} outputs are empty after the cut;"
                      " they are scored as empty strings (metric empty_share)", stacklevel=3)
    return rows + [_share_row(task, factor_text, name, lang, "empty_share", empty, len(hyps))]


def eval_mt(task: str, model: ModelLike, steerer: Any, pairs: dict[str, list[tuple[str, str]]],
            setups: list[tuple[str, Intervention | None]], factor_text: str, batch_size: int = 16,
            max_new_tokens: int | None = None, spbleu: bool = True, progress: bool = False,
            prompt: str = "targeted") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """en->x greedy translation under every setting with the ``prompt`` of :data:`MT_PROMPTS`; rows of chrF++,
    BLEU, spBLEU and empty share, and the outputs themselves (the hypotheses exactly as scored)."""
    rows, outputs = [], []
    for lang in tqdm(list(pairs), desc=task, disable=not progress):
        items = pairs[lang]
        if not items:
            raise LensSteerError(f"no sentence pairs for {lang}; check the data")
        prompts = [mt_prompt(lang, src, prompt) for src, _ in items]
        n_src = max(len(model.tokenizer(src, add_special_tokens=False)["input_ids"]) for src, _ in items)
        new = max_new_tokens or max_new_tokens_for(lang, n_src)
        ivs = [iv for _, iv in setups for _ in items]
        texts = greedy_generate(model, [p for _ in setups for p in prompts], max_new_tokens=new,
                                steerer=steerer if steerer is not None else None,
                                interventions=ivs if steerer is not None else None, batch_size=batch_size,
                                stop_text="\n", split=True)
        for k, (name, _) in enumerate(setups):
            hyps = [cut_generation(t, "\n") for t in texts[k * len(items) : (k + 1) * len(items)]]
            rows += _mt_cell(task, factor_text, name, lang, items, hyps, spbleu)
            outputs += [{"task": task, "intervened": name, "factor": factor_text if name != "none" else None,
                         "eval_lang": lang, "prompt_style": prompt, "source": src, "reference": ref,
                         "hypothesis": hyp, "empty": not hyp}
                        for (src, ref), hyp in zip(items, hyps)]
    return rows, outputs



def run_eval(task: str, model: ModelLike, steerer: Any, loaded: Any, setups: list[tuple[str, Intervention | None]],
             factor_text: str, *, batch_size: int = 16, max_new_tokens: int | None = None, spbleu: bool = True,
             progress: bool = False, prompt: str = "targeted",
             join: str = "auto") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run one task on loaded data (``join``: the one :func:`load_task_data` used); returns (rows, generated
    outputs), the rows named by :func:`task_label`."""
    label = task_label(task, prompt, join)
    spec = TASKS[task]
    if spec.kind == "choice":
        return eval_choice(label, model, steerer, loaded, setups, factor_text, batch_size, progress), []
    if spec.kind == "ppl":
        return eval_ppl(label, model, steerer, loaded, setups, factor_text, batch_size, progress), []
    return eval_mt(label, model, steerer, loaded, setups, factor_text, batch_size, max_new_tokens,
                   spbleu=spbleu and spec.spbleu, progress=progress, prompt=prompt)
