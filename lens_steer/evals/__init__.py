"""Downstream evaluation under amplification: every task in every evaluation language e, with the neurons of each
intervened language t amplified (e = t: self-language; e != t: cross-language), against no intervention.

Tasks (:data:`TASKS`): ``xcopa``, ``xwinograd``, ``include`` (multiple choice, accuracy), ``flores-mt`` (en->x
translation: chrF++, BLEU, spBLEU and the share of empty outputs), ``ppl`` (FLORES+ perplexity), and two offline
analogs on the embedded UDHR: ``udhr-ppl`` (held-out articles 25-30) and ``udhr-mt`` (en->x translation of those
articles: chrF++, BLEU, empty share). The analogs only show that the machinery moves: the model has probably
memorised the UDHR.

Output rows (long format, ``eval_<task>.csv``): ``task, factor, intervened ("none" or t), eval_lang, metric,
value, n``. A non-default variant is part of the task name (:func:`task_label`: ``flores-mt-untargeted``,
``xcopa-refjoin``), so it gets its own file and never overwrites the default's.

One idea per module, every public name re-exported here:

* :mod:`~lens_steer.evals.registry`: the task catalogue (:data:`TASKS`, :func:`task_label`, loading a task's items).
* :mod:`~lens_steer.evals.protocol`: scoring a task without and with each intervention, in batched forwards.
* :mod:`~lens_steer.evals.run`: ``lens-steer eval`` on a run directory (:class:`EvalConfig`, :func:`eval_for_run`,
  :func:`self_cross`).
* :mod:`~lens_steer.evals.data`: the dataset loaders; :mod:`~lens_steer.evals.tasks`: prompts, joins and choices.
"""

from __future__ import annotations

from lens_steer.evals.protocol import (  # noqa: F401 - re-exported
    EVAL_COLUMNS,
    choice_logps,
    eval_choice,
    eval_mt,
    eval_ppl,
    mt_scores,
    run_eval,
    settings,
)
from lens_steer.evals.registry import (  # noqa: F401 - re-exported
    CHOICE_TASKS,
    MT_TASKS,
    TASKS,
    Task,
    build_items,
    load_task_data,
    task_label,
    task_languages,
)
from lens_steer.evals.run import (  # noqa: F401 - re-exported
    LOWER_IS_BETTER,
    EvalConfig,
    EvalResult,
    eval_for_run,
    eval_languages,
    self_cross,
    write_eval,
)
