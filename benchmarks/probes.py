#!/usr/bin/env python
"""Bad-input probes of the ``lens-steer`` command line: what a new user's mistakes get back.

    python benchmarks/probes.py --root /work/main --json benchmarks/probes_after.json   # this checkout
    python benchmarks/probes.py --root /tmp/base --json benchmarks/probes_before.json   # an older copy of the code
    python benchmarks/probes.py --only lss-one-lang,device-tpu --markdown                # a few, table on stdout
    python benchmarks/probes.py --table benchmarks/probes_before.json benchmarks/probes_after.json   # README table

Each probe is one mistake (a stale or mismatched run directory, a read-only place, an out-of-range layer, a typo)
run as ``python -m lens_steer.cli ARGS`` in a fresh subprocess, offline (``HF_HUB_OFFLINE=1``), one after the
other, and classified by what the user sees:

- the exit code;
- the kind of answer: ``one line`` (exactly one ``lens-steer: error: ...`` line on stderr, ``lens-steer: warning:``
  lines allowed before it and reported apart), ``argparse`` (argparse's usage line and its error), ``traceback``,
  ``noisy`` (an error with other stderr lines around it), ``ok`` (exit 0), ``timeout``;
- whether the model was loaded before the answer: the CLI runs through a shim (this file with ``--shim``) that
  wraps ``lens_steer.models.load_model``, ``Model.__init__`` and ``TransformerBridge.boot_transformers`` to log
  to ``$LENS_PROBE_MARKER`` before calling the originals, so neither the package nor its age matters;
- the wall seconds.

``--root DIR`` picks the checkout whose ``lens_steer`` is imported (``PYTHONPATH=DIR``; the shim checks that
``lens_steer.__file__`` lies in it), so the same script measures the code before and after a change. The inputs
the probes need (small runs on the embedded Gemma-3-270M) are built by that same code under ``--workdir`` once,
and rebuilt when the code's sources change. Read-only places are real read-only bind mounts in a private mount

The pieces: probe_table.py (the probes), probe_shim.py (the logged CLI), probe_runner.py (running one),
probe_answers.py (classifying what came back) and probe_report.py (the Markdown tables).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# This checkout's benchmarks package, found first whatever --root put on PYTHONPATH (the shim runs this file with
# PYTHONPATH=--root), then taken off again: lens_steer itself must come from --root.
sys.path.insert(0, str(REPO))
try:
    from benchmarks.probe_answers import classify_stderr, meets, read_marker
    from benchmarks.probe_report import compare_table, markdown, one_line_text
    from benchmarks.probe_runner import DEFAULT_TIMEOUT, Runner, source_hash
    from benchmarks.probe_shim import shim
    from benchmarks.probe_table import INPUTS, PROBES, Probe
finally:
    del sys.path[0]

# Re-exported for tests/test_probes.py, which uses them as probes.X.
__all__ = ["INPUTS", "PROBES", "Probe", "Runner", "classify_stderr", "compare_table", "main", "markdown", "meets",
           "one_line_text", "read_marker"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--shim"]:
        return shim(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(REPO), help="checkout whose lens_steer is imported (default: this one)")
    venv = REPO / ".venv" / "bin" / "python"
    parser.add_argument("--python", default=str(venv) if venv.exists() else sys.executable,
                        help="the interpreter with lens_steer's dependencies (default: this repo's .venv)")
    parser.add_argument("--workdir", default="/tmp/probes", help="inputs and scratch (default: %(default)s)")
    parser.add_argument("--only", default=None, help="comma-separated probe ids")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help="seconds per probe (default: %(default)s)")
    parser.add_argument("--json", default=None, help="write the results here (a list of dicts)")
    parser.add_argument("--markdown", action="store_true", help="print the results as a Markdown table")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the inputs even if the code is unchanged")
    parser.add_argument("--keep", action="store_true", help="keep each probe's scratch folder")
    parser.add_argument("--list", action="store_true", help="list the probes and exit")
    parser.add_argument("--table", nargs=2, metavar=("BEFORE", "AFTER"), default=None,
                        help="print the before/after table of two --json files and exit")
    args = parser.parse_args(argv)
    if args.list:
        for p in PROBES:
            print(f"{p.id:26} {p.what}")
        return 0
    if args.table:
        before, after = (json.loads(Path(f).read_text(encoding="utf-8")) for f in args.table)
        print(compare_table(before, after))
        return 0
    probes = PROBES
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - {p.id for p in PROBES})
        if unknown:
            parser.error(f"unknown probe ids: {', '.join(unknown)} (see --list)")
        probes = [p for p in PROBES if p.id in wanted]
    root = Path(args.root)
    if not (root / "lens_steer" / "__init__.py").exists():
        parser.error(f"--root {root}: no lens_steer package there")
    runner = Runner(root, args.python, Path(args.workdir), timeout=args.timeout, rebuild=args.rebuild,
                    keep=args.keep, log=lambda s: print(s, file=sys.stderr, flush=True))
    runner.prepare()
    results = []
    for n, probe in enumerate(probes, 1):  # one at a time: timings mean something only on a quiet machine
        r = runner.run(probe)
        results.append(r)
        print(f"{n:2}/{len(probes)} {probe.id:26} exit {str(r['exit']):4} {r['kind']:9} model {r['model']:7}"
              f" {r['seconds']:6.1f} s"
              f"  {r.get('error', '')[:110]}", file=sys.stderr, flush=True)
    if args.json:
        meta = {"root": str(runner.root), "source": source_hash(runner.root), "readonly": runner.ro}
        Path(args.json).write_text(json.dumps([{**r, **meta} for r in results], indent=1, ensure_ascii=False) + "\n",
                                   encoding="utf-8")
    if args.markdown:
        print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
