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
``testmax``         m = the max of the layer's act over all      (0, m)
                    neurons and real positions of the row
``testmax+``        act + m                                     (1, m)
``p10`` (``pQ``)    the Q-th percentile of the same values      (0, q)
``add:mean*a``      act + a * mean_t ("language arithmetics":   (1, a * mean_t)
                    additive neuron steering)
``diffmean*a``      act + a * (mean_t - mean of the other        (1, a * diff)
                    languages' means): DiffMean in neuron space
==================  =========================================  ======================

The multiple of a statistic that is *set* (``p_max*a``, ``testmax*a``) is never negative: it would put the neurons
below zero, a value no statistic of the language takes (``scale:-1`` flips them deliberately, ``zero`` silences
them). The additive forms take a negative multiple (``add:mean*-1``, ``diffmean*-2``, ``resid:6*-4``: steering away).

``prompt:en`` / ``prompt:native`` touch no activation: the prompt asks for the target language instead (an English
instruction, ``Answer in French.``, or the target's own name in its own language from CLDR, ``français:``, on a line
before the prompt; :func:`instructed`). Combined with ``deactivate`` the source's neurons are still zeroed. Their
control, ``control:prompt:en``, is the same instruction naming another run language, drawn per seed
(:func:`control_language`): the form of the intervention without its information about t.

``resid:L*a`` is not a neuron factor: it adds ``a * (mu_t - mu_rest)`` to the residual stream after layer L
(``blocks.{L}.hook_resid_post``) at every position it selects, mu being the per-language residual means recorded by
``identify`` (residual DiffMean). ``control:resid:L*a`` adds a random direction of the same norm at the same layer.

The last three are the paper's **test-time** factors: their value is computed in the forward itself, per row (the
reference takes it over the whole padded batch, so its results depend on the batch: pitfall P4). ``testmax*A`` and
``testmax+*A`` scale m by A, like the reference's ``=A`` / ``+A`` operands.

An :class:`Intervention` picks the target language's neurons, a factor, layers, positions, and optionally a source
language whose neurons are zeroed at the same time (``deactivate``). :func:`steering` applies one intervention to
every row of a batch, or a different one per row, and removes its hooks on exit, also after an exception.
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from lens_steer.errors import LensSteerError
from lens_steer.models import ACT_FNS, MLPSite, Model, ModelLike, as_model
from lens_steer.neurons import NeuronSet
from lens_steer.stats import Stats

FACTOR_FORMS = ("p_max, p_median, mean, p_max*A, p_median*A, mean*A, scale:A, add:B, set:V, zero, testmax, testmax+,"
                " testmax*A, p10 (any pQ, Q in 1..99), add:mean*A, diffmean*A, control:p_max, control:p_median,"
                " control:diffmean*A (matched random neurons), resid:L*A (residual DiffMean after layer L),"
                " control:resid:L*A (a random direction of the same norm), prompt:en, prompt:native (ask in the prompt),"
                " control:prompt:en (ask for another language)")
SHIFTS = {"add:mean": "addmean", "diffmean": "diffmean"}
"""The additive statistic factors of peers' methods (``act += a * statistic``) -> their kind."""
PAPER_FACTORS = ("p_max", "p_median", "testmax", "testmax+", "zero", "p10")
"""The factors of the paper's factor table, in its order."""
_STAT_OF = {"p_max": "max", "p_median": "median", "mean": "mean"}
_FAMILY_OF = {stat: name for name, stat in _STAT_OF.items()}
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


