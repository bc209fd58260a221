"""Streaming neuron statistics: run a model over text in K languages and accumulate, inside hooks, what LAPE and the
p_max / p_median factors need. Memory is O(layers x d_mlp x languages): activations are never cached.

Per language the recorder

1. tokenises every sentence on its own (no chat template; BOS prepended when the model uses one),
2. keeps whole sentences, in corpus order, up to the token budget,
3. runs them in length-sorted, padded batches with an explicit ``padding_side`` and ``attention_mask``,
4. counts, per layer and neuron, the real tokens whose value is > 0 (BOS and pads excluded), sums the value and
   its square, and keeps the per-sentence mean of the first N sentences with at least ``min_sentence_tokens``
   counted tokens (the same N for every language), rounded to float16 as stored (so p_max / p_median computed
   in memory, from disk, or after merging shards are the same numbers).

``reference_compat=True`` records as the authors' ``get_activations.py`` does instead: no BOS, each sentence
prefixed with ``REFERENCE_PREFIX`` (a newline and 12 spaces, their ``Flores`` prompt), tokenised with
``add_special_tokens=False``, and the first ``REFERENCE_SKIP`` = 2 tokens of every sentence not counted. Sentence
means are then kept for the first N sentences whatever their length, as theirs are (a sentence with nothing left
to count after the 2 skipped tokens has no mean and is dropped; theirs would store NaN).

Sites (``site=``): ``act`` (default) is the paper's neuron value ``act_fn(gate)``; it is > 0 exactly when
``hook_pre > 0``. ``post`` is TransformerLens's ``mlp.hook_post`` (``act_fn(gate) * up`` for gated MLPs).

Where the value is read: for HF models, a forward hook on each MLP's own activation module sees ``act_fn(gate)``
as the model computes it (verified against ``blocks.{l}.mlp.hook_pre`` by :meth:`lens_steer.models.Model.act_modules`);
other models go through the bridge's ``hook_pre`` and apply act_fn in the hook. Both give bit-identical statistics
(tested); the first skips recomputing act_fn, which was the largest cost of recording on CPU.

Every finished language is written to ``RUN_DIR/partial/<lang>.safetensors``; a restarted run with the same
settings skips it (per-language resume).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from lens_steer.version import __version__
from lens_steer.configs import SITES, RecordConfig  # noqa: F401 - declared there, torch-free, for the CLI
from lens_steer.distributed import (World, broadcast_from_main, check_all, current, deal, gather_to_main,
                                    merge_timer)
from lens_steer.errors import LensSteerError
from lens_steer.folds import fold_of
from lens_steer.models import ACT_FNS, MLPSite, Model, ModelLike, as_model
from lens_steer.paths import atomic_path
from lens_steer.run import PARTIAL_DIR
from lens_steer.stats import Stats, combine_parts

# The authors' recording text (data_sets.py ``Flores`` with is_predict=False): f"""\n            {sentence}""".
REFERENCE_PREFIX = "\n" + " " * 12
REFERENCE_SKIP = 2  # their slice starts at token 2 (apply_template=False), so 2 leading tokens are never counted


@dataclass
class _Tokenised:
    ids: list[list[int]]  # per kept sentence, BOS (or the reference's prefix) included
    n_counted: list[int]  # counted tokens per sentence (BOS, or the reference's 2 leading tokens, excluded)


def tokenise(model: Model, sentences: Sequence[str], config: RecordConfig) -> _Tokenised:
    """Tokenise sentences one by one, prepend BOS when the model uses it, and apply the token budget.

    With ``config.reference_compat`` each row is ``REFERENCE_PREFIX + sentence`` tokenised as one string, without
    BOS, and its first ``REFERENCE_SKIP`` tokens are not counted.
    """
    tok = model.tokenizer
    bos = None if config.reference_compat else model.bos
    prefix = REFERENCE_PREFIX if config.reference_compat else ""
    skip = _skipped(model, config)
    ids: list[list[int]] = []
    counted: list[int] = []
    total = 0
    for text in sentences:
        piece = tok(prefix + text, add_special_tokens=False)["input_ids"]
        row = ([bos] if bos is not None else []) + list(piece)
        row = row[: config.max_length]
        n = len(row) - skip
        if n <= 0:
            continue
        if config.max_tokens is not None and total + n > config.max_tokens:
            break  # whole sentences only: the budget is never exceeded
        ids.append(row)
        counted.append(n)
        total += n
    return _Tokenised(ids, counted)


def _skipped(model: Model, config: RecordConfig) -> int:
    """Leading tokens of every row that are run but not counted: the reference's 2, else the BOS if any."""
    if config.reference_compat:
        return REFERENCE_SKIP
    return 1 if model.bos is not None else 0


