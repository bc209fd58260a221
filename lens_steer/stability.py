"""How stable is a neuron set? Bootstrap resamples of the folds of sentences, without the model.

``identify`` keeps its counts in F folds per language (:mod:`lens_steer.folds`). Because counts add, the neuron set
of any multiset of folds is LAPE on the summed counts, exactly what ``identify`` would give on those sentences. So:

* **resamples**: B draws of F folds with replacement (the same draw for every language: a fold is a slice of the
  corpus), LAPE with the run's own settings on each; per neuron and language the **selection frequency** (share
  of resamples that assign the neuron to the language), per language the **Jaccard** of each resampled set with
  the full set, summarised by its mean and 2.5 / 97.5 percentiles;
* **split half**: the sets of the even folds and of the odd folds, and their Jaccard;
* **share stable**: of the full set's neurons of a language, the share chosen in >= 90% of resamples.

Everything here is a pure function of the folds; :func:`stability_for_run` reads and writes the run directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

from lens_steer.artifacts import FINGERPRINT, STABILITY_CSV, STABILITY_FILE
from lens_steer.configs import StabilityConfig
from lens_steer.errors import LensSteerError
from lens_steer.folds import Folds
from lens_steer.identification import lape_from_probability
from lens_steer.paths import atomic_path
from lens_steer.run import Run, writes

STABLE = 0.9  # a neuron chosen in at least this share of resamples is "stable"
STABILITY_COLUMNS = ("lang", "n_neurons", "jaccard_mean", "jaccard_low", "jaccard_high", "split_half_jaccard",
                     "share_stable", "resamples", "folds")


@dataclass
class Stability:
    """What :func:`stability` measures (K languages, L layers, D neurons per layer, B resamples)."""

    languages: list[str]
    full: Bool[Tensor, "layer d_mlp lang"]  # the run's set (LAPE on all folds)
    frequency: Float[Tensor, "lang layer d_mlp"]  # share of resamples choosing each neuron for each language
    jaccard: Float[Tensor, "resample lang"]  # each resampled set against the full set
    halves: tuple[Tensor, Tensor]  # the sets of the even and of the odd folds, [layer, d_mlp, lang] each
    resamples: int
    folds: int

    def rows(self) -> list[dict[str, Any]]:
        """One row per language, :data:`STABILITY_COLUMNS`."""
        split = jaccard(*self.halves)
        low, high = (self.jaccard.quantile(q, dim=0) for q in (0.025, 0.975))
        rows = []
        for k, code in enumerate(self.languages):
            chosen = self.full[..., k]
            n = int(chosen.sum())
            stable = float((self.frequency[k][chosen] >= STABLE).double().mean()) if n else float("nan")
            rows.append({"lang": code, "n_neurons": n, "jaccard_mean": float(self.jaccard[:, k].mean()),
                         "jaccard_low": float(low[k]), "jaccard_high": float(high[k]),
                         "split_half_jaccard": float(split[k]), "share_stable": stable,
                         "resamples": self.resamples, "folds": self.folds})
        return rows

    def stable_share_per_layer(self) -> Float[Tensor, "lang layer"]:
        """Per language and layer, the share of the full set's neurons that are stable (NaN where it has none)."""
        return stable_share_per_layer(self.full, self.frequency)


def stable_share_per_layer(mask: Bool[Tensor, "layer d_mlp lang"],
                           frequency: Float[Tensor, "lang layer d_mlp"]) -> Float[Tensor, "lang layer"]:
    """Per language and layer, the share of the set's neurons chosen in >= 90% of resamples (NaN: none there).

    >>> mask = torch.tensor([[[True], [True]], [[False], [False]]])  # 2 layers x 2 neurons, 1 language
    >>> stable_share_per_layer(mask, torch.tensor([[[1.0, 0.5], [1.0, 1.0]]])).tolist()
    [[0.5, nan]]
    """
    chosen = mask.permute(2, 0, 1).double()  # [lang, layer, d]
    stable = chosen * (frequency >= STABLE)
    return stable.sum(-1) / chosen.sum(-1)


def jaccard(a: Bool[Tensor, "layer d_mlp lang"], b: Bool[Tensor, "layer d_mlp lang"]) -> Float[Tensor, " lang"]:
    """Per language, |a & b| / |a | b| (1 where both are empty: two empty sets agree).

    >>> a = torch.tensor([[[True, False], [True, False]]])
    >>> b = torch.tensor([[[True, False], [False, False]]])
    >>> jaccard(a, b).tolist()
    [0.5, 1.0]
    """
    inter = (a & b).sum(dim=(0, 1)).double()
    union = (a | b).sum(dim=(0, 1)).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def folds_lape(folds: Folds, weights: Tensor, params: dict[str, float]) -> Bool[Tensor, "layer d_mlp lang"]:
    """The LAPE set of the folds taken ``weights[f]`` times each (``params``: top_rate, filter_rate,
    activation_bar_ratio), as :func:`~lens_steer.identification.lape` computes it from the summed counts."""
    counts, n = folds.weighted_counts(weights)
    p = (counts / n.clamp(min=1)).float()  # as Stats.probability: float64 division, then float32
    return lape_from_probability(p, **params)


