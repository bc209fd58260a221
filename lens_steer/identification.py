"""Finding language-specific neurons: pure functions of a :class:`~lens_steer.stats.Stats`.

* :func:`lape` - Language Activation Probability Entropy (Tang et al. 2024), exactly as the reference algorithm,
  minus its bugs (languages without neurons keep their slot; NaN-safe).
* :func:`activated` - the paper's "language-activated" baseline: sentence-mean > 0 for every kept sentence.
* :func:`top_k_by_probability` - the k neurons with the highest activation probability per language.
* :func:`ap` - the reference's code-only "AP neurons": per language, the k neurons (across all layers) whose kept
  sentence means best separate that language from the others by average precision; k = the LAPE set's largest
  language, as in the authors' commands.
* :func:`ap_lape` - per language and layer, the intersection of the AP and LAPE sets (their ``maplape.pt``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from lens_steer.corpora import corpus_description, load_corpus
from lens_steer.configs import METHODS, IdentifyConfig, check_rate  # noqa: F401 - declared there, for the CLI
from lens_steer.distributed import World, current
from lens_steer.languages import parse_languages
from lens_steer.models import LoadConfig, load_model
from lens_steer.errors import LensSteerError
from lens_steer.neurons import NeuronSet
from lens_steer.paths import write_json
from lens_steer.recorder import record
from lens_steer.run import MANIFEST_FILE, Run, writes
from lens_steer.stats import Stats, merge_shards, read_manifest

# Elements of one neuron chunk of the AP computation (samples x neurons): about 16 MiB per float64 work tensor.
AP_CHUNK_ELEMENTS = 1 << 21


def lape_entropy(p: Float[Tensor, "*neuron lang"]) -> Float[Tensor, "*neuron"]:
    """LAPE's entropy of each neuron's activation probabilities normalised over the languages (0 log 0 = 0; a
    neuron that never fires, 0/0, has entropy 0). Low = language-specific.

    >>> [round(h, 4) + 0.0 for h in lape_entropy(torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 0.0]])).tolist()]
    [0.0, 0.6931, 0.0]
    """
    p = p.double()
    q = torch.nan_to_num(p / p.sum(dim=-1, keepdim=True), nan=0.0)
    return -(torch.where(q > 0, q * q.log(), torch.zeros_like(q))).sum(dim=-1)


def lape_from_probability(
    p: Float[Tensor, "layer d_mlp lang"], top_rate: float = 0.01, filter_rate: float = 0.95,
    activation_bar_ratio: float = 0.95,
) -> Bool[Tensor, "layer d_mlp lang"]:
    """LAPE on an activation-probability tensor; returns the membership mask ``[layer, d_mlp, lang]``.

    1. q = p normalised over languages (NaN -> 0); H = -sum_k q log q (0 log 0 = 0).
    2. tau = the ``round(filter_rate * N)``-th smallest of all N = L*d*K values of p; neurons whose max p <= tau
       get H = +inf.
    3. Keep the ``round(top_rate * L * d)`` neurons of lowest H, ranked across ALL layers.
    4. Assign each kept neuron to every language k with p > beta, beta = the ``round(activation_bar_ratio * N)``-th
       smallest p.

    >>> p = torch.tensor([[[0.9, 0.0], [0.5, 0.5], [0.0, 0.8], [0.1, 0.1]]])  # 1 layer, 4 neurons, 2 languages
    >>> lape_from_probability(p, top_rate=0.5, filter_rate=0.5, activation_bar_ratio=0.5)[0].int().tolist()
    [[1, 0], [0, 0], [0, 1], [0, 0]]
    """
    if p.ndim != 3:
        raise LensSteerError(f"activation probability must be [layer, d_mlp, lang], got shape {tuple(p.shape)}")
    for name, rate in (("top_rate", top_rate), ("filter_rate", filter_rate),
                       ("activation_bar_ratio", activation_bar_ratio)):
        check_rate(name, rate)
    p = torch.nan_to_num(p.double(), nan=0.0)
    layers, d, k = p.shape
    entropy = lape_entropy(p)  # [layer, d_mlp]
    flat = p.flatten().sort().values
    n = flat.numel()

    def kth_smallest(ratio: float) -> float:
        # The reference's torch.kthvalue(round(ratio * N)) is 1-based; clamp so tiny tensors stay in range.
        return float(flat[min(max(round(ratio * n), 1), n) - 1])

    tau = kth_smallest(filter_rate)
    beta = kth_smallest(activation_bar_ratio)
    entropy[p.amax(dim=-1) <= tau] = float("inf")
    n_keep = round(top_rate * layers * d)
    flat_h = entropy.flatten()
    # Stable sort: ties in entropy are broken by (layer, index), so the result never depends on the sort backend.
    order = torch.sort(flat_h, stable=True).indices[:n_keep]
    # Filtered (+inf) neurons never become candidates, even when fewer than n_keep survive the filter; the
    # reference's topk would take them, but with beta == tau they could never be assigned anyway.
    order = order[torch.isfinite(flat_h[order])]
    candidate = torch.zeros(layers * d, dtype=torch.bool)
    candidate[order] = True
    return candidate.view(layers, d, 1) & (p > beta)


def lape(stats: Stats, top_rate: float = 0.01, filter_rate: float = 0.95,
         activation_bar_ratio: float = 0.95) -> NeuronSet:
    """LAPE language-specific neurons of a run (the paper uses top_rate 0.01). See :func:`lape_from_probability`."""
    mask = lape_from_probability(stats.probability(), top_rate, filter_rate, activation_bar_ratio)
    params = {"top_rate": top_rate, "filter_rate": filter_rate, "activation_bar_ratio": activation_bar_ratio}
    return NeuronSet.from_mask(mask, stats.languages, _provenance("lape", params, stats))


def activated(stats: Stats) -> NeuronSet:
    """The language-activated baseline: neuron j belongs to k when its mean over every kept sentence of k is > 0."""
    if stats.sent_means.shape[1] == 0:
        raise LensSteerError("the 'activated' method needs kept sentence means, but this run kept none; record with"
                             " more text per language")
    mask = (stats.sent_means > 0).all(dim=1).permute(1, 2, 0)  # [lang, layer, d] -> [layer, d, lang]
    return NeuronSet.from_mask(mask, stats.languages, _provenance("activated", {}, stats))


def top_k_by_probability(stats: Stats, k: int) -> NeuronSet:
    """Per language, the ``k`` neurons (across all layers) with the highest activation probability."""
    p = stats.probability()
    layers, d, n_lang = p.shape
    if not 0 < k <= layers * d:
        raise LensSteerError(f"k must be in 1..{layers * d}, got {k}")
    mask = torch.zeros(layers * d, n_lang, dtype=torch.bool)
    top = p.reshape(layers * d, n_lang).topk(k, dim=0).indices  # [k, lang]
    mask.scatter_(0, top, True)
    return NeuronSet.from_mask(mask.view(layers, d, n_lang), stats.languages,
                               _provenance("top_k_by_probability", {"k": k}, stats))


def average_precision(scores: Float[Tensor, "sample neuron"], labels: Int[Tensor, " sample"],
                      n_classes: int) -> Float[Tensor, "cls neuron"]:
    """One-vs-rest average precision of every column of ``scores`` for each class ``c`` in ``range(n_classes)``,
    exactly scikit-learn's ``average_precision_score(labels == c, scores[:, j])``.

    AP = sum over the distinct scores t, high to low, of (R_t - R_prev) * P_t, where P_t and R_t are precision and
    recall of "score >= t": tied scores make ONE step, not one per sample (ties are frequent in float16 means).
    Equivalently AP = mean over the positives j of P at the last sample of j's tie group, which is what is computed,
    for all classes at once: sort each column once, find each sample's tie-group end, and count the positives
    ranked up to it.

    >>> average_precision(torch.tensor([[0.1], [0.4], [0.35], [0.8]]), torch.tensor([0, 0, 1, 1]), 2)[1].item()
    0.8333333333333333
    >>> ties = torch.tensor([[1.0], [1.0], [0.0], [1.0]])  # the three 1.0s are one threshold: P = 1/3 at R = 1/2
    >>> round(average_precision(ties, torch.tensor([1, 0, 1, 0]), 2)[1].item(), 12)
    0.416666666667
    """
    m, c = scores.shape
    if labels.shape != (m,) or (m and not 0 <= int(labels.min()) <= int(labels.max()) < n_classes):
        raise LensSteerError(f"labels must be {m} class ids in 0..{n_classes - 1}")
    labels = labels.long()
    # Neurons as rows so every sort and scan runs along contiguous memory; sort in the input dtype (never round).
    ordered, order = torch.sort(scores.T.contiguous(), dim=1, descending=True)  # [neuron, sample]
    pos = torch.arange(m).expand(c, m)
    last = torch.ones(c, m, dtype=torch.bool)
    last[:, :-1] = ordered[:, :-1] != ordered[:, 1:]  # last sample of its tie group (-0.0 == 0.0, as in numpy)
    # Sorted position of the last sample of each position's tie group: a reverse running minimum over group ends.
    group_end = torch.where(last, pos, m).flip(1).cummin(dim=1).values.flip(1)
    # One key (class, sorted position) per sample, sorted per neuron: class blocks, positions ascending in each.
    by_class = labels.sort().values  # the class of each key slot, the same for every neuron
    keys = (labels[order] * m + pos).sort(dim=1).values
    ends = group_end.gather(1, keys - by_class * m)  # the tie-group end of every positive
    counts = torch.bincount(labels, minlength=n_classes)
    first = (counts.cumsum(0) - counts)[by_class]  # key slot where each class block starts
    # True positives at "score >= this positive's score": same-class keys up to its group end. The whole tie group
    # counts at once, which is sklearn's one step per distinct score.
    true_pos = torch.searchsorted(keys, by_class * m + ends, right=True) - first
    precision = true_pos.double() / (ends + 1)
    total = torch.zeros(c, n_classes, dtype=torch.float64).index_add_(1, by_class, precision)
    return (total / counts).T  # a class without samples is 0/0 = NaN (its recall is undefined)


def ap_scores(stats: Stats) -> Float[Tensor, "lang layer d_mlp"]:
    """Average precision of each neuron's kept sentence means at telling language k from the others (the
    reference's ``count_map_neurons``): scores = the K x N sentence means of the neuron, labels = language == k."""
    k, n, layers, d = stats.sent_means.shape
    if n == 0:
        raise LensSteerError("the AP methods need kept sentence means, but this run kept none; record with more text"
                             " per language")
    scores = stats.sent_means.reshape(k * n, layers * d)
    labels = torch.arange(k).repeat_interleave(n)
    out = torch.empty(k, layers * d, dtype=torch.float64)
    step = max(1, AP_CHUNK_ELEMENTS // (k * n))  # bounds memory: no [K*N, L*D] float64 copy
    for start in range(0, layers * d, step):
        out[:, start : start + step] = average_precision(scores[:, start : start + step], labels, k)
    return out.view(k, layers, d)


def top_k_per_language(scores: Float[Tensor, "lang layer d_mlp"], k: int) -> Bool[Tensor, "layer d_mlp lang"]:
    """Per language, the ``k`` highest scores across all layers; ties go to the lower (layer, neuron), as with the
    reference's stable (mergesort) pandas sort.

    >>> s = torch.tensor([[[0.5, 0.9], [0.9, 0.1]]])  # 1 language, 2 layers x 2 neurons
    >>> top_k_per_language(s, 2)[..., 0].int().tolist()
    [[0, 1], [1, 0]]
    """
    n_lang, layers, d = scores.shape
    if not 0 <= k <= layers * d:
        raise LensSteerError(f"k must be in 0..{layers * d}, got {k}")
    order = torch.sort(scores.reshape(n_lang, layers * d), dim=1, descending=True, stable=True).indices[:, :k]
    mask = torch.zeros(n_lang, layers * d, dtype=torch.bool).scatter_(1, order, True)
    return mask.view(n_lang, layers, d).permute(1, 2, 0)


def ap(stats: Stats, k: int | None = None, top_rate: float = 0.01, filter_rate: float = 0.95,
       activation_bar_ratio: float = 0.95) -> NeuronSet:
    """AP neurons: per language, the ``k`` neurons with the highest :func:`ap_scores` across all layers.

    ``k=None`` takes the reference's rule: k = the largest per-language size of the LAPE set computed with the same
    ``top_rate`` / ``filter_rate`` / ``activation_bar_ratio`` (their ``--top_k`` flag is lape.py's "maximum neurons
    in a language"); those three only matter for k then.
    """
    lape_params = {"top_rate": top_rate, "filter_rate": filter_rate, "activation_bar_ratio": activation_bar_ratio}
    lape_mask = lape_from_probability(stats.probability(), **lape_params) if k is None else None
    k, params = _ap_k(stats, k, lape_mask)
    if lape_mask is not None:
        params.update(lape_params)
    mask = top_k_per_language(ap_scores(stats), k)
    return NeuronSet.from_mask(mask, stats.languages, _provenance("ap", params, stats))


def ap_lape(stats: Stats, k: int | None = None, top_rate: float = 0.01, filter_rate: float = 0.95,
            activation_bar_ratio: float = 0.95) -> NeuronSet:
    """Per language and layer, the intersection of the :func:`ap` set and the :func:`lape` set (the reference's
    ``overlap_neurons.py``, ``maplape.pt``); k as in :func:`ap`."""
    lape_params = {"top_rate": top_rate, "filter_rate": filter_rate, "activation_bar_ratio": activation_bar_ratio}
    lape_mask = lape_from_probability(stats.probability(), **lape_params)
    k, params = _ap_k(stats, k, lape_mask)
    mask = top_k_per_language(ap_scores(stats), k) & lape_mask
    return NeuronSet.from_mask(mask, stats.languages, _provenance("ap-lape", {**params, **lape_params}, stats))


def _ap_k(stats: Stats, k: int | None, lape_mask: Tensor | None) -> tuple[int, dict[str, Any]]:
    """k for the AP methods (explicit, or the LAPE set's largest language) and its provenance entries."""
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, int) or not 0 < k <= stats.n_layers * stats.d_mlp:
            raise LensSteerError(f"k must be an integer in 1..{stats.n_layers * stats.d_mlp}, got {k!r}")
        return k, {"k": k, "k_rule": "explicit"}
    assert lape_mask is not None
    k = int(lape_mask.sum(dim=(0, 1)).max()) if lape_mask.numel() else 0
    if k == 0:
        raise LensSteerError("the AP methods take k = the largest LAPE language, but the LAPE set is empty; raise"
                             " --top-rate, lower --activation-bar, or pass k explicitly")
    return k, {"k": k, "k_rule": "largest LAPE language"}