class _Accumulator:
    """Per-language running statistics, filled by hooks.

    They live on one statistics ``device`` (the model's first; the CPU for devices without float64) in float64
    whatever the model's dtype: a model split over devices gives the same numbers as on one, and on a GPU no hook
    waits for a copy to the host (the totals move to the CPU once per language)."""

    def __init__(self, site: MLPSite, n_keep: int, device: torch.device | str = "cpu", d_model: int = 0,
                 n_folds: int = 1, resid_cov: bool = False):
        layers, d = site.n_layers, site.d_mlp
        device = torch.device(device)
        self.device = device if device.type in ("cpu", "cuda") else torch.device("cpu")
        zeros = dict(dtype=torch.float64, device=self.device)
        self.over_zero = torch.zeros(layers, d, **zeros)
        self.act_sum = torch.zeros(layers, d, **zeros)
        self.act_sqsum = torch.zeros(layers, d, **zeros)
        self.sent_means = torch.zeros(n_keep, layers, d, dtype=torch.float32, device=self.device)
        self.resid_sum = torch.zeros(layers, d_model, **zeros)  # the residual stream after each layer
        # Its sum of outer products x x^T (lens_steer.resid_cov): L x d_model^2 float64, only when asked for.
        self.resid_outer = torch.zeros(layers, d_model, d_model, **zeros) if resid_cov else None
        self.fold_over_zero = torch.zeros(layers, n_folds, d, **zeros)  # over_zero per fold of sentences
        self.row_fold: Tensor = torch.zeros(0, dtype=torch.long, device=self.device)  # set per batch: each row's fold
        # Set per batch by the driver loop: the counted mask and which rows keep their sentence mean (and where).
        self.counted: Tensor = torch.zeros(0)
        self.keep_rows: Tensor = torch.zeros(0, dtype=torch.long)
        self.keep_slots: Tensor = torch.zeros(0, dtype=torch.long)
        self._index_of: Tensor | None = None
        self._index: dict[torch.device, tuple[Tensor, Tensor, Tensor]] = {}

    def _batch_index(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """(flat index, row of each counted token, counted tokens per row) of the current batch on ``device``, computed
        once per batch and device (a model split over devices runs its layers on several)."""
        if self._index_of is not self.counted:
            self._index, self._index_of = {}, self.counted
        if device not in self._index:
            mask = self.counted.to(device) > 0  # [batch, pos]
            flat = mask.reshape(-1).nonzero()[:, 0]  # counted tokens as rows of the flattened [batch * pos] layout
            self._index[device] = (flat, torch.div(flat, mask.shape[1], rounding_mode="floor"), mask.sum(dim=1))
        return self._index[device]

    def add(self, layer: int, raw: Float[Tensor, "batch pos d_mlp"],
            act_fn: Callable[[Tensor], Tensor] | None = None) -> None:
        """Accumulate one layer's batch. ``raw`` is the neuron value itself (``act_fn(gate)``, or hook_post), or with
        ``act_fn`` the gate pre-activation hook_pre (value = act_fn(raw)). A neuron fires where its value is > 0:
        ``act_fn(gate) > 0``, the paper's definition (for SiLU/GELU/ReLU the same as ``gate > 0``)."""
        flat, row_of, per_row = self._batch_index(raw.device)
        # Select the counted tokens once: pads and BOS never enter a sum, and act_fn runs only on real tokens
        # (index_select of precomputed rows: cheaper than a boolean mask, which searches the mask every call).
        v = raw.reshape(-1, raw.shape[-1]).index_select(0, flat).float()  # [n, d_mlp]
        if act_fn is not None:
            v = act_fn(v)
        # sign().clamp(0) is 1.0 where v > 0, else 0 (NaN stays NaN and is caught per language): about twice as
        # fast on CPU as (v > 0).sum(0), and exact in float32 for any batch (< 2**24 tokens).
        here = self.device
        # Fired tokens per sentence, then per fold (row_fold) and in total: both exact integers.
        row_fired = torch.zeros(raw.shape[0], raw.shape[-1], dtype=v.dtype, device=v.device).index_add_(
            0, row_of, v.sign().clamp_(min=0))
        row_fired = row_fired.to(here, torch.float64)
        self.over_zero[layer] += row_fired.sum(dim=0)
        self.fold_over_zero[layer].index_add_(0, self.row_fold, row_fired)
        # Per-sentence sums in one pass; the token sum and the kept sentence means both come from them.
        row_sums = torch.zeros(raw.shape[0], raw.shape[-1], dtype=v.dtype, device=v.device).index_add_(0, row_of, v)
        self.act_sum[layer] += row_sums.sum(dim=0).to(here, torch.float64)
        self.act_sqsum[layer] += v.square().sum(dim=0).to(here, torch.float64)
        if self.keep_rows.numel():
            rows = self.keep_rows.to(raw.device)
            means = row_sums[rows] / per_row[rows, None]
            self.sent_means[self.keep_slots.to(here), layer] = means.to(here)


    def add_resid(self, layer: int, resid: Float[Tensor, "batch pos d_model"]) -> None:
        """Accumulate the residual stream after ``layer`` over the counted tokens (for residual DiffMean)."""
        flat, _, _ = self._batch_index(resid.device)
        picked = resid.reshape(-1, resid.shape[-1]).index_select(0, flat)
        self.resid_sum[layer] += picked.sum(dim=0, dtype=torch.float32).to(self.device, torch.float64)
        if self.resid_outer is not None:  # float64 products: the covariance subtracts the mean's square from it
            x = picked.to(torch.float64)
            self.resid_outer[layer] += (x.T @ x).to(self.device)

    def to_cpu(self) -> None:
        """Move the totals to the CPU (once per language), where the statistics are combined and written."""
        for name in ("over_zero", "act_sum", "act_sqsum", "sent_means", "resid_sum", "fold_over_zero", "resid_outer"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name).cpu())


