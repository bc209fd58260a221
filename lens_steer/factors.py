"""The factor grammar: what an intervention does, as the text a user types and the values it parses to. No torch
(plots, reports and the CLI read factors without loading it); :mod:`lens_steer.steer` installs them as hooks.

A neuron factor (:class:`Factor`) acts on the neuron value ``act = act_fn(gate)`` of the selected neurons as an affine
map ``act' = alpha * act + beta``. One parser, :func:`parse_factor`:

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

Two factors touch no neuron of the target, and have their own types: ``resid:L*a`` (:class:`ResidualShift`) adds
``a * (mu_t - mu_rest)`` to the residual stream after layer L (``blocks.{L}.hook_resid_post``) at every position it
selects, mu being the per-language residual means recorded by ``identify`` (residual DiffMean). It has two nulls at
the same layer (:mod:`lens_steer.resid_cov`): ``control:resid:L*a`` (also ``control-cov:resid:L*a``) adds a draw
of N(0, Sigma_L), the residual's own covariance, with the DiffMean's Mahalanobis norm ("a push of this size along
directions the residual actually varies in"); ``control-iso:resid:L*a`` an isotropic random direction of the
DiffMean's Euclidean norm ("any push of this size"). ``prompt:en`` / ``prompt:native``
(:class:`PromptInstruction`) ask for the target language in the prompt instead (:mod:`lens_steer.instructions`);
``control:prompt:en`` names another run language. Combined with ``deactivate`` the source's neurons are still zeroed.

``testmax``, ``testmax+`` and ``pQ`` are the paper's **test-time** factors: their value is computed in the forward
itself, per row (the reference takes it over the whole padded batch, so its results depend on the batch: pitfall P4).
``testmax*A`` and ``testmax+*A`` scale m by A, like the reference's ``=A`` / ``+A`` operands.

An :class:`Intervention` picks the target language's neurons, a factor, layers, positions, and optionally a source
language whose neurons are zeroed at the same time (``deactivate``). Every factor typed is written back verbatim
(:attr:`Factor.text`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from lens_steer.errors import LensSteerError

FACTOR_FORMS = ("p_max, p_median, mean, p_max*A, p_median*A, mean*A, scale:A, add:B, set:V, zero, testmax, testmax+,"
                " testmax*A, p10 (any pQ, Q in 1..99), add:mean*A, diffmean*A, control:p_max, control:p_median,"
                " control:diffmean*A (matched random neurons), resid:L*A (residual DiffMean after layer L),"
                " control:resid:L*A (a random direction of the residual's covariance, the same Mahalanobis norm),"
                " control-iso:resid:L*A (an isotropic one of the same norm), prompt:en, prompt:native (ask in the prompt),"
                " control:prompt:en (ask for another language)")
SHIFTS = {"add:mean": "addmean", "diffmean": "diffmean"}
"""The additive statistic factors of peers' methods (``act += a * statistic``) -> their kind."""
PAPER_FACTORS = ("p_max", "p_median", "testmax", "testmax+", "zero", "p10")
"""The factors of the paper's factor table, in its order."""
_STAT_OF = {"p_max": "max", "p_median": "median", "mean": "mean"}
_CONTROL_PREFIX = re.compile(r"^\s*control(-iso|-cov)?:")
_FAMILY_OF = {stat: name for name, stat in _STAT_OF.items()}
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


