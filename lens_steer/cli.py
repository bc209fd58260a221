"""The ``lens-steer`` command line: each handler parses (:mod:`lens_steer.cli_parser`), calls the library's stage
function with a config, and prints. Nothing in the package imports this module.

Every user-fixable problem ends in one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import resource
import sys
import warnings
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from lens_steer.cli_parser import build_parser
from lens_steer.compare import CompareConfig, compare_for_run
from lens_steer.corpora.udhr import ensure_udhr
from lens_steer.configs import (ForcingConfig, IdentifyConfig, InspectConfig, LSSConfig, RecordConfig, StabilityConfig,
                                SteerConfig)
from lens_steer.errors import LensSteerError
from lens_steer.models.embedded import ensure_embedded_model
from lens_steer.models.load_config import LoadConfig
from lens_steer.options import cli_fields
from lens_steer.paths import write_json
from lens_steer.run import (FORCING_CSV, LSS_CSV, LSS_SUMMARY, MANIFEST_FILE, NEURONS_FILE, STABILITY_CSV, STABILITY_FILE,
                            STATS_FILE, Run)
from lens_steer.tables import (format_compare, format_counts, format_eval, format_forcing, format_lss_result,
                               format_neuron, format_stability, format_steer, format_top_tokens)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # --help and usage errors exit here, before torch is imported
    from lens_steer import distributed  # deferred: torch, after parsing, so that `lens-steer --help` is fast

    formatwarning, warnings.formatwarning = warnings.formatwarning, _one_line_warning  # one line, while we run
    world = distributed.World()
    try:
        world = distributed.init()  # under torchrun: join the process group (a world of one otherwise)
        if getattr(args, "device", None) is not None:
            args.device = distributed.device_for(args.device)  # nccl: each rank on its own GPU
        if world.collective and not world.main and args.command not in SPLIT_COMMANDS:
            return 0  # nothing to share out: rank 0 does it alone
        quiet = contextlib.redirect_stdout(io.StringIO()) if not world.main else contextlib.nullcontext()
        with quiet:  # every rank computes; rank 0 alone prints
            return HANDLERS[args.command](args)
    except LensSteerError as exc:
        end_progress_bars()
        if world.main:  # every rank stops with the same error; one of them says it
            print(f"lens-steer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        end_progress_bars()
        if world.main:
            print(f"lens-steer: interrupted; {interrupted_message(args)}", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatwarning
        distributed.shutdown()


def end_progress_bars() -> None:
    """Close every progress bar still on screen, so the line printed next starts a line of its own.

    Why: a tqdm bar redraws its line with a carriage return and no newline; an error raised under it would be
    printed after the bar's last frame (and the bar, closed later by the garbage collector, redrawn below it).
    Closing a bar ends its line (leave=True) or clears it (leave=False); innermost (highest position) first.
    """
    std = sys.modules.get("tqdm.std")  # no bar can be open if tqdm was never imported
    if std is None:
        return
    for bar in sorted(list(std.tqdm._instances), key=lambda b: -abs(getattr(b, "pos", 0))):
        bar.close()


def interrupted_message(args: argparse.Namespace) -> str:
    """What an interrupted command leaves behind and what a rerun does (:data:`INTERRUPTED`, filled from args)."""
    return INTERRUPTED[args.command].format(**vars(args))


def _one_line_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001 - warnings' signature
    return f"lens-steer: warning: {message}\n"


Config = TypeVar("Config")


def config_from_args(config: type[Config], args: argparse.Namespace, **overrides: Any) -> Config:
    """``config`` built from the options :func:`lens_steer.cli_parser.add_config_options` made of its fields (each
    parsed under its field's name), ``overrides`` winning: the parser's inverse, so no handler copies a field."""
    values = {f.name: getattr(args, f.name) for f, _ in cli_fields(config)}
    return config(**{**values, **overrides})


def _load(args: argparse.Namespace) -> LoadConfig:
    return config_from_args(LoadConfig, args)


def _identify(args: argparse.Namespace) -> int:
    # deferred: torch, so that --help stays fast
    from lens_steer.distributed import current, merge_seconds, parse_shard
    from lens_steer.identification import identify_for_run

    start = time.perf_counter()
    config = config_from_args(IdentifyConfig, args, record=config_from_args(RecordConfig, args))
    run = Run(args.out)
    world = parse_shard(args.shard) if args.shard else current()
    stats, neurons = identify_for_run(run, config, _load(args), world=world)
    if neurons is None:
        print(f"shard {world.rank}/{world.size}: {int(stats.n_tokens.sum())} tokens recorded into {run.path}; when"
              f" all {world.size} are done: lens-steer merge SHARD_DIRS... --out RUN")
        return 0
    print(format_counts(neurons, stats))
    print(f"\n{sum(neurons.totals().values())} language-neuron assignments ({args.method}) over"
          f" {neurons.n_layers} layers x {neurons.d_mlp} neurons; {stats.sent_means.shape[1]} sentence means kept"
          f" per language; {time.perf_counter() - start:.0f} s wall, peak RSS {_peak_rss_gib():.2f} GiB")
    if world.collective:
        print(f"scale-out: {world.size} ranks; merging their parts took {merge_seconds():.3f} s")
    print(f"results: {', '.join(str(run.file(n)) for n in (STATS_FILE, MANIFEST_FILE, NEURONS_FILE))}")
    return 0


def _merge(args: argparse.Namespace) -> int:
    # deferred: torch, so that --help stays fast
    from lens_steer.identification import merge_for_run

    run = Run(args.out)
    stats, neurons = merge_for_run(args.shards, run)
    print(format_counts(neurons, stats))
    print(f"\n{len(args.shards)} shards merged; results: "
          f"{', '.join(str(run.file(n)) for n in (STATS_FILE, MANIFEST_FILE, NEURONS_FILE))}")
    return 0


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def _neurons(args: argparse.Namespace) -> int:
    run = Run(args.run_dir)
    neurons = run.neurons()
    print(format_counts(neurons, run.stats() if run.has(STATS_FILE) else None, per_layer=args.per_layer))
    if args.export_pth:
        print(f"wrote {neurons.to_rucaibox(args.export_pth)}")
    return 0


def _lss(args: argparse.Namespace) -> int:
    # deferred: torch, so that --help stays fast
    from lens_steer.lss import lss_for_run

    start = time.perf_counter()
    config = config_from_args(LSSConfig, args)
    run = Run(args.run_dir)
    rows, summary = lss_for_run(run, config, _load(args))
    print(format_lss_result(summary, rows))
    return _results([run.file(n) for n in [LSS_CSV, LSS_SUMMARY] + ([FORCING_CSV] if args.forcing else [])], start)


def _results(files: Sequence[Path | str], start: float) -> int:
    """The last line of a stage: the files it wrote and its wall time; the exit code."""
    print(f"results: {', '.join(str(f) for f in files)} ({time.perf_counter() - start:.0f} s)")
    return 0


def _steer(args: argparse.Namespace) -> int:
    # deferred: torch, so that --help stays fast
    from lens_steer.forcing import steer_for_run

    config = config_from_args(SteerConfig, args)
    records, path = steer_for_run(Run(args.run_dir), args.prompt, config, _load(args))
    print(format_steer(args.prompt, records))
    print(f"appended to {path}")
    return 0


def _forcing(args: argparse.Namespace) -> int:
    # deferred: torch, so that --help stays fast
    from lens_steer.forcing import forcing_for_run

    config = config_from_args(ForcingConfig, args)
    result = forcing_for_run(Run(args.run_dir), config, _load(args))
    if result.skipped:
        print(f"lens-steer: warning: skipping {', '.join(result.skipped)} (no neurons)", file=sys.stderr)
    print(format_forcing(result.rows, [f.text for f in result.factors]))
    print(f"results: {', '.join(str(f) for f in result.files)}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    # deferred: torch, so that --help stays fast
    from lens_steer.evals import EvalConfig, eval_for_run, self_cross

    start = time.perf_counter()
    config = config_from_args(EvalConfig, args)
    result = eval_for_run(Run(args.run_dir), config, _load(args))
    print(format_eval(result.label, result.factor, result.rows, self_cross(result.rows)))
    return _results([result.path], start)


def _compare(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    config = config_from_args(CompareConfig, args)
    result = compare_for_run(Run(args.run_dir), config, _load(args))
    print(format_compare(result.rows))
    for text, detail in result.summary["methods"].items():
        if "reason" in detail:
            print(f"{text}: chose {detail['factor']} on held-out facts; {detail['reason']}")
    return _results(result.files, start)


def _inspect(args: argparse.Namespace) -> int:
    # deferred: torch, so that --help stays fast
    from lens_steer.top_tokens import neuron_profile, top_tokens_for_run

    run = Run(args.run_dir)
    config = config_from_args(InspectConfig, args)
    owners, table = neuron_profile(run, args.layer, args.neuron)
    print(format_neuron(args.layer, args.neuron, owners, run.neurons().provenance.get("method", "?"), table))
    hits = top_tokens_for_run(run, config, owners, _load(args))
    print(format_top_tokens(hits, run.stats().manifest.get("site", "act")))
    return 0


def _stability(args: argparse.Namespace) -> int:
    from lens_steer.stability import stability_for_run  # deferred: torch, so that --help stays fast

    start = time.perf_counter()
    run = Run(args.run_dir)
    _, rows = stability_for_run(run, config_from_args(StabilityConfig, args))
    print(format_stability(rows))
    print(f"results: {run.file(STABILITY_CSV)}, {run.file(STABILITY_FILE)} ({time.perf_counter() - start:.1f} s)")
    return 0


def _report(args: argparse.Namespace) -> int:
    # deferred: torch, so that --help stays fast
    from lens_steer.report import build_report

    start = time.perf_counter()
    path = build_report(args.run_dir, out=args.out)
    size = path.stat().st_size / 2**20
    print(f"wrote {path} ({size:.1f} MB, {time.perf_counter() - start:.1f} s); open it in a browser, no network needed")
    return 0


def _figures(args: argparse.Namespace) -> int:
    # deferred: torch, pandas and plotly, so that --help stays fast
    from lens_steer.report import run_figures, run_results
    from lens_steer.plots import parse_formats, save_figures

    formats = parse_formats(args.format)
    run = Run(args.run_dir)
    figures = run_figures(run, compare=args.compare)
    items = [(fig, Path(args.out) / f"{name}.{fmt}") for name, fig in figures.items() for fmt in formats]
    start = time.perf_counter()
    for path in save_figures(items):
        print(f"wrote {path}")
    results = Path(args.out) / "results.json"  # the numbers behind the figures, to compare runs and versions
    write_json(results, run_results(run))
    print(f"wrote {results}")
    print(f"{len(items) + 1} files in {time.perf_counter() - start:.1f} s")
    return 0


# ---- explore (the live explorer, issue 28) ----
def _explore(args: argparse.Namespace) -> int:
    from lens_steer.configs import ExploreConfig
    from lens_steer.explorer import serve  # deferred: dash, pandas and torch, so that --help stays fast

    serve(Run(args.run_dir), config_from_args(ExploreConfig, args), _load(args))
    return 0
# ---- end explore ----


# ---- lens-steer harness (issue 29) ----
def _harness(args: argparse.Namespace) -> int:
    from lens_steer.configs import HarnessConfig
    from lens_steer.evals import self_cross
    from lens_steer.run import HARNESS_DIR  # deferred: torch, so that --help stays fast

    start = time.perf_counter()
    config = config_from_args(HarnessConfig, args)  # checked before the harness is imported
    try:
        from lens_steer.harness.cells import harness_for_run  # deferred: lm_eval (seconds), an optional extra
    except ImportError as exc:
        raise LensSteerError(f"lm-evaluation-harness cannot be imported ({exc}); pip install"
                             " 'lens-steer[harness]'") from None
    result = harness_for_run(Run(args.run_dir), config, _load(args))
    for task in dict.fromkeys(r["task"] for r in result.rows):
        part = [r for r in result.rows if r["task"] == task]
        summary = [{**s, "lower_is_better": (task, s["metric"].split(":")[0]) in result.lower_is_better}
                   for s in self_cross(part)]  # the harness's own direction of each metric
        print(format_eval(task, result.factor, part, summary))
    return _results([result.path, f"{Run(args.run_dir).file(HARNESS_DIR)}/ ({len(result.cells)} cells)"], start)
# ---- end of lens-steer harness ----


def _setup(args: argparse.Namespace) -> int:
    print(f"UDHR: {ensure_udhr()}")
    if not args.skip_model:
        print(f"embedded model: {ensure_embedded_model()}")
    return 0


SPLIT_COMMANDS = ("identify", "lss", "forcing", "eval", "compare")  # the commands whose work torchrun's ranks share
# What Ctrl-C leaves, per command (read off each stage's writes): only identify keeps work in progress; the others
# write their results atomically once complete, so an interrupted one wrote nothing and a rerun starts over.
INTERRUPTED = {
    "identify": "finished languages are kept in {out}/partial; rerun the same command to resume from them",
    "merge": "merge writes {out} only once the shards are combined, so nothing was written; a rerun starts over",
    "neurons": "nothing was written; a rerun starts over",
    "lss": "lss writes lss.csv and lss_summary.json only when every factor is done, so neither was written (an"
           " earlier run's are left as they were); a rerun starts over",
    "steer": "steer appends to generations.jsonl only after generating, so nothing was appended; a rerun starts over",
    "forcing": "forcing writes forcing.csv and its generations only when every target is done, so nothing was"
               " written; a rerun starts over",
    "eval": "eval writes its {task} table only when every language is done, so nothing was written; a rerun starts"
            " over",
    "compare": "compare writes compare.csv and compare_summary.json only after the last method, so nothing was"
               " written; a rerun starts over",
    "inspect": "inspect writes no files; a rerun starts over",
    "stability": "stability writes its two files only when every resample is done, so nothing was written; a rerun"
                 " starts over",
    "report": "report writes the page only when it is complete, so nothing was written; a rerun starts over",
    "figures": "every file listed as written is complete and kept; a rerun writes them all again",
    "setup": "the UDHR and the converted model are each cached only once complete; a rerun redoes what was unfinished",
    "explore": "explore only adds finished neuron pages to explore_cache.json; a rerun serves them again",
    "harness": "harness writes eval_harness.csv and its cells' JSON only when every cell is done, so nothing was"
               " written; a rerun starts over",  # lens-steer harness (issue 29)
}
HANDLERS = {"identify": _identify, "merge": _merge, "neurons": _neurons, "lss": _lss, "steer": _steer,
            "forcing": _forcing, "eval": _eval, "compare": _compare, "inspect": _inspect, "stability": _stability,
            "report": _report, "figures": _figures, "setup": _setup}
HANDLERS["explore"] = _explore  # lens-steer explore
HANDLERS["harness"] = _harness  # lens-steer harness (issue 29)

if __name__ == "__main__":
    sys.exit(main())
