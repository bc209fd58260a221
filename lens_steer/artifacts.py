"""The names of a run directory's artifacts: a leaf module (no lens_steer imports), so that every module can name
a file without importing the run directory's owner (:mod:`lens_steer.run`), which reads and writes them.

>>> eval_csv("udhr-mt"), eval_outputs("udhr-mt")
('eval_udhr-mt.csv', 'eval_udhr-mt_outputs.jsonl')
"""

from __future__ import annotations

STATS_FILE = "stats.safetensors"
SENT_MEANS_FILE = "sent_means.safetensors"
FOLDS_FILE = "folds.safetensors"  # the counts per fold of sentences (lens_steer.folds)
MANIFEST_FILE = "manifest.json"
PARTIAL_DIR = "partial"
NEURONS_FILE = "neurons.json"
LSS_CSV = "lss.csv"
LSS_SUMMARY = "lss_summary.json"
FORCING_CSV = "forcing.csv"
GENERATIONS_FILE = "generations.jsonl"
COMPARE_CSV = "compare.csv"
COMPARE_SUMMARY = "compare_summary.json"
REPORT_FILE = "report.html"
STABILITY_CSV = "stability.csv"
STABILITY_FILE = "stability.safetensors"
EXPLORE_CACHE = "explore_cache.json"  # the explorer's neuron pages: top tokens and logit effects, computed once
EVAL_GLOB = "eval_*.csv"
HARNESS_CSV = "eval_harness.csv"  # lens-steer harness: every (task, setting) cell, long format like eval_<task>.csv
HARNESS_DIR = "harness"  # the harness's own results JSON per cell: harness/<task>/<intervened>.json
LOCK_FILE = ".lens_steer.lock"
STALE_DIR = "stale"
# Everything a later stage derives from the neuron set: stamped with its fingerprint, set aside when it changes.
DERIVED_FILES = (LSS_CSV, LSS_SUMMARY, FORCING_CSV, GENERATIONS_FILE, COMPARE_CSV, COMPARE_SUMMARY, REPORT_FILE,
                 STABILITY_CSV, STABILITY_FILE, EXPLORE_CACHE, HARNESS_DIR)
DERIVED_GLOBS = (EVAL_GLOB, "eval_*_outputs.jsonl")
FINGERPRINT = "run_fingerprint"  # the column / key every derived artifact carries


def eval_csv(task: str) -> str:
    """The long-format table of one evaluation task (``task`` as labelled, e.g. ``xcopa-refjoin``)."""
    return f"eval_{task}.csv"


def harness_cell(task: str, intervened: str) -> str:
    """The harness's own results JSON of one cell (``intervened``: a language or ``none``), inside the run.

    >>> harness_cell("xcopa_id", "none")
    'harness/xcopa_id/none.json'
    """
    return f"{HARNESS_DIR}/{task}/{intervened}.json"


def eval_outputs(task: str) -> str:
    """The generated outputs of one translation task."""
    return f"eval_{task}_outputs.jsonl"