@dataclass(frozen=True)
class Factor:
    """A parsed factor. ``kind`` is ``stat`` (uses ``stat``: max, median, mean), ``scale``, ``add``, ``set``,
    ``zero``, ``addmean`` / ``diffmean`` (act += a * mean_t, or a * (mean_t - the other languages' mean)) or ``test`` (a test-time statistic of the forward itself; ``stat``: max, max+ or quantile); ``value`` is
    the multiple a, the scale, the addend, the set value, or the quantile (0.10 for ``p10``).

    >>> parse_factor("p_max*2")
    Factor(text='p_max*2', kind='stat', value=2.0, stat='max')
    >>> parse_factor("scale:0.5").kind, parse_factor("zero").value
    ('scale', 0.0)
    >>> parse_factor("testmax+"), parse_factor("p10").value
    (Factor(text='testmax+', kind='test', value=1.0, stat='max+'), 0.1)
    >>> parse_factor("p_median*0.5").family, parse_factor("add:3").multiple, parse_factor("control:p_max").control
    ('p_median', 3.0, True)
    """

    text: str
    kind: str
    value: float
    stat: str | None = None
    control: bool = field(default=False, repr=False)  # control:F applies F to matched random neurons
    layer: int | None = field(default=None, repr=False)  # resid:L*a: the layer whose output is shifted

    @property
    def needs_stats(self) -> bool:
        return self.kind in ("stat", "addmean", "diffmean")

    @property
    def test_time(self) -> bool:
        """Its value is computed from the forward itself (testmax, testmax+, pQ)."""
        return self.kind == "test"

    @property
    def amplifies(self) -> bool:
        """Meant to push the target's neurons up: not a control, not zero, not a low percentile (p10 suppresses)."""
        low = self.kind == "test" and self.stat == "quantile" and self.value < 0.5
        return not (self.control or self.kind == "zero" or low)

    @property
    def family(self) -> str | None:
        """The dose family: ``p_max``, ``p_median``, ``mean``, ``scale``, ``add``, or ``control:`` and a statistic
        (``control:p_max``). Factors of one family differ only in :attr:`multiple`. None for zero, set and the
        test-time factors.

        >>> [parse_factor(t).family for t in ("p_max*2", "scale:3", "control:p_median*2", "zero", "testmax")]
        ['p_max', 'scale', 'control:p_median', None, None]
        """
        if self.kind in ("scale", "add"):
            return self.kind
        if self.kind in ("addmean", "diffmean", "resid"):
            name = {"addmean": "add:mean", "diffmean": "diffmean", "resid": f"resid:{self.layer}"}[self.kind]
            return f"control:{name}" if self.control else name
        if self.kind != "stat":
            return None
        name = _FAMILY_OF[self.stat or "max"]
        return f"control:{name}" if self.control else name

    @property
    def multiple(self) -> float | None:
        """The dose on the family's axis: a of ``p_max*a`` (1 for ``p_max``), the scale, the addend; None without a
        family. A bare control (``control:p_max``) has none either: it is the null the doses are compared with, not a
        point of the curve, while ``control:p_max*2`` is one.

        >>> parse_factor("p_max").multiple, parse_factor("control:p_max").multiple, parse_factor("set:2").multiple
        (1.0, None, None)
        """
        if self.family is None:
            return None
        if self.control and re.fullmatch(r"[a-z_:]+(:\d+)?", self.text.removeprefix("control:").strip()):
            return None
        return self.value


def parse_factor(text: str) -> Factor:
    """Parse a factor string; anything else (a non-finite number included) is a one-line error listing the forms."""
    spec = text.strip()
    if spec.startswith("control:"):
        inner = parse_factor(spec[len("control:"):])
        if inner.control or not (inner.needs_stats or inner.kind in ("resid", "prompt")):
            raise LensSteerError(f"cannot parse factor {text!r}: a control applies a statistic factor (control:p_max,"
                                 " control:p_median, control:p_max*2, control:diffmean*2) to matched random neurons,"
                                 " a residual direction (control:resid:6*4) as a random one of the same norm, or an"
                                 " instruction (control:prompt:en) naming another language")
        return Factor(spec, inner.kind, inner.value, inner.stat, control=True, layer=inner.layer)
    factor = _parse_plain(spec)
    if factor is None:
        raise LensSteerError(f"cannot parse factor {text!r}; valid forms: {FACTOR_FORMS} (A, B, V numbers)")
    if not math.isfinite(factor.value):
        raise LensSteerError(f"factor {text!r} has a non-finite number ({factor.value}); use a finite one, e.g."
                             " p_max*2 or scale:4")
    if factor.value < 0 and (factor.kind == "stat" or (factor.kind == "test" and factor.stat == "max")):
        # p_max*-1 *sets* the neurons to minus a statistic; the additive forms (add:, diffmean*-2, resid:6*-4,
        # testmax+*-1) with a negative multiple steer away and stay allowed, as do scale: and set:, which name
        # their value outright.
        raise LensSteerError(f"factor {text!r} sets the neurons below zero, a value no statistic of the language"
                             " takes; use a multiple >= 0, zero to silence them, or scale:-1 for a deliberate flip")
    return factor


