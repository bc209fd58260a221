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

from lens_steer.version import __version__  # noqa: F401
from lens_steer.errors import LensSteerError

# Everything else is imported on first use (PEP 562), so that `import lens_steer` and `lens-steer --help` do not
# import torch. No submodule shares a name with a function exported here (record -> recorder.py, identify ->
# identification.py), so importing a submodule never shadows an export.
_LAZY = {
    **dict.fromkeys(("activated", "ap", "ap_lape", "ap_scores", "identify", "lape", "lape_from_probability",
                     "top_k_by_probability"), "lens_steer.identification"),
    **dict.fromkeys(("LoadConfig", "MLPSite", "Model", "as_model", "describe_mlp", "load_model"), "lens_steer.models"),
    "NeuronSet": "lens_steer.neurons",
    "RecordConfig": "lens_steer.recorder",
    "record": "lens_steer.recorder",
    "Run": "lens_steer.run",
    "Stats": "lens_steer.stats",
    "merge_stats": "lens_steer.stats",
    # Corpora import datasets; transformers is imported by load_model itself.
    "load_corpus": "lens_steer.corpora",
    "LANGUAGES": "lens_steer.languages",
    "parse_languages": "lens_steer.languages",
}


def __getattr__(name: str):  # PEP 562 lazy re-exports
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # once: later lookups do not come back here
        return value
    raise AttributeError(f"module 'lens_steer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["LensSteerError", *_LAZY]
