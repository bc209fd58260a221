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
namespace (``unshare -m``; root ignores file modes), else ``chattr +i``; both are checked with a write first.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MARKER_ENV = "LENS_PROBE_MARKER"
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
DEFAULT_TIMEOUT = 150.0

# Inputs every root builds with its own code: name -> (CLI argv, then optional copy-from and extra argv).
# run2 has other languages in the same count, so its files fit run's shapes and only their labels differ.
INPUTS: dict[str, dict[str, Any]] = {
    "run": {"argv": ["identify", "--out", "{self}", "--langs", "en,fr,ja", "--max-tokens", "1500", "--quiet"]},
    "run2": {"argv": ["identify", "--out", "{self}", "--langs", "it,pt,ru", "--max-tokens", "1500", "--quiet"]},
    # run with derived results (lss), for the stale-result probes
    "run_lss": {"copy": "run", "argv": ["lss", "{self}", "--factors", "p_max", "--max-facts", "2", "--quiet"]},
}
CORE_FILES = ("stats.safetensors", "sent_means.safetensors", "manifest.json", "neurons.json")
HELLO = "The weather today is"
# About 20,000 characters of plain English, as a user pasting a long document would send.
LONG_PROMPT = ("Everyone has the right to education, and education shall be free at least in the elementary and"
               " fundamental stages. " * 200)[:20000]


@dataclass(frozen=True)
class Probe:
    """One bad input.

    Attributes:
        id: short kebab-case name (``--only`` takes these).
        what: one line saying what the user did.
        argv: ``lens-steer`` arguments; ``{run}``, ``{run2}``, ``{run_lss}`` are fresh copies of the built inputs
            in ``{tmp}`` (a probe that writes, as ``steer`` appends generations, never changes what the next one
            sees), ``{tmp}`` the probe's own empty scratch folder.
        setup: steps run in ``{tmp}`` first: ``("copy", INPUT, NAME)`` copies an input run to ``{tmp}/NAME``;
            ``("put", DEST, INPUT/FILE)`` copies one input file over ``{tmp}/DEST``; ``("write", DEST, TEXT)``;
            ``("rm", DEST)``; ``("mkdir", DEST)``.
        readonly: ``{tmp}``-relative folders made read-only for the probe.
        env: extra environment (same placeholders).
        concurrent: start the same command once in the background first and measure a second one while the
            first is still running (two writers on one run directory).
        expect: ``error`` (a one-line refusal, exit 2), ``warn`` (exit 0 with a warning line, or a one-line
            refusal), ``ok`` (exit 0).
        before_load: the answer needs nothing from the model weights, so it should come before they load.
        timeout: seconds (default ``--timeout``).
    """

    id: str
    what: str
    argv: tuple[str, ...]
    setup: tuple[tuple[str, ...], ...] = ()
    readonly: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    concurrent: bool = False
    expect: str = "error"
    before_load: bool = True
    timeout: float | None = None


def _p(id: str, what: str, *argv: str, **kw: Any) -> Probe:  # noqa: A002 - the probe's id
    return Probe(id=id, what=what, argv=tuple(argv), **kw)


COPY_RUN = (("copy", "run", "r"),)
COPY_RUN_LSS = (("copy", "run_lss", "r"),)
FILE = (("write", "file.txt", "not a run directory\n"),)
STEER = ("steer", "{run}", HELLO, "--to", "fr", "--max-new-tokens", "5")
LSS = ("--factors", "p_max", "--max-facts", "2", "--quiet")
IDENTIFY = ("identify", "--out", "{tmp}/x", "--langs", "en,fr", "--max-tokens", "300", "--quiet")

