"""lens_steer: find the neurons of a multilingual LM that belong to one language, amplify them, measure it.

The pipeline flows one way: corpus -> statistics -> neuron set -> intervention -> metric -> figure.

>>> import lens_steer as ls
>>> model = ls.load_model()                               # doctest: +SKIP
>>> texts = ls.load_corpus("udhr", ["en", "fr"])          # doctest: +SKIP
>>> stats = ls.record(model, texts, progress=False)       # Stats; record(..., run_dir="runs/demo") saves them
>>> neurons = ls.lape(stats)                              # NeuronSet, neurons.json
>>> neurons.languages
['en', 'fr']

Every step, stage and config is importable from here, lazily (``import lens_steer`` imports no torch):

>>> from lens_steer import Intervention, steering
>>> with steering(model, Intervention("fr", "p_max"), neurons, stats):   # the fr neurons at p_max, in this block
...     logits = model(model.to_tokens("Hello"))
>>> from lens_steer import LSSConfig, lss_for_run, EvalConfig, eval_for_run   # a config + a function per stage
"""

from __future__ import annotations

from lens_steer.version import __version__  # noqa: F401
from lens_steer.errors import LensSteerError

# Everything else is imported on first use (PEP 562), so that `import lens_steer` and `lens-steer --help` do not
# import torch, yet a notebook or script imports the whole API from one place (`from lens_steer import Steerer,
# LSSConfig, lss_for_run`). Each name maps to the module that owns it now (a stage's config may move to another
# module and stay re-exported there). No submodule shares a name with a name exported here (record -> recorder.py,
# identify -> identification.py; tests/test_api.py checks it), so importing a submodule never shadows an export.
_LAZY = {
    # corpus -> statistics -> neuron set
    **dict.fromkeys(("activated", "ap", "ap_lape", "ap_scores", "identify", "lape", "lape_from_probability",
                     "top_k_by_probability", "IdentifyConfig", "identify_for_run"), "lens_steer.identification"),
    **dict.fromkeys(("LoadConfig", "MLPSite", "Model", "as_model", "describe_mlp", "load_model"), "lens_steer.models"),
    "NeuronSet": "lens_steer.neurons",
    **dict.fromkeys(("RecordConfig", "record"), "lens_steer.recorder"),
    "Run": "lens_steer.run",
    **dict.fromkeys(("Stats", "merge_stats", "read_manifest"), "lens_steer.stats"),
    "Folds": "lens_steer.folds",
    **dict.fromkeys(("StabilityConfig", "stability_for_run", "jaccard"), "lens_steer.stability"),
    # Corpora import datasets; transformers is imported by load_model itself.
    **dict.fromkeys(("corpus_description", "load_corpus"), "lens_steer.corpora"),
    **dict.fromkeys(("LANGUAGES", "parse_languages"), "lens_steer.languages"),
    # intervention -> metric
    **dict.fromkeys(("Factor", "Intervention", "parse_factor", "parse_factors"), "lens_steer.factors"),
    **dict.fromkeys(("Steerer", "steering"), "lens_steer.steer"),
    "greedy_generate": "lens_steer.generation",
    "get_detector": "lens_steer.lid",
    "load_cloze": "lens_steer.cloze",
    **dict.fromkeys(("choose_factor", "summarise"), "lens_steer.choice"),
    # the stages: a config + a function over a run directory, the same call the CLI makes
    **dict.fromkeys(("LSSConfig", "lss_for_run", "run_lss", "write_lss"), "lens_steer.lss"),
    **dict.fromkeys(("ForcingConfig", "SteerConfig", "forcing_for_run", "steer_for_run"), "lens_steer.forcing"),
    **dict.fromkeys(("EvalConfig", "eval_for_run"), "lens_steer.evals"),
    **dict.fromkeys(("COMPARE_COLUMNS", "CompareConfig", "compare_for_run"), "lens_steer.compare"),
    "setup_notebook": "lens_steer.notebook",
    # the live explorer (Dash, the `explore` extra): imported on first use only
    **dict.fromkeys(("ExploreConfig", "explore"), "lens_steer.explorer"),
}
# Submodules reachable as attributes without importing them first (`ls.plots.lss_matrix(...)`); not in __all__, so
# `from lens_steer import *` stays light.
_SUBMODULES = ("plots",)


def __getattr__(name: str):  # PEP 562 lazy re-exports
    import importlib  # deferred: lazy API (PEP 562), only when a name is first used

    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")  # the import binds it here: no second call
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # once: later lookups do not come back here
        return value
    raise AttributeError(f"module 'lens_steer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_SUBMODULES})


__all__ = ["LensSteerError", *_LAZY]
