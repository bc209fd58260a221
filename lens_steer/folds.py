"""The identification counts kept in F folds per language, for resampling the neuron set without the model.

``identify`` deals each language's sentences round-robin to ``F`` folds (sentence ``i`` of the language, in corpus
order after the token budget, goes to fold ``i % F``) and keeps the exact counts of each fold beside the totals:

=================  =======  ==============  ==================================================================
tensor             dtype    shape           meaning
=================  =======  ==============  ==================================================================
``over_zero``      int32    [F, L, D, K]    tokens of the fold's sentences whose neuron value was > 0
``n_tokens``       int64    [F, K]          counted tokens of the fold
``n_sentences``    int64    [F, K]          sentences of the fold
``sent_fold``      int64    [K, N]          the fold of each kept sentence mean (what p_max / p_median need)
=================  =======  ==============  ==================================================================

The folds add up exactly to the totals of ``stats.safetensors`` (counts are integers), so splitting never changes
an existing number; ``RUN/folds.safetensors`` is stamped with the statistics' fingerprint and checked against them
on every read. Folds travel through ``--shard`` / ``merge`` and torchrun as the other counts do: a fold is a set of
sentences, whichever process recorded them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Int
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from lens_steer.artifacts import FOLDS_FILE
from lens_steer.configs import DEFAULT_FOLDS  # noqa: F401 - the default of --folds, declared torch-free
from lens_steer.errors import LensSteerError
from lens_steer.paths import atomic_path



@dataclass
class Folds:
    """Per-fold counts of one run (see the module docstring)."""

    over_zero: Int[Tensor, "fold layer d_mlp lang"]
    n_tokens: Int[Tensor, "fold lang"]
    n_sentences: Int[Tensor, "fold lang"]
    sent_fold: Int[Tensor, "lang n_sent"]

    @property
    def n_folds(self) -> int:
        return int(self.n_tokens.shape[0])

    @classmethod
    def from_parts(cls, parts: list[dict[str, Tensor]]) -> Folds:
        """From the recorder's per-language parts (keys ``fold_over_zero`` [F, L, D], ``fold_n_tokens`` [F],
        ``fold_n_sentences`` [F], ``sent_fold`` [N]), in language order."""
        return cls(over_zero=torch.stack([p["fold_over_zero"] for p in parts], dim=-1).to(torch.int32),
                   n_tokens=torch.stack([p["fold_n_tokens"] for p in parts], dim=-1),
                   n_sentences=torch.stack([p["fold_n_sentences"] for p in parts], dim=-1),
                   sent_fold=torch.stack([p["sent_fold"] for p in parts]))

    def language_part(self, k: int) -> dict[str, Tensor]:
        """Language ``k`` as a recorder part (for merging shards)."""
        return {"fold_over_zero": self.over_zero[..., k].to(torch.int64), "fold_n_tokens": self.n_tokens[:, k],
                "fold_n_sentences": self.n_sentences[:, k], "sent_fold": self.sent_fold[k]}

    def subset(self, idx: list[int]) -> Folds:
        """Languages ``idx`` (positions), in that order."""
        return Folds(self.over_zero[..., idx], self.n_tokens[:, idx], self.n_sentences[:, idx], self.sent_fold[idx])

    def weighted_counts(self, weights: Tensor) -> tuple[Tensor, Tensor]:
        """(over_zero [L, D, K], n_tokens [K]) of the folds taken ``weights[f]`` times each (a bootstrap draw, a
        half, or all ones for the totals), as float64 (exact for integer weights).

        >>> f = Folds(torch.ones(2, 1, 1, 1, dtype=torch.int32), torch.tensor([[3], [5]]), torch.ones(2, 1),
        ...           torch.zeros(1, 0, dtype=torch.long))
        >>> [t.tolist() for t in f.weighted_counts(torch.tensor([2.0, 0.0]))]
        [[[[2.0]]], [6.0]]
        """
        w = weights.to(torch.float64)
        f, layers, d, k = self.over_zero.shape
        counts = (w @ self.over_zero.reshape(f, -1).to(torch.float64)).view(layers, d, k)
        return counts, w @ self.n_tokens.to(torch.float64)

    def check_totals(self, over_zero: Tensor, n_tokens: Tensor, where: Path | str) -> None:
        """Refuse folds that do not add up to the statistics' totals (another run's file)."""
        if (tuple(self.over_zero.shape[1:]) != tuple(over_zero.shape) or
                not torch.equal(self.n_tokens.sum(0), n_tokens) or
                not torch.equal(self.over_zero.sum(0, dtype=torch.int64), over_zero)):
            raise LensSteerError(f"{where} does not add up to the run's stats.safetensors (it comes from another"
                                 " run); re-run `lens-steer identify` into this directory")

    def save(self, run_dir: str | Path, fingerprint: str) -> None:
        """Write ``RUN/folds.safetensors`` atomically, stamped with the statistics' fingerprint."""
        tensors = {"over_zero": self.over_zero.to(torch.int32).contiguous(),
                   "n_tokens": self.n_tokens.to(torch.int64).contiguous(),
                   "n_sentences": self.n_sentences.to(torch.int64).contiguous(),
                   "sent_fold": self.sent_fold.to(torch.int64).contiguous()}
        meta = {"lens_steer": json.dumps({"stats_fingerprint": fingerprint, "folds": self.n_folds}, sort_keys=True)}
        with atomic_path(Path(run_dir) / FOLDS_FILE) as tmp:
            save_file(tensors, str(tmp), metadata=meta)

    @classmethod
    def load(cls, run_dir: str | Path, fingerprint: str | None) -> Folds | None:
        """``RUN/folds.safetensors``, or None for runs recorded without folds; a file written with other statistics
        (fingerprint) or a damaged one is a one-line error."""
        path = Path(run_dir) / FOLDS_FILE
        if not path.exists():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {}).get("lens_steer", "{}"))
            t = load_file(str(path))
            folds = cls(t["over_zero"], t["n_tokens"], t["n_sentences"], t["sent_fold"])
        except (SafetensorError, OSError, ValueError, KeyError) as exc:
            raise LensSteerError(f"{path} is corrupt ({exc}); re-run `lens-steer identify`") from exc
        if fingerprint is not None and meta.get("stats_fingerprint") != fingerprint:
            raise LensSteerError(f"{path} was written with other statistics (fingerprint"
                                 f" {meta.get('stats_fingerprint', 'none')}, stats.safetensors has {fingerprint}): it"
                                 " comes from another run; re-run `lens-steer identify` into this directory")
        return folds


def empty_part(n_folds: int, layers: int, d_mlp: int, n_keep: int) -> dict[str, Tensor]:
    """A language part with no sentences (zeros), in the recorder's keys."""
    return {"fold_over_zero": torch.zeros(n_folds, layers, d_mlp, dtype=torch.int64),
            "fold_n_tokens": torch.zeros(n_folds, dtype=torch.int64),
            "fold_n_sentences": torch.zeros(n_folds, dtype=torch.int64),
            "sent_fold": torch.zeros(n_keep, dtype=torch.int64)}


def fold_of(sentence: int, n_folds: int) -> int:
    """The fold of a language's ``sentence``-th sentence: dealt round-robin.

    >>> [fold_of(i, 3) for i in range(7)]
    [0, 1, 2, 0, 1, 2, 0]
    """
    return sentence % n_folds