PROBES: list[Probe] = [
    # Silently wrong results: a reused or mixed run directory, two writers, doses and prompts that make no sense.
    _p("stale-reuse", "identify into a run directory that already holds lss results of another neuron set",
       "identify", "--out", "{tmp}/r", "--langs", "en,it", "--max-tokens", "300", "--quiet",
       setup=COPY_RUN_LSS, expect="warn", before_load=False),
    _p("stale-report", "report on a run whose statistics were replaced by another run's but whose lss files stayed",
       "report", "{tmp}/r", "--out", "{tmp}/report.html",
       setup=COPY_RUN_LSS + tuple(("put", f"r/{f}", f"run2/{f}") for f in CORE_FILES), expect="warn"),
    _p("stale-eval-factor", "eval takes its default factor from an lss_summary.json of another neuron set",
       "eval", "{tmp}/r", "--task", "udhr-ppl", "--limit", "1", "--eval-langs", "it", "--quiet",
       setup=COPY_RUN_LSS + tuple(("put", f"r/{f}", f"run2/{f}") for f in CORE_FILES)),
    _p("copied-stats", "neurons on a run whose stats.safetensors was copied from a run of other languages",
       "neurons", "{tmp}/r", setup=COPY_RUN + (("put", "r/stats.safetensors", "run2/stats.safetensors"),)),
    _p("copied-stats-lss", "lss on a run whose stats.safetensors was copied from a run of other languages",
       "lss", "{tmp}/r", *LSS, setup=COPY_RUN + (("put", "r/stats.safetensors", "run2/stats.safetensors"),)),
    _p("copied-neurons", "steer on a run whose neurons.json was copied from a run of other languages",
       "steer", "{tmp}/r", HELLO, "--to", "fr", "--max-new-tokens", "5",
       setup=COPY_RUN + (("put", "r/neurons.json", "run2/neurons.json"),)),
    _p("copied-manifest", "lss on a run whose manifest.json was copied from a run of other languages",
       "lss", "{tmp}/r", *LSS, setup=COPY_RUN + (("put", "r/manifest.json", "run2/manifest.json"),)),
    _p("two-writers", "two identify processes on one --out at once (the second one is measured)",
       *IDENTIFY[:2], "{tmp}/same", *IDENTIFY[3:], concurrent=True, before_load=False),
    _p("top-rate-tiny", "identify --top-rate 1e-9 (keeps no neuron at all)",
       *IDENTIFY, "--top-rate", "1e-9", expect="warn", before_load=False),
    _p("negative-dose", "steer --factor 'p_max*-1' (a negative dose)", *STEER, "--factor", "p_max*-1", expect="warn"),
    _p("empty-prompt", "steer with an empty prompt", "steer", "{run}", "", "--to", "fr", "--max-new-tokens", "5",
       expect="warn"),
    _p("whitespace-prompt", "steer with a prompt of three spaces", "steer", "{run}", "   ", "--to", "fr",
       "--max-new-tokens", "5", expect="warn"),
    _p("long-prompt", "steer with a 20,000-character prompt", "steer", "{run}", LONG_PROMPT, "--to", "fr",
       "--max-new-tokens", "5", expect="warn", before_load=False, timeout=300),
    # Tracebacks where one line is promised.
    _p("device-cuda", "steer --device cuda on a machine without a GPU (meaningful only there)",
       *STEER, "--device", "cuda"),
    _p("device-tpu", "steer --device tpu", *STEER, "--device", "tpu"),
    _p("out-readonly", "identify --out inside a read-only folder", *IDENTIFY[:2], "{tmp}/ro/run", *IDENTIFY[3:],
       setup=(("mkdir", "ro"),), readonly=("ro",)),
    _p("out-is-file", "identify --out an existing file", *IDENTIFY[:2], "{tmp}/file.txt", *IDENTIFY[3:], setup=FILE),
    _p("steer-readonly-run", "steer on a read-only run directory", "steer", "{tmp}/r", HELLO, "--to", "fr",
       "--max-new-tokens", "5", setup=COPY_RUN, readonly=("r",)),
    _p("lss-readonly-run", "lss on a read-only run directory", "lss", "{tmp}/r", *LSS, setup=COPY_RUN,
       readonly=("r",)),
    _p("lss-one-lang", "lss --langs en (one language: nothing to steer towards)", "lss", "{run}", "--langs", "en",
       *LSS),
    _p("compare-one-lang", "compare --langs en", "compare", "{run}", "--langs", "en", "--methods", "p_max",
       "--max-facts", "2", "--quiet"),
    _p("cache-readonly", "LENS_STEER_CACHE on a read-only place", *STEER, setup=(("mkdir", "ro"),),
       readonly=("ro",), env={"LENS_STEER_CACHE": "{tmp}/ro/cache"}),
    # Everything the manifest or the tokenizer files can answer, before the weights load.
    _p("resid-out-of-range", "lss --factors resid:99*2 (the model has 18 layers)", "lss", "{run}", "--factors",
       "resid:99*2", "--max-facts", "2", "--quiet"),
    _p("layers-out-of-range", "steer --layers 99", *STEER, "--layers", "99"),
    _p("chat-template-base", "steer --chat-template on the base model (no chat template)", *STEER, "--chat-template"),
    _p("forcing-chat-template", "forcing --chat-template on the base model", "forcing", "{run}", "--chat-template",
       "--factors", "p_max", "--max-new-tokens", "5"),
    _p("model-hub-offline", "identify --model of a hub id that is not cached, offline",
       *IDENTIFY, "--model", "nobody-here/no-such-model"),
    _p("model-unknown-name", "identify --model gemma-9b (neither known nor a local path)",
       *IDENTIFY, "--model", "gemma-9b"),
    _p("device-map-missing", "identify --device-map of a file that does not exist",
       *IDENTIFY, "--device-map", "{tmp}/no-such-map.json"),
    _p("n-devices-no-gpu", "identify --n-devices 2 on a machine without GPUs", *IDENTIFY, "--n-devices", "2"),
    _p("float16-gemma", "identify --dtype float16 on Gemma (its activations overflow)", *IDENTIFY,
       "--dtype", "float16"),
    # Everyday mistakes.
    _p("unknown-command", "a typo in the command name", "idenitfy", "--out", "{tmp}/x"),
    _p("unknown-lang-identify", "identify --langs en,xx (unknown code)", *IDENTIFY[:4], "en,xx", *IDENTIFY[5:]),
    _p("empty-langs", "identify --langs ''", *IDENTIFY[:4], "", *IDENTIFY[5:]),
    _p("duplicate-langs", "identify --langs en,en,fr", *IDENTIFY[:4], "en,en,fr", *IDENTIFY[5:], expect="warn",
       before_load=False),
    _p("unknown-lang-steer", "steer --to xx", "steer", "{run}", HELLO, "--to", "xx"),
    _p("lang-not-in-run", "steer --to ru on a run of en, fr, ja", "steer", "{run}", HELLO, "--to", "ru"),
    _p("deactivate-unknown", "steer --deactivate xx", *STEER, "--deactivate", "xx"),
    _p("unknown-factor", "steer --factor p_maxx", *STEER, "--factor", "p_maxx"),
    _p("unknown-factor-lss", "lss --factors p_max,bogus", "lss", "{run}", "--factors", "p_max,bogus",
       "--max-facts", "2", "--quiet"),
    _p("unknown-sweep", "lss --sweep everything", "lss", "{run}", *LSS, "--sweep", "everything"),
    _p("unknown-task", "eval --task xnli", "eval", "{run}", "--task", "xnli", "--factor", "p_max"),
    _p("eval-no-factor", "eval without --factor on a run without lss results", "eval", "{run}", "--task",
       "udhr-ppl", "--limit", "1"),
    _p("eval-hub-offline", "eval --task xwinograd offline without --data", "eval", "{run}", "--task", "xwinograd",
       "--eval-langs", "en", "--factor", "p_max", "--limit", "1"),
    _p("eval-targets-unknown", "eval --targets xx", "eval", "{run}", "--task", "udhr-ppl", "--factor", "p_max",
       "--targets", "xx", "--limit", "1"),
    _p("bad-positions", "steer --positions middle", *STEER, "--positions", "middle"),
    _p("bad-positions-last0", "eval --positions last:0", "eval", "{run}", "--task", "udhr-ppl", "--factor",
       "p_max", "--positions", "last:0", "--limit", "1"),
    _p("forcing-targets-unknown", "forcing --targets xx", "forcing", "{run}", "--targets", "xx", "--factors",
       "p_max", "--max-new-tokens", "5"),
    _p("missing-run-dir", "lss on a run directory that does not exist", "lss", "{tmp}/no-such-run", *LSS),
    _p("missing-run-dir-neurons", "neurons on a run directory that does not exist", "neurons", "{tmp}/no-such-run"),
    _p("file-as-run-dir", "lss on a file instead of a run directory", "lss", "{tmp}/file.txt", *LSS, setup=FILE),
    _p("empty-dir-as-run", "neurons on an empty folder", "neurons", "{tmp}/empty", setup=(("mkdir", "empty"),)),
    _p("corrupt-stats", "lss on a run whose stats.safetensors is garbage", "lss", "{tmp}/r", *LSS,
       setup=COPY_RUN + (("write", "r/stats.safetensors", "garbage"),)),
    _p("corrupt-neurons", "neurons on a run whose neurons.json is cut short", "neurons", "{tmp}/r",
       setup=COPY_RUN + (("write", "r/neurons.json", '{"langs": ["en", "fr"'),)),
    _p("corrupt-manifest", "steer on a run whose manifest.json is not JSON", "steer", "{tmp}/r", HELLO, "--to", "fr",
       "--max-new-tokens", "5", setup=COPY_RUN + (("write", "r/manifest.json", "{"),)),
    _p("missing-stats", "lss on a run without stats.safetensors", "lss", "{tmp}/r", *LSS,
       setup=COPY_RUN + (("rm", "r/stats.safetensors"),)),
    _p("bad-shard", "identify --shard 3/2", *IDENTIFY, "--shard", "3/2"),
    _p("bad-shard-text", "identify --shard half", *IDENTIFY, "--shard", "half"),
    _p("merge-not-shards", "merge a run that is not a shard", "merge", "{run}", "--out", "{tmp}/m"),
    _p("max-facts-0", "lss --max-facts 0", "lss", "{run}", "--factors", "p_max", "--max-facts", "0"),
    _p("negative-batch-size", "identify --batch-size -4", *IDENTIFY, "--batch-size", "-4"),
    _p("top-rate-2", "identify --top-rate 2", *IDENTIFY, "--top-rate", "2"),
    _p("sentence-means-0", "identify --n-sentence-means 0", *IDENTIFY, "--n-sentence-means", "0"),
    _p("activation-bar-text", "identify --activation-bar high", *IDENTIFY, "--activation-bar", "high"),
    _p("unknown-corpus", "identify --corpus wiki", *IDENTIFY, "--corpus", "wiki"),
    _p("bad-split", "identify --split test", *IDENTIFY, "--split", "test"),
    _p("files-corpus-no-path", "identify --corpus files without --corpus-path", *IDENTIFY, "--corpus", "files"),
    _p("flores-offline", "identify --corpus flores offline without a local copy", *IDENTIFY, "--corpus", "flores"),
    _p("unknown-cloze", "lss --cloze trivia", "lss", "{run}", *LSS, "--cloze", "trivia"),
    _p("unknown-detector", "steer --detector langid9", *STEER, "--detector", "langid9"),
    _p("inspect-neuron-range", "inspect --neuron 99999 (beyond the MLP width)", "inspect", "{run}", "--layer", "0",
       "--neuron", "99999"),
    _p("inspect-layer-range", "inspect --layer 99", "inspect", "{run}", "--layer", "99", "--neuron", "0"),
    _p("bad-format", "figures --format jpg", "figures", "{run}", "--format", "jpg", "--out", "{tmp}/figs"),
    _p("figures-compare-missing", "figures --compare of a run that does not exist", "figures", "{run}",
       "--compare", "{tmp}/no-such-run", "--format", "html", "--out", "{tmp}/figs"),
    _p("export-pth-readonly", "neurons --export-pth into a read-only folder", "neurons", "{run}", "--export-pth",
       "{tmp}/ro/n.pth", setup=(("mkdir", "ro"),), readonly=("ro",)),
    _p("report-out-readonly", "report --out into a read-only folder", "report", "{run}", "--out",
       "{tmp}/ro/report.html", setup=(("mkdir", "ro"),), readonly=("ro",)),
]

