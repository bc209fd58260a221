"""The probes: one bad input each, as a new user would type it, and the small runs they start from.

Every probe names what it expects back (see :class:`Probe`); ``tests/test_probes.py`` checks that the list is
well formed (known placeholders, setup steps that exist, read-only folders made before they are locked).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