class _FastPathFailed(Exception):
    """An activation module was not called exactly once per layer in a forward: record with the bridge hooks."""


@contextmanager
def _recording_hooks(model: Model, site: MLPSite, config: RecordConfig,
                     acc: _Accumulator) -> Iterator[Callable[[], None]]:
    """Attach the statistics hooks for one language; yields a check to call after every forward.

    Site ``act`` reads ``act_fn(gate)`` from the forward hook of the HF MLP's activation module when
    :meth:`~lens_steer.models.Model.act_modules` has verified it (no recomputation of act_fn), else from the bridge's
    ``hook_pre`` through act_fn. Site ``post`` reads ``hook_post``. The residual stream after each layer is summed
    from the HF decoder layer's output alongside the fast path (the same tensor as ``blocks.{l}.hook_resid_post``,
    tested), else from that bridge hook. All hooks are removed on exit, errors included.
    """
    mods = model.act_modules() if config.site == "act" else None
    if mods is None:
        act_fn = ACT_FNS[site.act_fn]

        def from_pre(pre: Tensor, hook: Any) -> None:  # gate pre-activation: value = act_fn(pre)
            acc.add(hook.layer(), pre, act_fn)

        def from_post(post: Tensor, hook: Any) -> None:  # the down_proj input itself
            acc.add(hook.layer(), post)

        def resid(x: Tensor, hook: Any) -> None:
            acc.add_resid(hook.layer(), x)

        which, fn = ("hook_pre", from_pre) if config.site == "act" else ("hook_post", from_post)
        hooks = [(site.name(which, layer), fn) for layer in range(site.n_layers)]
        hooks += [(f"blocks.{layer}.hook_resid_post", resid) for layer in range(site.n_layers)]
        with model.bridge.hooks(fwd_hooks=hooks):
            yield lambda: None
        return
    calls = [0] * site.n_layers

    def reader(layer: int) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: tuple, out: Tensor) -> None:  # out = act_fn(gate), the neuron value
            calls[layer] += 1
            acc.add(layer, out)
        return hook

    def layer_out(layer: int) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: tuple, out: Any) -> None:  # the decoder layer's output
            acc.add_resid(layer, out[0] if isinstance(out, tuple) else out)
        return hook

    def check() -> None:
        if any(c != 1 for c in calls):
            raise _FastPathFailed
        calls[:] = [0] * site.n_layers

    handles = [m.register_forward_hook(reader(layer)) for layer, m in enumerate(mods)]
    handles += [model.bridge.blocks[layer].original_component.register_forward_hook(layer_out(layer))
                for layer in range(site.n_layers)]
    try:
        yield check
    finally:
        for h in handles:
            h.remove()