def lape_params(provenance: dict[str, Any]) -> dict[str, float]:
    """The LAPE settings a neuron set was identified with; other methods are a one-line error."""
    method = provenance.get("method")
    if method != "lape":
        raise LensSteerError(f"stability resamples LAPE's counts, but this run's neurons were identified with"
                             f" {method!r}; identify with --method lape (the default) to measure its stability")
    given = provenance.get("params", {})
    return {k: float(given[k]) for k in ("top_rate", "filter_rate", "activation_bar_ratio") if k in given}


def stability(folds: Folds, languages: list[str], params: dict[str, float], resamples: int = 200, seed: int = 0,
              progress: bool = False) -> Stability:
    """Bootstrap the folds ``resamples`` times (seeded) and measure the neuron set's stability (module docstring).

    >>> import torch
    >>> over = torch.zeros(4, 1, 4, 2, dtype=torch.int32)
    >>> over[:, 0, 0, 0] = 5; over[:, 0, 1, 1] = 5       # neuron 0 fires for language 0, neuron 1 for 1
    >>> f = Folds(over, torch.full((4, 2), 10), torch.ones(4, 2), torch.zeros(2, 0, dtype=torch.long))
    >>> s = stability(f, ["a", "b"], {"top_rate": 0.5, "filter_rate": 0.5, "activation_bar_ratio": 0.5}, 20)
    >>> [round(r["jaccard_mean"], 2) for r in s.rows()], s.frequency[0, 0, 0].item()
    ([1.0, 1.0], 1.0)
    """
    if folds.n_folds < 2:
        raise LensSteerError(f"this run kept its counts in {folds.n_folds} fold; stability resamples folds, so"
                             " re-run `lens-steer identify --folds 10` (the default)")
    if resamples < 1:
        raise LensSteerError(f"--resamples must be >= 1, not {resamples}")
    f = folds.n_folds
    full = folds_lape(folds, torch.ones(f), params)
    g = torch.Generator().manual_seed(seed)
    chosen = torch.zeros(full.shape, dtype=torch.int64)
    scores = torch.empty(resamples, full.shape[-1], dtype=torch.float64)
    for b in tqdm(range(resamples), desc="resamples", disable=not progress, leave=False):
        draw = torch.bincount(torch.randint(0, f, (f,), generator=g), minlength=f)
        mask = folds_lape(folds, draw, params)
        chosen += mask
        scores[b] = jaccard(mask, full)
    even = torch.arange(f) % 2 == 0
    halves = (folds_lape(folds, even.double(), params), folds_lape(folds, (~even).double(), params))
    frequency = (chosen.double() / resamples).permute(2, 0, 1).float().contiguous()
    return Stability(list(languages), full, frequency, scores, halves, resamples, f)


@writes("stability")
def stability_for_run(run: Run, config: StabilityConfig) -> tuple[Stability, list]:
    """``lens-steer stability``: resample the run's folds (no model), write ``stability.csv`` (one row per
    language) and ``stability.safetensors`` (``frequency`` [lang, layer, d_mlp]); returns the result and the rows.
    """
    stats, neurons = run.stats(), run.neurons()
    if stats.folds is None:
        raise LensSteerError(f"{run.path} has no folds.safetensors (recorded before lens_steer kept folds, or"
                             " merged from runs without them); re-run `lens-steer identify` to measure stability")
    result = stability(stats.folds, stats.languages, lape_params(neurons.provenance), config.resamples,
                       config.seed, config.progress)
    if not torch.equal(result.full, neurons.mask()):
        raise LensSteerError(f"LAPE on the folds of {run.path} does not give its neurons.json (identified with other"
                             " settings, or edited); re-run `lens-steer identify` into this directory")
    rows = result.rows()
    run.write_csv(STABILITY_CSV, rows, STABILITY_COLUMNS)
    with atomic_path(run.file(STABILITY_FILE)) as tmp:  # stamped like every derived artifact
        save_file({"frequency": result.frequency}, str(tmp),
                  metadata={FINGERPRINT: run.fingerprint(), "languages": ",".join(stats.languages)})
    return result, rows


def read_frequency(run: Run) -> Float[Tensor, "lang layer d_mlp"] | None:
    """The selection frequencies of ``stability.safetensors``, or None where ``stability`` has not run (or ran on
    another neuron set)."""

    path = run.file(STABILITY_FILE)
    if not path.exists():
        return None
    with safe_open(str(path), framework="pt") as f:
        if (f.metadata() or {}).get(FINGERPRINT) != run.fingerprint():
            return None
        return f.get_tensor("frequency")
