"""Interventions on language-specific neurons: amplify (set to a statistic, scale, add), deactivate, or both.

Every factor acts on the neuron value ``act = act_fn(gate)`` of the selected neurons as an affine map
``act' = alpha * act + beta``. TransformerLens exposes ``hook_post = act * up`` (gated MLPs), so the hook writes
``hook_post' = alpha * hook_post + beta * up`` with ``up`` taken from ``hook_pre_linear`` of the same forward. For
non-gated MLPs, and for statistics recorded with ``--site post``, the neuron value *is* ``hook_post`` and the hook
writes ``hook_post' = alpha * hook_post + beta``.

Factor grammar (one parser, :func:`parse_factor`):

==================  =========================================  ======================
factor              act' =                                     (alpha, beta)
==================  =========================================  ======================
``p_max``           the target's p_max (max sentence mean)      (0, p_max)
``p_median``        the target's p_median                       (0, p_median)
``mean``            the target's token mean (act_sum/n_tokens)  (0, mean)
``p_max*a``         a * p_max  (also ``p_median*a``, ``mean*a``) (0, a * stat)
``scale:a``         a * act                                     (a, 0)
``add:b``           act + b                                     (1, b)
``set:v``           v                                           (0, v)
``zero``            0 (deactivation)                            (0, 0)
==================  =========================================  ======================

An :class:`Intervention` picks the target language's neurons, a factor, layers, positions, and optionally a source
language whose neurons are zeroed at the same time (``deactivate``). :func:`steering` applies one intervention to
every row of a batch, or a different one per row, and removes its hooks on exit, also after an exception.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from lens_steer.errors import LensSteerError
from lens_steer.models import MLPSite, describe_mlp
from lens_steer.neurons import NeuronSet
from lens_steer.stats import Stats

FACTOR_FORMS = ("p_max, p_median, mean, p_max*A, p_median*A, mean*A, scale:A, add:B, set:V, zero,"
                " control:p_max, control:p_median (matched random neurons)")
_STAT_OF = {"p_max": "max", "p_median": "median", "mean": "mean"}
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


@dataclass(frozen=True)
class Factor:
    """A parsed factor. ``kind`` is ``stat`` (uses ``stat``: max, median, mean), ``scale``, ``add``, ``set`` or
    ``zero``; ``value`` is the multiple a, the scale, the addend or the set value.

    >>> parse_factor("p_max*2")
    Factor(text='p_max*2', kind='stat', value=2.0, stat='max')
    >>> parse_factor("scale:0.5").kind, parse_factor("zero").value
    ('scale', 0.0)
    """

    text: str
    kind: str
    value: float
    stat: str | None = None
    control: bool = field(default=False, repr=False)  # control:F applies F to matched random neurons

    @property
    def needs_stats(self) -> bool:
        return self.kind == "stat"


def parse_factor(text: str) -> Factor:
    """Parse a factor string; anything else is a one-line error listing the valid forms."""
    spec = text.strip()
    if spec.startswith("control:"):
        inner = parse_factor(spec[len("control:"):])
        if inner.control or inner.kind != "stat":
            raise LensSteerError(f"cannot parse factor {text!r}: a control applies a statistic factor (control:p_max,"
                                 " control:p_median, control:p_max*2) to matched random neurons")
        return Factor(spec, inner.kind, inner.value, inner.stat, control=True)
    if spec in _STAT_OF:
        return Factor(spec, "stat", 1.0, _STAT_OF[spec])
    if spec == "zero":
        return Factor(spec, "zero", 0.0)
    m = re.fullmatch(rf"(p_max|p_median|mean)\s*\*\s*({_NUMBER})", spec)
    if m:
        return Factor(spec, "stat", float(m.group(2)), _STAT_OF[m.group(1)])
    m = re.fullmatch(rf"(scale|add|set):\s*({_NUMBER})", spec)
    if m:
        return Factor(spec, m.group(1), float(m.group(2)))
    raise LensSteerError(f"cannot parse factor {text!r}; valid forms: {FACTOR_FORMS} (A, B, V numbers)")


SWEEPS: dict[str, tuple[str, ...]] = {
    "p_max": ("p_max*0.25", "p_max*0.5", "p_max", "p_max*2", "p_max*4", "p_max*8"),
    "p_median": ("p_median*0.25", "p_median*0.5", "p_median", "p_median*2", "p_median*4", "p_median*8"),
    "add": ("add:0.5", "add:1", "add:2", "add:4", "add:8"),
}


def sweep_factors(spec: str) -> list[Factor]:
    """Dose-response grids by family name (comma-separated): ``p_max``, ``p_median`` (x0.25..8), ``add`` (0.5..8).

    >>> [f.text for f in sweep_factors("add")]
    ['add:0.5', 'add:1', 'add:2', 'add:4', 'add:8']
    """
    out: list[Factor] = []
    for name in (p.strip() for p in spec.split(",") if p.strip()):
        if name not in SWEEPS:
            raise LensSteerError(f"unknown sweep {name!r}; use {', '.join(SWEEPS)}")
        out += [parse_factor(t) for t in SWEEPS[name]]
    return out


def parse_factors(text: str) -> list[Factor]:
    """A comma-separated list of factors (``p_max,p_median,zero,scale:2``)."""
    parts = [p for p in (s.strip() for s in text.split(",")) if p]
    if not parts:
        raise LensSteerError(f"no factor given; valid forms: {FACTOR_FORMS}")
    return [parse_factor(p) for p in parts]


POSITIONS = "all, prompt, generated, last:K"


def parse_layers(text: str) -> str | list[int]:
    """``all``, one layer ``5``, a range ``3-7`` (inclusive) or a list ``1,4,9``.

    >>> parse_layers("all"), parse_layers("2-4"), parse_layers("1,5")
    ('all', [2, 3, 4], [1, 5])
    """
    spec = text.strip()
    if spec == "all":
        return "all"
    try:
        if re.fullmatch(r"\d+-\d+", spec):
            lo, hi = (int(x) for x in spec.split("-"))
            if lo <= hi:
                return list(range(lo, hi + 1))
        else:
            return [int(x) for x in spec.split(",")]
    except ValueError:
        pass
    raise LensSteerError(f"cannot parse layers {text!r}; use all, a layer (5), a range (3-7) or a list (1,4,9)")


@dataclass(frozen=True)
class Intervention:
    """What to do to which neurons.

    Attributes:
        target: language whose neurons are changed by ``factor``.
        factor: a :class:`Factor` or a factor string.
        layers: ``"all"``, one layer (int), or a sequence of layers.
        positions: ``all`` (the paper), ``prompt`` (positions before the prompt end), ``generated`` (positions at or
            after it), or ``last:K`` (the last K prompt positions). The prompt end per row is given to
            :func:`steering`; by default the first forward's input is the prompt.
        deactivate: optional language whose neurons are set to 0 at the same positions and layers
            (amplify the target while silencing the source). A neuron in both sets follows ``factor``.
    """

    target: str
    factor: Factor | str
    layers: str | int | Sequence[int] = "all"
    positions: str = "all"
    deactivate: str | None = None
    seed: int = 0  # which matched random draw a control:... factor uses

    def parsed_factor(self) -> Factor:
        return self.factor if isinstance(self.factor, Factor) else parse_factor(self.factor)

    def layer_list(self, n_layers: int) -> list[int]:
        if self.layers == "all":
            return list(range(n_layers))
        layers = [self.layers] if isinstance(self.layers, int) else list(self.layers)  # type: ignore[arg-type]
        bad = [layer for layer in layers if not 0 <= int(layer) < n_layers]
        if bad:
            raise LensSteerError(f"layers {bad} out of range: this model has layers 0..{n_layers - 1}")
        return sorted({int(layer) for layer in layers})

    def position_rule(self) -> tuple[str, int]:
        if self.positions in ("all", "prompt", "generated"):
            return self.positions, 0
        m = re.fullmatch(r"last:(\d+)", self.positions)
        if m and int(m.group(1)) > 0:
            return "last", int(m.group(1))
        raise LensSteerError(f"unknown positions {self.positions!r}; use one of {POSITIONS}")


@dataclass
class _LayerPlan:
    """Per-layer tensors for a batch: the union of touched neurons and each row's affine map on them."""

    idx: Tensor  # [n] neuron indices
    alpha: Tensor  # [rows, n]
    beta: Tensor  # [rows, n]


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


