"""Language forcing: does amplifying language t make the model *write* in t?

Neutral prompts in several source languages (:mod:`lens_steer.prompts`: text starts of the UDHR's evaluation split
in every run language, or the ones we wrote) are continued greedily with and without the
intervention for every target t; the language of each continuation is detected (:mod:`lens_steer.lid`). Forcing
success is the fraction of steered outputs detected as t (CLaS-Bench's language-forcing success); an undetected
output counts as a miss. Indonesian/Malay are reported strict and lenient. An output that is only whitespace
(:func:`lens_steer.generation.is_empty_generation`; a steered model may emit nothing but newlines) is a miss too,
and is counted apart (``empty``) so that "wrote nothing" is not read as "wrote another language".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lens_steer.configs import ForcingConfig, SteerConfig  # noqa: F401 - declared there, torch-free, for the CLI
from lens_steer.distributed import current
from lens_steer.errors import LensSteerError
from lens_steer.factors import Factor, Intervention, ResidualShift, check_layers, parse_layers
from lens_steer.generation import greedy_generate, is_empty_generation
from lens_steer.intervals import bootstrap_mean_ci, wilson_share
from lens_steer.lid import Detector, get_detector, matches
from lens_steer.models import LoadConfig, ModelLike, has_chat_template
from lens_steer.prompts import HANDWRITTEN, forcing_prompts
from lens_steer.resid_cov import NO_COV
from lens_steer.run import FORCING_CSV, GENERATIONS_FILE, Run, writes
from lens_steer.steer import Steerer

NEUTRAL_PROMPTS = HANDWRITTEN
"""The hand-written prompts (``--forcing-bank handwritten``; ``lss --forcing`` continues them all)."""
# n: the generations behind the row. Shares of generations have their Wilson 95% interval right after them; the
# mean distinct2 and repetition of the steered texts their bootstrap interval over the generations.
FORCING_COLUMNS = ("factor", "target", "n", "forcing_strict", "forcing_strict_low", "forcing_strict_high",
                   "forcing_lenient", "forcing_lenient_low", "forcing_lenient_high", "baseline_strict",
                   "baseline_strict_low", "baseline_strict_high", "undetected", "empty", "distinct2", "distinct2_low",
                   "distinct2_high", "repetition", "repetition_low", "repetition_high", "baseline_distinct2",
                   "baseline_repetition")


def _units(text: str) -> list[str]:
    """Words for spaced scripts, characters for scripts written without spaces (ja, zh, th)."""
    words = text.split()
    if len(words) >= 0.25 * len(text.replace(" ", "")) or len(words) > 8:
        return words
    return [c for c in text if not c.isspace()]


def degeneration(text: str) -> dict[str, float]:
    """How repetitive a generated text is: ``distinct2`` = distinct bigrams / bigrams (1 = no repeat) and
    ``repetition`` = share of trigrams that already occurred earlier in the text (0 = none; a loop is near 1).
    Units are words, or characters for scripts without spaces.

    >>> degeneration("the cat sat on the mat")["repetition"], degeneration("a b a b a b a b")["repetition"]
    (0.0, 0.6666666666666666)
    """
    units = _units(text)
    bigrams = list(zip(units, units[1:]))
    trigrams = list(zip(units, units[1:], units[2:]))
    seen: set[tuple[str, ...]] = set()
    repeats = 0
    for g in trigrams:
        repeats += g in seen
        seen.add(g)
    return {"distinct2": len(set(bigrams)) / len(bigrams) if bigrams else 1.0,
            "repetition": repeats / len(trigrams) if trigrams else 0.0}
def generation_record(kind: str, prompt: str, text: str, detector: Detector, *, target: str | None,
                      factor: str | None, source: str | None = None, **extra: Any) -> dict[str, Any]:
    """One line of ``generations.jsonl``; ``text`` is kept as generated, ``empty`` says it holds only whitespace.

    Forcing and steer outputs are not cut at a newline (a continuation may span lines), so ``empty`` is
    :func:`~lens_steer.generation.is_empty_generation` without a stop. An empty text is never given to the
    detector: nothing written is a miss whatever a detector guesses for it."""
    empty = is_empty_generation(text, None)
    detected = None if empty else detector.detect(text)
    record = {"kind": kind, "source": source, "target": target, "factor": factor, "prompt": prompt, "text": text,
              "empty": empty, "detected": detected, "detector": detector.name, **degeneration(text)}
    if target is not None:
        record["match_strict"] = matches(detected, target, lenient=False)
        record["match_lenient"] = matches(detected, target, lenient=True)
    record.update(extra)
    return record


def append_generations(run_dir: str | Path, records: Sequence[dict[str, Any]]) -> Path:
    """Append records to the run's generations file in one write."""
    return Run(run_dir).append_jsonl(GENERATIONS_FILE, records)


