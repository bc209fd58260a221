"""What the explorer shows, read from the run directory and, where needed, from the run's model (no Dash here).

The per-neuron numbers come from one :class:`~lens_steer.inspection.InspectorData`, built once when the app starts
(the median is the slow part), so that a neuron page or a layer table is a slice of it. The model loads once per
process, on the first view that needs it, behind a lock (:class:`ModelHolder`); every use of it holds that lock too,
since steering registers hooks on the one shared model. What a neuron page computes with the model (its top
activating tokens and its direct logit effect) is kept in the run directory (``explore_cache.json``), so the page is
served again without the model, by this process or a later one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from lens_steer.configs import ExploreConfig, InspectConfig
from lens_steer.errors import LensSteerError, check_neuron
from lens_steer.inspection import InspectorData
from lens_steer.run import EXPLORE_CACHE, Run

if TYPE_CHECKING:
    import pandas as pd

    from lens_steer.models import LoadConfig, Model

LOGIT_TOKENS = 12
"""Tokens listed on each side (promoted, suppressed) of a neuron's direct logit effect."""
NO_MODEL = ("the explorer was started with --no-model, so it does not load the model; restart it without"
            " --no-model to see this")


class ModelHolder:
    """The run's model, loaded on first use and shared; :meth:`using` holds it for one computation at a time."""

    def __init__(self, run: Run, load: LoadConfig | str | None = None, enabled: bool = True):
        self.run, self.load, self.enabled = run, load, enabled
        self._model: Model | None = None
        self._lock = threading.RLock()  # one loader, then one user at a time (hooks live on the shared model)

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the model for one computation (a steered generation registers hooks on it)."""
        with self._lock:
            yield

    def get(self) -> Model:
        """The model, loaded now if this is the first use; one line where the app runs without it."""
        if not self.enabled:
            raise LensSteerError(NO_MODEL)
        with self._lock:
            if self._model is None:
                print(f"lens-steer explore: loading the model of {self.run.path} (once)", file=sys.stderr)
                self._model = self.run.model(self.load)
            return self._model

    @contextlib.contextmanager
    def using(self) -> Iterator[Model]:
        with self.locked():
            yield self.get()


class ExploreData:
    """A run's numbers for the explorer's views, built once per app."""

    def __init__(self, run: Run, config: ExploreConfig | None = None, load: LoadConfig | str | None = None):
        from lens_steer.stability import read_frequency  # deferred: torch and safetensors

        self.run, self.config = run, config or ExploreConfig()
        self.neurons, self.stats = run.neurons(), run.stats()
        self.inspector = InspectorData(self.stats, self.neurons, read_frequency(run))
        self.method = self.neurons.provenance.get("method", "?")
        self.holder = ModelHolder(run, load, self.config.model)
        self._cache_lock = threading.Lock()

    @property
    def languages(self) -> list[str]:
        return self.neurons.languages

    def check_neuron(self, layer: int, neuron: int | None = None) -> None:
        """One line for a layer or neuron outside the run (the words of ``lens-steer inspect``)."""
        check_neuron(layer, neuron, self.stats.n_layers, self.stats.d_mlp)

    def layer_table(self, layer: int) -> pd.DataFrame:
        self.check_neuron(layer)
        return self.inspector.neurons_table(layer)

    def profile(self, layer: int, neuron: int) -> tuple[list[str], pd.DataFrame]:
        """The neuron's languages and its per-language table: ``lens-steer inspect``'s numbers (probability, p_max,
        p_median, assigned, selection), then ``mean``, the token mean of its value per language."""
        self.check_neuron(layer, neuron)
        table = self.inspector.table(layer, "all")
        table = table[table["neuron"] == neuron].reset_index(drop=True)
        table["mean"] = self.inspector.mean[:, layer, neuron].astype(float)
        owners = [c for c in self.languages if neuron in set(self.neurons.neurons[c][layer])]
        return owners, table

    # ---- what needs the model, kept in the run directory ----
    def cached(self, layer: int, neuron: int) -> dict[str, Any] | None:
        """The neuron's top tokens and logit effect from ``explore_cache.json``, or None (not computed yet, or made
        from another neuron set)."""
        return self._read_cache().get(f"{layer}/{neuron}")

    def model_views(self, layer: int, neuron: int) -> dict[str, Any]:
        """``{"top": {lang: [hit, ...]}, "promoted": [...], "suppressed": [...]}``: cached, or computed with the
        model (loaded now if needed) and cached; without the model, one line saying why."""
        self.check_neuron(layer, neuron)
        found = self.cached(layer, neuron)
        if found is not None:
            return found
        with self.holder.using() as model:
            found = self.cached(layer, neuron)  # another request may have computed it while this one waited
            if found is not None:
                return found
            views = {"top": self._top_tokens(model, layer, neuron), **self._logit_effect(model, layer, neuron)}
        self._write_cache(f"{layer}/{neuron}", views)
        return views

    def _top_tokens(self, model: Model, layer: int, neuron: int) -> dict[str, list[dict[str, Any]]]:
        from lens_steer.top_tokens import top_tokens_for_run  # deferred: torch

        config = InspectConfig(layer=layer, neuron=neuron, top=self.config.top, langs=",".join(self.languages),
                               progress=False)
        hits = top_tokens_for_run(self.run, config, model=model)
        return {code: [dataclasses.asdict(h) for h in items] for code, items in hits.items()}

    def _logit_effect(self, model: Model, layer: int, neuron: int) -> dict[str, list[dict[str, Any]]]:
        # deferred: torch (and cld2), only once a neuron page needs the model
        from lens_steer.lid import get_detector
        from lens_steer.models import neuron_logit_effect

        effect = neuron_logit_effect(model, layer, neuron)
        detector = get_detector("cld2")
        k = min(LOGIT_TOKENS, effect.shape[0])

        def rows(ids: list[int]) -> list[dict[str, Any]]:
            out = []
            for i in ids:
                token = model.tokenizer.decode([i])
                out.append({"id": i, "token": token, "logit": float(effect[i]),
                            "language": detector.detect(token) if token.strip() else None})
            return out

        return {"promoted": rows(effect.topk(k).indices.tolist()),
                "suppressed": rows((-effect).topk(k).indices.tolist())}

    def _read_cache(self) -> dict[str, Any]:
        if not self.run.has(EXPLORE_CACHE):
            return {}
        try:
            return self.run.summary(EXPLORE_CACHE).get("neurons", {})
        except LensSteerError:  # made from another neuron set, or unreadable: computed again and replaced
            return {}

    def _write_cache(self, key: str, views: dict[str, Any]) -> None:
        """Add one neuron to the cache file (atomically, holding the run's lock); a run another command is writing
        keeps its file as it was and the page is computed again next time."""
        with self._cache_lock:
            try:
                with self.run.writing("explore"):
                    self.run.write_json(EXPLORE_CACHE, {"neurons": {**self._read_cache(), key: views}})
            except LensSteerError as exc:
                print(f"lens-steer explore: warning: not cached: {exc}", file=sys.stderr)
