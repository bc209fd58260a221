"""Downstream evaluation under amplification: every task in every evaluation language e, with the neurons of each
intervened language t amplified (e = t: self-language; e != t: cross-language), against no intervention.

Tasks (:data:`TASKS`): ``xcopa``, ``xwinograd``, ``include`` (multiple choice, accuracy), ``flores-mt`` (en->x
translation: chrF++, BLEU, spBLEU and the share of empty outputs), ``ppl`` (FLORES+ perplexity), and two offline
analogs on the embedded UDHR: ``udhr-ppl`` (held-out articles 25-30) and ``udhr-mt`` (en->x translation of those
articles: chrF++, BLEU, empty share). The analogs only show that the machinery moves: the model has probably
memorised the UDHR.

Every (item, setting) pair is one batch row with its own intervention, so the baseline and all intervened languages
are scored in the same batched forwards; results do not depend on the batch size (tested).

Output rows (long format, ``eval_<task>.csv``): ``task, factor, intervened ("none" or t), eval_lang, metric,
value, n``. A non-default variant is part of the task name (:func:`task_label`: ``flores-mt-untargeted``,
``xcopa-refjoin``), so it gets its own file and never overwrites the default's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from lens_steer.configs import EvalOptions
from lens_steer.distributed import current
from lens_steer.errors import LensSteerError
from lens_steer.models import LoadConfig, ModelLike, as_model
from lens_steer.evals import data
from lens_steer.evals.tasks import (
    MT_PROMPTS,
    Choice,
    include_choice,
    max_new_tokens_for,
    mt_prompt,
    xcopa_choice,
    xwinograd_choice,
)
from lens_steer.languages import JOINS
from lens_steer.run import Run, eval_csv, eval_outputs, writes
from lens_steer.factors import Factor, Intervention


@dataclass(frozen=True)
class Task:
    """One downstream task: everything that differs between tasks, so that adding one is one entry of :data:`TASKS`.

    ``load`` names a loader of :mod:`lens_steer.evals.data`, looked up when called (so a patched loader is the one
    used); it takes ``(langs, path=, limit=)``, or ``(langs, limit=)`` when ``reads_path`` is false (the UDHR tasks
    read the embedded declaration). ``build`` turns one loaded item of a ``choice`` task into a scored
    :class:`~lens_steer.evals.tasks.Choice`: ``build(lang, item, join)``.
    """

    name: str
    kind: Literal["choice", "ppl", "mt"]  # how it is scored: eval_choice, eval_ppl or eval_mt
    load: str
    reads_path: bool = True
    languages: tuple[str, ...] | None = None  # the languages it covers; None: any language with data
    build: Callable[[str, Any, str], Choice] | None = None
    spbleu: bool = False  # mt: score spBLEU too (FLORES+ only: the UDHR analogs stay offline)


def _xcopa(lang: str, it: data.CopaItem, join: str) -> Choice:
    return xcopa_choice(lang, it.premise, it.choice1, it.choice2, it.question, it.label, join)


def _xwinograd(lang: str, it: data.WinogradItem, join: str) -> Choice:
    return xwinograd_choice(lang, it.sentence, it.option1, it.option2, it.answer, join)


def _include(lang: str, it: data.IncludeItem, join: str) -> Choice:
    return include_choice(it.question, tuple(it.options), it.answer, join)


TASKS: dict[str, Task] = {task.name: task for task in (
    Task("xcopa", "choice", "load_xcopa", languages=data.XCOPA_LANGS, build=_xcopa),
    Task("xwinograd", "choice", "load_xwinograd", languages=data.XWINOGRAD_LANGS, build=_xwinograd),
    Task("include", "choice", "load_include", languages=data.INCLUDE_LANGS, build=_include),
    Task("flores-mt", "mt", "load_flores_pairs", spbleu=True),
    Task("ppl", "ppl", "load_flores_mono"),
    Task("udhr-ppl", "ppl", "load_udhr_eval", reads_path=False),
    Task("udhr-mt", "mt", "load_udhr_pairs", reads_path=False),
)}  # fmt: skip
"""The tasks by name, in the CLI's order; iterating or ``in`` gives the names."""
CHOICE_TASKS = tuple(name for name, task in TASKS.items() if task.kind == "choice")
MT_TASKS = tuple(name for name, task in TASKS.items() if task.kind == "mt")
EVAL_COLUMNS = ("task", "factor", "intervened", "eval_lang", "metric", "value", "n")
# Which direction is better, for the printed summary (perplexity, NLL and empty outputs: lower).
LOWER_IS_BETTER = ("ppl_macro", "ppl_micro", "nll_macro", "nll_micro", "empty_share")