def plan_batches(lengths: Sequence[int], batch_size: int, min_fill: float = 0.8,
                 max_slots: int | None = None) -> list[list[int]]:
    """Group sentences into length-sorted batches of at most ``batch_size`` rows and ``max_slots`` padded token slots
    (default ``32 * batch_size``), closing a batch early when padding would take more than ``1 - min_fill`` of its
    slots. Compute is proportional to slots, and the slot cap keeps peak memory independent of the corpus size.
    The sort is stable, so equal lengths keep corpus order; the statistics never depend on the grouping.

    >>> plan_batches([5, 50, 6, 48, 7], batch_size=16)
    [[0, 2, 4], [3, 1]]
    >>> plan_batches([100] * 5, batch_size=16, max_slots=250)
    [[0, 1], [2, 3], [4]]
    """
    max_slots = max_slots or 32 * batch_size
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    total = 0
    for i in order:
        n = lengths[i]  # the longest so far: rows come in ascending length
        rows = len(cur) + 1
        if cur and (rows > batch_size or rows * n > max_slots or total + n < min_fill * rows * n):
            batches.append(cur)
            cur, total = [], 0
        cur.append(i)
        total += n
    if cur:
        batches.append(cur)
    return batches


def _language_plan(data: _Tokenised, config: RecordConfig, world: World) -> tuple[list[list[int]], list[int]]:
    """One language's batches, planned exactly as one process plans them, and the rank each is dealt to (by padded
    token slots, the cost of a forward)."""
    batches = plan_batches([len(r) for r in data.ids], config.batch_size)
    return batches, deal([len(b) * max(len(data.ids[i]) for i in b) for b in batches], world.size)


def _tokens_per_rank(data: _Tokenised, batches: list[list[int]], owners: list[int], size: int) -> list[int]:
    """The counted tokens of each rank's batches (they sum to the language's n_tokens)."""
    tokens = [0] * size
    for batch, rank in zip(batches, owners):
        tokens[rank] += sum(data.n_counted[i] for i in batch)
    return tokens


def _run_language(model: Model, site: MLPSite, data: _Tokenised, keep: list[int], config: RecordConfig,
                  batches: list[list[int]], desc: str, progress: bool) -> dict[str, Tensor]:
    """Record one language over ``batches`` (all of them, or one rank's share): its part of the statistics.
    ``keep`` lists the sentence indices whose means are kept (slot = position in keep)."""
    try:
        result = _record_language(model, site, data, keep, config, batches, desc, progress)
    except _FastPathFailed:  # the activation modules stopped matching the probe (e.g. processed weights since)
        model.forget_act_modules()
        result = _record_language(model, site, data, keep, config, batches, desc, progress)
    if not bool(torch.isfinite(result["act_sum"]).all()):
        raise LensSteerError(f"{desc}: the model produced NaN/inf MLP activations; load it in float32 (--dtype"
                             " float32) or check its weights")
    return result