def _parse_plain(spec: str) -> Factor | None:
    if spec in _STAT_OF:
        return Factor(spec, "stat", 1.0, _STAT_OF[spec])
    if spec == "zero":
        return Factor(spec, "zero", 0.0)
    m = re.fullmatch(r"prompt:\s*(en|native)", spec)
    if m:
        return Factor(spec, "prompt", 1.0, m.group(1))
    m = re.fullmatch(rf"resid:\s*(\d+)(?:\s*\*\s*({_NUMBER}))?", spec)
    if m:
        return Factor(spec, "resid", float(m.group(2) or 1.0), "resid", layer=int(m.group(1)))
    m = re.fullmatch(rf"(add:\s*mean|diffmean)(?:\s*\*\s*({_NUMBER}))?", spec)
    if m:
        kind = SHIFTS[re.sub(r"\s", "", m.group(1))]
        return Factor(spec, kind, float(m.group(2) or 1.0), "mean")
    m = re.fullmatch(rf"(p_max|p_median|mean)\s*\*\s*({_NUMBER})", spec)
    if m:
        return Factor(spec, "stat", float(m.group(2)), _STAT_OF[m.group(1)])
    m = re.fullmatch(rf"(scale|add|set):\s*({_NUMBER})", spec)
    if m:
        return Factor(spec, m.group(1), float(m.group(2)))
    m = re.fullmatch(rf"testmax(\+)?(?:\s*\*\s*({_NUMBER}))?", spec)
    if m:
        return Factor(spec, "test", float(m.group(2) or 1.0), "max+" if m.group(1) else "max")
    m = re.fullmatch(r"p([1-9]\d?)", spec)
    if m:
        return Factor(spec, "test", int(m.group(1)) / 100, "quantile")
    return None


@functools.lru_cache(maxsize=1024)  # tables ask it of every row (tens of thousands); one parse takes ~10 us
def factor_or_none(text: object) -> Factor | None:
    """The parsed factor of a table cell, or None where the cell is no factor (written by hand, empty, NaN): a table
    read back is tolerated where a command line is refused.

    >>> factor_or_none("p_max*2").multiple, factor_or_none("p_maximum"), factor_or_none(float("nan"))
    (2.0, None, None)
    """
    if not isinstance(text, str):
        return None
    try:
        return parse_factor(text)
    except LensSteerError:
        return None