def identify(stats: Stats, method: str = "lape", **params: Any) -> NeuronSet:
    """Dispatch by method name (``lape``, ``activated``, ``ap`` or ``ap-lape``)."""
    if method == "lape":
        return lape(stats, **params)
    if method == "activated":
        return activated(stats)
    if method == "ap":
        return ap(stats, **params)
    if method == "ap-lape":
        return ap_lape(stats, **params)
    raise LensSteerError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")


def write_identification(run_dir: str | Path, neurons: NeuronSet) -> dict[str, Any]:
    """Record how ``neurons`` was identified (method and parameters) as ``"identification"`` in the run's
    ``manifest.json``, written atomically; returns that object."""
    manifest = read_manifest(run_dir)
    record = {"method": neurons.provenance.get("method"), **neurons.provenance.get("params", {})}
    manifest["identification"] = record
    write_json(Path(run_dir) / MANIFEST_FILE, manifest)
    return record


def _provenance(method: str, params: dict[str, Any], stats: Stats) -> dict[str, Any]:
    m = stats.manifest
    return {"method": method, "params": params,
            "stats": {key: m.get(key) for key in ("model", "corpus", "site", "dtype", "bos", "reference_compat",
                                                   "max_tokens", "n_sentence_means", "lens_steer_version")},
            "stats_fingerprint": stats.fingerprint()}