# ----------------------------------------------------------------------------------------------------------------
# The shim: this file run as `probes.py --shim ARGS...` is `python -m lens_steer.cli ARGS...` with the model load
# logged. It imports nothing heavy itself, so a probe that fails in argparse costs what it costs the user.


def _log(event: str, **extra: Any) -> None:
    path = os.environ.get(MARKER_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"event": event, "t": round(time.perf_counter() - _T0, 3), **extra}) + "\n")


_T0 = time.perf_counter()


def _patch_models(module: Any) -> None:
    original = module.load_model

    def load_model(*args: Any, **kwargs: Any) -> Any:
        _log("load_model", spec=str(args[0] if args else kwargs.get("spec", "")))
        model = original(*args, **kwargs)
        _log("loaded")
        return model

    load_model.__wrapped__ = original  # type: ignore[attr-defined]
    module.load_model = load_model
    init = module.Model.__init__

    def model_init(self: Any, *args: Any, **kwargs: Any) -> None:
        _log("Model")
        init(self, *args, **kwargs)

    module.Model.__init__ = model_init


def _patch_bridge(module: Any) -> None:
    bridge = getattr(module, "TransformerBridge", None)
    if bridge is None or not hasattr(bridge, "boot_transformers"):
        return
    boot = bridge.boot_transformers

    def boot_transformers(*args: Any, **kwargs: Any) -> Any:
        _log("boot")
        return boot(*args, **kwargs)

    bridge.boot_transformers = staticmethod(boot_transformers)


