"""The doctests' namespace: the package's model-facing examples run on a tiny random model, offline.

Examples may use ``model`` (a tiny random Qwen2 checkpoint loaded with :func:`lens_steer.models.load_model`),
``bridge`` (its bare ``TransformerBridge``, as a TransformerLens user holds it), ``texts`` (invented en/fr sentences), ``stats`` (their statistics) and ``neurons`` (4 random neurons per layer and
language). Lines that need the embedded Gemma or the network stay in the examples with ``# doctest: +SKIP``.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY_NAMES = ("model", "bridge", "texts", "stats", "neurons")

try:  # the harness package needs the optional extra lens-steer[harness]; without it its doctests are not collected
    import lm_eval  # noqa: F401
except ImportError:
    collect_ignore_glob = ["harness/*"]


@pytest.fixture(scope="session")
def _tiny_namespace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import torch

    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))  # the test suite's builders (tests/helpers.py)
    from helpers import SENTENCES, save_tiny_hf

    from lens_steer.models import load_model
    from lens_steer.neurons import NeuronSet
    from lens_steer.recorder import record

    model = load_model(str(save_tiny_hf("qwen2", tmp_path_factory.mktemp("doctest_model"))))
    texts = {code: SENTENCES[code] for code in ("en", "fr")}
    layers, d_mlp = model.site.n_layers, model.site.d_mlp
    g = torch.Generator().manual_seed(0)
    picks = {code: [sorted(torch.randperm(d_mlp, generator=g)[:4].tolist()) for _ in range(layers)] for code in texts}
    return {"model": model, "bridge": model.bridge, "texts": texts, "stats": record(model, texts, progress=False),
            "neurons": NeuronSet(list(texts), picks, layers, d_mlp)}


@pytest.fixture(autouse=True)
def _doctest_names(request: pytest.FixtureRequest, doctest_namespace: dict[str, Any]) -> None:
    # Building the model takes seconds; a doctest that never names it does not wait for it.
    dtest = getattr(request.node, "dtest", None)
    source = "".join(example.source for example in dtest.examples) if dtest is not None else ""
    if re.search(rf"\b({'|'.join(TINY_NAMES)})\b", source):
        doctest_namespace.update(request.getfixturevalue("_tiny_namespace"))
