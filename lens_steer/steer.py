"""Steering hooks: the interventions of :mod:`lens_steer.factors` compiled against a neuron set and statistics, and
installed on the model for the duration of a block.

Every neuron factor acts on the neuron value ``act = act_fn(gate)`` of the selected neurons as an affine map
``act' = alpha * act + beta``. TransformerLens exposes ``hook_post = act * up`` (gated MLPs), so the hook writes
``hook_post' = alpha * hook_post + beta * up`` with ``up`` taken from ``hook_pre_linear`` of the same forward. For
non-gated MLPs, and for statistics recorded with ``--site post``, the neuron value *is* ``hook_post`` and the hook
writes ``hook_post' = alpha * hook_post + beta``. A :class:`~lens_steer.factors.ResidualShift` adds its vector to
``blocks.{L}.hook_resid_post``; a :class:`~lens_steer.factors.PromptInstruction` changes the prompt
(:meth:`Steerer.prepare`), no activation. Test-time factors take their statistic per row (:func:`row_statistic`).

:func:`steering` applies one intervention to every row of a batch, or a different one per row, and removes its hooks
on exit, also after an exception.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from lens_steer.control import matched_control
from lens_steer.resid_cov import Whitening, draw_isotropic, draw_matched
from lens_steer.errors import LensSteerError
from lens_steer.factors import Factor, Intervention, ResidualShift
from lens_steer.instructions import instructed
from lens_steer.models import ACT_FNS, MLPSite, Model, ModelLike, as_model
from lens_steer.models.hf_points import hf_points
from lens_steer.neurons import NeuronSet
from lens_steer.stats import Stats, check_compatible

# The grammar and the instructions live in lens_steer.factors and lens_steer.instructions; their names stay
# importable from here for code written against `from lens_steer.steer import ...` (notebooks, users' scripts).
from lens_steer.factors import (FACTOR_FORMS, PAPER_FACTORS, POSITIONS, SHIFTS, SWEEPS,  # noqa: F401
                                PromptInstruction, check_layers, factor_or_none, is_control, parse_factor,
                                parse_factors, parse_layers, sweep_factors)
from lens_steer.instructions import control_language, instruction  # noqa: F401

@dataclass
class _LayerPlan:
    """Per-layer tensors for a batch: the union of touched neurons and each row's affine map on them.

    ``act' = alpha * act + beta + sum_k dyn[k] * statistic_k(row)``; ``dyn`` is empty unless a row uses a test-time
    factor."""

    idx: Tensor  # [n] neuron indices
    alpha: Tensor  # [rows, n]
    beta: Tensor  # [rows, n]
    dyn: dict[DynKey, Tensor] = field(default_factory=dict)  # key -> [rows, n] coefficient


def row_statistic(values: Float[Tensor, "batch pos d_mlp"], valid: Tensor | None, key: DynKey) -> Float[Tensor, " batch"]:
    """A test-time statistic per row: the max (``("max",)``) or a quantile (``("quantile", q)``, as
    ``torch.quantile``) of one layer's neuron values over all neurons and the row's real positions (``valid``
    ``[batch, pos]``; None = every position). A row without a real position gets 0.

    Why per row: the reference takes it over the whole padded batch (pads included), so a fact's score depended on
    the facts batched with it.

    >>> v = torch.tensor([[[1.0, 5.0], [9.0, 2.0]], [[3.0, 4.0], [0.0, 0.0]]])
    >>> row_statistic(v, torch.tensor([[True, False], [True, True]]), ("max",)).tolist()
    [5.0, 4.0]
    >>> row_statistic(v, None, ("quantile", 0.5)).tolist()
    [3.5, 1.5]
    """
    b, t, d = values.shape
    valid = torch.ones(b, t, dtype=torch.bool, device=values.device) if valid is None else valid.to(values.device).bool()
    if key[0] == "max":
        out = values.float().masked_fill(~valid[..., None], float("-inf")).amax(dim=(1, 2))
        return torch.where(valid.any(dim=1), out, torch.zeros_like(out))
    return _row_quantiles(values.float().masked_fill(~valid[..., None], float("inf")).reshape(b, t * d),
                          valid.sum(dim=1) * d, key[1])


def _row_quantiles(x: Float[Tensor, "batch n"], n_valid: Tensor, q: float) -> Float[Tensor, " batch"]:
    """Per row, ``torch.quantile(row[:n_valid], q)`` (linear interpolation, computed as torch does, in the input
    dtype) where each row's invalid entries are +inf. One batched ``topk`` of the smallest entries: a ``torch.quantile``
    per row took seconds per layer (it sorts every row, in Python, one at a time), and it fails above 16M elements.

    >>> x = torch.tensor([[3.0, 1.0, 2.0, 4.0], [5.0, 0.0, float("inf"), float("inf")]])
    >>> _row_quantiles(x, torch.tensor([4, 2]), 0.1).tolist() == [torch.quantile(torch.tensor([3., 1, 2, 4]), .1).item(),
    ...                                                         torch.quantile(torch.tensor([5., 0]), .1).item()]
    True
    """
    last = (n_valid - 1).clamp(min=0)
    ranks = torch.tensor(q, dtype=x.dtype, device=x.device) * last.to(x.dtype)
    below = ranks.long()  # torch.quantile's ranks_below: truncation of a non-negative rank
    above = torch.minimum(below + 1, last)
    k = int(above.max()) + 1 if x.shape[0] else 0
    smallest = x.topk(k, dim=1, largest=False, sorted=True).values  # [batch, k], ascending
    lo = smallest.gather(1, below[:, None])[:, 0]
    hi = smallest.gather(1, above[:, None])[:, 0]
    out = torch.lerp(lo, hi, ranks - below.to(x.dtype))
    return torch.where(n_valid > 0, out, torch.zeros_like(out))


def statistic(stats: Stats, factor: Factor, lang: str) -> Float[Tensor, "layer d_mlp"]:
    """The per-neuron value a stat factor sets for ``lang`` (before the multiple)."""
    if lang not in stats.languages:
        raise LensSteerError(f"the statistics have no language {lang!r}; they cover {', '.join(stats.languages)}")
    k = stats.languages.index(lang)
    if factor.stat == "mean":
        value = stats.mean()[k]
    else:
        value = stats.sentence_stat(factor.stat or "max")[k]
    if torch.isnan(value).any():
        raise LensSteerError(f"{factor.text} is undefined for {lang!r}: no sentence means were kept when recording;"
                             " record longer text for it")
    return value



def diff_mean(stats: Stats, lang: str) -> Float[Tensor, "layer d_mlp"]:
    """DiffMean in neuron space: ``lang``'s token mean minus the unweighted mean of the other languages' token means.

    >>> d = diff_mean(stats, "fr")
    >>> k = stats.languages.index("fr"); means = stats.mean()
    >>> torch.allclose(d, means[k] - torch.cat([means[:k], means[k + 1:]]).mean(0))
    True
    """
    if lang not in stats.languages:
        raise LensSteerError(f"the statistics have no language {lang!r}; they cover {', '.join(stats.languages)}")
    if len(stats.languages) < 2:
        raise LensSteerError("diffmean needs statistics of at least two languages (the target and the rest)")
    k = stats.languages.index(lang)
    means = stats.mean()
    rest = torch.cat([means[:k], means[k + 1:]])
    return means[k] - rest.mean(dim=0)


def check_stats_for_model(stats: Stats, site: MLPSite, model: Model | None = None) -> None:
    """Statistics must come from this model's shape; a dtype difference only warns."""
    check_compatible(stats.manifest, site.n_layers, site.d_mlp)
    if model is not None:
        dtype = str(model.dtype).removeprefix("torch.")
        recorded = stats.manifest.get("dtype")
        if recorded and recorded != dtype:
            warnings.warn(f"statistics were recorded in {recorded} and the model runs in {dtype}: the patched values"
                          f" are the recorded ones rounded to {dtype}", stacklevel=3)