PATCHES = {"lens_steer.models": _patch_models, "transformer_lens.model_bridge": _patch_bridge}


def install_hooks() -> None:
    """Patch the modules of :data:`PATCHES` right after they are first executed (a meta-path finder), so whoever
    imports ``load_model`` by name (``from lens_steer.models import load_model``) gets the logging one."""
    import importlib.abc
    import importlib.machinery

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):  # noqa: ANN001, ANN201 - importlib's signature
            if name not in PATCHES:
                return None
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is None or spec.loader is None:
                return spec
            loader, patch = spec.loader, PATCHES[name]
            exec_module = loader.exec_module

            def patched_exec(module: Any) -> None:
                exec_module(module)
                patch(module)

            loader.exec_module = patched_exec  # type: ignore[method-assign]
            return spec

    sys.meta_path.insert(0, Finder())


def shim(argv: list[str]) -> int:
    """Run the CLI on ``argv`` as ``python -m lens_steer.cli`` would, with the hooks installed."""
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        del sys.path[0]  # benchmarks/ holds bench.py, profiling.py: never shadow an installed module
    install_hooks()
    import lens_steer
    import lens_steer.cli

    _log("start", lens_steer=str(Path(lens_steer.__file__).resolve().parent))
    return lens_steer.cli.main(argv)