def check_stats_for_model(stats: Stats, site: MLPSite, model: Any = None) -> None:
    """Statistics must come from this model's shape; a dtype difference only warns."""
    from lens_steer.stats import check_compatible

    check_compatible(stats.manifest, site.n_layers, site.d_mlp)
    if model is not None:
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        recorded = stats.manifest.get("dtype")
        if recorded and recorded != dtype:
            import warnings

            warnings.warn(f"statistics were recorded in {recorded} but the model runs in {dtype}; patched values may"
                          " be slightly off", stacklevel=3)


class Steerer:
    """Compiles interventions against a neuron set and statistics, and installs them as hooks.

    >>> # steerer = Steerer(model, neurons, stats)
    >>> # with steerer.apply(Intervention("fr", "p_max")):
    >>> #     logits = model(tokens)
    """

    def __init__(self, model: Any, neurons: NeuronSet, stats: Stats | None = None):
        self.model = model
        self.site = describe_mlp(model)
        neurons.check_model(self.site.n_layers, self.site.d_mlp)
        if stats is not None:
            check_stats_for_model(stats, self.site, model)
        self.neurons = neurons
        self.stats = stats
        # Statistics recorded on hook_post describe hook_post itself; then "set" writes hook_post directly.
        self.value_is_post = (not self.site.gated) or (stats is not None and stats.manifest.get("site") == "post")
        self._stat_cache: dict[tuple[str, str], Tensor] = {}
        self._controls: dict[int, NeuronSet] = {}

    def control_set(self, seed: int) -> NeuronSet:
        """The matched random-neuron set of ``seed`` (see :mod:`lens_steer.control`), drawn once."""
        if seed not in self._controls:
            if self.stats is None:
                raise LensSteerError("control factors need the run's statistics (stats.safetensors)")
            from lens_steer.control import matched_control

            self._controls[seed] = matched_control(self.neurons, self.stats, seed)
        return self._controls[seed]

    def _maps(self, iv: Intervention) -> dict[int, tuple[Tensor, Tensor, Tensor]]:
        """layer -> (idx, alpha, beta) of one intervention."""
        factor = iv.parsed_factor()
        if iv.target not in self.neurons.languages:
            raise LensSteerError(f"language {iv.target!r} has no neuron set here; the run has"
                                 f" {', '.join(self.neurons.languages)}")
        if factor.needs_stats:
            if self.stats is None:
                raise LensSteerError(f"factor {factor.text} needs the run's statistics (stats.safetensors)")
            key = (iv.target, factor.stat or "max")
            if key not in self._stat_cache:
                self._stat_cache[key] = statistic(self.stats, factor, iv.target)
            values = self._stat_cache[key] * factor.value
        out: dict[int, tuple[Tensor, Tensor, Tensor]] = {}
        source = self.control_set(iv.seed) if factor.control else self.neurons
        for layer in iv.layer_list(self.site.n_layers):
            idx = source.indices(iv.target, layer)
            n = idx.numel()
            if factor.kind == "stat":
                alpha, beta = torch.zeros(n), values[layer, idx].float()
            elif factor.kind == "scale":
                alpha, beta = torch.full((n,), factor.value), torch.zeros(n)
            elif factor.kind == "add":
                alpha, beta = torch.ones(n), torch.full((n,), factor.value)
            elif factor.kind == "set":
                alpha, beta = torch.zeros(n), torch.full((n,), factor.value)
            else:  # zero
                alpha, beta = torch.zeros(n), torch.zeros(n)
            if iv.deactivate is not None:
                off = self.neurons.indices(iv.deactivate, layer)
                off = off[~torch.isin(off, idx)]  # the target's own map wins on shared neurons
                idx = torch.cat([idx, off])
                alpha = torch.cat([alpha, torch.zeros(off.numel())])
                beta = torch.cat([beta, torch.zeros(off.numel())])
            if idx.numel():
                out[layer] = (idx, alpha, beta)
        return out

    def plan(self, rows: Sequence[Intervention | None]) -> dict[int, _LayerPlan]:
        """Per-layer plans for a batch with one intervention (or None) per row.

        Rows that share an intervention (LSS repeats one per answer and per fact) are compiled once.

        >>> # steerer.plan([Intervention("fr", "p_max"), None])[0].alpha.shape -> torch.Size([2, n_union])
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
            union = torch.unique(torch.cat([m[layer][0] for m, _ in maps if layer in m]))
            alpha = torch.ones(len(rows), union.numel())
            beta = torch.zeros(len(rows), union.numel())
            for m, members in maps:
                if layer in m:
                    idx, a, b = m[layer]
                    pos = torch.searchsorted(union, idx)
                    alpha[members[:, None], pos] = a
                    beta[members[:, None], pos] = b
            plans[layer] = _LayerPlan(union, alpha, beta)
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
        """
        if interventions is None:
            yield
            return
        per_row = not isinstance(interventions, Intervention)
        rows = list(interventions) if per_row else [interventions]  # type: ignore[arg-type]
        plans = self.plan(rows)
        rules = [iv.position_rule() if iv is not None else ("all", 0) for iv in rows]
        need_positions = any(rule != "all" for rule, _ in rules)
        device = next(self.model.parameters()).device
        state: dict[str, Any] = {"offset": start_offset, "this_len": 0, "up": {}}

        def row_count(batch: int) -> None:
            if per_row and batch != len(rows):
                raise LensSteerError(f"{len(rows)} per-row interventions for a batch of {batch} rows")

        def position_gate(batch: int, length: int, dtype: torch.dtype) -> Tensor | None:
            """[rows or 1, pos, 1] mask of the positions each row's intervention touches; None = all."""
            if not need_positions:
                return None
            key = (state["offset"], length, dtype)
            if state.get("gate_key") == key:  # every layer of one forward shares the same gate
                return state["gate"]
            pos = torch.arange(state["offset"], state["offset"] + length, device=device)[None, :]
            if prompt_end is None:
                end = torch.full((len(rows), 1), state.get("first_len", length), device=device)
            else:
                end = torch.as_tensor(prompt_end, device=device).reshape(-1, 1).expand(len(rows), 1)
            gates = []
            for r, (rule, k) in enumerate(rules):
                e = end[r if per_row else 0]
                if rule == "all":
                    g = torch.ones_like(pos, dtype=torch.bool)
                elif rule == "prompt":
                    g = pos < e
                elif rule == "generated":
                    g = pos >= e
                else:
                    g = (pos < e) & (pos >= e - k)
                gates.append(g)
            state["gate_key"], state["gate"] = key, torch.cat(gates).to(dtype)[..., None]
            return state["gate"]

        def track(x: Tensor, hook: Any) -> None:  # fires once per forward, before any block
            state["offset"] += state["this_len"]
            state["this_len"] = x.shape[1]
            state.setdefault("first_len", x.shape[1])

        def grab_up(up: Tensor, hook: Any) -> None:
            state["up"][hook.layer()] = up

        def patch(post: Tensor, hook: Any) -> Tensor:
            layer = hook.layer()
            plan = plans[layer]
            row_count(post.shape[0])
            idx = plan.idx.to(post.device)
            alpha = plan.alpha.to(post.device, post.dtype)[:, None, :]  # [rows|1, 1, n]
            beta = plan.beta.to(post.device, post.dtype)[:, None, :]
            old = post[..., idx]
            if self.value_is_post:
                new = alpha * old + beta
            else:
                new = alpha * old + beta * state["up"].pop(layer)[..., idx]
            gate = position_gate(post.shape[0], post.shape[1], post.dtype)
            if gate is not None:
                new = gate * new + (1 - gate) * old
            post[..., idx] = new
            return post

        hooks: list[tuple[str, Any]] = []
        if need_positions:
            hooks.append(("embed.hook_out", track))
        for layer in plans:
            if not self.value_is_post:
                hooks.append((self.site.name("hook_pre_linear", layer), grab_up))
            hooks.append((self.site.name("hook_post", layer), patch))
        with self.model.hooks(fwd_hooks=hooks):
            yield


@contextlib.contextmanager
def steering(model: Any, interventions: Intervention | Sequence[Intervention | None] | None, neurons: NeuronSet,
             stats: Stats | None = None, prompt_end: Tensor | int | None = None) -> Iterator[Steerer]:
    """``with steering(model, Intervention("fr", "p_max"), neurons, stats): ...`` - hooks are gone afterwards.

    Works with ``model.generate(..., do_sample=False)`` and its KV cache (later steps see one position each).
    """
    steerer = Steerer(model, neurons, stats)
    with steerer.apply(interventions, prompt_end=prompt_end):
        yield steerer
