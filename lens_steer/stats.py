"""The neuron-statistics artifact: what the recorder writes and every later stage reads.

A run directory holds ``stats.safetensors`` + ``sent_means.safetensors`` + ``manifest.json``. The tensor contract
(shapes use L = layers, D = d_mlp, K = languages, N = kept sentence means per language):

========================  ===========  =================================================================
tensor                    dtype        shape / meaning
========================  ===========  =================================================================
``over_zero``             int64        [L, D, K] real tokens whose neuron value was > 0
``n_tokens``              int64        [K] tokens counted (no pads, no BOS)
``n_sentences``           int64        [K] sentences counted
``sent_max``              float32      [K, L, D] max over the N kept sentence means (the paper's p_max)
``sent_median``           float32      [K, L, D] lower median of the N sentence means (p_median)
``sent_min``              float32      [K, L, D] min of the N sentence means
``act_sum``               float64      [K, L, D] sum of the neuron value over counted tokens
``act_sqsum``             float64      [K, L, D] sum of squares
``resid_sum``             float64      [K, L, d_model] sum of the residual stream after each layer
                                       (``hook_resid_post``) over counted tokens; absent in older runs
``resid_pool_n/sum/outer`` int64/f64   [1], [L, d_model], [L, d_model, d_model]: count, sum and sum of outer
                                       products of that residual, pooled over the languages
                                       (:mod:`lens_steer.resid_cov`); absent in older runs
``sent_means`` (own file) float16      [K, N, L, D] the kept per-sentence means themselves
========================  ===========  =================================================================

The sentence means are float16 values everywhere, as the reference stores them: :class:`Stats` rounds them on
construction (and keeps them as float32 holding float16 values), so ``sent_max`` / ``sent_median`` / ``sent_min``
are exactly the max / median / min of the stored ``sent_means``, whether computed in memory, read from disk, or
after :func:`merge_stats`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from lens_steer.errors import LensSteerError
from lens_steer.paths import atomic_path, write_json
from lens_steer.artifacts import FOLDS_FILE, MANIFEST_FILE, SENT_MEANS_FILE, STATS_FILE
from lens_steer.folds import Folds
from lens_steer.resid_cov import NO_COV, ResidMoments


_CONTRACT: dict[str, tuple[torch.dtype, str]] = {
    "over_zero": (torch.int64, "L D K"),
    "n_tokens": (torch.int64, "K"),
    "n_sentences": (torch.int64, "K"),
    "sent_max": (torch.float32, "K L D"),
    "sent_median": (torch.float32, "K L D"),
    "sent_min": (torch.float32, "K L D"),
    "act_sum": (torch.float64, "K L D"),
    "act_sqsum": (torch.float64, "K L D"),
}


@dataclass
class Stats:
    """Per-neuron, per-language activation statistics of one run (see the module docstring for the contract)."""

    over_zero: Int[Tensor, "layer d_mlp lang"]
    n_tokens: Int[Tensor, " lang"]
    n_sentences: Int[Tensor, " lang"]
    act_sum: Float[Tensor, "lang layer d_mlp"]
    act_sqsum: Float[Tensor, "lang layer d_mlp"]
    sent_means: Float[Tensor, "lang n_sent layer d_mlp"]
    manifest: dict[str, Any] = field(default_factory=dict)
    # Sum of the residual stream after each layer (blocks.{l}.hook_resid_post) over the counted tokens; None for runs
    # recorded before it existed (residual methods then refuse them).
    resid_sum: Float[Tensor, "lang layer d_model"] | None = None
    # The residual's pooled moments after each layer (lens_steer.resid_cov: the covariance-matched control); None
    # for runs recorded before them. Pooled over the languages recorded: subset keeps them whole.
    resid_moments: ResidMoments | None = None
    # The counts per fold of sentences (lens_steer.folds, RUN/folds.safetensors); None for runs recorded without.
    # Not part of the fingerprint: they only split the totals, which the fingerprint covers.
    folds: Folds | None = field(default=None, repr=False, compare=False)
    # The fingerprint read from disk (Stats.load); None for statistics made in memory, which compute it on demand.
    stored_fingerprint: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        # One p_max definition: the means are stored as float16, so round them here too; otherwise p_max in memory
        # (float32 means) and p_max read back from disk (float16 means) would differ in the last bits.
        self.sent_means = fp16_values(self.sent_means)

    @classmethod
    def from_parts(cls, parts: list[dict[str, Tensor]], manifest: dict[str, Any],
                   resid_outer: Tensor | None = None) -> Stats:
        """Statistics from one part per language (the recorder's per-language dicts, :data:`PART_KEYS`), in the
        manifest's language order. ``resid_outer`` is the residual's sum of outer products pooled over these
        parts (else the parts' own ``resid_outer``, added in order, when every part has one)."""
        def stack(key: str, dim: int = 0) -> Tensor:
            return torch.stack([p[key] for p in parts], dim=dim)

        resid = stack("resid_sum") if all("resid_sum" in p for p in parts) else None
        if resid_outer is None and parts and all("resid_outer" in p for p in parts):
            resid_outer = sum(p["resid_outer"] for p in parts[1:]) + parts[0]["resid_outer"]
        moments = None
        if resid is not None and resid_outer is not None:
            moments = ResidMoments(stack("n_tokens").sum().reshape(1), resid.sum(dim=0), resid_outer)
        folds = Folds.from_parts(parts) if parts and all(FOLD_KEYS[0] in p for p in parts) else None
        return cls(over_zero=stack("over_zero", -1), n_tokens=stack("n_tokens"), n_sentences=stack("n_sentences"),
                   act_sum=stack("act_sum"), act_sqsum=stack("act_sqsum"), sent_means=stack("sent_means"),
                   manifest=manifest, resid_sum=resid, resid_moments=moments, folds=folds)

    # ---- derived quantities (pure functions of the stored tensors) ----
    @property
    def languages(self) -> list[str]:
        return list(self.manifest["languages"])

    @property
    def n_layers(self) -> int:
        return int(self.over_zero.shape[0])

    @property
    def d_mlp(self) -> int:
        return int(self.over_zero.shape[1])

    def probability(self) -> Float[Tensor, "layer d_mlp lang"]:
        """Activation probability p = over_zero / n_tokens (0 where a language has no tokens)."""
        n = self.n_tokens.clamp(min=1).to(torch.float64)
        return (self.over_zero.to(torch.float64) / n).float()

    def mean(self) -> Float[Tensor, "lang layer d_mlp"]:
        """Token-level mean of the neuron value per language."""
        return (self.act_sum / self.n_tokens.clamp(min=1)[:, None, None]).float()

    def std(self) -> Float[Tensor, "lang layer d_mlp"]:
        """Token-level standard deviation of the neuron value per language."""
        n = self.n_tokens.clamp(min=1)[:, None, None].to(torch.float64)
        mean = self.act_sum / n
        return (self.act_sqsum / n - mean**2).clamp(min=0).sqrt().float()

    def sentence_stat(self, kind: str) -> Float[Tensor, "lang layer d_mlp"]:
        """``max``, ``median`` (lower median) or ``min`` over the kept sentence means; NaN when none were kept."""
        k, n, layers, d = self.sent_means.shape
        if n == 0:
            return torch.full((k, layers, d), float("nan"))
        means = self.sent_means.float()
        if kind == "max":
            return means.amax(dim=1)
        if kind == "min":
            return means.amin(dim=1)
        if kind == "median":
            return means.median(dim=1).values  # torch.median is the lower median for even N
        raise LensSteerError(f"unknown sentence statistic {kind!r}; use max, median or min")

    def subset(self, languages: list[str]) -> Stats:
        """The same statistics restricted to ``languages`` (in that order)."""
        idx = [self.languages.index(code) for code in languages]
        manifest = dict(self.manifest, languages=list(languages))
        return Stats(self.over_zero[..., idx], self.n_tokens[idx], self.n_sentences[idx], self.act_sum[idx],
                     self.act_sqsum[idx], self.sent_means[idx], manifest,
                     None if self.resid_sum is None else self.resid_sum[idx], self.resid_moments,
                     folds=None if self.folds is None else self.folds.subset(idx))

    def resid_mean(self) -> Float[Tensor, "lang layer d_model"]:
        """Per language, the mean residual stream after each layer over the counted tokens (``resid_sum /
        n_tokens``); a one-line error for runs recorded before residual sums existed."""
        if self.resid_sum is None:
            raise LensSteerError("these statistics have no residual-stream means (recorded before lens_steer kept"
                                 " them); record the run again with `lens-steer identify` to use resid: methods")
        return (self.resid_sum / self.n_tokens.clamp(min=1)[:, None, None].double()).float()

    def resid_covariance(self, layer: int) -> Float[Tensor, "d_model d_model"]:
        """The covariance of the residual stream after ``layer`` over the recorded tokens of every language (float64,
        :mod:`lens_steer.resid_cov`); a one-line error for runs recorded without it."""
        if self.resid_moments is None:
            raise LensSteerError(NO_COV)
        return self.resid_moments.covariance(layer)

    # ---- I/O ----
    def _stored_tensors(self) -> dict[str, Tensor]:
        """The tensors of ``stats.safetensors`` and ``sent_means.safetensors``, exactly as written."""
        tensors = {
            "over_zero": self.over_zero.to(torch.int64).contiguous(),
            "n_tokens": self.n_tokens.to(torch.int64).contiguous(),
            "n_sentences": self.n_sentences.to(torch.int64).contiguous(),
            "sent_max": self.sentence_stat("max").float().contiguous(),
            "sent_median": self.sentence_stat("median").float().contiguous(),
            "sent_min": self.sentence_stat("min").float().contiguous(),
            "act_sum": self.act_sum.to(torch.float64).contiguous(),
            "act_sqsum": self.act_sqsum.to(torch.float64).contiguous(),
        }
        if self.resid_sum is not None:
            tensors["resid_sum"] = self.resid_sum.to(torch.float64).contiguous()
        if self.resid_moments is not None:
            tensors.update(self.resid_moments.tensors())
        tensors["sent_means"] = self.sent_means.to(torch.float16).contiguous()
        return tensors

    def fingerprint(self) -> str:
        """A digest of these statistics (every stored tensor, the languages and the model): what a neuron set and
        every later artifact record as the statistics they were made from (:func:`tensor_fingerprint`)."""
        if self.stored_fingerprint is None:
            self.stored_fingerprint = tensor_fingerprint(self._stored_tensors(), self.languages,
                                                         str(self.manifest.get("model", {}).get("model")))
        return self.stored_fingerprint

    def save(self, run_dir: str | Path) -> None:
        """Write ``stats.safetensors``, ``sent_means.safetensors`` and ``manifest.json`` atomically.

        All three carry the statistics' fingerprint (the safetensors files in their metadata, the manifest as
        ``stats_fingerprint``), so a file copied in from another run is caught on the next read."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        tensors = self._stored_tensors()
        if self.stored_fingerprint is None:
            self.stored_fingerprint = tensor_fingerprint(tensors, self.languages,
                                                         str(self.manifest.get("model", {}).get("model")))
        fingerprint = self.stored_fingerprint
        means = tensors.pop("sent_means")
        # One metadata key (JSON): safetensors writes several keys in no fixed order, and a resumed run must give the
        # same bytes. Older runs have a bare ``languages`` key, which is still checked.
        meta = {"lens_steer": json.dumps({"languages": self.languages, "model": str(self.manifest.get("model", {})
                                                                                   .get("model")),
                                          "fingerprint": fingerprint}, sort_keys=True)}
        with atomic_path(run_dir / STATS_FILE) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        with atomic_path(run_dir / SENT_MEANS_FILE) as tmp:
            save_file({"sent_means": means}, str(tmp), metadata=meta)
        if self.folds is not None:
            self.folds.save(run_dir, fingerprint)
        else:  # a folds file left from other statistics would no longer add up to these: not kept beside them
            (run_dir / FOLDS_FILE).unlink(missing_ok=True)
        manifest = dict(self.manifest, n_sentence_means=int(self.sent_means.shape[1]), stats_fingerprint=fingerprint)
        write_json(run_dir / MANIFEST_FILE, manifest)

    @classmethod
    def load(cls, run_dir: str | Path) -> Stats:
        """Load a run's statistics, checking the contract; a damaged run is a one-line error."""
        run_dir = Path(run_dir)
        manifest = read_manifest(run_dir)
        tensors, meta = _load_safetensors(run_dir / STATS_FILE)
        means, means_meta = _load_safetensors(run_dir / SENT_MEANS_FILE)
        means = means.get("sent_means")
        fingerprint = _check_same_run(run_dir, manifest, meta, means_meta)
        manifest.pop("stats_fingerprint", None)  # held as stored_fingerprint: a subset or merge must not inherit it
        k = len(manifest.get("languages", []))
        missing = [name for name in _CONTRACT if name not in tensors]
        if missing or means is None:
            raise LensSteerError(f"{run_dir / STATS_FILE} lacks {missing or ['sent_means']}; re-run `lens-steer identify`")
        layers, d = tensors["over_zero"].shape[:2]
        sizes = {"L": layers, "D": d, "K": k}
        for name, (dtype, dims) in _CONTRACT.items():
            want = tuple(sizes[c] for c in dims.split())
            if tuple(tensors[name].shape) != want or tensors[name].dtype != dtype:
                raise LensSteerError(
                    f"{run_dir / STATS_FILE}: {name} is {tuple(tensors[name].shape)} {tensors[name].dtype}, expected"
                    f" {want} {dtype} for the {k} languages of manifest.json; re-run `lens-steer identify`"
                )
        if means.ndim != 4 or means.shape[0] != k or tuple(means.shape[2:]) != (layers, d):
            raise LensSteerError(f"{run_dir / SENT_MEANS_FILE} has shape {tuple(means.shape)}, which does not match"
                                 f" stats.safetensors; re-run `lens-steer identify`")
        resid = tensors.get("resid_sum")
        if resid is not None and (resid.ndim != 3 or resid.shape[:2] != (k, layers) or resid.dtype != torch.float64):
            raise LensSteerError(f"{run_dir / STATS_FILE}: resid_sum is {tuple(resid.shape)} {resid.dtype}, expected"
                                 f" ({k}, {layers}, d_model) float64; re-run `lens-steer identify`")
        moments = ResidMoments.from_tensors(tensors, layers, str(run_dir / STATS_FILE))
        folds = Folds.load(run_dir, fingerprint)
        if folds is not None:
            folds.check_totals(tensors["over_zero"], tensors["n_tokens"], run_dir / FOLDS_FILE)
        return cls(tensors["over_zero"], tensors["n_tokens"], tensors["n_sentences"], tensors["act_sum"],
                   tensors["act_sqsum"], means, manifest, resid, moments, folds=folds,
                   stored_fingerprint=fingerprint)


def tensor_fingerprint(tensors: dict[str, Tensor], languages: list[str], model: str) -> str:
    """16 hex digits of SHA-256 over the tensors (name, dtype, shape, bytes; in name order), the language order and
    the model name. Equal statistics give equal fingerprints, whatever file or process they came from.

    >>> t = {"n_tokens": torch.tensor([3, 4])}
    >>> tensor_fingerprint(t, ["en", "fr"], "m") == tensor_fingerprint(t, ["en", "fr"], "m")
    True
    >>> tensor_fingerprint(t, ["en", "fr"], "m") == tensor_fingerprint(t, ["fr", "en"], "m")
    False
    """
    h = hashlib.sha256(json.dumps({"languages": list(languages), "model": model}).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _lens_steer_meta(meta: dict[str, str]) -> dict[str, str]:
    """What lens_steer wrote into a safetensors file's metadata: ``languages`` (comma-joined), ``model`` and
    ``fingerprint`` (older runs: ``languages`` alone)."""
    try:
        found = json.loads(meta["lens_steer"])
    except (KeyError, ValueError, TypeError):
        return {k: v for k, v in meta.items() if k == "languages"}
    if not isinstance(found, dict):
        return {}
    out = {k: str(v) for k, v in found.items() if k in ("model", "fingerprint")}
    if isinstance(found.get("languages"), list):
        out["languages"] = ",".join(map(str, found["languages"]))
    return out


def _check_same_run(run_dir: Path, manifest: dict[str, Any], meta: dict[str, str],
                    means_meta: dict[str, str]) -> str | None:
    """Refuse statistics files that were not written with this manifest (copied in from another run); returns the
    stored fingerprint (None for runs written before lens_steer kept one)."""
    stats_file, means_file, manifest_file = (run_dir / n for n in (STATS_FILE, SENT_MEANS_FILE, MANIFEST_FILE))
    meta, means_meta = _lens_steer_meta(meta), _lens_steer_meta(means_meta)
    redo = f"copy the whole run directory, or re-run `lens-steer identify --out {run_dir}`"
    languages = ",".join(manifest["languages"])
    for path, m in ((stats_file, meta), (means_file, means_meta)):
        if "languages" in m and m["languages"] != languages:
            raise LensSteerError(f"{path} holds languages {m['languages']} but {manifest_file} lists {languages}: the"
                                 f" two files come from different runs; {redo}")
        model = str(manifest.get("model", {}).get("model"))
        if "model" in m and m["model"] != model:
            raise LensSteerError(f"{path} was recorded on {m['model']} but {manifest_file} names {model}: the two"
                                 f" files come from different runs; {redo}")
    expected = manifest.get("stats_fingerprint")
    for path, m in ((stats_file, meta), (means_file, means_meta)):
        if expected is not None and m.get("fingerprint") != expected:
            raise LensSteerError(f"{path} (fingerprint {m.get('fingerprint', 'none')}) is not the file {manifest_file}"
                                 f" was written with (fingerprint {expected}): it comes from another run; {redo}")
    if expected is None and meta.get("fingerprint") != means_meta.get("fingerprint"):
        raise LensSteerError(f"{stats_file} and {means_file} come from different runs (fingerprints"
                             f" {meta.get('fingerprint', 'none')} and {means_meta.get('fingerprint', 'none')}); {redo}")
    return expected if expected is not None else meta.get("fingerprint")


def fp16_values(x: Tensor) -> Float[Tensor, "..."]:
    """``x`` rounded to float16 (round to nearest even) and held as float32, which represents it exactly.

    >>> fp16_values(torch.tensor([0.1, 1.0, 2049.0])).tolist()
    [0.0999755859375, 1.0, 2048.0]
    """
    return x.to(torch.float16).to(torch.float32)


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / MANIFEST_FILE
    if not path.exists():
        raise LensSteerError(f"{run_dir} has no {MANIFEST_FILE}; is it a run directory made by `lens-steer identify`?")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LensSteerError(f"{path} is not valid JSON ({exc}); re-run `lens-steer identify`") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("languages"), list):
        raise LensSteerError(f"{path} has no 'languages' list; re-run `lens-steer identify`")
    return manifest


def _load_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors of a safetensors file and its metadata."""
    if not path.exists():
        raise LensSteerError(f"{path} is missing; re-run `lens-steer identify`")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        return load_file(str(path)), meta
    except (SafetensorError, OSError, ValueError) as exc:
        raise LensSteerError(f"{path} is corrupt or not a safetensors file ({exc}); re-run `lens-steer identify`") from exc


def check_compatible(stats_manifest: dict[str, Any], n_layers: int, d_mlp: int, what: str = "these statistics") -> None:
    """Refuse statistics or neuron sets recorded on a model of another shape."""
    model = stats_manifest.get("model", {})
    got = (model.get("n_layers"), model.get("d_mlp"))
    if got != (n_layers, d_mlp):
        raise LensSteerError(
            f"{what} were recorded on {model.get('model', 'another model')} ({got[0]} layers x {got[1]} neurons) but the"
            f" model has {n_layers} layers x {d_mlp} neurons; record them again with this model"
        )


def merge_stats(shards: list[Stats]) -> Stats:
    """Merge statistics of several shards of one run (same model and site).

    Counts and sums add; kept sentence means are concatenated per language (shard order) and cut to the run's
    requested N; max/median/min are then recomputed from them. Shards may hold different or overlapping languages.

    >>> shards = [Stats.load("run/shard0"), Stats.load("run/shard1")]  # doctest: +SKIP
    >>> shards = [stats, stats]  # here one shard twice: its counts add up
    >>> merged = merge_stats(shards)
    >>> merged.languages, bool((merged.n_tokens == 2 * stats.n_tokens).all())
    (['en', 'fr'], True)
    """
    if not shards:
        raise LensSteerError("merge_stats needs at least one shard")
    first = shards[0]
    keys = ("model", "site", "dtype", "bos", "template", "reference_compat")
    for shard in shards[1:]:
        for key in keys:
            if shard.manifest.get(key) != first.manifest.get(key):
                raise LensSteerError(f"cannot merge shards that differ in {key!r}: {first.manifest.get(key)!r} vs"
                                     f" {shard.manifest.get(key)!r}")
    languages: list[str] = []
    for shard in shards:
        languages += [code for code in shard.languages if code not in languages]
    layers, d = first.n_layers, first.d_mlp
    k = len(languages)
    over_zero = torch.zeros(layers, d, k, dtype=torch.int64)
    n_tokens = torch.zeros(k, dtype=torch.int64)
    n_sentences = torch.zeros(k, dtype=torch.int64)
    act_sum = torch.zeros(k, layers, d, dtype=torch.float64)
    act_sqsum = torch.zeros(k, layers, d, dtype=torch.float64)
    kept: list[list[Tensor]] = [[] for _ in languages]
    with_resid = all(s.resid_sum is not None for s in shards)
    resid = torch.zeros(k, layers, shards[0].resid_sum.shape[-1], dtype=torch.float64) if with_resid else None
    for shard in shards:
        for i, code in enumerate(shard.languages):
            j = languages.index(code)
            over_zero[..., j] += shard.over_zero[..., i]
            n_tokens[j] += shard.n_tokens[i]
            n_sentences[j] += shard.n_sentences[i]
            act_sum[j] += shard.act_sum[i]
            act_sqsum[j] += shard.act_sqsum[i]
            kept[j].append(shard.sent_means[i])
            if resid is not None:
                resid[j] += shard.resid_sum[i]
    moments = None
    if all(s.resid_moments is not None for s in shards):
        moments = sum((s.resid_moments for s in shards[1:]), shards[0].resid_moments)
    requested = int(first.manifest.get("n_sentence_means_requested", first.sent_means.shape[1]))
    n = min([requested] + [sum(int(t.shape[0]) for t in parts) for parts in kept])
    sent_means = torch.stack([torch.cat(parts)[:n] for parts in kept]) if k else torch.zeros(0, 0, layers, d)
    manifest = dict(first.manifest, languages=languages, merged_from=len(shards))
    return Stats(over_zero, n_tokens, n_sentences, act_sum, act_sqsum, sent_means, manifest, resid, moments,
                 folds=_merge_folds(shards, languages, n))


def _merge_folds(shards: list[Stats], languages: list[str], n: int) -> Folds | None:
    """The folds of :func:`merge_stats`: fold counts add per language, the kept means' folds follow their means;
    None unless every shard has folds, and as many."""
    if any(s.folds is None for s in shards) or len({s.folds.n_folds for s in shards}) != 1:
        return None
    parts: list[dict[str, Tensor]] = []
    for code in languages:
        found = [s.folds.language_part(s.languages.index(code)) for s in shards if code in s.languages]
        part = {key: sum(f[key] for f in found[1:]) + found[0][key] for key in FOLD_KEYS[:3]}
        part["sent_fold"] = torch.cat([f["sent_fold"] for f in found])[:n]
        parts.append(part)
    return Folds.from_parts(parts)


# Per language, the parts that add up: counts and float sums add; a kept sentence mean is computed by exactly one
# part (the others hold 0 in its slot), so adding the parts places it exactly.
PART_KEYS = ("over_zero", "n_tokens", "n_sentences", "act_sum", "act_sqsum", "sent_means")
# The same counts per fold of sentences (lens_steer.folds); ``sent_fold`` fills its slots as sent_means does.
FOLD_KEYS = ("fold_over_zero", "fold_n_tokens", "fold_n_sentences", "sent_fold")


def combine_parts(parts: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Combine the parts of one language recorded by several ranks or shards, added in rank order.

    The one merge function of scale-out: rank 0 under torchrun and ``lens-steer merge`` both call it, so the two
    paths give the same bits. Counts and kept sentence means are exact; float sums differ from one process only in
    the order the partial sums are added.

    >>> a = {"over_zero": torch.tensor([2]), "n_tokens": torch.tensor(5), "n_sentences": torch.tensor(1),
    ...      "act_sum": torch.tensor([1.5]), "act_sqsum": torch.tensor([2.0]),
    ...      "sent_means": torch.tensor([[0.25], [0.0]], dtype=torch.float16)}
    >>> b = dict(a, sent_means=torch.tensor([[0.0], [0.75]], dtype=torch.float16))
    >>> both = combine_parts([a, b])
    >>> both["n_tokens"].item(), both["sent_means"].flatten().tolist()
    (10, [0.25, 0.75])
    """
    if len(parts) == 1:
        return parts[0]
    out = {}
    keys = PART_KEYS + tuple(k for k in ("resid_sum", "resid_outer") if all(k in p for p in parts))
    keys += FOLD_KEYS if all(FOLD_KEYS[0] in p for p in parts) else ()
    for key in keys:
        total = parts[0][key].double() if key == "sent_means" else parts[0][key].clone()
        for part in parts[1:]:
            total += part[key]
        out[key] = total.to(parts[0][key].dtype)
    return out


def merge_shards(shards: list[Stats]) -> Stats:
    """Combine the shard runs of ``identify --shard i/n`` (all n of them, once each) into the statistics one process
    would have recorded. Refuses shards of another model, corpus, site or setting, and missing or duplicate shards.
    """
    if not shards:
        raise LensSteerError("merge needs the shard runs of `identify --shard i/n`")
    info = [s.manifest.get("shard") for s in shards]
    if any(i is None for i in info):
        raise LensSteerError("merge combines shard runs (made by `identify --shard i/n`); a run without a shard"
                             " index was given")
    count = info[0]["count"]
    indices = sorted(i["index"] for i in info)
    if any(i["count"] != count for i in info) or indices != list(range(count)):
        missing = sorted(set(range(count)) - set(indices))
        duplicates = sorted({i for i in indices if indices.count(i) > 1})
        raise LensSteerError(f"merge needs each of the {count} shards once: missing {missing or 'none'}, duplicate"
                             f" {duplicates or 'none'}, shard counts {sorted({i['count'] for i in info})}")
    first = shards[0].manifest
    for shard in shards[1:]:
        # Where each shard ran (its device, device map, attention kernel) may differ; what it recorded may not.
        diff = sorted(k for k in set(first) | set(shard.manifest) if k not in ("shard", "placement") and
                      first.get(k) != shard.manifest.get(k))
        if diff:
            raise LensSteerError(f"cannot merge shard {shard.manifest['shard']['index']}: it differs from shard"
                                 f" {first['shard']['index']} in {', '.join(diff)} (another model, corpus, site or"
                                 " setting); record every shard with the same command")
    ordered = sorted(shards, key=lambda s: s.manifest["shard"]["index"])
    parts = [[_language_part(s, k) for s in ordered] for k in range(len(first["languages"]))]
    manifest = {k: v for k, v in first.items() if k != "shard"}
    manifest["merged_shards"] = count
    outer = None
    if all(s.resid_moments is not None for s in ordered):
        outer = sum(s.resid_moments.outer for s in ordered[1:]) + ordered[0].resid_moments.outer
    return Stats.from_parts([combine_parts(p) for p in parts], manifest, resid_outer=outer)


def _language_part(stats: Stats, k: int) -> dict[str, Tensor]:
    """Language ``k`` of a shard's statistics as a part (the recorder's per-language dict)."""
    return {"over_zero": stats.over_zero[..., k], "n_tokens": stats.n_tokens[k], "n_sentences": stats.n_sentences[k],
            "act_sum": stats.act_sum[k], "act_sqsum": stats.act_sqsum[k], "sent_means": stats.sent_means[k],
            **({"resid_sum": stats.resid_sum[k]} if stats.resid_sum is not None else {}),
            **(stats.folds.language_part(k) if stats.folds is not None else {})}
