"""``lens-steer harness``: lm-evaluation-harness tasks as downstream evaluations of a run, with the harness's own
prompts and metrics. Every task runs without intervention (the baseline) and with each target's neurons changed by
the factor: one *cell* per (task, setting), all on one loaded :class:`~lens_steer.harness.model.LensSteerLM`.

Writes ``RUN/eval_harness.csv`` in the long format of ``eval_<task>.csv`` (:data:`~lens_steer.evals.EVAL_COLUMNS`;
``task`` is the harness task, ``eval_lang`` its language, so self- and cross-language read as for ``eval``), and
the harness's own results JSON per cell (``RUN/harness/<task>/<intervened>.json``). Rows of tasks run before with
the same neuron set are kept; the tasks run now replace theirs.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager, get_task_dict
from lm_eval.utils import handle_non_serializable
from tqdm.auto import tqdm

from lens_steer.artifacts import HARNESS_CSV, HARNESS_DIR, harness_cell
from lens_steer.configs import HarnessConfig
from lens_steer.errors import LensSteerError
from lens_steer.evals.protocol import EVAL_COLUMNS
from lens_steer.factors import parse_factor
from lens_steer.harness.model import LensSteerLM, make_intervention
from lens_steer.intervals import wilson_share
from lens_steer.languages import LANGUAGES, get_language
from lens_steer.models import LoadConfig
from lens_steer.run import Run, writes

# How the harness spells some of our languages in task names (XWinograd's jp), and the languages' English names
# (Include's include_base_44_french).
_NAME_ALIASES = {"jp": "ja", "cn": "zh", **{lang.name.split()[0].lower(): code for code, lang in LANGUAGES.items()}}
# Metrics whose per-document values are 0 or 1: a share of the n documents, with a Wilson interval as in eval.
SHARE_METRICS = ("acc", "acc_norm", "exact_match", "acc_mutual_info")


def _lookup(token: str) -> str | None:
    key = token.lower()
    if key in _NAME_ALIASES:
        return _NAME_ALIASES[key]
    try:
        return get_language(key).code
    except LensSteerError:
        return None


def language_of_name(name: str) -> str | None:
    """The language a harness task name tells: the last language token, a translation pair's target side.

    >>> [language_of_name(n) for n in ("xcopa_id", "xwinograd_jp", "include_base_44_french_stem",
    ...                                "flores_eng_Latn-fra_Latn_prompt_1", "wmt14-en-fr", "arc_easy")]
    ['id', 'ja', 'fr', 'fr', 'fr', None]
    """
    for segment in reversed(name.split("-")):
        tokens = [t for t in re.split(r"_", segment) if t]
        for i in range(len(tokens) - 1, -1, -1):
            pair = [f"{tokens[i]}_{tokens[i + 1]}"] if i + 1 < len(tokens) else []
            for candidate in (*pair, tokens[i]):
                code = _lookup(candidate)
                if code is not None:
                    return code
    return None


def task_language(name: str, cfg: dict[str, Any] | None, overrides: dict[str, str]) -> str:
    """A task's language: ``--task-langs``, else its metadata (``lang`` / ``language``), else its name."""
    if name in overrides:
        given = overrides[name]
        return _lookup(given) or given.lower()
    meta = (cfg or {}).get("metadata") or {}
    for key in ("lang", "language"):
        if isinstance(meta, dict) and isinstance(meta.get(key), str) and _lookup(meta[key]):
            return _lookup(meta[key])  # type: ignore[return-value]
    code = language_of_name(name)
    if code is None:
        raise LensSteerError(f"cannot tell the language of harness task {name!r} from its name or metadata; pass"
                             f" --task-langs {name}=LANG")
    return code


def resolve_tasks(manager: Any, names: Sequence[str]) -> list[tuple[str, dict[str, Any] | None]]:
    """The harness tasks ``names`` stand for (a group or tag: each of its tasks), with their YAML configs."""
    index = manager.task_index
    out: list[tuple[str, dict[str, Any] | None]] = []

    def add(name: str, depth: int = 0) -> None:
        entry = index.get(name)
        if entry is None:
            import difflib  # deferred: only to name a near miss (a bad task name)

            near = difflib.get_close_matches(name, list(index), n=3)
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise LensSteerError(f"unknown harness task {name!r}{hint}; list them with `lm_eval ls tasks`, or pass"
                                 " --include-path DIR for your own task YAMLs")
        kind = str(getattr(entry.kind, "name", entry.kind)).upper()
        members: list[str] = []
        if "GROUP" in kind:
            members = [t if isinstance(t, str) else t.get("task") for t in (entry.cfg or {}).get("task", [])]
        elif "TAG" in kind:
            members = sorted(n for n, e in index.items() if name in (e.tags or ()))
        if members and depth < 4:
            for member in members:
                if isinstance(member, str):
                    add(member, depth + 1)
        elif name not in [n for n, _ in out]:
            out.append((name, entry.cfg))

    for name in names:
        add(name)
    return out


