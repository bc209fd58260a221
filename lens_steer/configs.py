"""Every stage's settings as a frozen dataclass, each command-line option declared once, on its field.

``lens-steer`` derives its options from these fields (:func:`lens_steer.cli_parser.add_config_options`) and builds
the configs back from the parsed options (:func:`lens_steer.cli.config_from_args`), so a flag's name, default, check,
choices and help are written here and nowhere else (:func:`lens_steer.options.option`). No torch: ``lens-steer
--help`` imports this module.

Each stage module re-exports its config (``from lens_steer.lss import LSSConfig`` still works). Two stages check
their options with their own machinery, which imports this module: :class:`lens_steer.evals.EvalConfig` (the task
table) and :class:`lens_steer.compare.CompareConfig` (the method grammar) extend :class:`EvalOptions` and
:class:`CompareOptions` here. Where the model runs is :class:`lens_steer.models.LoadConfig`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lens_steer.errors import LensSteerError
from lens_steer.factors import PAPER_FACTORS, Factor, parse_factor, parse_factors, parse_layers, sweep_factors
from lens_steer.languages import JOINS
from lens_steer.lid import get_detector
from lens_steer.models.embedded import EMBEDDED_MODEL
from lens_steer.options import option, positive_int, rate
from lens_steer.prompts import BANKS, check_prompts

SITES = ("act", "post")
"""Where a neuron's value is read (:class:`RecordConfig`)."""
METHODS = ("lape", "activated", "ap", "ap-lape")
"""The identification methods (:func:`lens_steer.identification.identify`)."""
CONTROL_SEEDS = 3
"""Matched random draws per ``control:`` factor in ``lss``."""
DAMAGE_BOUND = 10.0
# Folds of sentences identify keeps its counts in (lens_steer.folds), for resampling the neuron set.
DEFAULT_FOLDS = 10
"""Nats: a factor whose mean source damage is worse than -10 is not chosen (:mod:`lens_steer.choice`)."""
DEFAULT_METHODS = "p_max,add:mean*best,diffmean*best,resid:best,prompt:en,prompt:native"
"""The methods ``lens-steer compare`` measures by default."""