def _task(name: str) -> Task:
    if name not in TASKS:
        raise LensSteerError(f"unknown task {name!r}; use one of {', '.join(TASKS)}")
    return TASKS[name]


def task_label(task: str, prompt: str = "targeted", join: str = "auto") -> str:
    """The task name written to ``eval_<label>.csv``: the task, plus the variant when it is not the default.

    Raises:
        LensSteerError: an unknown task, prompt or join, or a prompt or join given to a task it does not apply to.

    >>> task_label("xcopa"), task_label("udhr-mt", prompt="untargeted"), task_label("include", join="reference")
    ('xcopa', 'udhr-mt-untargeted', 'include-refjoin')
    """
    _task(task)
    if prompt not in MT_PROMPTS:
        raise LensSteerError(f"unknown --prompt {prompt!r}; use {' or '.join(MT_PROMPTS)}")
    if join not in JOINS:
        raise LensSteerError(f"unknown --join {join!r}; use {' or '.join(JOINS)}")
    if prompt != "targeted" and task not in MT_TASKS:
        raise LensSteerError(f"--prompt applies to {' and '.join(MT_TASKS)} only; drop it for {task}")
    if join != "auto" and task not in CHOICE_TASKS:
        raise LensSteerError(f"--join applies to {', '.join(CHOICE_TASKS)} only; drop it for {task}")
    return task + ("-untargeted" if prompt == "untargeted" else "") + ("-refjoin" if join == "reference" else "")


def settings(factor: Factor | None, targets: Sequence[str], layers: str | int = "all",
             positions: str = "all") -> list[tuple[str, Intervention | None]]:
    """The baseline (``"none"``) and one intervention per target language."""
    out: list[tuple[str, Intervention | None]] = [("none", None)]
    if factor is not None:
        out += [(t, Intervention(t, factor, layers=layers, positions=positions)) for t in targets]
    return out


def _row(task: str, factor: str, intervened: str, lang: str, metric: str, value: float, n: int) -> dict[str, Any]:
    return {"task": task, "factor": factor if intervened != "none" else "-", "intervened": intervened,
            "eval_lang": lang, "metric": metric, "value": value, "n": n}


# ---------------------------------------------------------------------------------------------------------------
# Multiple choice
# ---------------------------------------------------------------------------------------------------------------
def choice_logps(model: ModelLike, items: Sequence[Choice], ivs: Sequence[Intervention | None], steerer: Any,
                 batch_size: int = 16) -> torch.Tensor:
    """Summed log-probability of every choice of every item under its row's intervention: ``[items, choices]``.

    Items whose choices share one context (XCOPA, Include) are one prompt row with all continuations (the prompt's
    KV cache is shared); items with a context per choice (XWinograd) are one row per choice.
    """
    from lens_steer.scoring import score

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
    from tqdm.auto import tqdm

    rows = []
    for lang in tqdm(list(items), desc=task, disable=not progress):
        lang_items = items[lang]
        flat = [c for _ in setups for c in lang_items]
        ivs = [iv for _, iv in setups for _ in lang_items]
        logp = choice_logps(model, flat, ivs, steerer, batch_size).view(len(setups), len(lang_items), -1)
        gold = torch.tensor([c.gold for c in lang_items])
        for k, (name, _) in enumerate(setups):
            acc = (logp[k].argmax(dim=-1) == gold).double().mean().item()
            rows.append(_row(task, factor_text, name, lang, "acc", acc, len(lang_items)))
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
    from tqdm.auto import tqdm

    from lens_steer.scoring import score

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
            macro = float((-logp[k] / n_tok[k].clamp(min=1)).mean())
            micro = float(-logp[k].sum() / n_tok[k].sum().clamp(min=1))
            n = len(pairs)
            rows += [_row(task, factor_text, name, lang, "ppl_macro", math.exp(macro), n),
                     _row(task, factor_text, name, lang, "nll_macro", macro, n),
                     _row(task, factor_text, name, lang, "ppl_micro", math.exp(micro), int(n_tok[k].sum())),
                     _row(task, factor_text, name, lang, "nll_micro", micro, int(n_tok[k].sum()))]
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
    from sacrebleu.metrics import BLEU, CHRF

    hyps, refs = list(hypotheses), [list(references)]
    out = {"chrf++": float(CHRF(word_order=2).corpus_score(hyps, refs).score),
           "bleu": float(BLEU().corpus_score(hyps, refs).score)}
    if spbleu:
        try:
            out["spbleu"] = float(BLEU(tokenize="flores200").corpus_score(hyps, refs).score)
        except Exception as exc:  # sacrebleu raises URLError/OSError/RuntimeError when it cannot fetch the model
            import warnings

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
        import warnings

        warnings.warn(f"{task} {lang} (intervened: {name}): {empty} of {len(hyps)} outputs are empty after the cut;"
                      " they are scored as empty strings (metric empty_share)", stacklevel=3)
    return rows + [_row(task, factor_text, name, lang, "empty_share", empty / len(hyps), len(hyps))]