# ----------------------------------------------------------------------------------------------------------------
# Classifying what came back.

TRACEBACK = "Traceback (most recent call last):"
ERROR = "lens-steer: error:"
WARNING = "lens-steer: warning:"
ARGPARSE_ERROR = re.compile(r"^lens-steer(?: [\w-]+)?: error: ")
PROGRESS = re.compile(r"\d+%\||\|\s*\d+/\d+ \[|it/s\]|s/it\]")
LOAD_LEVELS = ("no", "checks", "booting", "loaded")  # how far a model load got, in order


def classify_stderr(stderr: str, returncode: int | None) -> dict[str, Any]:
    """What the user saw on stderr, in kinds.

    >>> classify_stderr("lens-steer: warning: x\\nlens-steer: error: no run at r; run identify\\n", 2)["kind"]
    'one line'
    >>> classify_stderr("Traceback (most recent call last):\\n  File \\"a.py\\"\\nOSError: [Errno 30] x\\n", 1)["error"]
    'OSError: [Errno 30] x'
    """
    lines, on_bar = [], False
    for raw in stderr.split("\n"):  # not splitlines(): it splits at the carriage returns too
        # A carriage return redraws a progress bar; what a terminal keeps is the last segment. An error printed
        # after a bar without a newline lands on the bar's line.
        segments = [s for s in raw.split("\r") if s.strip()]
        if not segments:
            continue
        last = segments[-1]
        if len(segments) > 1 and last.startswith((ERROR, WARNING)) and PROGRESS.search(segments[-2]):
            on_bar = True
        lines.append(last.rstrip())
    warnings = [ln for ln in lines if ln.startswith(WARNING)]
    errors = [ln for ln in lines if ln.startswith(ERROR)]
    progress = [ln for ln in lines if PROGRESS.search(ln) and not ln.startswith((ERROR, WARNING))]
    other = [ln for ln in lines if ln not in warnings and ln not in errors and ln not in progress]
    traceback = TRACEBACK in stderr
    usage = any(ln.startswith("usage: ") for ln in lines) and any(ARGPARSE_ERROR.match(ln) for ln in lines)
    error = ""
    if returncode is None:
        kind = "timeout"
    elif traceback:
        kind = "traceback"
        error = next((ln for ln in reversed(lines) if not ln.startswith((" ", WARNING))), "")
    elif returncode == 0:
        kind = "ok"
    elif usage and returncode == 2:
        kind = "argparse"
        error = next(ln for ln in lines if ARGPARSE_ERROR.match(ln))
    elif len(errors) == 1 and not other:
        kind = "one line"
        error = errors[0]
    elif errors:
        kind = "noisy"
        error = errors[-1]
    else:
        kind = "other"
        error = other[-1] if other else ""
    return {"kind": kind, "error": error, "warnings": warnings, "noise": other[-8:], "progress_lines": len(progress),
            "error_on_bar_line": on_bar}