def check_rate(name: str, value: float | str) -> float:
    """``value`` (a number, or a command-line string) as a rate in (0, 1]; anything else is a one-line error.

    >>> check_rate("--activation-bar", "0.9")
    0.9
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise LensSteerError(f"{name} must be a number in (0, 1], got {value!r}; pass e.g. 0.95") from None
    if not 0.0 < number <= 1.0:  # NaN fails this too
        raise LensSteerError(f"{name} must be in (0, 1], got {value}; pass e.g. 0.95")
    return number


# ---- options several stages take: each written once, here ----
def _progress() -> Any:
    return option(True, flag="--quiet", help="no progress bars")


def _detector() -> Any:
    return option("cld2", help="language detector")


def _batch_size(default: int, rows: str) -> Any:
    return option(default, type=positive_int, help=f"{rows} per forward")


def _chat_template() -> Any:
    return option(False, help="wrap each prompt as the user turn of the tokenizer's own chat template (instruct"
                  " models; a base model without one is refused)")


def _cloze() -> Any:
    return option("cldr", help="cldr (offline, from babel) or mlama-dod")


def _cloze_path() -> Any:
    return option(None, help="local copy of the mlama-dod data")


def _join() -> Any:
    return option("auto", choices=JOINS, help="prompt/answer separator: auto = one space iff the prompt's language"
                  " writes spaces (the same for every answer of a prompt); reference = always one space, as the"
                  " authors' code")


def _forcing_prompts(default: int, langs: str) -> Any:
    # No argparse type: 0 or a negative number is checked by prompts.check_prompts, as a one-line error.
    return option(default, type=int, metavar="N", help=f"neutral prompts per prompt language ({langs}), the first N"
                  " of --forcing-bank's bank: udhr >= 40 per language, handwritten 3")


def _forcing_bank() -> Any:
    return option("udhr", choices=BANKS, help="where the neutral prompts come from: udhr (text starts of the UDHR's"
                  " evaluation split, articles 25-30, in every prompt language) or handwritten (3 story prompts"
                  " each in en, fr, id, ru, ja)")


def _cloze_langs() -> Any:
    return option(None, help="languages (default: the run's languages the cloze covers)")


# ---- identify ----
@dataclass(frozen=True)
class RecordConfig:
    """Settings that decide the numbers; two runs with equal configs give equal statistics.

    Attributes:
        site: ``act`` (act_fn(gate), counted as hook_pre > 0) or ``post`` (mlp.hook_post).
        batch_size: sentences per forward.
        padding_side: ``right`` or ``left``; results are identical, it only changes the padded layout.
        max_tokens: per-language budget of counted tokens, whole sentences only (None = all).
        n_sentence_means: N, how many per-sentence means to keep per language (cut to what every language has).
        min_sentence_tokens: a sentence needs this many counted tokens for its mean to be kept.
        max_length: longer sentences are truncated to this many tokens (BOS included).
        reference_compat: record as the authors' code does (no BOS, ``REFERENCE_PREFIX``, 2 leading tokens not
            counted, sentence means of the first N sentences whatever their length); off by default.
        resid_cov: keep the residual stream's sum of outer products per layer, pooled over the languages, for the
            covariance-matched residual control (:mod:`lens_steer.resid_cov`); on by default.
    """

    site: str = option("act", choices=SITES, help="neuron value: act = act_fn(gate), counted as hook_pre > 0 (the"
                       " paper); post = mlp.hook_post")
    batch_size: int = _batch_size(16, "sentences")
    padding_side: str = option("right", choices=("left", "right"), help="(results do not depend on it)")
    max_tokens: int | None = option(None, type=positive_int, help="per-language budget of counted tokens, whole"
                                    " sentences only (default: all)")
    n_sentence_means: int = option(100, type=int, help="per-sentence means kept per language for p_max/p_median"
                                   " (default: min(100, available))")
    min_sentence_tokens: int = 8
    max_length: int = 512
    folds: int = option(DEFAULT_FOLDS, type=positive_int, help="keep the counts in this many folds of sentences"
                        " (dealt round-robin), for `lens-steer stability`; the totals do not depend on it")
    reference_compat: bool = option(False, help="record as the authors' code: no BOS, each sentence after a newline"
                                    " and 12 spaces, its first 2 tokens not counted, sentence means of the first N"
                                    " sentences whatever their length")
    resid_cov: bool = option(True, flag="--no-resid-cov", help="do not keep the residual stream's covariance per"
                             " layer (L x d_model^2 float64, pooled over languages: 59 MB on Gemma-3-270M; the"
                             " covariance-matched control:resid: needs it)")

    def __post_init__(self) -> None:
        if self.site not in SITES:
            raise LensSteerError(f"unknown site {self.site!r}; use one of {', '.join(SITES)}")
        if self.padding_side not in ("left", "right"):
            raise LensSteerError(f"padding_side must be 'left' or 'right', not {self.padding_side!r}")
        if self.batch_size < 1:
            raise LensSteerError(f"batch size must be >= 1, not {self.batch_size}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise LensSteerError(f"--max-tokens must be >= 1, not {self.max_tokens}")
        if self.n_sentence_means < 0 or self.min_sentence_tokens < 1 or self.max_length < 2:
            raise LensSteerError("n_sentence_means must be >= 0, min_sentence_tokens >= 1 and max_length >= 2")

    @property
    def mean_min_tokens(self) -> int:
        """Counted tokens a sentence needs for its mean to be kept; the reference keeps any sentence (>= 1 token)."""
        return 1 if self.reference_compat else self.min_sentence_tokens


@dataclass(frozen=True)
class IdentifyConfig:
    """``lens-steer identify``: the model, the corpus, how to record (:class:`RecordConfig`) and how to identify.
    Checked when built: a bad method, rate or model name fails before any recording."""

    model: str = option(EMBEDDED_MODEL, help=f"'{EMBEDDED_MODEL}' (embedded, offline), a local HF model directory,"
                        " or a hub id")
    corpus: str = option("udhr", help="udhr (embedded), flores or files")
    corpus_path: str | None = option(None, help="directory for --corpus files, or a local copy of FLORES+")
    split: str | None = option(None, help="corpus split (udhr: identify|eval|all, default identify; flores:"
                               " dev|devtest)")
    langs: str | None = option(None, help="comma-separated language codes (default: the paper's 18)")
    method: str = option("lape", choices=METHODS, help="identification method: lape, activated (the paper's"
                         " baseline), ap (top-k average precision of the sentence means, k = the largest LAPE"
                         " language) or ap-lape (ap and lape)")
    top_rate: float = option(0.01, type=rate, help="LAPE: share of all neurons kept")
    filter_rate: float = option(0.95, type=rate, help="LAPE: percentile filter")
    # No argparse type: a bad value is checked here (check_rate), as a one-line error.
    activation_bar: float | str = option(0.95, help="LAPE: a candidate belongs to each language whose p is above"
                                         " this percentile of all p (the reference's activation_bar_ratio)")
    record: Any = None  # a RecordConfig; None: the defaults
    progress: bool = _progress()

    def __post_init__(self) -> None:
        from lens_steer.models import check_model_spec  # deferred: it lives with the loader, which imports torch

        if self.method not in METHODS:
            raise LensSteerError(f"unknown method {self.method!r}; use one of {', '.join(METHODS)}")
        object.__setattr__(self, "activation_bar", check_rate("--activation-bar", self.activation_bar))
        object.__setattr__(self, "top_rate", check_rate("--top-rate", self.top_rate))  # before recording, not after
        object.__setattr__(self, "filter_rate", check_rate("--filter-rate", self.filter_rate))
        check_model_spec(self.model)  # an unknown model fails before the corpus is read

    def check_for_model(self, n_layers: int, d_mlp: int) -> None:
        """Refuse a ``--top-rate`` that keeps no neuron of a model of ``n_layers`` x ``d_mlp`` (LAPE keeps
        ``round(top_rate * L * D)``), before anything is recorded.

        >>> IdentifyConfig(top_rate=1e-9).check_for_model(18, 2048)
        Traceback (most recent call last):
        lens_steer.errors.LensSteerError: --top-rate 1e-09 keeps round(1e-09 x 18 x 2048) = 0 neurons; use at least 2.7e-05 (one neuron) for this model
        """
        if self.method == "activated":
            return
        total = n_layers * d_mlp
        if round(self.top_rate * total) < 1:
            raise LensSteerError(f"--top-rate {self.top_rate:g} keeps round({self.top_rate:g} x {n_layers} x {d_mlp}) ="
                                 f" 0 neurons; use at least {1 / total:.2g} (one neuron) for this model")

    def params(self) -> dict[str, Any]:
        """The identification parameters of :func:`lens_steer.identification.identify` (none for ``activated``)."""
        if self.method == "activated":
            return {}
        return {"top_rate": self.top_rate, "filter_rate": self.filter_rate,
                "activation_bar_ratio": self.activation_bar}


# ---- lss ----
@dataclass(frozen=True)
class LSSConfig:
    """Everything ``lens-steer lss`` takes besides the run (the CLI's flags, one field each).

    ``factors`` and ``per_layer`` are factor lists as typed (written back verbatim); ``langs`` a language list
    (None: the run's languages the cloze covers); ``forcing`` adds language forcing of the amplifying factors and
    the controls, written to ``forcing.csv`` and used by the factor choice.
    """

    cloze: str = _cloze()
    cloze_path: str | None = _cloze_path()
    langs: str | None = _cloze_langs()
    factors: str = option(",".join(PAPER_FACTORS), help="comma-separated factors (default: the paper's, in its"
                          " order): p_max, p_median, testmax, testmax+, zero, p10 (pQ), mean, p_max*A, testmax*A,"
                          " scale:A, add:B, set:V, control:p_max; peers' methods: add:mean*A, diffmean*A, resid:L*A,"
                          " control:resid:L*A, prompt:en, prompt:native")
    sweep: str | None = option(None, metavar="FAMILY", help="add a dose-response grid: p_max or p_median"
                               " (x0.25..8) or add (0.5..8), comma-separated")
    seeds: int = option(CONTROL_SEEDS, type=positive_int, help="matched random draws per control:... factor")
    join: str = _join()
    per_layer: str | None = option(None, nargs="?", const="all", metavar="FACTORS", help="also intervene one layer"
                                   " at a time: for every factor, or only for the factors listed (e.g. --per-layer"
                                   " p_max)")
    max_facts: int | None = option(None, type=positive_int, help="first N facts per source language")
    batch_size: int = _batch_size(32, "prompt rows")
    damage_bound: float = option(DAMAGE_BOUND, type=float, help="factor choice: the largest mean source damage in"
                                 " nats a chosen factor may do")
    forcing: bool = option(False, help="also measure language-forcing success and degeneration of every amplifying"
                           " factor and control (neutral prompts, greedy; not zero or p10) and use it in the factor"
                           " choice; writes forcing.csv")
    forcing_tokens: int = option(30, type=positive_int, help="--forcing: new tokens per greedy continuation")
    forcing_batch_size: int = option(16, type=positive_int, help="--forcing: prompts per forward, as `forcing"
                                     " --batch-size`")
    # None keeps the 15 hand-written prompts lss --forcing has always continued (the demo's forcing.csv).
    forcing_prompts: int | None = option(None, type=int, metavar="N", help="--forcing: N neutral prompts per"
                                         " scored language from --forcing-bank (udhr >= 40 per language,"
                                         " handwritten 3) instead of the 15 hand-written prompts of en, fr, id, ru,"
                                         " ja")
    forcing_bank: str = option("udhr", choices=BANKS, help="--forcing with --forcing-prompts: where the prompts come"
                               " from, udhr (the UDHR's evaluation split) or handwritten")
    detector: str = _detector()
    progress: bool = _progress()

    def __post_init__(self) -> None:
        if self.forcing_prompts is not None:
            check_prompts(self.forcing_prompts, self.forcing_bank)  # a bad N: one line, before any work

    def parsed_factors(self) -> list[Factor]:
        """The factors, then the sweep's (without repeats); a bad one fails here, before any work."""
        factors = parse_factors(self.factors)
        if self.sweep:
            known = {f.text for f in factors}
            factors += [f for f in sweep_factors(self.sweep) if f.text not in known]
        return factors

    def layered(self, factors: Sequence[Factor]) -> bool | list[str]:
        """``per_layer`` for :func:`lens_steer.lss.run_lss`: True (every factor), the factor texts listed, or
        False."""
        if self.per_layer in (None, ""):
            return False
        if self.per_layer == "all":
            return True
        listed = [f.text for f in parse_factors(self.per_layer)]
        unknown = [f for f in listed if f not in {g.text for g in factors}]
        if unknown:
            raise LensSteerError(f"--per-layer {', '.join(unknown)}: not among --factors ({self.factors})")
        return listed


# ---- steer and forcing ----
@dataclass(frozen=True)
class SteerConfig:
    """``lens-steer steer``: whom to steer to and how. Checked when built, before the model loads."""

    to: str = option(help="target language(s), comma-separated")
    factor: str = option("p_max", help="factor; see `lens-steer lss --help`")
    layers: str = option("all", help="all, a layer (5), a range (3-7) or a list (1,4,9)")
    positions: str = option("all", help="all, prompt, generated or last:K")
    deactivate: str | None = option(None, help="also zero this language's neurons (e.g. the prompt's)")
    max_new_tokens: int = option(30, type=positive_int, help="stops at EOS")
    detector: str = _detector()
    chat_template: bool = _chat_template()
    max_prompt_tokens: int = option(1024, type=positive_int, help="a longer prompt keeps its last N tokens, with a"
                                    " warning (the model's context less --max-new-tokens always bounds it)")
    # steer generates one short batch and shows no bar; --quiet is accepted as by every command that loads a model
    progress: bool = _progress()
    parsed: Factor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "parsed", parse_factor(self.factor))
        parse_layers(self.layers)
        get_detector(self.detector)
        if self.max_prompt_tokens < 1:
            raise LensSteerError(f"--max-prompt-tokens must be >= 1, not {self.max_prompt_tokens}")


@dataclass(frozen=True)
class ForcingConfig:
    """``lens-steer forcing``: targets (None: every run language with neurons), factors, detector, generation size.
    Checked when built: a bad factor or detector fails before any model work."""

    targets: str | None = option(None, help="target languages (default: every run language with neurons)")
    factors: str = option("p_max,p_median", help="comma-separated factors")
    detector: str = _detector()
    max_new_tokens: int = option(30, type=positive_int, help="new tokens per greedy continuation")
    batch_size: int = _batch_size(16, "prompts")
    forcing_prompts: int = _forcing_prompts(3, "every run language")
    forcing_bank: str = _forcing_bank()
    progress: bool = _progress()
    chat_template: bool = _chat_template()
    parsed: list[Factor] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "parsed", parse_factors(self.factors))
        get_detector(self.detector)
        check_prompts(self.forcing_prompts, self.forcing_bank)