@dataclass(frozen=True)
class Prepared:
    """A batch as :meth:`Steerer.prepare` hands it to scoring and generation: the prompts as the model must see them
    (a ``prompt:`` intervention's instruction first) and the per-row interventions the hooks then apply."""

    prompts: list[str]
    interventions: list[Intervention | None] | None

    @property
    def test_time(self) -> bool:
        """Whether a row's factor takes its value from the forward itself (testmax, pQ): its statistic must see the
        whole row (prompt and answer) in one forward."""
        rows = self.interventions or []
        return any(iv is not None and iv.parsed_factor().test_time for iv in rows)


class Steerer:
    """Compiles interventions against a neuron set and statistics, and installs them as hooks.

    >>> steerer = Steerer(bridge, neurons, stats)
    >>> tokens = bridge.to_tokens("Le petit chat dort.")
    >>> with steerer.apply(Intervention("fr", "p_max")):
    ...     logits = bridge(tokens)
    >>> bool((logits != bridge(tokens)).any())  # steered inside the block, plain after it (the hooks are gone)
    True
    """

    def __init__(self, model: ModelLike | None, neurons: NeuronSet, stats: Stats | None = None, *,
                 site: MLPSite | None = None):
        # model None with a site: a plain HF model steered through apply_hf (the lm-evaluation-harness model)
        self.model = as_model(model) if model is not None else None
        if site is None and self.model is None:
            raise LensSteerError("a Steerer needs a model or the site of one")
        self.site = site if site is not None else self.model.site
        neurons.check_model(self.site.n_layers, self.site.d_mlp)
        if stats is not None:
            check_stats_for_model(stats, self.site, self.model)
        self.neurons = neurons
        self.stats = stats
        # Statistics recorded on hook_post describe hook_post itself; then "set" writes hook_post directly.
        self.value_is_post = (not self.site.gated) or (stats is not None and stats.manifest.get("site") == "post")
        self._stat_cache: dict[tuple[str, str], Tensor] = {}
        self._controls: dict[int, NeuronSet] = {}
        self._whitening: dict[int, Whitening] = {}  # per layer, for the covariance-matched residual control

    def control_set(self, seed: int) -> NeuronSet:
        """The matched random-neuron set of ``seed`` (see :mod:`lens_steer.control`), drawn once."""
        if seed not in self._controls:
            if self.stats is None:
                raise LensSteerError("control factors need the run's statistics (stats.safetensors)")
            self._controls[seed] = matched_control(self.neurons, self.stats, seed)
        return self._controls[seed]

    def prepare(self, prompts: Sequence[str], interventions: Sequence[Intervention | None] | None) -> Prepared:
        r"""The prompts as the model must see them, with their per-row plan: what scoring and generation ask before
        tokenising. A ``prompt:`` intervention puts its instruction first (its control names another of this neuron
        set's languages, :func:`~lens_steer.instructions.control_language`); other rows are unchanged.

        >>> prepared = Steerer(bridge, neurons, stats).prepare(
        ...     ["Paris is in", "x"], [Intervention("fr", "prompt:en"), Intervention("fr", "testmax")])
        >>> prepared.prompts, prepared.test_time
        (['Answer in French.\nParis is in', 'x'], True)
        """
        if interventions is not None and len(interventions) != len(prompts):
            raise LensSteerError(f"{len(interventions)} interventions for {len(prompts)} prompts; give one (or None)"
                                 " per prompt")
        rows = None if interventions is None else list(interventions)
        return Prepared(instructed(prompts, rows, self.neurons.languages), rows)

    def _maps(self, iv: Intervention) -> dict[int, _LayerPlan]:
        """layer -> the one-row plan of one intervention."""
        factor = iv.parsed_factor()
        if iv.target not in self.neurons.languages:
            raise LensSteerError(f"language {iv.target!r} has no neuron set here; the run has"
                                 f" {', '.join(self.neurons.languages)}")
        values = self._stat_values(iv.target, factor) if factor.needs_stats else None
        # A residual shift or an instruction changes no neuron of the target; a deactivated source still is zeroed.
        source = self.control_set(iv.seed) if factor.control and factor.on_neurons else self.neurons
        out: dict[int, _LayerPlan] = {}
        for layer in iv.layer_list(self.site.n_layers):
            idx = source.indices(iv.target, layer) if factor.on_neurons else torch.zeros(0, dtype=torch.long)
            alpha, beta, dyn = _affine(factor, idx.numel(), None if values is None else values[layer, idx].float())
            if iv.deactivate is not None:
                off = self.neurons.indices(iv.deactivate, layer)
                off = off[~torch.isin(off, idx)]  # the target's own map wins on shared neurons
                idx, zeros = torch.cat([idx, off]), torch.zeros(off.numel())
                alpha, beta = torch.cat([alpha, zeros]), torch.cat([beta, zeros])
                dyn = {k: torch.cat([c, zeros]) for k, c in dyn.items()}
            if idx.numel():
                out[layer] = _LayerPlan(idx, alpha[None], beta[None], {k: c[None] for k, c in dyn.items()})
        return out

    def _stat_values(self, target: str, factor: Factor) -> Tensor:
        if self.stats is None:
            raise LensSteerError(f"factor {factor.text} needs the run's statistics (stats.safetensors)")
        key = (target, "diffmean" if factor.kind == "diffmean" else factor.stat or "max")
        if key not in self._stat_cache:
            self._stat_cache[key] = (diff_mean(self.stats, target) if factor.kind == "diffmean"
                                     else statistic(self.stats, factor, target))
        return self._stat_cache[key] * factor.value

    def resid_direction(self, target: str, layer: int, control_seed: int | None = None,
                        null: str = "cov") -> Float[Tensor, " d_model"]:
        """mu_t - mu_rest of the residual stream after ``layer`` (unweighted mean of the other languages), or with
        ``control_seed`` a random direction (seeded by the seed, layer and target): ``null`` "cov" a draw of the
        residual's covariance at ``layer`` with the same Mahalanobis norm, "iso" an isotropic one with the same
        Euclidean norm (:mod:`lens_steer.resid_cov`)."""
        if self.stats is None:
            raise LensSteerError("resid: methods need the run's statistics (stats.safetensors)")
        if not 0 <= layer < self.site.n_layers:
            raise LensSteerError(f"resid:{layer} is out of range: this model has layers 0..{self.site.n_layers - 1}")
        if target not in self.stats.languages:
            raise LensSteerError(f"the statistics have no language {target!r}")
        means = self.stats.resid_mean()[:, layer]  # [K, d_model]
        k = self.stats.languages.index(target)
        direction = means[k] - torch.cat([means[:k], means[k + 1:]]).mean(dim=0)
        if control_seed is None:
            return direction
        generator = torch.Generator().manual_seed(control_seed * 1_000_003 + layer * 1009 + k)
        if null == "iso":
            return draw_isotropic(direction, generator)
        if layer not in self._whitening:
            self._whitening[layer] = Whitening.of(self.stats.resid_covariance(layer))
        return draw_matched(direction, self._whitening[layer], generator)

    def resid_plan(self, rows: Sequence[Intervention | None]) -> dict[int, Tensor]:
        """layer -> [rows, d_model] additions to the residual stream after that layer (zero for other rows)."""
        out: dict[int, Tensor] = {}
        for r, iv in enumerate(rows):
            factor = iv.parsed_factor() if iv is not None else None
            if not isinstance(factor, ResidualShift):
                continue
            layer = factor.layer
            vec = self.resid_direction(iv.target, layer, iv.seed if factor.control else None, factor.null)
            vec = vec * factor.value
            out.setdefault(layer, torch.zeros(len(rows), vec.numel()))[r] = vec
        return out

    def plan(self, rows: Sequence[Intervention | None]) -> dict[int, _LayerPlan]:
        """Per-layer plans for a batch with one intervention (or None) per row.

        Rows that share an intervention (LSS repeats one per answer and per fact) are compiled once.

        >>> plan = Steerer(bridge, neurons, stats).plan([Intervention("fr", "p_max"), None])
        >>> plan[0].alpha.tolist()  # layer 0, fr's 4 neurons: row 0 sets them (alpha 0), row 1 keeps them
        [[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]
        """
        groups: dict[Any, tuple[Intervention, list[int]]] = {}
        for r, iv in enumerate(rows):
            if iv is None:
                continue
            key: Any = iv
            try:
                hash(iv)
            except TypeError:  # an unhashable field (layers given as a list): compile this row on its own
                key = ("row", r)
            groups.setdefault(key, (iv, []))[1].append(r)
        maps = [(self._maps(iv), torch.tensor(members)) for iv, members in groups.values()]
        plans: dict[int, _LayerPlan] = {}
        for layer in sorted({layer for m, _ in maps for layer in m}):
            union = torch.unique(torch.cat([m[layer].idx for m, _ in maps if layer in m]))
            merged = _LayerPlan(union, torch.ones(len(rows), union.numel()), torch.zeros(len(rows), union.numel()))
            for m, members in maps:
                if layer in m:
                    one = m[layer]
                    cols = (members[:, None], torch.searchsorted(union, one.idx))
                    merged.alpha[cols], merged.beta[cols] = one.alpha, one.beta
                    for k, c in one.dyn.items():
                        merged.dyn.setdefault(k, torch.zeros(len(rows), union.numel()))[cols] = c
            plans[layer] = merged
        return plans

    @contextlib.contextmanager
    def apply(self, interventions: Intervention | Sequence[Intervention | None] | None,
              prompt_end: Tensor | int | None = None, start_offset: int = 0) -> Iterator[None]:
        """Install the hooks for the duration of the block.

        Args:
            interventions: one intervention for every row, or a sequence with one (or None) per batch row.
            prompt_end: per row, the position where the prompt ends (generated/continuation tokens start), in the
                padded coordinates of the first forward. Needed only for ``prompt``/``generated``/``last:K``.
            start_offset: the position of the first forward's first token (a continuation of a cached prefix).

        Test-time factors take their statistic over the real positions of each forward: the ``attention_mask``
        the model is called with (its last columns, for a forward on a KV cache), every position without one.
        """
        if interventions is None:
            yield
            return
        per_row = not isinstance(interventions, Intervention)
        rows = list(interventions) if per_row else [interventions]  # type: ignore[arg-type]
        hooks = _SteeringHooks(self, rows, per_row, self.plan(rows), prompt_end, start_offset, self.resid_plan(rows))
        handle = self.model.bridge.register_forward_pre_hook(hooks.see_call, with_kwargs=True)
        try:
            with self.model.bridge.hooks(fwd_hooks=hooks.hook_list()):
                yield
        finally:
            handle.remove()

    @contextlib.contextmanager
    def apply_hf(self, hf: torch.nn.Module, interventions: Sequence[Intervention | None] | None,
                 prompt_end: Tensor | int | None = None, valid: Tensor | None = None) -> Iterator[None]:
        """:meth:`apply` on a plain HF model (no bridge): the same hooks on the HF modules whose inputs and outputs
        are the bridge's hook points (:func:`lens_steer.models.hf_points`), removed on exit, also after an exception.

        ``valid`` (``[batch, pos]``) says which positions are real where the model is called without an
        ``attention_mask`` (the harness's right-padded log-likelihood batches); test-time statistics read it.
        """
        if interventions is None:
            yield
            return
        points = hf_points(hf)
        rows = list(interventions)
        hooks = _SteeringHooks(self, rows, True, self.plan(rows), prompt_end, 0, self.resid_plan(rows))
        hooks.fallback_mask = valid
        handles = [hf.register_forward_pre_hook(hooks.see_call, with_kwargs=True)]
        try:
            if hooks.need_positions:
                handles.append(points.embed.register_forward_hook(lambda m, a, out: hooks.track(out, None)))
            for layer, plan in hooks.plans.items():
                at = _At(layer)
                if not hooks.value_is_post:
                    handles.append(points.up[layer].register_forward_hook(  # type: ignore[union-attr]
                        lambda m, a, out, at=at: hooks.grab_up(out, at)))
                    if plan.dyn:
                        handles.append(points.gate[layer].register_forward_hook(
                            lambda m, a, out, at=at: hooks.grab_pre(out, at)))
                handles.append(points.down[layer].register_forward_pre_hook(
                    lambda m, args, at=at: (hooks.patch(args[0], at), *args[1:])))
            for layer in hooks.resid:
                handles.append(points.layers[layer].register_forward_hook(
                    lambda m, a, out, at=_At(layer): _on_first(out, lambda x: hooks.shift(x, at))))
            yield
        finally:
            for handle in handles:
                handle.remove()


