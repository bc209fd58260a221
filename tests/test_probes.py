"""benchmarks/probes.py: how a probe's answer is classified, and that the shim sees a model load.

No model is loaded: the shim runs a fake ``lens_steer`` package (a ``cli.main`` and a ``models.load_model``) written
into a temporary folder, which is exactly what ``--root`` does with a real checkout.
"""

from __future__ import annotations

import json
import string
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import probes  # noqa: E402

TRACEBACK = """Traceback (most recent call last):
  File "/x/lens_steer/cli.py", line 40, in main
    return HANDLERS[args.command](args)
  File "/x/lens_steer/paths.py", line 30, in atomic_path
    target.parent.mkdir(parents=True, exist_ok=True)
PermissionError: [Errno 13] Permission denied: '/ro/run'
"""
USAGE = """usage: lens-steer lss [-h] [--quiet] run_dir
lens-steer lss: error: argument --max-facts: expected a positive integer, got '0'
"""
BAR = "recording en:  40%|####      | 2/5 [00:01<00:02,  1.5it/s]"


def test_one_error_line_after_warnings_is_one_line():
    seen = probes.classify_stderr("lens-steer: warning: 0 neurons kept; raise --top-rate\n"
                                  "lens-steer: error: runs/x holds a run; pass --overwrite\n", 2)
    assert seen["kind"] == "one line"
    assert seen["error"] == "lens-steer: error: runs/x holds a run; pass --overwrite"
    assert seen["warnings"] == ["lens-steer: warning: 0 neurons kept; raise --top-rate"]
    assert not seen["error_on_bar_line"]


def test_a_traceback_is_a_traceback_with_its_last_line():
    seen = probes.classify_stderr(TRACEBACK, 1)
    assert seen["kind"] == "traceback"
    assert seen["error"] == "PermissionError: [Errno 13] Permission denied: '/ro/run'"
    assert probes.one_line_text({**seen, "exit": 1}) == "no (traceback: PermissionError)"


def test_a_traceback_after_an_error_line_is_still_a_traceback():
    assert probes.classify_stderr("lens-steer: error: x\n" + TRACEBACK, 2)["kind"] == "traceback"


def test_argparse_usage_and_extra_lines():
    seen = probes.classify_stderr(USAGE, 2)
    assert seen["kind"] == "argparse" and seen["error"].startswith("lens-steer lss: error: argument --max-facts")
    noisy = probes.classify_stderr("Some weights were not used\nlens-steer: error: x\n", 2)
    assert noisy["kind"] == "noisy" and noisy["noise"] == ["Some weights were not used"]
    assert probes.classify_stderr("", 2)["kind"] == "other"


def test_exit_zero_with_a_warning_and_a_timeout():
    seen = probes.classify_stderr("lens-steer: warning: the prompt is empty\n", 0)
    assert seen["kind"] == "ok" and seen["warnings"] == ["lens-steer: warning: the prompt is empty"]
    assert probes.classify_stderr("", None)["kind"] == "timeout"


def test_an_error_on_a_progress_bar_line_is_flagged_and_bars_are_not_noise():
    seen = probes.classify_stderr(f"{BAR}\rlens-steer: error: interrupted\n", 2)
    assert seen["kind"] == "one line" and seen["error_on_bar_line"]
    assert probes.one_line_text(seen) == "yes (on a progress bar's line)"
    apart = probes.classify_stderr(f"\r{BAR}\r{BAR}\nlens-steer: error: interrupted\n", 2)
    assert apart["kind"] == "one line" and not apart["error_on_bar_line"] and apart["progress_lines"] == 1


def _marker(tmp_path: Path, *events: str) -> Path:
    path = tmp_path / "marker"
    path.write_text("".join(json.dumps({"event": e, "t": float(i)}) + "\n" for i, e in enumerate(events)))
    return path


@pytest.mark.parametrize(("events", "level"), [
    ((), "no"), (("start",), "no"), (("start", "load_model"), "checks"), (("start", "Model"), "checks"),
    (("start", "load_model", "boot"), "booting"), (("start", "load_model", "boot", "Model", "loaded"), "loaded"),
])
def test_marker_levels(tmp_path, events, level):
    assert probes.read_marker(_marker(tmp_path, *events))["model"] == level