def read_marker(path: str | Path) -> dict[str, Any]:
    """How far the model load got, from the shim's log: no, checks (load_model entered, weights never read),
    booting (the bridge began reading weights, load_model never returned), loaded.

    >>> import tempfile; f = Path(tempfile.mkdtemp()) / "m"
    >>> _ = f.write_text('{"event": "start", "t": 0.1}\\n{"event": "load_model", "t": 2}\\n')
    >>> read_marker(f)["model"], read_marker(f)["load_t"]
    ('checks', 2)
    """
    events: list[dict[str, Any]] = []
    if Path(path).exists():
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a killed process
    names = [e["event"] for e in events]
    level = ("loaded" if "loaded" in names else "booting" if "boot" in names
             else "checks" if "load_model" in names or "Model" in names else "no")
    load_t = next((e["t"] for e in events if e["event"] in ("load_model", "boot", "Model")), None)
    home = next((e.get("lens_steer") for e in events if e["event"] == "start"), None)
    return {"model": level, "load_t": load_t, "lens_steer": home, "loads": names.count("loaded")}


def meets(probe: Probe, result: dict[str, Any]) -> bool:
    """Whether the answer is what the probe expects (see :class:`Probe`)."""
    refused = result["exit"] == 2 and result["kind"] in ("one line", "argparse")
    early = not probe.before_load or LOAD_LEVELS.index(result["model"]) <= LOAD_LEVELS.index("checks")
    if probe.expect == "ok":
        return result["exit"] == 0
    if probe.expect == "warn" and result["exit"] == 0:
        return bool(result["warnings"])
    return refused and early


# ----------------------------------------------------------------------------------------------------------------
# Running.


def source_hash(root: Path) -> str:
    """A hash of ``root/lens_steer``'s Python sources: built inputs are reused only by the same code."""
    digest = hashlib.sha256()
    for path in sorted((root / "lens_steer").rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def readonly_method(scratch: Path) -> str | None:
    """How this machine makes a folder read-only for a probe, checked by a write that must fail: a read-only bind
    mount in a private mount namespace (``unshare -m``; root bypasses file modes), else ``chattr +i``."""
    test = scratch / "_rotest"
    shutil.rmtree(test, ignore_errors=True)
    test.mkdir(parents=True)
    try:
        if shutil.which("unshare"):
            script = _ro_script([test]) + ' touch "$1/probe" 2>/dev/null && exit 1; exit 0'
            done = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(test)], capture_output=True)
            if done.returncode == 0 and not (test / "probe").exists():
                return "unshare"
        if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(test)], capture_output=True).returncode == 0:
            try:
                (test / "probe").touch()
            except OSError:
                return "chattr"
            finally:
                subprocess.run(["chattr", "-i", str(test)], capture_output=True)
        return None
    finally:
        shutil.rmtree(test, ignore_errors=True)


def _ro_script(dirs: list[Path]) -> str:
    binds = "; ".join(f"mount --bind {shlex.quote(str(d))} {shlex.quote(str(d))} && mount -o remount,bind,ro"
                      f" {shlex.quote(str(d))} {shlex.quote(str(d))}" for d in dirs)
    return f"set -e; {binds}; set +e;"