def task_manager(include_path: str | None, names: Sequence[str]) -> Any:
    """The harness's task index: only ``include_path`` when it holds every task asked for (indexing the harness's
    own thousands of YAMLs takes seconds; a task found there would win over a built-in of the same name anyway),
    else the built-in tasks and ``include_path``."""
    if include_path and not Path(include_path).is_dir():
        raise LensSteerError(f"--include-path {include_path} is not a folder; give the folder of your task YAMLs")
    if include_path:
        own = TaskManager(include_path=include_path, include_defaults=False)
        try:
            resolve_tasks(own, names)
            return own
        except LensSteerError:
            pass
    return TaskManager(include_path=include_path)


def _check_loads(manager: Any, name: str) -> None:
    """Build the task once before the model loads (its YAML, its dataset): a hub dataset that is not cached offline
    or a broken YAML is one line, not a traceback after minutes of work."""
    bars = datasets.utils.logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # this build is a check; the cell's own build shows its bars and warnings
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            get_task_dict([name], manager)
    except Exception as exc:  # noqa: BLE001 - whatever the harness or datasets raise, the user fixes the task or data
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise LensSteerError(f"the harness cannot load task {name!r} ({type(exc).__name__}: {first}); offline, its"
                             " dataset must be in the HF datasets cache, or give a local copy in your own task YAML"
                             " (--include-path)") from None
    finally:
        logger.setLevel(level)
        if bars:
            datasets.enable_progress_bars()


def _targets(spec: str, neurons: Any, lang: str) -> list[str]:
    """The intervened languages of one task: ``self``, ``all`` or a list (checked against the run)."""
    with_neurons = [c for c in neurons.languages if neurons.totals().get(c, 0)]
    if spec == "self":
        return [lang] if lang in with_neurons else []
    if spec == "all":
        return with_neurons
    targets, _ = neurons.targets(spec, strict=True)
    return list(targets)


def cell_rows(results: dict[str, Any], task: str, factor: str, intervened: str, lang: str) -> list[dict[str, Any]]:
    """The long-format rows of one cell from the harness's results: one per metric (and filter, when not
    ``none``), with a Wilson interval for shares and value +- 1.96 x the harness's stderr otherwise.

    >>> res = {"results": {"t": {"alias": "t", "acc,none": 0.5, "acc_stderr,none": 0.1, "bleu,none": 3.0,
    ...        "bleu_stderr,none": 1.0}}, "n-samples": {"t": {"effective": 10}}}
    >>> [(r["metric"], r["value"], r["interval"], round(r["low"], 2)) for r in cell_rows(res, "t", "p_max", "fr", "fr")]
    [('acc', 0.5, 'wilson', 0.24), ('bleu', 3.0, 'normal', 1.04)]
    """
    got = results.get("results", {}).get(task, {})
    n = int(results.get("n-samples", {}).get(task, {}).get("effective", 0))
    rows = []
    for key, value in got.items():
        metric, _, filt = key.partition(",")
        if not filt or metric.endswith("_stderr") or not isinstance(value, (int, float)):
            continue
        name = metric if filt == "none" else f"{metric}:{filt}"
        low, high, interval = float("nan"), float("nan"), ""
        stderr = got.get(f"{metric}_stderr,{filt}")
        if metric in SHARE_METRICS and 0 <= value <= 1 and n:
            value, low, high = wilson_share(round(value * n), n)
            interval = "wilson"
        elif isinstance(stderr, (int, float)) and stderr == stderr:
            low, high, interval = value - 1.96 * stderr, value + 1.96 * stderr, "normal"
        rows.append({"task": task, "factor": factor if intervened != "none" else "-", "intervened": intervened,
                     "eval_lang": lang, "metric": name, "value": float(value), "low": low, "high": high,
                     "interval": interval, "n": n})
    return rows