def test_marker_missing_or_cut_by_a_kill(tmp_path):
    assert probes.read_marker(tmp_path / "never-written")["model"] == "no"
    path = _marker(tmp_path, "start", "load_model")
    path.write_text(path.read_text() + '{"event": "bo')  # a process killed mid-write
    assert probes.read_marker(path) | {"lens_steer": None} == {"model": "checks", "load_t": 1.0, "lens_steer": None,
                                                                 "loads": 0}


FAKE_MODELS = """
class Model:
    def __init__(self, spec):
        self.spec = spec

def load_model(spec="tiny"):
    return Model(spec)
"""
# The real CLI imports load_model both ways: by name at the top of a module and from the module inside a function.
FAKE_CLI = """
import sys
from lens_steer.models import load_model as by_name

def main(argv):
    if argv[0] == "refuse":
        print("lens-steer: warning: about to refuse", file=sys.stderr)
        print("lens-steer: error: no run at nowhere; run `lens-steer identify` first", file=sys.stderr)
        return 2
    if argv[0] == "write":  # as steer appends its generations to the run directory
        with open(argv[1] + "/generations.jsonl", "a") as fh:
            fh.write("{}\\n")
        return 0
    if argv[0] == "by-name":
        by_name("tiny")
    else:
        from lens_steer import models
        models.load_model("tiny")
    if argv[1:] == ["crash"]:
        raise PermissionError(13, "Permission denied", "/ro/run")
    print("done")
    return 0
"""


@pytest.fixture()
def fake_root(tmp_path: Path) -> Path:
    package = tmp_path / "checkout" / "lens_steer"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(FAKE_MODELS)
    (package / "cli.py").write_text(FAKE_CLI)
    return package.parent