def _record_language(model: Model, site: MLPSite, data: _Tokenised, keep: list[int], config: RecordConfig,
                     batches: list[list[int]], desc: str, progress: bool) -> dict[str, Tensor]:
    n_folds = config.folds
    acc = _Accumulator(site, len(keep), model.device, int(model.cfg.d_model), n_folds, config.resid_cov)
    slot_of = {s: i for i, s in enumerate(keep)}
    skip_first = _skipped(model, config)
    model.masked_logits_ok(), model.direct_ok()  # probed (once) before any statistics hook: their forwards must not count
    mine = [i for batch in batches for i in batch]
    with (tqdm(total=sum(data.n_counted[i] for i in mine), desc=desc, unit="tok", disable=not progress,
               leave=False) as bar, torch.inference_mode(), _recording_hooks(model, site, config, acc) as check):
        direct = model.goes_direct()  # decided once: this loop's hooks are attached and stay as they are
        for batch in batches:
            ids, attn, acc.counted = model.padded([data.ids[i] for i in batch], config.padding_side, skip_first)
            rows = [r for r, i in enumerate(batch) if i in slot_of]
            acc.keep_rows = torch.tensor(rows, dtype=torch.long)
            acc.keep_slots = torch.tensor([slot_of[batch[r]] for r in rows], dtype=torch.long)
            acc.row_fold = torch.tensor([fold_of(i, n_folds) for i in batch], dtype=torch.long, device=acc.device)
            model.activations_forward(ids, attn, direct)
            check()
            bar.update(int(acc.counted.sum()))
    acc.to_cpu()
    return {
        "over_zero": acc.over_zero.round().to(torch.int64),
        "n_tokens": torch.tensor(sum(data.n_counted[i] for i in mine), dtype=torch.int64),
        "n_sentences": torch.tensor(len(mine), dtype=torch.int64),
        "act_sum": acc.act_sum,
        "act_sqsum": acc.act_sqsum,
        # Rounded to float16 here, as stored on disk (and by the reference): p_max / p_median are then the same
        # numbers in memory, in stats.safetensors, after a resume and after merging shards.
        "sent_means": acc.sent_means.to(torch.float16),
        "resid_sum": acc.resid_sum,
        **({"resid_outer": acc.resid_outer} if acc.resid_outer is not None else {}),
        # The same counts per fold of sentences (lens_steer.folds): they add up exactly to the totals above.
        "fold_over_zero": acc.fold_over_zero.round().to(torch.int64).transpose(0, 1).contiguous(),  # [F, L, D]
        "fold_n_tokens": _per_fold([data.n_counted[i] for i in mine], mine, n_folds),
        "fold_n_sentences": _per_fold([1] * len(mine), mine, n_folds),
        "sent_fold": torch.tensor([fold_of(i, n_folds) for i in keep], dtype=torch.int64) * _owned(keep, mine),
    }


def _per_fold(values: list[int], sentences: list[int], n_folds: int) -> Tensor:
    """``values`` (one per sentence) summed per fold of the sentences."""
    out = torch.zeros(n_folds, dtype=torch.int64)
    for v, i in zip(values, sentences):
        out[fold_of(i, n_folds)] += v
    return out


def _owned(keep: list[int], mine: list[int]) -> Tensor:
    """1 for the kept sentences this process recorded, else 0: a kept slot is filled by exactly one part, so
    parts add (as the kept sentence means do)."""
    owned = set(mine)
    return torch.tensor([int(i in owned) for i in keep], dtype=torch.int64)