@writes("identify")
def identify_for_run(run: Run, config: IdentifyConfig, load: LoadConfig | str | None = None,
                     world: World | None = None) -> tuple[Stats, NeuronSet | None]:
    """Record the corpus into the run directory (resuming finished languages), identify, and write
    ``neurons.json`` and the manifest's ``identification``.

    Under torchrun every rank records its share and gets the same statistics and neurons; rank 0 alone writes. A
    shard run (``world`` from :func:`~lens_steer.distributed.parse_shard`) writes its part of the statistics and
    the identification settings, and identifies nothing (None): ``lens-steer merge`` does, on all the shards."""

    world = world or current()
    texts = load_corpus(config.corpus, parse_languages(config.langs), split=config.split, path=config.corpus_path)
    model = load_model(config.model, load)
    run.refuse_other_model(model.identity)
    config.check_for_model(model.site.n_layers, model.site.d_mlp)  # before the recording, which is the long part
    stats = record(model, texts, config=config.record, run_dir=run.path, progress=config.progress, world=world,
                   corpus=corpus_description(config.corpus, config.split, config.corpus_path))
    if world.sharded:
        write_pending_identification(run.path, config.method, config.params())
        return stats, None
    neurons = identify(stats, config.method, **config.params())
    write_neurons(run, neurons)  # rank 0 writes; every rank waits for it when the run's lock is released
    return stats, neurons