# ---- eval and compare: their checks need the stage's own machinery (see the module docstring) ----
@dataclass(frozen=True)
class EvalOptions:
    """``lens-steer eval``'s options: the task, its prompt and join conventions, whom to intervene on and where to
    evaluate. :class:`lens_steer.evals.EvalConfig` checks them against the task table."""

    task: str = option(help="xcopa, xwinograd, include, flores-mt, ppl, udhr-ppl or udhr-mt")
    factor: str | None = option(None, help="factor (default: best_factor of RUN_DIR/lss_summary.json)")
    targets: str | None = option(None, help="intervened languages (default: the evaluation languages)")
    eval_langs: str | None = option(None, help="evaluation languages (default: the run's languages the task covers)")
    data: str | None = option(None, help="local copy of the task's dataset (see the README for layouts)")
    limit: int | None = option(None, type=positive_int, help="first N items per language")
    positions: str = option("all", help="intervention positions: all, prompt, generated, last:K")
    max_new_tokens: int | None = option(None, type=positive_int, help="translation: new tokens (default: 2x"
                                        " (Latin) or 3x (other scripts) the source length)")
    prompt: str = option("targeted", help="translation prompt: targeted (the paper's, names the language) or"
                         " untargeted (the reference's 'into the target language'); a non-default one is written as"
                         " <task>-untargeted")
    # No choices: a bad join is checked by the task table, which also says which tasks take one.
    join: str = option("auto", help="xcopa/xwinograd/include: how context and continuation are joined: auto (a"
                       " space iff the language writes spaces) or reference (the authors' code); reference is"
                       " written as <task>-refjoin")
    batch_size: int = _batch_size(16, "rows")
    progress: bool = _progress()


