"""The per-neuron tables of a run: activation probability, p_max, p_median and assignment per language, for one
layer at a time. The inspector figure (:func:`lens_steer.plots.layer_inspector`), ``lens-steer inspect`` and the
notebooks read them; pure functions of a :class:`~lens_steer.stats.Stats` and a :class:`~lens_steer.neurons.NeuronSet`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from lens_steer.errors import LensSteerError, check_neuron
from lens_steer.neurons import NeuronSet
from lens_steer.stats import Stats


class InspectorData:
    """The per-neuron numbers the inspector shows, computed once for every layer (the median is the slow part)."""

    def __init__(self, stats: Stats, neurons: NeuronSet, frequency: Tensor | None = None):
        langs = neurons.languages
        missing = [c for c in langs if c not in stats.languages]
        if missing:
            raise LensSteerError(f"the statistics have no {', '.join(missing)}; use the run's own stats and neurons")
        order = [stats.languages.index(c) for c in langs]
        self.langs = langs
        self.n_layers, self.d_mlp = stats.n_layers, stats.d_mlp
        self.prob = stats.probability()[..., order].numpy()            # [layer, d_mlp, lang]
        self.pmax = stats.sentence_stat("max")[order].numpy()           # [lang, layer, d_mlp]
        self.pmed = stats.sentence_stat("median")[order].numpy()
        self.mask = neurons.mask().numpy()                              # [layer, d_mlp, lang]
        self.mean = stats.mean()[order].numpy()                         # [lang, layer, d_mlp], token means
        # Selection frequency over resamples of the folds (lens-steer stability), in the statistics' language order.
        self.freq = None if frequency is None else frequency[order].numpy()  # [lang, layer, d_mlp]

    def table(self, layer: int, which: str = "language") -> pd.DataFrame:
        check_neuron(layer, None, self.n_layers, 0)
        if which == "language":
            idx = np.flatnonzero(self.mask[layer].any(axis=1))
        elif which == "all":
            idx = np.arange(self.d_mlp)
        else:
            raise LensSteerError(f"unknown neuron selection {which!r}; use language or all")
        k = len(self.langs)
        assigned = self.mask[layer][idx]                                 # [n, lang]
        owners = [",".join(c for c, a in zip(self.langs, row) if a) for row in assigned]
        columns = ["layer", "neuron", "language", "probability", "p_max", "p_median", "assigned", "assigned_to"]
        extra = {}
        if self.freq is not None:
            extra["selection"] = self.freq[:, layer, idx].T.reshape(-1).astype(float)
            columns.append("selection")
        return pd.DataFrame({
            "layer": layer, "neuron": np.repeat(idx, k), "language": np.tile(self.langs, len(idx)),
            "probability": self.prob[layer][idx].reshape(-1).astype(float),
            "p_max": self.pmax[:, layer, idx].T.reshape(-1).astype(float),
            "p_median": self.pmed[:, layer, idx].T.reshape(-1).astype(float),
            "assigned": assigned.reshape(-1), "assigned_to": np.repeat(owners, k) if len(idx) else [], **extra,
        }, columns=columns)

    def neurons_table(self, layer: int) -> pd.DataFrame:
        """One row per language neuron of ``layer`` (the explorer's layer view): its ``languages``, the LAPE
        ``entropy`` of its probabilities normalised over the languages (low: specific), ``p_<lang>`` per language,
        and ``p_max``, ``p_median`` (and ``selection`` with stability results) of its first language."""
        from lens_steer.identification import lape_entropy  # deferred: the recorder and models, only for this

        long = self.table(layer, "language")
        k = len(self.langs)
        prob = long["probability"].to_numpy().reshape(-1, k)            # [n, lang]
        entropy = lape_entropy(torch.from_numpy(prob)).numpy()
        assigned = long["assigned"].to_numpy().reshape(-1, k)
        first = assigned.argmax(axis=1)                                  # every row has an assigned language
        rows = np.arange(len(first))
        frame = pd.DataFrame({"neuron": long["neuron"].to_numpy()[::k] if k else [],
                              "languages": long["assigned_to"].to_numpy()[::k] if k else [], "entropy": entropy})
        for i, code in enumerate(self.langs):
            frame[f"p_{code}"] = prob[:, i]
        for key in ("p_max", "p_median", "selection"):
            if key in long:
                frame[key] = long[key].to_numpy().reshape(-1, k)[rows, first]
        return frame


def inspector_tables(stats: Stats, neurons: NeuronSet, layer: int, which: str = "language",
                     frequency: Tensor | None = None) -> pd.DataFrame:
    """One row per (neuron of ``layer``, language): activation probability, p_max, p_median and whether the
    neuron is assigned to that language; with ``frequency`` (``lens-steer stability``'s [lang, layer, d_mlp]) also
    the ``selection`` frequency. ``which="language"`` keeps the neurons assigned to any language, ``"all"`` every
    neuron of the layer."""
    return InspectorData(stats, neurons, frequency).table(layer, which)