@dataclass(frozen=True)
class Factor:
    """A parsed factor. ``kind`` is ``stat`` (uses ``stat``: max, median, mean), ``scale``, ``add``, ``set``,
    ``zero``, ``addmean`` / ``diffmean`` (act += a * mean_t, or a * (mean_t - the other languages' mean)) or ``test``
    (a test-time statistic of the forward itself; ``stat``: max, max+ or quantile); ``value`` is the multiple a, the
    scale, the addend, the set value, or the quantile (0.10 for ``p10``). The factors that touch no neuron of the
    target are its subclasses :class:`ResidualShift` (``resid``) and :class:`PromptInstruction` (``prompt``).

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
    # A neuron factor acts on the layers of its Intervention; only a ResidualShift names a layer of its own.
    layer: ClassVar[int | None] = None
    on_neurons: ClassVar[bool] = True
    """Whether it changes neurons of the target (False: the residual stream, or the prompt)."""

    @property
    def needs_stats(self) -> bool:
        return self.kind in ("stat", "addmean", "diffmean")

    @property
    def has_control(self) -> bool:
        """Whether the grammar has ``control:`` + this factor: the statistic factors (matched random neurons), a
        residual shift (a random direction) and an instruction (naming another language)."""
        return self.needs_stats

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
        if self.kind in ("addmean", "diffmean"):
            return self._controlled({"addmean": "add:mean", "diffmean": "diffmean"}[self.kind])
        if self.kind != "stat":
            return None
        return self._controlled(_FAMILY_OF[self.stat or "max"])

    def _controlled(self, name: str) -> str:
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
        if self.control and re.fullmatch(r"[a-z_:]+(:\d+)?", _CONTROL_PREFIX.sub("", self.text).strip()):
            return None
        return self.value


@dataclass(frozen=True)
class ResidualShift(Factor):
    """``resid:L*a``: add ``a * (mu_t - mu_rest)`` to the residual stream after layer ``layer``; no neuron of the
    target changes. Its controls add a random direction instead: ``control:resid:L*a`` (``null`` "cov") one drawn
    from the residual's covariance at L with the DiffMean's Mahalanobis norm, ``control-iso:resid:L*a`` ("iso") an
    isotropic one with its Euclidean norm (:mod:`lens_steer.resid_cov`).

    >>> parse_factor("resid:6*-4")
    ResidualShift(text='resid:6*-4', kind='resid', value=-4.0, layer=6)
    >>> parse_factor("control:resid:6") == ResidualShift("control:resid:6", 1.0, control=True, layer=6)
    True
    >>> parse_factor("resid:6*4").family, parse_factor("control:resid:6").multiple
    ('resid:6', None)
    >>> iso = parse_factor("control-iso:resid:6*2")
    >>> iso.control, iso.null, iso.family, iso.multiple, parse_factor("control-cov:resid:6").null
    (True, 'iso', 'control-iso:resid:6', 2.0, 'cov')
    """

    kind: str = field(default="resid", init=False)
    stat: str | None = field(default=None, init=False, repr=False)
    layer: int = field(kw_only=True)  # type: ignore[misc]  # the ClassVar of neuron factors, a field here
    on_neurons: ClassVar[bool] = False
    null: str = field(default="cov", kw_only=True, repr=False)  # which control: cov(ariance-matched) or iso(tropic)

    @property
    def has_control(self) -> bool:
        return True

    @property
    def family(self) -> str | None:
        name = f"resid:{self.layer}"
        return f"control-iso:{name}" if self.control and self.null == "iso" else self._controlled(name)


@dataclass(frozen=True)
class PromptInstruction(Factor):
    """``prompt:en`` / ``prompt:native``: the prompt asks for the target language (an English instruction, or the
    language's own name; ``form``), :func:`lens_steer.instructions.instructed`; no activation changes.

    >>> parse_factor("prompt:native")
    PromptInstruction(text='prompt:native', kind='prompt', value=1.0, form='native')
    >>> parse_factor("control:prompt:en").control, parse_factor("prompt:en").family
    (True, None)
    """

    kind: str = field(default="prompt", init=False)
    value: float = field(default=1.0, init=False)
    stat: str | None = field(default=None, init=False, repr=False)
    form: str = field(kw_only=True)  # en (Answer in French.) or native (Français:)
    on_neurons: ClassVar[bool] = False

    @property
    def has_control(self) -> bool:
        return True


def parse_factor(text: str) -> Factor:
    """Parse a factor string; anything else (a non-finite number included) is a one-line error listing the forms."""
    spec = text.strip()
    m = re.match(r"control-(iso|cov):", spec)
    if m:
        inner = factor_or_none(spec[m.end():])
        if not isinstance(inner, ResidualShift) or inner.control:
            raise LensSteerError(f"cannot parse factor {text!r}: control-iso: and control-cov: name the two nulls of a"
                                 " residual shift (control-iso:resid:6*4, control-cov:resid:6*4); other controls are"
                                 " control:F")
        return dataclasses.replace(inner, text=spec, control=True, null=m.group(1))
    if spec.startswith("control:"):
        inner = parse_factor(spec[len("control:"):])
        if inner.control or not inner.has_control:
            raise LensSteerError(f"cannot parse factor {text!r}: a control applies a statistic factor (control:p_max,"
                                 " control:p_median, control:p_max*2, control:diffmean*2) to matched random neurons,"
                                 " a residual direction (control:resid:6*4) as a random one of the same norm, or an"
                                 " instruction (control:prompt:en) naming another language")
        return dataclasses.replace(inner, text=spec, control=True)
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
        return PromptInstruction(spec, form=m.group(1))
    m = re.fullmatch(rf"resid:\s*(\d+)(?:\s*\*\s*({_NUMBER}))?", spec)
    if m:
        return ResidualShift(spec, float(m.group(2) or 1.0), layer=int(m.group(1)))
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
        if isinstance(factor, ResidualShift) and not 0 <= factor.layer < n_layers:
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