@dataclass(frozen=True)
class CompareOptions:
    """``lens-steer compare``'s options, checked but for the methods (:class:`lens_steer.compare.CompareConfig`
    parses those): a bad detector or size fails before any model work.

    ``max_facts`` reported facts per source; ``held_out`` facts after them for the ``best`` choices (None: as many
    as reported); ``forcing_prompts`` neutral prompts per prompt language (the compared languages), the first N of
    ``forcing_bank``'s bank (:mod:`lens_steer.prompts`); ``seeds`` fact splits (seed 0: the facts in cloze order;
    seed s: each source's facts shuffled with seed s before the split) and matched random draws per control;
    ``ppl_articles`` held-out UDHR paragraphs per language for the perplexity ratios. The defaults keep
    4 languages x 10 facts with the default methods within 10 minutes on a 2-core CPU. ``reference``: the method
    the others are paired with (it must be among ``methods``; :class:`lens_steer.compare.CompareConfig` checks it).
    """

    methods: str = option(DEFAULT_METHODS, help="comma-separated methods")
    reference: str = option("p_max", help="the method every other one is paired with (one of --methods): the"
                            " difference on the same facts, prompts and texts, and a verdict")
    langs: str | None = _cloze_langs()
    cloze: str = _cloze()
    cloze_path: str | None = _cloze_path()
    max_facts: int = option(10, type=positive_int, help="reported facts per source language: the first N")
    held_out: int | None = option(None, flag="--held-out-facts", type=positive_int, help="facts after the reported"
                                  " ones on which best choices are made (default: as many as reported)")
    forcing_tokens: int = option(20, type=positive_int, help="new tokens per greedy forcing continuation")
    forcing_prompts: int = _forcing_prompts(2, "the compared languages")
    forcing_bank: str = _forcing_bank()
    seeds: int = option(1, type=positive_int, help="fact splits (seed 0: the first --max-facts facts are reported;"
                        " seed s: each source's facts shuffled with seed s first), each method's LSS and target wins"
                        " per split -> lss_seed_min/max, target_wins_seed_min/max; and matched random draws per"
                        " control")
    ppl_articles: int = option(1, type=positive_int, help="held-out UDHR paragraphs per language for the perplexity"
                               " ratios")
    damage_bound: float = option(DAMAGE_BOUND, type=float, help="best choices: the largest mean source damage in"
                                 " nats a candidate may do")
    detector: str = _detector()
    join: str = _join()
    batch_size: int = _batch_size(32, "prompt rows")
    forcing_batch_size: int = 64  # generation and perplexity: 64 is ~20% faster than 16 on the 2-core CPU
    progress: bool = _progress()

    def __post_init__(self) -> None:
        get_detector(self.detector)
        check_prompts(self.forcing_prompts, self.forcing_bank)
        for name in ("max_facts", "forcing_tokens", "seeds", "ppl_articles"):
            if getattr(self, name) < 1:
                raise LensSteerError(f"{name.replace('_', '-')} must be >= 1, not {getattr(self, name)}")
        if self.held_out is not None and self.held_out < 1:
            raise LensSteerError(f"held-out facts must be >= 1, not {self.held_out}")