def is_control(text: object) -> bool:
    """Whether a factor text is a matched random-neuron control (``control:p_max``); a text that is no factor is not.

    >>> is_control("control:p_max*2"), is_control("p_max"), is_control("control")
    (True, False, False)
    """
    factor = factor_or_none(text)
    return factor is not None and factor.control


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

    It checks itself when built, so a bad factor, layer or position fails before any model work:

    >>> Intervention("fr", "p_max", positions="middle")
    Traceback (most recent call last):
    ...
    lens_steer.errors.LensSteerError: unknown positions 'middle'; use one of all, prompt, generated, last:K
    """

    target: str
    factor: Factor | str
    layers: str | int | Sequence[int] = "all"
    positions: str = "all"
    deactivate: str | None = None
    seed: int = 0  # which matched random draw a control:... factor uses

    def __post_init__(self) -> None:
        if not isinstance(self.factor, (Factor, str)):
            raise LensSteerError(f"factor {self.factor!r} is neither a Factor nor a factor string ({FACTOR_FORMS})")
        self.parsed_factor()
        self.position_rule()
        if not _valid_layers(self.layers):
            raise LensSteerError(f"cannot use layers {self.layers!r}; use \"all\", a layer (5) or a sequence of"
                                 " layers ([1, 4, 9])")

    def parsed_factor(self) -> Factor:
        return self.factor if isinstance(self.factor, Factor) else parse_factor(self.factor)

    def layer_list(self, n_layers: int) -> list[int]:
        if self.layers == "all":
            return list(range(n_layers))
        one = isinstance(self.layers, numbers.Integral)
        layers = [self.layers] if one else list(self.layers)  # type: ignore[arg-type]
        bad = [layer for layer in layers if not 0 <= int(layer) < n_layers]
        if bad:
            raise LensSteerError(f"layers {bad} out of range: this model has layers 0..{n_layers - 1}")
        return sorted({int(layer) for layer in layers})

    def position_rule(self) -> tuple[str, int]:
        if self.positions in ("all", "prompt", "generated"):
            return self.positions, 0
        m = re.fullmatch(r"last:(\d+)", self.positions) if isinstance(self.positions, str) else None
        if m and int(m.group(1)) > 0:
            return "last", int(m.group(1))
        raise LensSteerError(f"unknown positions {self.positions!r}; use one of {POSITIONS}")


def check_layers(n_layers: int | None, factors: Sequence[Factor] = (), layers: str | int | Sequence[int] = "all",
                 ) -> None:
    """Refuse layers out of ``0..n_layers-1`` (``resid:L`` factors, an intervention's ``layers``) before the model
    loads: a run's manifest records its model's layer count. ``n_layers`` None (a manifest without it): the check
    after loading stays the only one.

    >>> check_layers(4, [parse_factor("resid:3*2")], [0, 3])
    >>> check_layers(4, [parse_factor("control:resid:7")])
    Traceback (most recent call last):
    ...
    lens_steer.errors.LensSteerError: resid:7 is out of range: this model has layers 0..3
    """
    if not isinstance(n_layers, int) or isinstance(n_layers, bool) or n_layers < 1:
        return
    for factor in factors:
        if factor.kind == "resid" and not 0 <= int(factor.layer or 0) < n_layers:
            raise LensSteerError(f"resid:{factor.layer} is out of range: this model has layers 0..{n_layers - 1}")
    if layers != "all" and _valid_layers(layers):
        listed = [layers] if isinstance(layers, numbers.Integral) else list(layers)  # type: ignore[arg-type]
        bad = [layer for layer in listed if not 0 <= int(layer) < n_layers]
        if bad:  # the words of Intervention.layer_list, which checks again once the model is loaded
            raise LensSteerError(f"layers {bad} out of range: this model has layers 0..{n_layers - 1}")


def _valid_layers(layers: object) -> bool:
    """``"all"``, one layer or a sequence of layers, each an int (a bool is no layer); their range is checked
    against the model later (:meth:`Intervention.layer_list`)."""
    def is_layer(x: object) -> bool:
        return isinstance(x, numbers.Integral) and not isinstance(x, bool)

    if isinstance(layers, str):
        return layers == "all"
    return is_layer(layers) or (isinstance(layers, Sequence) and all(is_layer(x) for x in layers))


DynKey = tuple  # ("max",) or ("quantile", q): which test-time statistic of the row a coefficient multiplies


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


def instruction(target: str, which: str) -> str:
    r"""The line ``prompt:en`` / ``prompt:native`` puts before a prompt: an English instruction naming the target
    language, or the language's own name (CLDR, via babel) followed by a colon.

    >>> instruction("fr", "en"), instruction("fr", "native")
    ('Answer in French.\n', 'Français:\n')
    """
    from lens_steer.languages import get_language

    if which == "en":
        return f"Answer in {get_language(target).name}.\n"
    try:
        from babel import Locale

        name = Locale.parse(target).get_display_name(target) or get_language(target).name
    except Exception:  # noqa: BLE001 - babel without this locale: the English name still names it
        name = get_language(target).name
    return f"{name[:1].upper()}{name[1:]}:\n"


def control_language(target: str, seed: int, languages: Sequence[str]) -> str:
    """The language a ``control:prompt:`` instruction names instead of ``target``: one of the other ``languages``,
    drawn by ``seed`` (and the target), the same every run.

    >>> control_language("fr", 0, ["en", "fr", "ja"]) in ("en", "ja")
    True
    """
    others = [c for c in languages if c != target]
    if not others:
        raise LensSteerError("control:prompt: needs a run of at least two languages (another language to name)")
    g = torch.Generator().manual_seed(seed * 1_000_003 + sum(map(ord, target)))
    return others[int(torch.randint(len(others), (1,), generator=g))]


def instructed(prompts: Sequence[str], interventions: Sequence[Intervention | None] | None,
               steerer: Any = None) -> list[str]:
    r"""The prompts as the model sees them: a ``prompt:`` intervention puts its instruction first; others unchanged.
    A ``control:prompt:`` one names :func:`control_language` of the run's languages (``steerer.neurons``) instead
    of the target.

    >>> instructed(["Paris is in", "x"], [Intervention("fr", "prompt:en"), None])
    ['Answer in French.\nParis is in', 'x']
    """
    if interventions is None:
        return list(prompts)
    out = []
    for p, iv in zip(prompts, interventions):
        factor = iv.parsed_factor() if iv is not None else None
        if factor is None or factor.kind != "prompt":
            out.append(p)
            continue
        lang = iv.target
        if factor.control:
            languages = getattr(getattr(steerer, "neurons", None), "languages", None)  # any steerer-like object
            if languages is None:
                raise LensSteerError("control:prompt: needs the run's languages (score or generate with a steerer)")
            lang = control_language(iv.target, iv.seed, languages)
        out.append(instruction(lang, factor.stat or "en") + p)
    return out


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
    from lens_steer.stats import check_compatible

    check_compatible(stats.manifest, site.n_layers, site.d_mlp)
    if model is not None:
        dtype = str(model.dtype).removeprefix("torch.")
        recorded = stats.manifest.get("dtype")
        if recorded and recorded != dtype:
            import warnings

            warnings.warn(f"statistics were recorded in {recorded} and the model runs in {dtype}: the patched values"
                          f" are the recorded ones rounded to {dtype}", stacklevel=3)


class Steerer:
    """Compiles interventions against a neuron set and statistics, and installs them as hooks.

    >>> steerer = Steerer(bridge, neurons, stats)
    >>> tokens = bridge.to_tokens("Le petit chat dort.")
    >>> with steerer.apply(Intervention("fr", "p_max")):
    ...     logits = bridge(tokens)
    >>> bool((logits != bridge(tokens)).any())  # steered inside the block, plain after it (the hooks are gone)
    True
    """

    def __init__(self, model: ModelLike, neurons: NeuronSet, stats: Stats | None = None):
        self.model = as_model(model)
        self.site = self.model.site
        neurons.check_model(self.site.n_layers, self.site.d_mlp)
        if stats is not None:
            check_stats_for_model(stats, self.site, self.model)
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

    def _maps(self, iv: Intervention) -> dict[int, _LayerPlan]:
        """layer -> the one-row plan of one intervention."""
        factor = iv.parsed_factor()
        if iv.target not in self.neurons.languages:
            raise LensSteerError(f"language {iv.target!r} has no neuron set here; the run has"
                                 f" {', '.join(self.neurons.languages)}")
        values = self._stat_values(iv.target, factor) if factor.needs_stats else None
        resid = factor.kind in ("resid", "prompt")  # no neuron of the target (the residual stream, or the prompt)
        source = self.control_set(iv.seed) if factor.control and not resid else self.neurons
        out: dict[int, _LayerPlan] = {}
        for layer in iv.layer_list(self.site.n_layers):
            idx = torch.zeros(0, dtype=torch.long) if resid else source.indices(iv.target, layer)
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

    def resid_direction(self, target: str, layer: int, control_seed: int | None = None) -> Float[Tensor, " d_model"]:
        """mu_t - mu_rest of the residual stream after ``layer`` (unweighted mean of the other languages), or with
        ``control_seed`` a random direction of the same norm (seeded by the seed, layer and target)."""
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
        seed = control_seed * 1_000_003 + layer * 1009 + self.stats.languages.index(target)
        noise = torch.randn(direction.shape, generator=torch.Generator().manual_seed(seed))
        return noise / noise.norm() * direction.norm()

    def resid_plan(self, rows: Sequence[Intervention | None]) -> dict[int, Tensor]:
        """layer -> [rows, d_model] additions to the residual stream after that layer (zero for other rows)."""
        out: dict[int, Tensor] = {}
        for r, iv in enumerate(rows):
            factor = iv.parsed_factor() if iv is not None else None
            if factor is None or factor.kind != "resid":
                continue
            layer = int(factor.layer or 0)
            vec = self.resid_direction(iv.target, layer, iv.seed if factor.control else None) * factor.value
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
        self.mask = kwargs.get("attention_mask")

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