@pytest.mark.parametrize("how", ["by-name", "module"])
def test_the_shim_logs_a_load_however_load_model_is_imported(fake_root, tmp_path, how):
    marker = tmp_path / f"marker-{how}"
    runner = probes.Runner(fake_root, sys.executable, tmp_path / "work")
    done = subprocess.run(runner.command([how]), env=runner.env(marker), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "done\n", done.stderr
    seen = probes.read_marker(marker)
    assert seen["model"] == "loaded" and seen["loads"] == 1
    assert Path(seen["lens_steer"]) == fake_root / "lens_steer"  # PYTHONPATH=--root was honoured


def test_the_runner_classifies_a_refusal_before_and_a_crash_after_the_load(fake_root, tmp_path):
    runner = probes.Runner(fake_root, sys.executable, tmp_path / "work", timeout=60)
    runner.scratch.mkdir(parents=True)
    refuse = probes.Probe("refuse", "a refusal", ("refuse", "{tmp}/run"))
    crash = probes.Probe("crash", "a crash after the load", ("module", "crash"), setup=(("write", "f.txt", "x"),))
    late = probes.Probe("late", "a refusal that needs nothing from the model", ("module",), expect="error")
    r = runner.run(refuse)
    assert (r["exit"], r["kind"], r["model"], r["meets"]) == (2, "one line", "no", True)
    assert r["warnings"] == ["lens-steer: warning: about to refuse"]
    assert r["argv"] == ["refuse", str(runner.scratch / "refuse" / "run")]
    c = runner.run(crash)
    assert (c["exit"], c["kind"], c["model"], c["meets"]) == (1, "traceback", "loaded", False)
    assert c["error"].startswith("PermissionError: [Errno 13]")
    assert runner.run(late)["meets"] is False  # exit 0 where a refusal was expected
    assert not (runner.scratch / "crash").exists()  # scratch folders are removed unless --keep


def test_a_probe_writes_into_a_copy_of_an_input_never_the_input(fake_root, tmp_path):
    runner = probes.Runner(fake_root, sys.executable, tmp_path / "work", timeout=60)
    runner.scratch.mkdir(parents=True)
    built = tmp_path / "inputs" / "run"
    built.mkdir(parents=True)
    (built / "neurons.json").write_text("{}")
    runner.inputs = {"run": built}
    for n in range(2):  # the second probe sees the input as built, not as the first one left it
        r = runner.run(probes.Probe(f"w{n}", "writes", ("write", "{run}"), expect="ok", before_load=False))
        assert r["exit"] == 0 and r["argv"][1] == str(runner.scratch / f"w{n}" / "_inputs" / "run")
    assert sorted(p.name for p in built.iterdir()) == ["neurons.json"]


def test_the_runner_refuses_a_root_that_python_did_not_import(fake_root, tmp_path):
    class Ignored(probes.Runner):  # as if an installed copy took precedence over PYTHONPATH
        def env(self, marker, extra=None):  # noqa: ANN001, ANN202
            return {**super().env(marker, extra), "PYTHONPATH": str(fake_root)}

    runner = Ignored(tmp_path / "elsewhere", sys.executable, tmp_path / "work", timeout=60)
    runner.scratch.mkdir(parents=True)
    with pytest.raises(SystemExit, match="PYTHONPATH was not honoured"):
        runner.run(probes.Probe("x", "x", ("module",)))


def test_meets_and_the_tables():
    probe = probes.Probe("p", "a probe", ("x",), before_load=True)
    line = {"exit": 2, "kind": "one line", "model": "no", "warnings": [], "seconds": 1.0, "id": "p", "probe": "a probe"}
    assert probes.meets(probe, line)
    assert not probes.meets(probe, {**line, "model": "loaded"})  # right answer, too late
    assert probes.meets(probes.Probe("p", "", (), before_load=False), {**line, "model": "loaded"})
    warn = probes.Probe("w", "", (), expect="warn", before_load=False)
    assert probes.meets(warn, {**line, "exit": 0, "kind": "ok", "warnings": ["lens-steer: warning: x"]})
    assert not probes.meets(warn, {**line, "exit": 0, "kind": "ok"})
    before = [{**line, "meets": True}]
    after = [{**line, "exit": 0, "kind": "ok", "model": "loaded", "warnings": ["w"], "meets": False}]
    table = probes.compare_table(before, after)
    assert "| `p`: a probe | 2, yes, no load | 0, -, warning, after load |" in table
    assert "before: 1 of 1 as expected" in table and "after: 0 of 1 as expected" in table
    assert "| p | a probe | 2 | yes | no |  | 1.0 |" in probes.markdown([line])


def test_the_probe_list_is_complete_and_well_formed():
    ids = [p.id for p in probes.PROBES]
    assert len(ids) >= 45 and len(set(ids)) == len(ids)
    # The mistakes issue 25 names, each probed.
    for needed in ("stale-reuse", "copied-stats", "copied-neurons", "two-writers", "top-rate-tiny", "negative-dose",
                   "empty-prompt", "whitespace-prompt", "long-prompt", "device-cuda", "device-tpu", "out-readonly",
                   "out-is-file", "steer-readonly-run", "lss-readonly-run", "lss-one-lang", "compare-one-lang",
                   "cache-readonly", "resid-out-of-range", "layers-out-of-range", "chat-template-base",
                   "model-hub-offline"):
        assert needed in ids
    known = {"run", "run2", "run_lss", "tmp"}
    for p in probes.PROBES:
        fields = {name for text in (*p.argv, *p.env.values())
                  for _, name, _, _ in string.Formatter().parse(text) if name}
        assert fields <= known, (p.id, fields - known)
        made = set()
        for step in p.setup:
            assert step[0] in ("copy", "put", "write", "rm", "mkdir"), p.id
            if step[0] == "copy":
                assert step[1] in probes.INPUTS, p.id
                made.add(step[2])
            elif step[0] == "put":
                assert step[2].split("/")[0] in probes.INPUTS, p.id
            elif step[0] == "mkdir":
                made.add(step[1])
        assert set(p.readonly) <= made, p.id  # a read-only folder exists before it is made read-only
        assert p.expect in ("error", "warn", "ok"), p.id