# ---- stability ----
@dataclass(frozen=True)
class StabilityConfig:
    """``lens-steer stability``: how many bootstrap resamples of the run's folds, and their seed."""

    resamples: int = option(200, type=positive_int, help="bootstrap resamples of the folds")
    seed: int = option(0, type=int, help="seed of the resamples (the same seed gives the same numbers)")
    progress: bool = _progress()


# ---- inspect ----
@dataclass(frozen=True)
class InspectConfig:
    """``lens-steer inspect``: one neuron, and the corpus to scan for its top tokens (None: the run's own)."""

    layer: int = option(type=int, help="layer index")
    neuron: int = option(type=int, help="neuron index within the layer")
    top: int = option(10, type=positive_int, help="tokens per language")
    langs: str | None = option(None, help="languages to scan (default: the neuron's languages, else all)")
    corpus: str | None = option(None, help="corpus to scan (default: the run's)")
    corpus_path: str | None = option(None, help="path for --corpus files/flores")
    split: str | None = option(None, help="corpus split (default: the run's)")
    max_tokens: int | None = option(None, type=positive_int, help="per-language token budget")
    batch_size: int = _batch_size(16, "sentences")
    progress: bool = _progress()  # a bar per language while the corpus is scanned (`inspect --quiet`: none)


# ---- explore ----
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
"""The hosts ``lens-steer explore`` binds without a warning: only this machine can reach them."""