@dataclass
class HarnessResult:
    factor: str
    rows: list[dict[str, Any]]
    path: Path
    cells: list[Path]
    lower_is_better: set[tuple[str, str]]  # (task, metric) pairs the harness says are better lower (perplexity)


def _plan(run: Run, config: HarnessConfig, manager: Any) -> list[tuple[str, str, list[str]]]:
    """(task, its language, its targets) for every task asked for, all checked before the model loads."""
    neurons = run.neurons()
    overrides = config.task_lang_map()
    tasks = resolve_tasks(manager, [t.strip() for t in config.tasks.split(",") if t.strip()])
    unknown = [t for t in overrides if t not in [n for n, _ in tasks]]
    if unknown:
        raise LensSteerError(f"--task-langs names {', '.join(unknown)}, which --tasks does not run")
    plan = []
    for name, cfg in tasks:
        lang = task_language(name, cfg, overrides)
        _check_loads(manager, name)
        targets = _targets(config.targets, neurons, lang)
        if not targets:
            warnings.warn(f"{name} ({lang}): no intervened language (its language has no neurons in this run);"
                          " only the baseline runs", stacklevel=3)
        plan.append((name, lang, targets))
    return plan


@writes("harness")
def harness_for_run(run: Run, config: HarnessConfig, load: LoadConfig | str | None = None) -> HarnessResult:
    """The baseline and every (task, target) cell of ``config.tasks``; writes ``eval_harness.csv`` and the
    harness's results JSON per cell."""
    factor = parse_factor(config.factor if config.factor is not None else run.best_factor())
    make_intervention(run, run.neurons().languages[0], factor.text)  # a factor the harness cannot run fails here
    manager = task_manager(config.include_path, [t.strip() for t in config.tasks.split(",") if t.strip()])
    plan = _plan(run, config, manager)
    load = LoadConfig.of(load)
    if load.device_map is not None or load.n_devices is not None:
        raise LensSteerError("harness runs the harness's own HF model on one device; pass --device instead of"
                             " --device-map / --n-devices")
    lm = LensSteerLM(run=run.path, device=load.device or _default_device(), batch_size=config.batch_size,
                     attn_implementation=load.attention, **({"dtype": load.dtype} if load.dtype else {}))
    cells = [(task, lang, t) for task, lang, targets in plan for t in ("none", *targets)]
    rows: list[dict[str, Any]] = []
    outputs: dict[str, dict[str, Any]] = {}
    lower: set[tuple[str, str]] = set()
    with tqdm(total=len(cells), desc="harness cells", unit="cell", disable=not config.progress) as bar:
        for task, lang, target in cells:
            bar.set_postfix_str(f"{task} / {target}")
            lm.intervention = None if target == "none" else make_intervention(run, target, factor.text)
            with contextlib.redirect_stdout(io.StringIO()):  # the harness prints ("bootstrapping for stddev")
                results = simple_evaluate(model=lm, tasks=[task], task_manager=manager, limit=config.limit,
                                          log_samples=False)
            if results is None:  # a non-zero rank under the harness's own distribution
                continue
            rows += cell_rows(results, task, factor.text, target, lang)
            lower |= {(task, m) for m, up in results.get("higher_is_better", {}).get(task, {}).items() if up is False}
            outputs[harness_cell(task, target)] = json.loads(json.dumps(results, default=handle_non_serializable))
            bar.update(1)
    lm.intervention = None
    done = {task for task, _, _ in plan}
    kept = _kept_rows(run, done)
    for task in done:  # the cells of an earlier run of these tasks (other targets) would no longer be this run's
        shutil.rmtree(run.file(HARNESS_DIR) / task, ignore_errors=True)
    cell_paths = [run.write_json(name, obj) for name, obj in outputs.items()]
    path = run.write_csv(HARNESS_CSV, kept + rows, EVAL_COLUMNS)
    return HarnessResult(factor.text, rows, path, cell_paths, lower)


def _kept_rows(run: Run, done: set[str]) -> list[dict[str, Any]]:
    """The rows of an earlier ``eval_harness.csv`` of this neuron set for tasks not run now."""
    frame = run.table(HARNESS_CSV) if run.has(HARNESS_CSV) else None
    if frame is None:
        return []
    frame = frame[~frame["task"].isin(sorted(done))]
    return [{c: row[c] for c in EVAL_COLUMNS} for row in frame.to_dict("records")]


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"