def eval_mt(task: str, model: ModelLike, steerer: Any, pairs: dict[str, list[tuple[str, str]]],
            setups: list[tuple[str, Intervention | None]], factor_text: str, batch_size: int = 16,
            max_new_tokens: int | None = None, spbleu: bool = True, progress: bool = False,
            prompt: str = "targeted") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """en->x greedy translation under every setting with the ``prompt`` of :data:`MT_PROMPTS`; rows of chrF++,
    BLEU, spBLEU and empty share, and the outputs themselves (the hypotheses exactly as scored)."""
    from tqdm.auto import tqdm

    from lens_steer.generation import cut_generation, greedy_generate

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


# ---------------------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------------------
def write_eval(run_dir: str | Path, task: str, rows: Sequence[dict[str, Any]],
               outputs: Sequence[dict[str, Any]] = ()) -> Path:
    """``RUN_DIR/eval_<task>.csv`` (and ``eval_<task>_outputs.jsonl`` for translation), atomically."""
    run = Run(run_dir)
    path = run.write_csv(eval_csv(task), rows, EVAL_COLUMNS)
    if outputs:
        run.write_jsonl(eval_outputs(task), outputs)
    return path


def self_cross(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per metric: mean change against no intervention for self-language (e = t) and cross-language (e != t) pairs.

    >>> rows = [dict(task="t", factor="-", intervened="none", eval_lang=e, metric="acc", value=0.5, n=1) for e in "ab"]
    >>> rows += [dict(task="t", factor="f", intervened="a", eval_lang=e, metric="acc", value=v, n=1)
    ...          for e, v in (("a", 0.7), ("b", 0.4))]
    >>> [(r["metric"], round(r["self"], 2), round(r["cross"], 2)) for r in self_cross(rows)]
    [('acc', 0.2, -0.1)]
    """
    base = {(r["eval_lang"], r["metric"]): r["value"] for r in rows if r["intervened"] == "none"}
    out = []
    for metric in dict.fromkeys(r["metric"] for r in rows):
        self_d, cross_d = [], []
        for r in rows:
            if r["metric"] != metric or r["intervened"] == "none" or (r["eval_lang"], metric) not in base:
                continue
            d = r["value"] - base[(r["eval_lang"], metric)]
            if d != d:
                continue
            (self_d if r["eval_lang"] == r["intervened"] else cross_d).append(d)
        mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
        out.append({"metric": metric, "self": mean(self_d), "cross": mean(cross_d), "n_self": len(self_d),
                    "n_cross": len(cross_d), "lower_is_better": metric in LOWER_IS_BETTER})
    return out


def build_items(task: str, raw: dict[str, list[Any]], join: str = "auto") -> dict[str, list[Choice]]:
    """Turn loaded dataset items into scored choices, context and continuation joined by ``join``
    (:func:`lens_steer.languages.separator`).

    >>> item = data.IncludeItem("2 + 2?", ("3", "4", "5", "6"), 1, "Maths")
    >>> build_items("include", {"tr": [item]})["tr"][0].gold
    1
    """
    build = TASKS[task].build if task in TASKS else None
    if build is None:
        raise LensSteerError(f"{task} is not a multiple-choice task")
    return {lang: [build(lang, it, join) for it in items] for lang, items in raw.items()}


def task_languages(task: str) -> tuple[str, ...] | None:
    """The languages a task covers (None: any language with data).

    >>> task_languages("xwinograd"), task_languages("ppl")
    (('en', 'ja', 'zh', 'fr', 'pt', 'ru'), None)
    """
    return TASKS[task].languages if task in TASKS else None


def load_task_data(task: str, langs: Sequence[str], path: str | None = None, limit: int | None = None,
                   join: str = "auto") -> Any:
    """The items of ``task`` for ``langs``: choices (MC tasks, joined by ``join``), texts (ppl) or (en, x) pairs
    (translation: English, the source, is never an evaluation language)."""
    spec = _task(task)
    task_label(task, join=join)  # a join the task cannot use fails before any loading
    loader = getattr(data, spec.load)
    if spec.kind == "mt":
        langs = [c for c in langs if c != "en"]
    raw = loader(langs, path=path, limit=limit) if spec.reads_path else loader(langs, limit=limit)
    return build_items(task, raw, join) if spec.kind == "choice" else raw


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


@dataclass(frozen=True)
class EvalConfig(EvalOptions):
    """``lens-steer eval``: the task, its prompt and join conventions, whom to intervene on and where to evaluate
    (:class:`~lens_steer.configs.EvalOptions`, where each option is declared). Checked when built: a bad task,
    ``prompt`` or ``join`` fails before any work."""

    def __post_init__(self) -> None:
        task_label(self.task, self.prompt, self.join)

    @property
    def label(self) -> str:
        """The task as written to eval_<label>.csv: ``<task>``, ``<task>-untargeted`` or ``<task>-refjoin``."""
        return task_label(self.task, self.prompt, self.join)


@dataclass
class EvalResult:
    label: str
    factor: str
    rows: list[dict[str, Any]]
    path: Path


def eval_languages(task: str, languages: Sequence[str], totals: dict[str, int], eval_langs: str | None = None,
                   ) -> tuple[list[str], list[str]]:
    """(evaluation languages, default targets) of ``task`` for a run with these languages and neuron totals.

    >>> eval_languages("udhr-mt", ["en", "fr", "ja"], {"en": 3, "fr": 2, "ja": 0})
    (['fr', 'ja'], ['fr'])
    """
    from lens_steer.languages import parse_languages

    covered = task_languages(task)
    if eval_langs:
        langs = parse_languages(eval_langs)
        bad = [c for c in langs if covered is not None and c not in covered]
        if bad:
            raise LensSteerError(f"{task} has no {', '.join(bad)}; it covers {', '.join(covered or ())}")
    else:
        langs = [c for c in languages if covered is None or c in covered]
        langs = [c for c in langs if c != "en" or task not in MT_TASKS]  # en->x: English is the source
    if not langs:
        raise LensSteerError(f"no evaluation language: the run's languages and {task}'s do not meet; pass --eval-langs")
    return langs, [c for c in langs if totals.get(c, 0)]


@writes("eval")
def eval_for_run(run: Run, config: EvalConfig, load: LoadConfig | str | None = None) -> EvalResult:
    """One downstream task of a run directory, without and with each target's neurons amplified; writes
    ``eval_<label>.csv`` (and the generated outputs of translation tasks)."""
    from lens_steer.forcing import check_before_loading
    from lens_steer.factors import parse_factor
    from lens_steer.steer import Steerer

    neurons = run.neurons()  # a run without a neuron set fails before any data is read
    factor = parse_factor(config.factor if config.factor is not None else run.best_factor())
    langs, targets = eval_languages(config.task, neurons.languages, neurons.totals(), config.eval_langs)
    if config.targets:
        targets, _ = neurons.targets(config.targets, strict=True)
    elif not targets:
        raise LensSteerError(f"no evaluation language ({', '.join(langs)}) has neurons in this run; pass --targets")
    setups = settings(factor, targets, positions=config.positions)  # a bad --positions fails here, before any work
    check_before_loading(run, [factor])  # resid:L out of the recorded model's layers
    loaded = load_task_data(config.task, langs, path=config.data, limit=config.limit, join=config.join)
    model = run.model(load)
    world = current()  # under torchrun every rank scores its dealt batches; rank 0 writes
    rows, outputs = run_eval(config.task, model, Steerer(model, neurons, run.stats()), loaded, setups, factor.text,
                             batch_size=config.batch_size, max_new_tokens=config.max_new_tokens,
                             progress=config.progress and world.main, prompt=config.prompt, join=config.join)
    path = write_eval(run.path, config.label, rows, outputs)
    return EvalResult(config.label, factor.text, rows, path)