class Runner:
    """Runs probes against one checkout (``root``) with one Python, inputs under ``workdir``."""

    def __init__(self, root: Path, python: str, workdir: Path, timeout: float = DEFAULT_TIMEOUT,
                 rebuild: bool = False, keep: bool = False, log=print):  # noqa: ANN001 - a print-like callable
        self.root, self.python, self.timeout, self.keep, self.log = root.resolve(), python, timeout, keep, log
        tag = re.sub(r"[^\w.-]+", "_", str(self.root).strip("/")) or "root"
        self.base = workdir.resolve() / tag
        self.inputs_dir, self.scratch = self.base / "inputs", self.base / "scratch"
        self.rebuild = rebuild
        self.ro: str | None = None
        self.inputs: dict[str, Path] = {}

    def env(self, marker: Path | None, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", MARKER_ENV)}
        env.update(OFFLINE, PYTHONPATH=str(self.root), PYTHONDONTWRITEBYTECODE="1")
        if marker is not None:
            env[MARKER_ENV] = str(marker)
        env.update(extra or {})
        return env

    def command(self, argv: list[str]) -> list[str]:
        return [self.python, str(Path(__file__).resolve()), "--shim", *argv]

    def prepare(self) -> None:
        """Build (or reuse) the inputs with this root's code, and find how to make a folder read-only."""
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.ro = readonly_method(self.scratch)
        if self.ro is None:
            self.log("probes: cannot make a folder read-only here (no unshare -m, no chattr): those probes are skipped")
        stamp_file, stamp = self.inputs_dir / "stamp.json", {"source": source_hash(self.root), "inputs": INPUTS}
        if not self.rebuild and stamp_file.exists() and json.loads(stamp_file.read_text()) == stamp:
            self.inputs = {name: self.inputs_dir / name for name in INPUTS}
            return
        shutil.rmtree(self.inputs_dir, ignore_errors=True)
        self.inputs_dir.mkdir(parents=True)
        for name, spec in INPUTS.items():
            target = self.inputs_dir / name
            if "copy" in spec:
                shutil.copytree(self.inputs_dir / spec["copy"], target)
            argv = [a.replace("{self}", str(target)) for a in spec["argv"]]
            self.log(f"probes: building input {name}: lens-steer {shlex.join(argv)}")
            start = time.perf_counter()
            done = subprocess.run(self.command(argv), env=self.env(None), capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"probes: building input {name} failed (exit {done.returncode}):\n"
                                 f"{done.stderr[-3000:]}")
            self.log(f"probes:   {time.perf_counter() - start:.0f} s")
        stamp_file.write_text(json.dumps(stamp, indent=1))
        self.inputs = {name: self.inputs_dir / name for name in INPUTS}

    def fill(self, text: str, tmp: Path) -> str:
        """``text`` with its placeholders filled; an input it names is copied into ``tmp/_inputs`` first."""
        for name, path in self.inputs.items():
            if "{" + name + "}" in text:
                copy = tmp / "_inputs" / name
                if not copy.exists():
                    shutil.copytree(path, copy)
                text = text.replace("{" + name + "}", str(copy))
        return text.replace("{tmp}", str(tmp))

    def _setup(self, probe: Probe, tmp: Path) -> None:
        for step in probe.setup:
            op, dest = step[0], tmp / step[1]
            if op == "copy":
                shutil.copytree(self.inputs[step[1]], tmp / step[2])
            elif op == "put":
                src_input, _, rel = step[2].partition("/")
                shutil.copyfile(self.inputs[src_input] / rel, dest)
            elif op == "write":
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(step[2], encoding="utf-8")
            elif op == "rm":
                dest.unlink()
            elif op == "mkdir":
                dest.mkdir(parents=True, exist_ok=True)
            else:
                raise ValueError(f"unknown setup step {step!r}")

    def _clear(self, tmp: Path) -> None:
        if tmp.exists():
            if shutil.which("chattr"):
                subprocess.run(["chattr", "-R", "-i", str(tmp)], capture_output=True)
            shutil.rmtree(tmp)

    def run(self, probe: Probe) -> dict[str, Any]:
        tmp = self.scratch / probe.id
        self._clear(tmp)
        tmp.mkdir(parents=True)
        result: dict[str, Any] = {"id": probe.id, "probe": probe.what, "expect": probe.expect,
                                  "before_load_expected": probe.before_load}
        try:
            self._setup(probe, tmp)
            argv = [self.fill(a, tmp) for a in probe.argv]
            result["argv"] = [a if len(a) < 200 else f"<{len(a)} characters>" for a in argv]
            if probe.readonly and self.ro is None:
                return {**result, "exit": None, "kind": "skipped", "model": "no", "seconds": 0.0, "warnings": [],
                        "error": "no way to make a folder read-only here", "meets": None}
            ro_dirs = [tmp / d for d in probe.readonly]
            if self.ro == "chattr":
                for d in ro_dirs:
                    subprocess.run(["chattr", "-R", "+i", str(d)], check=True)
            env_extra = {k: self.fill(v, tmp) for k, v in probe.env.items()}
            first = None
            if probe.concurrent:
                first = self._popen(argv, tmp / "first.marker", env_extra, ro_dirs)
                self._wait_for_load(tmp / "first.marker", first)
            result.update(self._measure(argv, tmp / "marker", env_extra, ro_dirs, probe.timeout or self.timeout))
            if first is not None:
                try:
                    out, err = first.communicate(timeout=probe.timeout or self.timeout)
                except subprocess.TimeoutExpired:
                    self._kill(first)
                    out, err = first.communicate()
                result["first"] = {"exit": first.returncode, **classify_stderr(err, first.returncode),
                                   **read_marker(tmp / "first.marker")}
            result["meets"] = meets(probe, result)
            return result
        finally:
            if not self.keep:
                self._clear(tmp)

    def _popen(self, argv: list[str], marker: Path, env_extra: dict[str, str], ro_dirs: list[Path]):  # noqa: ANN202
        cmd = self.command(argv)
        if ro_dirs and self.ro == "unshare":
            cmd = ["unshare", "-m", "sh", "-c", _ro_script(ro_dirs) + ' exec "$@"', "sh", *cmd]
        # A session of its own: a timeout kills the whole group (unshare, sh, python and its workers).
        return subprocess.Popen(cmd, env=self.env(marker, env_extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True, start_new_session=True, cwd=str(marker.parent))

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    @staticmethod
    def _wait_for_load(marker: Path, proc: subprocess.Popen, limit: float = 60.0) -> None:
        """Let the first writer get going (its model load begun, or it has ended) before the second starts."""
        end = time.monotonic() + limit
        while time.monotonic() < end and proc.poll() is None:
            if marker.exists() and read_marker(marker)["model"] != "no":
                return
            time.sleep(0.2)

    def _measure(self, argv: list[str], marker: Path, env_extra: dict[str, str], ro_dirs: list[Path],
                 timeout: float) -> dict[str, Any]:
        start = time.perf_counter()
        proc = self._popen(argv, marker, env_extra, ro_dirs)
        try:
            out, err = proc.communicate(timeout=timeout)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            self._kill(proc)
            out, err = proc.communicate()
            code = None
        seconds = time.perf_counter() - start
        loaded = read_marker(marker)
        if loaded["lens_steer"] is not None and not Path(loaded["lens_steer"]).is_relative_to(self.root):
            raise SystemExit(f"probes: imported lens_steer from {loaded['lens_steer']}, not from {self.root}:"
                             " PYTHONPATH was not honoured")
        return {"exit": code, **classify_stderr(err, code), **loaded, "seconds": round(seconds, 2),
                "stdout_tail": out[-600:], "stderr_tail": err[-1500:]}


# ----------------------------------------------------------------------------------------------------------------
# Tables.

MODEL_TEXT = {"no": "no", "checks": "no (refused in load_model)", "booting": "yes (failed loading)", "loaded": "yes"}


def one_line_text(r: dict[str, Any]) -> str:
    """The 'one line?' cell: yes, argparse, no (traceback: OSError), or - for exit 0."""
    kind = r["kind"]
    if kind == "one line":
        return "yes" + (" (on a progress bar's line)" if r.get("error_on_bar_line") else "")
    if kind == "ok":
        return "-"
    if kind == "traceback":
        exc = r.get("error", "").split(":")[0].split(".")[-1]
        return f"no (traceback{': ' + exc if exc else ''})"
    return {"argparse": "argparse usage", "noisy": "no (extra lines)"}.get(kind, kind)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(results: list[dict[str, Any]]) -> str:
    rows = ["| id | probe | exit | one line? | model loaded? | warning | s |", "|---|---|---|---|---|---|---|"]
    for r in results:
        warn = "yes" if r.get("warnings") else ""
        exit_text = "timeout" if r["kind"] == "timeout" else ("skipped" if r["kind"] == "skipped" else r["exit"])
        rows.append(f"| {r['id']} | {_cell(r['probe'])} | {exit_text} | {one_line_text(r)} |"
                    f" {MODEL_TEXT.get(r['model'], r['model'])} | {warn} | {r['seconds']:.1f} |")
    met = [r for r in results if r.get("meets") is not None]
    rows.append("")
    rows.append(f"{sum(bool(r['meets']) for r in met)} of {len(met)} probes answer as expected (a one-line refusal,"
                " before the model loads where nothing from it is needed, or a warning where one is asked for).")
    return "\n".join(rows)


def short(r: dict[str, Any] | None) -> str:
    """One compact cell: ``2, one line, no load``."""
    if r is None:
        return "-"
    if r["kind"] in ("timeout", "skipped"):
        return r["kind"]
    load = {"no": "no load", "checks": "no load", "booting": "in load", "loaded": "after load"}[r["model"]]
    warn = ", warning" if r.get("warnings") else ""
    return f"{r['exit']}, {one_line_text(r)}{warn}, {load}"


def compare_table(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> str:
    """The README's before/after table: one row per probe, each side as exit, kind, load."""
    b, a = {r["id"]: r for r in before}, {r["id"]: r for r in after}
    ids = list(dict.fromkeys([*b, *a]))
    rows = ["| probe | before | after |", "|---|---|---|"]
    for i in ids:
        what = (a.get(i) or b[i])["probe"]
        rows.append(f"| `{i}`: {_cell(what)} | {short(b.get(i))} | {short(a.get(i))} |")
    for name, side in (("before", before), ("after", after)):
        met = [r for r in side if r.get("meets") is not None]
        rows.append(f"\n{name}: {sum(bool(r['meets']) for r in met)} of {len(met)} as expected")
    return "\n".join(rows)


# ----------------------------------------------------------------------------------------------------------------


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