def write_neurons(run: Run, neurons: NeuronSet) -> None:
    """Write a run's new neuron set: first move the results of a previous, different one aside
    (:meth:`~lens_steer.run.Run.retire_derived`), then ``neurons.json`` and the manifest's ``identification``.
    An empty set is written (it is a result) with a one-line warning. Under torchrun only rank 0 writes."""
    if not current().writes:
        return
    run.retire_derived(neurons.fingerprint())
    neurons.save(run.path)
    write_identification(run.path, neurons)
    if not sum(neurons.totals().values()):
        params = neurons.provenance.get("params", {})
        warnings.warn(f"no language-specific neurons were found ({neurons.provenance.get('method')}, {params}); raise"
                      " --top-rate or lower --activation-bar / --filter-rate", stacklevel=2)


def write_pending_identification(run_dir: str | Path, method: str, params: dict[str, Any]) -> None:
    """A shard run records how its merged run is to be identified (``"identify"`` in its manifest)."""
    manifest = read_manifest(run_dir)
    manifest["identify"] = {"method": method, **params}
    write_json(Path(run_dir) / MANIFEST_FILE, manifest)


def merge_for_run(shard_dirs: list[str | Path], out: Run) -> tuple[Stats, NeuronSet]:
    """``lens-steer merge``: combine shard runs into ``out`` and identify it as the shards were told to."""
    shards = [Run(d).stats() for d in shard_dirs]
    pending = [s.manifest.get("identify") for s in shards]
    stats = merge_shards(shards)  # refuses mixed settings, missing and duplicate shards before anything is written
    if pending[0] is None or any(p != pending[0] for p in pending):
        raise LensSteerError("the shards do not agree on how to identify (their manifests' 'identify'); record every"
                             " shard with the same `identify --shard` command")
    out.refuse_other_model(stats.manifest["model"])
    params = {k: v for k, v in pending[0].items() if k != "method"}
    neurons = identify(stats, pending[0]["method"], **params)
    stats.manifest.pop("identify", None)
    with out.writing("merge"):
        stats.save(out.path)
        write_neurons(out, neurons)
    return stats, neurons