def run_forcing(model: ModelLike, steerer: Steerer, targets: Sequence[str], factors: Sequence[Factor], detector: Detector,
                *, prompts: dict[str, Sequence[str]] | None = None, max_new_tokens: int = 30,
                batch_size: int = 16, progress: bool = False, chat: bool = False,
                baseline: Sequence[str] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Forcing success per (factor, target) over neutral prompts whose source language is not the target
    (``chat``: each prompt as the user turn of the tokenizer's chat template). ``baseline``: the unsteered
    continuations of the same prompts from an earlier call (the first records' texts), not generated again.

    Returns:
        ``(rows, records)``: the ``forcing.csv`` rows and the ``generations.jsonl`` records.
    """
    prompts = prompts or NEUTRAL_PROMPTS
    flat = [(s, p) for s, ps in prompts.items() for p in ps]
    if baseline is None or len(baseline) != len(flat):
        baseline = greedy_generate(model, [p for _, p in flat], max_new_tokens=max_new_tokens,
                                   batch_size=batch_size, split=True, chat=chat)
    records = [generation_record("forcing", p, text, detector, target=None, factor=None, source=s, steered=False)
               for (s, p), text in zip(flat, baseline)]
    base_lang = [r["detected"] for r in records]
    jobs = [(f, t, i) for f in factors for t in targets for i, (s, _) in enumerate(flat) if s != t]
    texts = greedy_generate(model, [flat[i][1] for _, _, i in jobs], max_new_tokens=max_new_tokens,
                            steerer=steerer, interventions=[Intervention(t, f) for f, t, _ in jobs],
                            batch_size=batch_size, progress=progress, desc="forcing", split=True, chat=chat)
    rows = []
    for factor in factors:
        for t in targets:
            got = [(i, generation_record("forcing", flat[i][1], text, detector, target=t, factor=factor.text,
                                         source=flat[i][0], steered=True))
                   for (f, tt, i), text in zip(jobs, texts) if f is factor and tt == t]
            records += [r for _, r in got]
            n = len(got)
            mean = (lambda xs: sum(xs) / len(xs) if xs else float("nan"))  # noqa: E731
            row: dict[str, Any] = {"factor": factor.text, "target": t, "n": n}
            for key, hits in (("forcing_strict", sum(r["match_strict"] for _, r in got)),
                              ("forcing_lenient", sum(r["match_lenient"] for _, r in got)),
                              ("baseline_strict", sum(matches(base_lang[i], t, lenient=False) for i, _ in got))):
                row[key], row[f"{key}_low"], row[f"{key}_high"] = wilson_share(hits, n)
            for key in ("distinct2", "repetition"):
                values = [r[key] for _, r in got]
                row[key] = mean(values)
                row[f"{key}_low"], row[f"{key}_high"] = bootstrap_mean_ci(torch.tensor(values, dtype=torch.float64))
            rows.append({
                **row,
                "undetected": sum(r["detected"] is None for _, r in got),
                "empty": sum(r["empty"] for _, r in got),
                "baseline_distinct2": mean([records[i]["distinct2"] for i, _ in got]),
                "baseline_repetition": mean([records[i]["repetition"] for i, _ in got]),
                # per prompt (its index among the prompts): what `compare` pairs between methods (not a column)
                "per_prompt": {i: float(r["match_strict"]) for i, r in got},
            })
    return rows, records


def write_forcing(run_dir: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write the run's forcing table atomically (the one CSV writer: 6 significant digits)."""
    return Run(run_dir).write_csv(FORCING_CSV, rows, FORCING_COLUMNS)


@dataclass
class ForcingResult:
    rows: list[dict[str, Any]]  # forcing.csv
    factors: list[Factor]
    skipped: list[str]  # targets without neurons
    files: list[Path]  # forcing.csv, generations.jsonl


@writes("forcing")
def forcing_for_run(run: Run, config: ForcingConfig, load: LoadConfig | str | None = None) -> ForcingResult:
    """Language forcing of a run directory: writes ``forcing.csv`` and appends the generations (each with its
    prompt and source language). The prompts: ``config.forcing_prompts`` per run language from
    ``config.forcing_bank`` (:func:`lens_steer.prompts.forcing_prompts`)."""
    neurons = run.neurons()
    targets, skipped = neurons.targets(config.targets, strict=False)
    check_before_loading(run, config.parsed, chat_template=config.chat_template)
    # every run language is a source: the first --forcing-prompts of its bank (a bad N fails before the model loads)
    prompts = forcing_prompts(neurons.languages, config.forcing_prompts, config.forcing_bank)
    model = run.model(load)
    rows, records = run_forcing(model, Steerer(model, neurons, run.stats()), targets, config.parsed,
                                get_detector(config.detector), prompts=prompts, max_new_tokens=config.max_new_tokens,
                                batch_size=config.batch_size, progress=config.progress and current().main,
                                chat=config.chat_template)
    files = [write_forcing(run.path, rows), append_generations(run.path, records)]
    return ForcingResult(rows, config.parsed, skipped, files)


def check_before_loading(run: Run, factors: Sequence[Factor] = (), layers: str | int | Sequence[int] = "all",
                         chat_template: bool = False) -> None:
    """What the run's manifest can refuse before the model loads: layers (``resid:L``, ``--layers``) out of the
    recorded model's range, ``resid:`` factors on a run recorded without residual means (and ``control:resid:``
    without the residual covariance), and ``--chat-template`` for a model whose tokenizer files hold no template."""
    stats = run.stats()
    recorded = stats.manifest.get("model") or {}  # the manifest Run.model loads the model from
    check_layers(recorded.get("n_layers"), factors, layers)
    resid = [f for f in factors if isinstance(f, ResidualShift)]
    if resid:
        stats.resid_mean()  # a run recorded before residual means: one line
    if any(f.control and f.null == "cov" for f in resid) and stats.resid_moments is None:
        raise LensSteerError(NO_COV)
    if chat_template and isinstance(recorded.get("model"), str):
        if has_chat_template(recorded["model"], recorded.get("revision")) is False:
            raise LensSteerError(f"{recorded['model']} has no chat template (a base model); drop --chat-template, or"
                                 " use an instruct model whose tokenizer has one")


@writes("steer")
def steer_for_run(run: Run, prompt: str, config: SteerConfig,
                  load: LoadConfig | str | None = None) -> tuple[list[dict[str, Any]], Path]:
    """Greedy continuations of ``prompt`` without and with steering to each target; appended to the run's
    generations. Returns the records (baseline first) and the generations file."""
    records = steer_records(run, prompt, config, lambda: run.model(load))
    return records, append_generations(run.path, records)


def steer_records(run: Run, prompt: str, config: SteerConfig, model: Callable[[], ModelLike],
                  factors: Sequence[Factor] = ()) -> list[dict[str, Any]]:
    """What :func:`steer_for_run` generates, written nowhere: the baseline record, then one per (factor, target).
    ``factors`` (default: ``config.parsed`` alone) compares several in one batch; ``model`` is called once the
    settings are checked, so a bad prompt, target or layer fails before a model loads (the explorer's playground)."""
    factors = list(factors) or [config.parsed]
    if not prompt.strip():
        raise LensSteerError("the prompt is empty or only whitespace; give some text to continue")
    neurons = run.neurons()
    targets, _ = neurons.targets(config.to, strict=True)
    if config.deactivate and config.deactivate not in neurons.languages:
        raise LensSteerError(f"--deactivate {config.deactivate}: not in the run (it has"
                             f" {', '.join(neurons.languages)})")
    ivs = [Intervention(t, f, layers=parse_layers(config.layers), positions=config.positions,
                        deactivate=config.deactivate) for f in factors for t in targets]  # checks --positions first
    check_before_loading(run, factors, parse_layers(config.layers), chat_template=config.chat_template)
    loaded = model()
    texts = greedy_generate(loaded, [prompt] * (len(ivs) + 1), max_new_tokens=config.max_new_tokens,
                            steerer=Steerer(loaded, neurons, run.stats()), interventions=[None, *ivs],
                            chat=config.chat_template, max_prompt_tokens=config.max_prompt_tokens)
    detector = get_detector(config.detector)
    extra = {"layers": config.layers, "positions": config.positions, "deactivate": config.deactivate,
             "max_new_tokens": config.max_new_tokens, "chat_template": config.chat_template}
    records = [generation_record("steer", prompt, texts[0], detector, target=None, factor=None, steered=False,
                                 **extra)]
    records += [generation_record("steer", prompt, text, detector, target=iv.target, factor=iv.factor.text,
                                  steered=True, **extra) for iv, text in zip(ivs, texts[1:])]
    return records