class _At:
    """What a TransformerLens hook point tells a hook about itself (its layer), for hooks on plain HF modules."""

    def __init__(self, layer: int):
        self._layer = layer

    def layer(self) -> int:
        return self._layer


def _on_first(out: Any, fn: Any) -> Any:
    """Apply ``fn`` to a module's output, or to the first element where it returns a tuple (HF decoder layers)."""
    return (fn(out[0]), *out[1:]) if isinstance(out, tuple) else fn(out)


def _affine(factor: Factor, n: int, values: Tensor | None) -> tuple[Tensor, Tensor, dict[DynKey, Tensor]]:
    """(alpha, beta, dyn) of ``act' = alpha * act + beta + dyn * statistic`` for n neurons."""
    zeros, ones = torch.zeros(n), torch.ones(n)
    if factor.kind == "stat":
        return zeros, values if values is not None else zeros, {}
    if factor.kind == "scale":
        return torch.full((n,), factor.value), zeros, {}
    if factor.kind == "add":
        return ones, torch.full((n,), factor.value), {}
    if factor.kind in ("addmean", "diffmean"):  # act += a * statistic (values already carry the multiple a)
        return ones, values if values is not None else zeros, {}
    if factor.kind == "set":
        return zeros, torch.full((n,), factor.value), {}
    if factor.kind == "test":
        if factor.stat == "quantile":
            return zeros, zeros, {("quantile", factor.value): ones}
        return (ones if factor.stat == "max+" else zeros), zeros, {("max",): torch.full((n,), factor.value)}
    return zeros, zeros, {}  # zero