@dataclass(frozen=True)
class ExploreConfig:
    """``lens-steer explore``: where the app listens, and whether it may load the run's model (first needed)."""

    port: int = option(8050, type=positive_int, help="port to serve on")
    host: str = option("127.0.0.1", help="address to bind; another than this machine's warns (anyone who reaches"
                       " it can run the model)")
    model: bool = option(True, flag="--no-model", help="never load the model: the neuron page's top tokens (unless"
                         " cached) and logit effect, and the steering playground, say why they are off")
    top: int = option(8, type=positive_int, help="top activating tokens per language on a neuron page")
    max_new_tokens: int = option(20, type=positive_int, help="new tokens per steered continuation (default)")

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise LensSteerError(f"--port must be in 1..65535, not {self.port}")


# ---- harness (lm-evaluation-harness tasks; lens_steer.harness) ----
@dataclass(frozen=True)
class HarnessConfig:
    """``lens-steer harness``: lm-evaluation-harness tasks without and with each target's neurons changed by
    ``factor`` (:func:`lens_steer.harness.cells.harness_for_run`). Checked when built: a bad factor, target list or
    ``--task-langs`` fails before the harness is imported."""

    tasks: str = option(help="harness task names, comma-separated (a group such as xcopa: each of its tasks)")
    factor: str | None = option(None, help="factor (default: best_factor of RUN_DIR/lss_summary.json)")
    targets: str = option("self", help="intervened languages: self (each task's own language), all (every run"
                          " language with neurons) or a list such as fr,ja")
    include_path: str | None = option(None, metavar="DIR", help="a folder of your own task YAMLs (the harness's"
                                      " --include_path)")
    limit: int | None = option(None, type=positive_int, help="first N documents per task")
    task_langs: str | None = option(None, metavar="TASK=LANG,...", help="the language of tasks whose name and"
                                    " metadata do not tell it (overrides both)")
    batch_size: int = _batch_size(8, "requests")
    progress: bool = _progress()

    def __post_init__(self) -> None:
        if not [t for t in self.tasks.split(",") if t.strip()]:
            raise LensSteerError("--tasks names no task; pass e.g. --tasks xcopa_id,xwinograd_fr")
        if self.factor is not None:
            parse_factor(self.factor)
        self.task_lang_map()

    def task_lang_map(self) -> dict[str, str]:
        """``--task-langs`` as {task: language code}.

        >>> HarnessConfig(tasks="t", task_langs="my_task=fr, other=ja").task_lang_map()
        {'my_task': 'fr', 'other': 'ja'}
        """
        out: dict[str, str] = {}
        for item in (self.task_langs or "").split(","):
            if not item.strip():
                continue
            task, sep, lang = item.partition("=")
            if not sep or not task.strip() or not lang.strip():
                raise LensSteerError(f"cannot read --task-langs item {item.strip()!r}; write TASK=LANG, e.g."
                                     " my_task=fr")
            out[task.strip()] = lang.strip()
        return out
