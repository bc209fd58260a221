"""``lens-steer eval`` on a run directory: which languages to evaluate and whom to intervene on, the task run
with the run's neurons, ``eval_<label>.csv`` written, and the self- against cross-language summary it prints."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lens_steer.configs import EvalOptions
from lens_steer.distributed import current
from lens_steer.errors import LensSteerError
from lens_steer.factors import parse_factor
from lens_steer.forcing import check_before_loading
from lens_steer.languages import parse_languages
from lens_steer.evals.protocol import EVAL_COLUMNS, run_eval, settings
from lens_steer.evals.registry import MT_TASKS, load_task_data, task_label, task_languages
from lens_steer.models import LoadConfig
from lens_steer.run import Run, eval_csv, eval_outputs, writes
from lens_steer.steer import Steerer

# Which direction is better, for the printed summary (perplexity, NLL and empty outputs: lower).
LOWER_IS_BETTER = ("ppl_macro", "ppl_micro", "nll_macro", "nll_micro", "empty_share")


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