class _SteeringHooks:
    """The per-forward state the steering hooks share: where positions start, each layer's ``up`` / ``hook_pre``,
    the attention mask of the current call, and the position gate (computed once per forward)."""

    def __init__(self, steerer: Steerer, rows: list[Intervention | None], per_row: bool, plans: dict[int, _LayerPlan],
                 prompt_end: Tensor | int | None, start_offset: int, resid: dict[int, Tensor] | None = None):
        self.site, self.value_is_post = steerer.site, steerer.value_is_post
        self.act_fn = ACT_FNS[steerer.site.act_fn]
        self.rows, self.per_row, self.plans, self.prompt_end = rows, per_row, plans, prompt_end
        self.resid = resid or {}
        self.rules = [iv.position_rule() if iv is not None else ("all", 0) for iv in rows]
        self.need_positions = any(rule != "all" for rule, _ in self.rules)
        self.offset, self.this_len, self.first_len = start_offset, 0, None
        self.up: dict[int, Tensor] = {}
        self.pre: dict[int, Tensor] = {}
        self.mask: Tensor | None = None
        self.fallback_mask: Tensor | None = None  # the real positions of calls made without an attention_mask
        self.gate_key: Any = None
        self.gate: Tensor | None = None

    def hook_list(self) -> list[tuple[str, Any]]:
        hooks: list[tuple[str, Any]] = [("embed.hook_out", self.track)] if self.need_positions else []
        for layer, plan in self.plans.items():
            if not self.value_is_post:
                hooks.append((self.site.name("hook_pre_linear", layer), self.grab_up))
                if plan.dyn:
                    hooks.append((self.site.name("hook_pre", layer), self.grab_pre))
            hooks.append((self.site.name("hook_post", layer), self.patch))
        hooks += [(f"blocks.{layer}.hook_resid_post", self.shift) for layer in self.resid]
        return hooks

    def shift(self, resid: Tensor, hook: Any) -> Tensor:
        """Residual DiffMean: add each row's vector to the decoder layer's output at the positions it selects."""
        add = self.resid[hook.layer()]
        if self.per_row and resid.shape[0] != len(self.rows):
            raise LensSteerError(f"{len(self.rows)} per-row interventions for a batch of {resid.shape[0]} rows")
        add = add.to(resid.device, resid.dtype)[:, None, :]  # [rows|1, 1, d_model]
        gate = self.position_gate(resid.shape[1], resid.dtype, resid.device)
        return resid + (add if gate is None else gate * add)

    def see_call(self, module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
        """Forward pre-hook on the model: remember this call's attention mask (test-time statistics need it)."""
        mask = kwargs.get("attention_mask")
        self.mask = mask if mask is not None else self.fallback_mask

    def track(self, x: Tensor, hook: Any) -> None:  # fires once per forward, before any block
        self.offset += self.this_len
        self.this_len = x.shape[1]
        if self.first_len is None:
            self.first_len = x.shape[1]

    def grab_up(self, up: Tensor, hook: Any) -> None:
        self.up[hook.layer()] = up

    def grab_pre(self, pre: Tensor, hook: Any) -> None:
        self.pre[hook.layer()] = pre

    def patch(self, post: Tensor, hook: Any) -> Tensor:
        layer = hook.layer()
        plan = self.plans[layer]
        if self.per_row and post.shape[0] != len(self.rows):
            raise LensSteerError(f"{len(self.rows)} per-row interventions for a batch of {post.shape[0]} rows")
        idx = plan.idx.to(post.device)
        alpha = plan.alpha.to(post.device, post.dtype)[:, None, :]  # [rows|1, 1, n]
        beta = plan.beta.to(post.device, post.dtype)
        if plan.dyn:  # test-time statistics of this forward's own neuron values, per row
            values = post if self.value_is_post else self.act_fn(self.pre.pop(layer))
            valid = None if self.mask is None else self.mask[:, -post.shape[1]:]
            for key, coef in plan.dyn.items():
                stat = row_statistic(values, valid, key).to(post.dtype)
                beta = beta + coef.to(post.device, post.dtype) * stat[:, None]
        beta = beta[:, None, :]
        old = post[..., idx]
        new = alpha * old + (beta if self.value_is_post else beta * self.up.pop(layer)[..., idx])
        gate = self.position_gate(post.shape[1], post.dtype, post.device)
        if gate is not None:
            new = gate * new + (1 - gate) * old
        post[..., idx] = new
        return post

    def position_gate(self, length: int, dtype: torch.dtype, device: torch.device) -> Tensor | None:
        """[rows or 1, pos, 1] mask of the positions each row's intervention touches; None = all."""
        if not self.need_positions:
            return None
        key = (self.offset, length, dtype, device)  # a model split over devices asks on each of them
        if self.gate_key == key:  # every layer of one forward shares the same gate
            return self.gate
        pos = torch.arange(self.offset, self.offset + length, device=device)[None, :]
        n = len(self.rows)
        if self.prompt_end is None:
            end = torch.full((n, 1), self.first_len or length, device=device)
        else:
            end = torch.as_tensor(self.prompt_end, device=device).reshape(-1, 1).expand(n, 1)
        gates = []
        for r, (rule, k) in enumerate(self.rules):
            e = end[r if self.per_row else 0]
            if rule == "all":
                gates.append(torch.ones_like(pos, dtype=torch.bool))
            elif rule == "prompt":
                gates.append(pos < e)
            elif rule == "generated":
                gates.append(pos >= e)
            else:
                gates.append((pos < e) & (pos >= e - k))
        self.gate_key, self.gate = key, torch.cat(gates).to(dtype)[..., None]
        return self.gate


@contextlib.contextmanager
def steering(model: ModelLike, interventions: Intervention | Sequence[Intervention | None] | None, neurons: NeuronSet,
             stats: Stats | None = None, prompt_end: Tensor | int | None = None) -> Iterator[Steerer]:
    """``with steering(model, Intervention("fr", "p_max"), neurons, stats): ...`` - hooks are gone afterwards.

    Works with ``model.generate(..., do_sample=False)`` and its KV cache (later steps see one position each).
    """
    steerer = Steerer(model, neurons, stats)
    with steerer.apply(interventions, prompt_end=prompt_end):
        yield steerer