def record(model: ModelLike, texts: dict[str, Sequence[str]], *, config: RecordConfig | None = None,
           run_dir: str | Path | None = None, corpus: dict[str, Any] | None = None, progress: bool = True,
           world: World | None = None) -> Stats:
    """Record neuron statistics of ``model`` over ``texts`` (language code -> sentences, in corpus order).

    Args:
        model: a :class:`~lens_steer.models.Model` from :func:`~lens_steer.models.load_model`, or any
            TransformerBridge with MLP hooks.
        texts: sentences per language; the dict order is the language order of every tensor.
        config: recording settings (:class:`RecordConfig`).
        run_dir: if given, finished languages are saved to ``run_dir/partial`` and reused by a restarted run,
            and the final ``stats.safetensors`` / ``sent_means.safetensors`` / ``manifest.json`` are written.
        corpus: description of the text source for the manifest (name, split, path).
        progress: show tqdm progress bars (rank 0 only).
        world: who records what (:mod:`lens_steer.distributed`); default: torchrun's world, else one process.
            Under torchrun each rank records its dealt batches, rank 0 combines the parts, writes the run, and
            every rank returns the same statistics. A shard (``parse_shard``) records its batches only and
            returns (and writes) its part, for :func:`~lens_steer.stats.merge_shards`.

    Returns:
        The :class:`~lens_steer.stats.Stats` (tensors as in the contract, manifest included).

    >>> texts = load_corpus("udhr", ["en", "fr"])  # doctest: +SKIP
    >>> stats = record(bridge, texts, config=RecordConfig(max_tokens=2000), progress=False)
    >>> stats.over_zero.shape  # [layer, d_mlp, language]; Gemma-3-270M: torch.Size([18, 2048, 2])
    torch.Size([2, 64, 2])
    """
    config = config or RecordConfig()
    world = world or current()
    model = as_model(model)
    site = model.site
    tokenised = _tokenise_all(model, texts, config)
    keep = _kept_sentences(tokenised, config)
    plans = {code: _language_plan(data, config, world) for code, data in tokenised.items()}
    manifest = _manifest(model, site, config, list(texts), corpus, n_keep=len(next(iter(keep.values()))))
    manifest.update(world_size=world.size, tokens_per_rank={
        code: _tokens_per_rank(tokenised[code], *plans[code], world.size) for code in tokenised})
    if world.sharded:
        manifest["shard"] = {"index": world.rank, "count": world.size}
    partial_dir = Path(run_dir) / PARTIAL_DIR if run_dir is not None and world.writes else None
    progress = progress and world.writes
    results: dict[str, dict[str, Tensor]] = {}
    outer: list[Tensor | None] = []  # the residual's outer products, pooled as each language comes (K x would not fit)
    for code, data in tqdm(tokenised.items(), desc="languages", disable=not progress or len(texts) == 1):
        key = _resume_key(manifest, code, data, keep[code])
        cached = broadcast_from_main(_load_partial(partial_dir, code, key) if partial_dir else None)
        if cached is None:
            batches, owners = plans[code]
            cached = _record_part(model, site, data, keep[code], config, [batches[i] for i in world.mine(owners)],
                                  code, progress)
            if partial_dir is not None:
                _save_partial(partial_dir, code, key, cached)
        results[code] = cached
        outer = _pool(outer, cached.pop("resid_outer", None) if config.resid_cov else None)
    stats = Stats.from_parts([results[c] for c in texts], manifest, resid_outer=outer[0] if outer else None)
    if run_dir is not None and world.writes:
        stats.save(run_dir)
    return stats


def _pool(pooled: list[Tensor | None], outer: Tensor | None) -> list[Tensor | None]:
    """The languages' sums of residual outer products added in language order; [None] once one has none."""
    if not pooled:
        return [outer]
    return [None if pooled[0] is None or outer is None else pooled[0] + outer]


def _record_part(model: Model, site: MLPSite, data: _Tokenised, keep: list[int], config: RecordConfig,
                 batches: list[list[int]], code: str, progress: bool) -> dict[str, Tensor]:
    """Record this process's batches of one language; under torchrun, every rank's parts combined (the function
    that merges shard runs), the same on every rank. A failure on any rank stops every rank with its message."""
    part, error = None, None
    try:
        part = _run_language(model, site, data, keep, config, batches, desc=code, progress=progress)
    except Exception as exc:  # noqa: BLE001 - re-raised on every rank by check_all
        error = exc
    check_all(error)  # also where a rank that finished early waits for the others
    with merge_timer():
        parts = gather_to_main(part)
        return broadcast_from_main(combine_parts(parts) if parts is not None else None)


def _tokenise_all(model: Model, texts: dict[str, Sequence[str]], config: RecordConfig) -> dict[str, _Tokenised]:
    if not texts:
        raise LensSteerError("no languages to record; pass at least one language with --langs")
    tokenised: dict[str, _Tokenised] = {}
    for code, sentences in texts.items():
        data = tokenise(model, sentences, config)
        if not data.ids:
            raise LensSteerError(f"language {code!r} has no text to record (empty corpus, or --max-tokens smaller than"
                                 f" its first sentence); give it text or drop it from --langs")
        tokenised[code] = data
    return tokenised


