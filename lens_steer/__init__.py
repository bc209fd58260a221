"""lens_steer: find the neurons of a multilingual LM that belong to one language, amplify them, measure it.

The pipeline flows one way: corpus -> statistics -> neuron set -> intervention -> metric -> figure.

>>> import lens_steer as ls
>>> from lens_steer.record import record  # not ls.record: importing lens_steer.record rebinds that name to the module
>>> bridge = ls.load_model()                              # doctest: +SKIP
>>> texts = ls.load_corpus("udhr", ["en", "fr"])          # doctest: +SKIP
>>> stats = record(bridge, texts, progress=False)         # Stats; record(..., run_dir="runs/demo") saves them
>>> neurons = ls.lape(stats)                              # NeuronSet, neurons.json
>>> neurons.languages
['en', 'fr']
"""

from __future__ import annotations

__version__ = "0.1.0"

from lens_steer.errors import LensSteerError  # noqa: E402
from lens_steer.identify import (activated, ap, ap_lape, ap_scores, identify, lape,  # noqa: E402
                                 lape_from_probability, top_k_by_probability)
from lens_steer.neurons import NeuronSet  # noqa: E402
from lens_steer.stats import Stats, merge_stats  # noqa: E402

_LAZY = {
    # Model I/O and corpora import torch/transformers/datasets; keep `import lens_steer` light.
    "Run": "lens_steer.run",
    "load_model": "lens_steer.models",
    "describe_mlp": "lens_steer.models",
    "MLPSite": "lens_steer.models",
    "record": "lens_steer.record",
    "RecordConfig": "lens_steer.record",
    "load_corpus": "lens_steer.corpora",
    "LANGUAGES": "lens_steer.languages",
    "parse_languages": "lens_steer.languages",
}


def __getattr__(name: str):  # PEP 562 lazy re-exports
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lens_steer' has no attribute {name!r}")


__all__ = ["LensSteerError", "NeuronSet", "Stats", "activated", "ap", "ap_lape", "ap_scores", "identify", "lape",
           "lape_from_probability", "merge_stats", "top_k_by_probability", *_LAZY]
