"""One comparison of steering methods under one set of metrics: the paper's neuron amplification against the methods
peers use (additive and DiffMean neuron steering, residual DiffMean, asking in the prompt), each next to its control.

For every method, on the same data and model:

* on the **reported** cloze facts (the first ``max_facts`` per source language): LSS, target wins, target gain,
  source damage and specificity (:mod:`lens_steer.lss`);
* on the neutral prompts: language-forcing success and repetition (:mod:`lens_steer.forcing`);
* on the held-out UDHR articles: the perplexity ratio against no intervention, self-language (the evaluated
  language is the steered one) and cross-language (:mod:`lens_steer.evals`).

A method is a factor of the grammar (:mod:`lens_steer.factors`) or a factor with ``best`` in place of its number:
``diffmean*best`` chooses the multiple, ``resid:L*best`` the multiple at layer L, ``resid:best*A`` the layer, and
``resid:best`` both. The choice is made on **held-out** facts (the ``held_out`` facts after the reported ones), with
the factor rule of :func:`lens_steer.choice.choose_factor` without forcing (LSS above its null, source damage within the
bound, then the most target wins; within 0.01 the least damage), over at most :data:`MAX_ALPHAS` multiples
(:data:`BEST_ALPHAS`) and every :data:`LAYER_STRIDE`-rd layer.

Every method gets a control row ``control:<method>`` where the grammar has one: matched random neurons (neuron
methods), a random direction drawn from the residual's covariance with the DiffMean's Mahalanobis norm at the same
layer (``resid:``; a second row ``control-iso:<method>``, an isotropic direction of the same Euclidean norm:
:mod:`lens_steer.resid_cov`), the instruction naming another run language (``prompt:``); it uses the method's chosen
multiple and layer. The first row, ``none``, is the model without
intervention (its target wins, forcing and repetition are the baselines).

>>> [m.text for m in parse_methods("p_max, diffmean*best, resid:best")]
['p_max', 'diffmean*best', 'resid:best']
>>> [f.text for f in parse_method("diffmean*best").candidates(18)]
['diffmean*1', 'diffmean*2', 'diffmean*4', 'diffmean*8']
>>> len(parse_method("resid:best").candidates(18))  # layers 0, 3, ..., 15 x 4 multiples
24
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
import time
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lens_steer.configs import DEFAULT_METHODS, CompareOptions  # noqa: F401 - DEFAULT_METHODS re-exported
from lens_steer.errors import LensSteerError
from lens_steer.lid import get_detector
from lens_steer.factors import Factor, PromptInstruction, ResidualShift, parse_factor
from lens_steer.paired import PAIRED_COLUMNS, add_paired, check_reference, method_items, seed_spread, split_spread
from lens_steer.prompts import forcing_prompts
from lens_steer.run import COMPARE_CSV, COMPARE_SUMMARY, writes

BEST_ALPHAS: dict[str, tuple[float, ...]] = {
    "stat": (0.5, 1.0, 2.0, 4.0),  # p_max*a: a multiple of the recorded statistic
    "addmean": (1.0, 2.0, 4.0, 8.0),  # act += a * mean_t
    "diffmean": (1.0, 2.0, 4.0, 8.0),  # act += a * (mean_t - mean_rest)
    # resid += a * (mu_t - mu_rest): on Gemma-3-270M the direction is 5-25% of the mean's norm
    "resid": (1.0, 2.0, 4.0, 8.0),
    "scale": (2.0, 4.0, 8.0, 16.0),
    "add": (0.5, 1.0, 2.0, 4.0),
    "set": (0.5, 1.0, 2.0, 4.0),
    "test": (0.5, 1.0, 2.0, 4.0),  # testmax*a
}
"""The candidate multiples of a ``*best`` method, by factor kind (at most :data:`MAX_ALPHAS`)."""
MAX_ALPHAS = 4
LAYER_STRIDE = 3
# Each number's 95% interval right after it: the bootstrap over pairs for lss, target_gain, source_damage and
# specificity, Wilson over n_facts for target_wins(_base) and over n_generations for forcing, the bootstrap over
# (evaluated, intervened) cells for the perplexity ratios (README: which interval each column uses).
COMPARE_COLUMNS = ("method", "factor", "alpha", "layer", "chosen", "lss", "lss_low", "lss_high", "target_wins",
                   "target_wins_low", "target_wins_high", "target_wins_base", "target_wins_base_low",
                   "target_wins_base_high", "target_gain", "target_gain_low", "target_gain_high", "source_damage",
                   "source_damage_low", "source_damage_high", "specificity", "specificity_low", "specificity_high",
                   "forcing", "forcing_low", "forcing_high", "repetition", "udhr_ppl_self", "udhr_ppl_self_low",
                   "udhr_ppl_self_high", "udhr_ppl_cross", "udhr_ppl_cross_low", "udhr_ppl_cross_high", "n_pairs",
                   "n_facts", "n_generations", "n_ppl_self", "n_ppl_cross", "seconds", "note")
_BEST = re.compile(r"\bbest\b")

_AT = COMPARE_COLUMNS.index("seconds")
COMPARE_COLUMNS = (*COMPARE_COLUMNS[:_AT], *PAIRED_COLUMNS, *COMPARE_COLUMNS[_AT:])


@dataclass(frozen=True)
class Method:
    """A method as typed: a fixed factor, or a factor template whose multiple and/or layer are chosen.

    ``template`` is the factor text with ``{alpha}`` / ``{layer}`` where ``best`` stood; ``base`` the factor parsed
    from the text as typed (with 2 and layer 0 in place of ``best``), whose multiple and layer the candidates replace.
    """

    text: str
    template: str
    base: Factor
    choose_alpha: bool = False
    choose_layer: bool = False

    @property
    def kind(self) -> str:
        return self.base.kind

    @property
    def chooses(self) -> bool:
        return self.choose_alpha or self.choose_layer

    @property
    def chosen(self) -> str:
        """What is chosen on held-out facts: ``-``, ``alpha``, ``layer`` or ``layer+alpha``."""
        return "+".join(w for w, on in (("layer", self.choose_layer), ("alpha", self.choose_alpha)) if on) or "-"

    def factor(self, alpha: float | None = None, layer: int | None = None) -> Factor:
        """The factor of a multiple and a layer, built as a value: ``base`` with them in place (and its text the
        template's, written back verbatim), equal to what parsing that text gives.

        >>> m = parse_method("resid:best")
        >>> m.factor(4.0, 6) == parse_factor("resid:6*4")
        True
        """
        if not self.chooses:
            return self.base
        changes: dict[str, Any] = {"text": self.template.format(alpha=_number(alpha), layer=layer)}
        if self.choose_alpha:
            changes["value"] = float(_number(alpha))  # the number the text shows: text and value agree
        if self.choose_layer:
            if layer is None:
                raise LensSteerError(f"{self.text} chooses its layer: give one")
            changes["layer"] = int(layer)
        return dataclasses.replace(self.base, **changes)

    @property
    def alphas(self) -> tuple[float, ...]:
        return BEST_ALPHAS[self.kind][:MAX_ALPHAS]

    def candidates(self, n_layers: int) -> list[Factor]:
        """Every factor a ``best`` method may end on (just the factor of a fixed one); :func:`search` measures at
        most the layers plus the multiples of them."""
        if not self.chooses:
            return [self.factor()]
        alphas = self.alphas if self.choose_alpha else (None,)
        layers = range(0, n_layers, LAYER_STRIDE) if self.choose_layer else (None,)
        return [self.factor(a, layer) for layer in layers for a in alphas]


def _number(x: float | None) -> str:
    return "1" if x is None else f"{x:g}"


def parse_method(text: str) -> Method:
    """One method string: a factor of the grammar, or one with ``best`` for its multiple (``diffmean*best``,
    ``scale:best``) or its layer (``resid:best*4``); ``resid:best`` chooses both. Controls are not methods: every
    method brings its own.

    >>> m = parse_method("resid:best*4")
    >>> (m.chosen, m.factor(layer=6).text)
    ('layer', 'resid:6*4')
    >>> parse_method("zero*best")
    Traceback (most recent call last):
    ...
    lens_steer.errors.LensSteerError: cannot compare 'zero*best': best stands for the multiple of a factor that has one (p_max*best, add:mean*best, diffmean*best, scale:best, resid:L*best) or for the layer of resid: (resid:best, resid:best*A)
    """
    spec = text.strip()
    if re.match(r"control(-iso|-cov)?:", spec):
        raise LensSteerError(f"cannot compare {text!r}: compare adds each method's control itself; list the method"
                             f" ({re.sub(r'^control(-iso|-cov)?:', '', spec)})")
    if not _BEST.search(spec):
        return Method(spec, spec, parse_factor(spec))
    template, choose_layer = spec, False
    m = re.fullmatch(r"resid:\s*best(\s*\*\s*\S+)?", spec)
    if m:
        choose_layer = True
        template = "resid:{layer}" + (m.group(1) or "*best")
    choose_alpha = bool(re.search(r"(\*\s*|:\s*)best$", template))
    template = re.sub(r"(\*\s*|:\s*)best$", r"\g<1>{alpha}", template)
    try:  # a best left anywhere else, or a stray brace, is no method
        probe = None if _BEST.search(template) else parse_factor(template.format(alpha="2", layer=0))
    except (LensSteerError, KeyError, IndexError, ValueError):
        probe = None
    if probe is None or probe.control or probe.kind not in BEST_ALPHAS:
        raise LensSteerError(f"cannot compare {text!r}: best stands for the multiple of a factor that has one"
                             " (p_max*best, add:mean*best, diffmean*best, scale:best, resid:L*best) or for the layer"
                             " of resid: (resid:best, resid:best*A)")
    return Method(spec, template, probe, choose_alpha=choose_alpha, choose_layer=choose_layer)


def parse_methods(text: str) -> list[Method]:
    """A comma-separated list of methods, each once (a repeat is refused: its rows would be ambiguous)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise LensSteerError("no method given; e.g. --methods p_max,diffmean*best,resid:best,prompt:en")
    seen = [p for i, p in enumerate(parts) if p in parts[:i]]
    if seen:
        raise LensSteerError(f"method {seen[0]!r} is listed twice; list each method once")
    return [parse_method(p) for p in parts]


def control_of(factor: Factor) -> Factor | None:
    """The control the grammar has for a factor (``control:`` + its text), or None (scale, add, set, zero, test-time).

    >>> control_of(parse_factor("diffmean*2")).text, control_of(parse_factor("scale:4"))
    ('control:diffmean*2', None)
    """
    if factor.has_control and not factor.control:  # the value parse_factor(f"control:{factor.text}") gives
        return dataclasses.replace(factor, text=f"control:{factor.text}", control=True)
    return None


def controls_of(factor: Factor, covariance: bool = True) -> list[tuple[str, Factor]]:
    """The controls compare runs for a factor, each with its row prefix: :func:`control_of`, and for ``resid:``
    also the isotropic null ``control-iso:`` (:mod:`lens_steer.resid_cov`); without the residual covariance (a run
    recorded before it) the isotropic one alone.

    >>> [(p, f.text) for p, f in controls_of(parse_factor("resid:6*2"))]
    [('control', 'control:resid:6*2'), ('control-iso', 'control-iso:resid:6*2')]
    >>> [p for p, _ in controls_of(parse_factor("resid:6*2"), covariance=False)], controls_of(parse_factor("zero"))
    (['control-iso'], [])
    """
    control = control_of(factor)
    if control is None:
        return []
    if not isinstance(factor, ResidualShift):
        return [("control", control)]
    iso = dataclasses.replace(control, text=f"control-iso:{factor.text}", null="iso")
    return ([("control", control)] if covariance else []) + [("control-iso", iso)]


NULLS = {"control": "", "control-iso": "isotropic: any push of this size"}


def _control_note(factor: Factor, controls: list[tuple[str, Factor]]) -> str:
    """The method row's note on its controls."""
    if not controls:
        return "no control in the grammar for this kind"
    if isinstance(factor, ResidualShift) and controls[0][0] != "control":
        return "no covariance-matched control: the run has no residual covariance (record it again)"
    return ""


_ALPHA_KINDS = ("stat", "addmean", "diffmean", "resid", "scale", "add", "set", "test")


def alpha_of(factor: Factor) -> float:
    """The multiple a method uses (NaN where it has none: prompt, zero, pQ)."""
    if factor.kind in _ALPHA_KINDS and not (factor.kind == "test" and factor.stat == "quantile"):
        return float(factor.value)
    return float("nan")


def layer_of(factor: Factor) -> int | str:
    """The layer a method acts on: L of ``resid:L``, ``all`` for neuron methods, ``-`` for prompting."""
    if isinstance(factor, ResidualShift):
        return factor.layer
    return "-" if isinstance(factor, PromptInstruction) else "all"


# ---------------------------------------------------------------------------------------------------------------
# Pure pieces: choosing on held-out facts, turning a method's measurements into rows
# ---------------------------------------------------------------------------------------------------------------
def choose(rows: Sequence[dict[str, Any]], candidates: Sequence[Factor],
           damage_bound: float) -> tuple[Factor, str, list[dict[str, Any]]]:
    """The candidate :func:`lens_steer.choice.choose_factor` picks from held-out LSS rows (no forcing), the reason, and
    one line per candidate (its held-out mean LSS, target wins and source damage)."""
    from lens_steer.choice import choose_factor, summarise  # deferred: torch, so that the CLI imports compare light

    summary = summarise(rows, candidates, damage_bound=damage_bound)
    best, reason = choose_factor(summary["factors"], candidates, damage_bound)
    table = [{"factor": f.text, **{k: summary["factors"][f.text][k]
                                  for k in ("mean_lss", "target_wins", "source_damage", "n_pairs")}}
             for f in candidates]
    return next(f for f in candidates if f.text == best), reason, table


def search(method: Method, n_layers: int, measure: Callable[[list[Factor]], list[dict[str, Any]]],
           damage_bound: float) -> tuple[Factor, str, list[dict[str, Any]]]:
    """Choose a ``best`` method's factor with :func:`choose` on the LSS rows ``measure`` returns for candidates.

    One search over the multiples, or over the layers; ``resid:best`` (both) goes coordinate-wise, so that it
    measures layers + multiples candidates rather than their product: every :data:`LAYER_STRIDE`-rd layer at the
    smallest multiple, then every multiple at the layer chosen. The smallest, because larger pushes break the damage
    bound at most layers of Gemma-3-270M, and a layer chosen among ineligible candidates says little: the layer kept
    is the one where a small push wins most. The table lists every measured candidate.
    """
    if not (method.choose_layer and method.choose_alpha):
        candidates = method.candidates(n_layers)
        return choose(measure(candidates), candidates, damage_bound)
    layers = [method.factor(method.alphas[0], layer) for layer in range(0, n_layers, LAYER_STRIDE)]
    rows = measure(layers)
    at_layer, _, first = choose(rows, layers, damage_bound)
    alphas = [method.factor(a, at_layer.layer) for a in method.alphas]
    new = [f for f in alphas if f.text != at_layer.text]
    rows = [r for r in rows if r["factor"] == at_layer.text] + measure(new)
    best, reason, second = choose(rows, alphas, damage_bound)
    return best, f"layer {at_layer.layer} (of {len(layers)} candidate layers), then {reason}", first + [
        r for r in second if r["factor"] != at_layer.text]


def ppl_ratios(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Perplexity ratios against no intervention from ``eval_ppl`` rows (``nll_macro``): exp of the mean NLL change,
    over cells whose evaluated language is the intervened one (``self``) or another (``cross``). 1 = unchanged.
    With each its 95% bootstrap interval over those cells (``self_low``, ``self_high``...) and their count
    (``n_self``, ``n_cross``).

    >>> rows = [dict(intervened="none", eval_lang=e, metric="nll_macro", value=1.0) for e in "ab"]
    >>> rows += [dict(intervened="a", eval_lang=e, metric="nll_macro", value=v) for e, v in (("a", 1.5), ("b", 1.0))]
    >>> {k: round(v, 3) for k, v in ppl_ratios(rows).items() if k in ("self", "cross", "self_low", "n_self")}
    {'self': 1.649, 'cross': 1.0, 'self_low': 1.649, 'n_self': 1}
    """
    nll = [r for r in rows if r["metric"] == "nll_macro"]
    base = {r["eval_lang"]: r["value"] for r in nll if r["intervened"] == "none"}
    deltas: dict[str, list[float]] = {"self": [], "cross": []}
    for r in nll:
        if r["intervened"] != "none" and r["eval_lang"] in base:
            deltas["self" if r["eval_lang"] == r["intervened"] else "cross"].append(r["value"] - base[r["eval_lang"]])
    import torch  # deferred: compare stays torch-free at import for the CLI

    from lens_steer.intervals import bootstrap_mean_ci  # deferred: torch

    out: dict[str, float] = {k: math.exp(sum(v) / len(v)) if v else float("nan") for k, v in deltas.items()}
    for k, v in deltas.items():  # exp is monotone: the interval of the ratio is exp of the mean change's
        lo, hi = bootstrap_mean_ci(torch.tensor(v, dtype=torch.float64))
        out.update({f"{k}_low": math.exp(lo), f"{k}_high": math.exp(hi), f"n_{k}": len(v)})
    return out


def method_row(text: str, factor: Factor, chosen: str, entry: dict[str, Any], ppl: dict[str, float],
               seconds: float, note: str = "") -> dict[str, Any]:
    """One ``compare.csv`` row from a factor's LSS summary entry (:func:`lens_steer.choice.summarise`, with forcing)."""
    get = (lambda k: entry.get(k, float("nan")))  # noqa: E731
    row = {"method": text, "factor": factor.text, "alpha": alpha_of(factor), "layer": layer_of(factor),
           "chosen": chosen, "lss": get("mean_lss"), "lss_low": get("ci_low"), "lss_high": get("ci_high")}
    for key in ("target_wins", "target_wins_base", "target_gain", "source_damage", "specificity", "forcing"):
        row.update({key: get(key), f"{key}_low": get(f"{key}_low"), f"{key}_high": get(f"{key}_high")})
    row["repetition"] = get("repetition")
    for key in ("self", "cross"):
        row.update({f"udhr_ppl_{key}{end}": ppl.get(f"{key}{end}", float("nan")) for end in ("", "_low", "_high")})
    return {**row, "n_pairs": entry.get("n_pairs", 0), "n_facts": entry.get("n_facts", 0),
            "n_generations": entry.get("n_generations", 0), "n_ppl_self": ppl.get("n_self", 0),
            "n_ppl_cross": ppl.get("n_cross", 0), "seconds": seconds, "note": note}


def baseline_row(lss_entry: dict[str, Any], forcing_rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ``none`` row: no intervention. Its target wins, forcing and repetition are the baselines the methods
    are measured against; gain, damage and the perplexity ratios are 0 and 1 by definition."""
    from lens_steer.intervals import wilson_ci  # deferred: torch, so that the CLI imports compare light

    scored = [r for r in forcing_rows if r["n"]]
    mean = (lambda k: sum(r[k] for r in scored) / len(scored) if scored else float("nan"))  # noqa: E731
    n_gen = sum(int(r["n"]) for r in scored)
    wins = [lss_entry.get(f"target_wins_base{end}", float("nan")) for end in ("", "_low", "_high")]
    forcing = mean("baseline_strict")
    # gain, damage (0) and the ratios (1) hold by definition: their intervals are the point itself
    return {"method": "none", "factor": "-", "alpha": float("nan"), "layer": "-", "chosen": "-",
            **dict(zip(("target_wins", "target_wins_low", "target_wins_high"), wins)),
            **dict(zip(("target_wins_base", "target_wins_base_low", "target_wins_base_high"), wins)),
            "target_gain": 0.0, "target_gain_low": 0.0, "target_gain_high": 0.0, "source_damage": 0.0,
            "source_damage_low": 0.0, "source_damage_high": 0.0, "forcing": forcing,
            **dict(zip(("forcing_low", "forcing_high"), wilson_ci(forcing * n_gen, n_gen))),
            "repetition": mean("baseline_repetition"), "udhr_ppl_self": 1.0, "udhr_ppl_self_low": 1.0,
            "udhr_ppl_self_high": 1.0, "udhr_ppl_cross": 1.0, "udhr_ppl_cross_low": 1.0, "udhr_ppl_cross_high": 1.0,
            "n_pairs": lss_entry.get("n_pairs", 0), "n_facts": lss_entry.get("n_facts", 0), "n_generations": n_gen,
            "seconds": float("nan"), "note": "no intervention"}


# ---------------------------------------------------------------------------------------------------------------
# The comparison of a run directory: what `lens-steer compare` does, as a config + function pair
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompareConfig(CompareOptions):
    """Everything ``lens-steer compare`` takes besides the run (:class:`~lens_steer.configs.CompareOptions`, where
    each option is declared), with the methods parsed: a bad method fails when built, before any model work."""

    parsed: list[Method] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "parsed", parse_methods(self.methods))
        object.__setattr__(self, "reference", self.reference.strip())
        check_reference(self.reference, [m.text for m in self.parsed])
        super().__post_init__()


@dataclass
class CompareResult:
    rows: list[dict[str, Any]]  # compare.csv
    summary: dict[str, Any]  # compare_summary.json
    files: list[Any]


def split_facts(facts: dict[str, list[Any]], n_report: int, n_held: int,
                seed: int = 0) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """Per source, the first ``n_report`` facts (reported) and the ``n_held`` after them (held out for choices).
    ``seed`` s > 0 shuffles each source's facts first (``random.Random(s * 1000003 + crc32(source))``, the same
    on every machine); seed 0 keeps the cloze's order.

    >>> split_facts({"en": list(range(5))}, 2, 2)
    ({'en': [0, 1]}, {'en': [2, 3]})
    >>> split_facts({"en": list(range(5))}, 2, 2, seed=1) == split_facts({"en": list(range(5))}, 2, 2, seed=1)
    True
    """
    if seed:
        facts = {s: list(v) for s, v in facts.items()}
        for s, v in facts.items():
            random.Random(seed * 1_000_003 + zlib.crc32(s.encode())).shuffle(v)
    return ({s: v[:n_report] for s, v in facts.items()}, {s: v[n_report:n_report + n_held] for s, v in facts.items()})


def check_method_layers(methods: Sequence[Method], n_layers: int) -> None:
    """Refuse a ``resid:L`` method whose layer L is out of ``0..n_layers-1``.

    >>> check_method_layers(parse_methods("p_max,resid:9*best"), 4)
    Traceback (most recent call last):
    ...
    lens_steer.errors.LensSteerError: resid:9*best: layer 9 is out of range: this model has layers 0..3
    """
    for m in methods:
        for f in m.candidates(n_layers):
            if isinstance(f, ResidualShift) and not 0 <= f.layer < n_layers:
                raise LensSteerError(f"{m.text}: layer {f.layer} is out of range: this model has layers"
                                     f" 0..{n_layers - 1}")


@writes("compare")
def compare_for_run(run: Any, config: CompareConfig, load: Any = None) -> CompareResult:
    """Compare the methods of ``config`` on a run directory; writes ``compare.csv`` and ``compare_summary.json``."""
    # deferred: torch; compare stays torch-free at import for the CLI (and its tests patch these modules' names)
    from lens_steer.lss import cloze_facts, lss_languages

    methods, detector = config.parsed, get_detector(config.detector)
    neurons, stats = run.neurons(), run.stats()
    langs = lss_languages(neurons, config.langs, config.cloze)
    recorded = stats.manifest.get("model") or {}
    if isinstance(recorded.get("n_layers"), int):  # a layer out of range fails before any data or model loads
        check_method_layers(methods, recorded["n_layers"])
    cloze, every = cloze_facts(config.cloze, langs, config.cloze_path)
    # seed s: the fact split s (seed 0: the cloze's order); every split has the same sizes
    splits = [split_facts(every, config.max_facts, config.held_out or config.max_facts, s) for s in range(config.seeds)]
    reported, held = splits[0]
    choosers = [m for m in methods if m.chooses]
    if choosers and not any(held.values()):
        raise LensSteerError(f"no held-out facts to choose {choosers[0].text} on: the cloze has at most"
                             f" {max(map(len, every.values()), default=0)} facts per language; lower --max-facts")
    if any(m.kind == "resid" for m in methods):
        stats.resid_mean()  # a run recorded before residual means existed: one line, before the model loads
        if stats.resid_moments is None:
            warnings.warn("the run has no residual covariance (recorded before lens_steer kept it): resid: methods"
                          " get the isotropic control alone; record the run again for the covariance-matched one",
                          stacklevel=2)
    prompts = forcing_prompts(langs, config.forcing_prompts, config.forcing_bank)  # a bad N: before the model loads
    bench = _Bench(run, config, langs, splits, prompts, detector, load)
    check_method_layers(methods, bench.n_layers)  # a manifest without the layer count: before any scoring
    rows: list[dict[str, Any]] = []
    details: dict[str, Any] = {}
    for i, method in enumerate(methods):
        if bench.progress:
            print(f"[{i + 1}/{len(methods)}] {method.text}", flush=True)
        method_rows, details[method.text] = bench.measure(method)
        rows += method_rows if rows else [bench.baseline, *method_rows]
    summary = bench.summary(cloze.name, details)
    add_paired(rows, summary, bench.items, config.reference)
    files = [run.write_csv(COMPARE_CSV, rows, COMPARE_COLUMNS), run.write_json(COMPARE_SUMMARY, summary)]
    return CompareResult(rows, summary, files)


class _Bench:
    """What every method of one comparison is measured on: the model, the fact sets with their baselines kept
    (scored once for all methods: the same numbers), the neutral prompts and the perplexity texts and baseline."""

    def __init__(self, run: Any, config: CompareConfig, langs: list[str], splits: list[tuple[dict[str, Any], ...]],
                 prompts: dict[str, list[str]], detector: Any, load: Any):
        # deferred: torch; compare stays torch-free at import for the CLI (and its tests patch these modules' names)
        from lens_steer.distributed import current
        from lens_steer.evals import eval_ppl, settings
        from lens_steer.evals.data import load_udhr_eval
        from lens_steer.steer import Steerer

        self.config, self.langs, self.detector, self.splits = config, langs, detector, splits
        self.reported, self.held = splits[0]
        self.neurons, self.stats = run.neurons(), run.stats()
        self.texts = load_udhr_eval(langs, limit=config.ppl_articles)
        self.targets = self.neurons.steerable(langs)
        self.prompts = prompts
        self.forcing_base: list[str] | None = None  # the unsteered continuations: generated once for all methods
        self.model = run.model(load)
        self.n_layers = self.model.site.n_layers
        self.steerer = Steerer(self.model, self.neurons, self.stats)
        self.world = current()
        self.progress = config.progress and self.world.main
        # per split, the kept baselines of its held-out and reported facts (seed 0's are held_base, reported_base)
        self.bases: list[tuple[dict[str, Any], dict[str, Any]]] = [({}, {}) for _ in splits]
        self.held_base, self.reported_base = self.bases[0]
        # The perplexity baseline once; each method's settings are then only its intervened ones.
        self.base_ppl = eval_ppl("udhr-ppl", self.model, self.steerer, self.texts, settings(None, self.targets), "-",
                                 batch_size=config.forcing_batch_size)
        self.baseline: dict[str, Any] | None = None
        self.items: dict[str, dict[str, Any]] = {}  # per method, its per-item values (method_items)
        self.ppl_rows: dict[str, list[dict[str, Any]]] = {}  # per factor, its eval_ppl rows

    def lss(self, facts: dict[str, Any], factors: Sequence[Factor], seeds: int, kept: dict[str, Any]) -> list[Any]:
        from lens_steer.lss import run_lss  # deferred: torch (and late: tests patch lss.run_lss)

        return run_lss(self.model, self.neurons, self.stats, facts, self.langs, factors, n_seeds=seeds,
                       baselines=kept, batch_size=self.config.batch_size, join=self.config.join, progress=False)

    def measure(self, method: Method) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """One method (its held-out choice first) and its control: their ``compare.csv`` rows and summary entry."""
        # deferred: torch (and late: tests patch forcing.run_forcing)
        from lens_steer.choice import summarise
        from lens_steer.forcing import run_forcing

        start, config = time.perf_counter(), self.config
        detail: dict[str, Any] = {"chosen": method.chosen}
        if method.chooses:
            factor, reason, table = search(method, self.n_layers,
                                           lambda fs: self.lss(self.held, fs, 1, self.held_base), config.damage_bound)
            detail.update(factor=factor.text, reason=reason, candidates=table)
        else:
            factor = method.factor()
            detail["factor"] = factor.text
        controls = controls_of(factor, self.stats.resid_moments is not None)
        factors = [factor] + [c for _, c in controls]
        lss_rows = self.lss(self.reported, factors, config.seeds, self.reported_base)
        forcing_rows, records = run_forcing(self.model, self.steerer, self.targets, factors, self.detector,
                                            prompts=self.prompts, max_new_tokens=config.forcing_tokens,
                                            batch_size=config.forcing_batch_size, baseline=self.forcing_base)
        if self.forcing_base is None:
            self.forcing_base = [r["text"] for r in records if r["steered"] is False]
        entries = summarise(lss_rows, factors, forcing=forcing_rows, damage_bound=config.damage_bound)["factors"]
        ppl = {f.text: self.ppl(f) for f in factors}
        detail["seconds"] = seconds = time.perf_counter() - start
        if self.baseline is None:
            self.baseline = baseline_row(entries[factor.text], [r for r in forcing_rows if r["factor"] == factor.text])
        detail["seeds"] = self.resplit(method, factor, entries[factor.text])
        rows = [method_row(method.text, factor, method.chosen, entries[factor.text], ppl[factor.text], seconds,
                           _control_note(factor, controls))]
        rows[0].update(split_spread(detail["seeds"]))
        for prefix, control in controls:
            note = f"seeds: {config.seeds}" + (f"; {NULLS[prefix]}" if NULLS[prefix] else "")
            if prefix == "control" and isinstance(factor, ResidualShift):
                note += "; covariance-matched: a push of this size along directions the residual varies in"
            rows.append(method_row(f"{prefix}:{method.text}", control, method.chosen, entries[control.text],
                                   ppl[control.text], float("nan"), note))
            rows[-1].update(seed_spread(entries[control.text]))
        self.items[method.text] = method_items(factor.text, lss_rows, forcing_rows,
                                               self.base_ppl + self.ppl_rows[factor.text])
        return rows, detail

    def resplit(self, method: Method, factor: Factor, entry: dict[str, Any]) -> list[dict[str, Any]]:
        """The method's mean LSS and target wins on each fact split of ``--seeds``: seed 0's are ``entry`` (the
        reported numbers); seed s > 0 chooses again on its held-out facts (a ``best`` method) and scores the factor
        chosen on its reported facts. Only LSS scoring: forcing and perplexity are measured for seed 0's factor."""
        from lens_steer.choice import summarise  # deferred: torch

        def one(s: int, f: Factor, e: dict[str, Any]) -> dict[str, Any]:
            return {"seed": s, "factor": f.text, "lss": e.get("mean_lss", float("nan")),
                    "target_wins": e.get("target_wins", float("nan")), "n_pairs": e.get("n_pairs", 0)}

        out = [one(0, factor, entry)]
        for s in range(1, len(self.splits)):
            (reported, held), (held_base, reported_base) = self.splits[s], self.bases[s]
            chosen = factor
            if method.chooses:
                chosen, _, _ = search(method, self.n_layers, lambda fs: self.lss(held, fs, 1, held_base),
                                      self.config.damage_bound)
            rows = self.lss(reported, [chosen], 1, reported_base)
            entries = summarise(rows, [chosen], damage_bound=self.config.damage_bound)["factors"]
            out.append(one(s, chosen, entries[chosen.text]))
        return out

    def ppl(self, factor: Factor) -> dict[str, float]:
        from lens_steer.evals import eval_ppl, settings  # deferred: torch (and late: tests patch evals.eval_ppl)

        steered = eval_ppl("udhr-ppl", self.model, self.steerer, self.texts, settings(factor, self.targets)[1:],
                           factor.text, batch_size=self.config.forcing_batch_size)
        self.ppl_rows[factor.text] = steered
        return ppl_ratios(self.base_ppl + steered)

    def summary(self, cloze: str, details: dict[str, Any]) -> dict[str, Any]:
        config = self.config
        return {"languages": self.langs, "targets": self.targets, "cloze": cloze,
                "n_facts": {s: len(v) for s, v in self.reported.items()},
                "n_held_out": {s: len(v) for s, v in self.held.items()}, "seeds": config.seeds,
                "forcing_tokens": config.forcing_tokens, "forcing_prompts": sum(map(len, self.prompts.values())),
                "forcing_bank": config.forcing_bank, "prompts": self.prompts,
                "ppl_articles": config.ppl_articles, "damage_bound": config.damage_bound,
                "best_alphas": {k: list(v) for k, v in BEST_ALPHAS.items()}, "layer_stride": LAYER_STRIDE,
                "methods": details, "model": self.model.placement(), "world_size": self.world.size}