def _kept_sentences(tokenised: dict[str, _Tokenised], config: RecordConfig) -> dict[str, list[int]]:
    """Per language, the indices of the sentences whose means are kept: the first N eligible ones."""
    # The same N for every language: the p_max of one language must not come from more sentences than another's.
    eligible = {code: [i for i, n in enumerate(d.n_counted) if n >= config.mean_min_tokens]
                for code, d in tokenised.items()}
    n_keep = min([config.n_sentence_means] + [len(v) for v in eligible.values()])
    if n_keep == 0 and config.n_sentence_means > 0:
        short = min(eligible, key=lambda c: len(eligible[c]))
        warnings.warn(f"no sentence means kept: {short!r} has no sentence with >= {config.mean_min_tokens} counted"
                      " tokens, so p_max/p_median are undefined (NaN); give it longer text", stacklevel=3)
    return {code: v[:n_keep] for code, v in eligible.items()}


def _manifest(model: Model, site: MLPSite, config: RecordConfig, languages: list[str],
              corpus: dict[str, Any] | None, n_keep: int) -> dict[str, Any]:
    """Everything that decides the numbers (it is also the resume key's input) plus provenance."""
    identity = model.identity
    return {
        "lens_steer_version": __version__,
        "languages": languages,
        "model": identity,
        "corpus": corpus or {"name": "in-memory"},
        "site": config.site,
        "site_meaning": ("act_fn(gate), counted where > 0 (= mlp.hook_pre > 0)" if config.site == "act"
                         else "mlp.hook_post = act_fn(gate) * up"),
        "mlp": site.as_dict(),
        "dtype": identity.get("dtype"),
        "placement": model.placement(),
        "bos": _bos_description(model, config),
        "template": None,
        "reference_compat": config.reference_compat,
        "text_prefix": REFERENCE_PREFIX if config.reference_compat else "",
        "leading_tokens_skipped": _skipped(model, config),
        "sent_means_dtype": "float16",
        "padding_side": config.padding_side,
        "batch_size": config.batch_size,
        "max_tokens": config.max_tokens,
        "max_length": config.max_length,
        "n_sentence_means_requested": config.n_sentence_means,
        "n_sentence_means": n_keep,
        "min_sentence_tokens": config.mean_min_tokens,
        "resid_means": "blocks.{l}.hook_resid_post (the decoder layer's output), summed over the counted tokens",
        **({"resid_cov": "sum of x x^T of blocks.{l}.hook_resid_post over the counted tokens, float64, pooled over"
                         " the languages"} if config.resid_cov else {}),
        "folds": config.folds,
    }


def _bos_description(model: Model, config: RecordConfig) -> str:
    if config.reference_compat:
        return "none (reference-compatible recording)"
    return "prepended, excluded from counts" if model.bos is not None else "none"


def _resume_key(manifest: dict[str, Any], code: str, data: _Tokenised, keep: list[int]) -> str:
    """A digest of everything that decides one language's numbers (settings and the exact token ids)."""
    # Not in the key: what never changes the numbers of a whole language (how many processes shared it, batch
    # size, padding). A shard's part depends on its index and on the batches dealt, so there they stay.
    ignored = {"languages", "padding_side", "world_size", "tokens_per_rank", "placement"} | (
        set() if "shard" in manifest else {"batch_size"})
    settings = {k: v for k, v in manifest.items() if k not in ignored}
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    h.update(code.encode())
    h.update(json.dumps(data.ids).encode())
    h.update(json.dumps(keep).encode())
    return h.hexdigest()[:32]


def _save_partial(partial_dir: Path, code: str, key: str, result: dict[str, Tensor]) -> None:
    with atomic_path(partial_dir / f"{code}.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in result.items()}, str(tmp), metadata={"key": key})


def _load_partial(partial_dir: Path, code: str, key: str) -> dict[str, Tensor] | None:
    path = partial_dir / f"{code}.safetensors"
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("key") != key:
                return None  # recorded with other settings or text: recompute
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError):
        return None  # a damaged partial is recomputed, never trusted
