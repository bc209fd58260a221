"""lens_steer: find the neurons of a multilingual LM that belong to one language, amplify them, measure it.

The pipeline flows one way: corpus -> statistics -> neuron set -> intervention -> metric -> figure.

>>> import lens_steer as ls
>>> model = ls.load_model()                               # doctest: +SKIP
>>> texts = ls.load_corpus("udhr", ["en", "fr"])          # doctest: +SKIP
>>> stats = ls.record(model, texts, progress=False)       # Stats; record(..., run_dir="runs/demo") saves them
>>> neurons = ls.lape(stats)                              # NeuronSet, neurons.json
>>> neurons.languages
['en', 'fr']
"""

from __future__ import annotations

__version__ = "0.1.0"

from lens_steer.errors import LensSteerError  # noqa: E402
from lens_steer.identification import (activated, ap, ap_lape, ap_scores, identify, lape,  # noqa: E402
                                 lape_from_probability, top_k_by_probability)
from lens_steer.models import LoadConfig, MLPSite, Model, as_model, describe_mlp, load_model  # noqa: E402
from lens_steer.neurons import NeuronSet  # noqa: E402
# Imported eagerly: a lazy `record` would be shadowed by the submodule as soon as anything imported
# lens_steer.recorder (the import system binds a loaded submodule's name on its package).
from lens_steer.recorder import RecordConfig, record  # noqa: E402
from lens_steer.run import Run  # noqa: E402
from lens_steer.stats import Stats, merge_stats  # noqa: E402

_LAZY = {
    # Corpora import datasets; keep `import lens_steer` light (transformers is imported by load_model itself).
    "load_corpus": "lens_steer.corpora",
    "LANGUAGES": "lens_steer.languages",
    "parse_languages": "lens_steer.languages",
}


def __getattr__(name: str):  # PEP 562 lazy re-exports
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lens_steer' has no attribute {name!r}")


__all__ = ["LensSteerError", "LoadConfig", "MLPSite", "Model", "NeuronSet", "RecordConfig", "Run", "Stats",
           "activated", "ap", "ap_lape", "ap_scores", "as_model", "describe_mlp", "identify", "lape",
           "lape_from_probability", "load_model", "merge_stats", "record", "top_k_by_probability", *_LAZY]
