"""The task catalogue: one :class:`Task` entry per downstream task, what its name means with a variant
(:func:`task_label`), the languages it covers and how its items load. Adding a task is one entry of :data:`TASKS`;
everything downstream reads this table instead of branching on names."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from lens_steer.errors import LensSteerError
from lens_steer.evals import data
from lens_steer.evals.tasks import MT_PROMPTS, Choice, include_choice, xcopa_choice, xwinograd_choice
from lens_steer.languages import JOINS


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
