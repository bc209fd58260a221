"""The run directory (lens_steer.run): one CSV writer, one-line errors, torn JSON lines, the one-model rule."""

from __future__ import annotations

import csv
import json
import os

import pytest

from lens_steer.errors import LensSteerError
from lens_steer.run import LSS_SUMMARY, MANIFEST_FILE, NEURONS_FILE, Run, eval_csv, write_csv


def test_write_csv_formats_every_artifact_alike(tmp_path):
    path = write_csv(tmp_path / "t.csv", [{"a": 0.123456789, "b": float("nan"), "c": "p_max", "extra": 1}],
                     ["a", "b", "c", "d"])
    rows = list(csv.DictReader(path.open()))
    assert rows == [{"a": "0.123457", "b": "", "c": "p_max", "d": ""}]  # 6 digits, NaN empty, missing empty
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically: no temporary file left behind


def test_summary_errors_are_one_line(tmp_path):
    run = Run(tmp_path)
    with pytest.raises(LensSteerError, match="run `lens-steer lss"):
        run.summary()
    with pytest.raises(LensSteerError, match="no --factor"):
        run.best_factor()
    (tmp_path / LSS_SUMMARY).write_text("{not json", encoding="utf-8")
    with pytest.raises(LensSteerError, match="not valid JSON") as err:
        run.summary()
    assert "\n" not in str(err.value)
    (tmp_path / LSS_SUMMARY).write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(LensSteerError, match="not an LSS summary"):
        run.summary()
    (tmp_path / LSS_SUMMARY).write_text(json.dumps({"best_factor": "p_max"}), encoding="utf-8")
    assert run.best_factor() == "p_max"


def test_missing_run_and_neurons(tmp_path):
    with pytest.raises(LensSteerError, match="not a directory"):
        Run(tmp_path / "nowhere").neurons()
    with pytest.raises(LensSteerError, match=f"has no {NEURONS_FILE}"):
        Run(tmp_path).neurons()


def _with_neurons(path):
    """A run directory holding only a neuron set: enough for derived artifacts, which carry its fingerprint."""
    from lens_steer.neurons import NeuronSet

    NeuronSet(["en"], {"en": [[1]]}, n_layers=1, d_mlp=4).save(path)
    return Run(path)


def test_jsonl_append_and_torn_lines(tmp_path):
    run = _with_neurons(tmp_path)
    assert run.read_jsonl("g.jsonl") == []
    run.append_jsonl("g.jsonl", [{"a": 1}])
    with run.file("g.jsonl").open("a", encoding="utf-8") as fh:
        fh.write('{"torn": ')  # an interrupted append
    run.append_jsonl("g.jsonl", [{"b": "日本"}])
    stamp = {"run_fingerprint": run.fingerprint()}
    assert run.read_jsonl("g.jsonl") == [{"a": 1, **stamp}, {"b": "日本", **stamp}]
    run.write_jsonl(eval_csv("x") + "l", [{"c": 2}])
    assert run.read_jsonl("eval_x.csvl") == [{"c": 2, **stamp}]


def test_a_run_belongs_to_one_model(tmp_path):
    run = Run(tmp_path)
    run.refuse_other_model({"model": "a", "n_layers": 2, "d_mlp": 8})  # no manifest yet: anything goes
    (tmp_path / MANIFEST_FILE).write_text(json.dumps({"languages": ["en"], "model": {
        "model": "a", "n_layers": 2, "d_mlp": 8}}), encoding="utf-8")
    run.refuse_other_model({"model": "a", "n_layers": 2, "d_mlp": 8, "dtype": "float32"})
    with pytest.raises(LensSteerError, match="holds a run of a"):
        run.refuse_other_model({"model": "b", "n_layers": 2, "d_mlp": 8})


# ---- a run directory you can trust (issue 25): fingerprints, cross-checks, stale results, one writer ----
LANGS = ("en", "fr", "ru")


def _cli(capsys, *argv):
    """``lens-steer ARGV``: exit code and stderr lines (warnings as the CLI prints them: pytest records them)."""
    import warnings

    from lens_steer.cli import main

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main([str(a) for a in argv])
    said = [f"lens-steer: warning: {w.message}" for w in caught]
    return code, said + capsys.readouterr().err.strip().splitlines()


def _one_error(lines, *words):
    """stderr is warnings (if any) then exactly one error line, naming each of ``words``."""
    errors = [line for line in lines if not line.startswith("lens-steer: warning:")]
    assert len(errors) == 1 and errors[0].startswith("lens-steer: error:"), lines
    for word in words:
        assert str(word) in errors[0], (word, errors[0])
    return errors[0]


@pytest.fixture
def used_run(tiny_dirs, tmp_path):
    """A tiny identified run that also holds derived results (lss.csv, lss_summary.json, generations)."""
    from helpers import tiny_run

    path = tiny_run(tiny_dirs["qwen2"], tmp_path, LANGS)
    run = Run(path)
    lss = [{"factor": "p_max", "layers": "all", "source": s, "target": t, "lss": 1.0} for s in LANGS for t in LANGS
           if s != t]
    run.write_csv("lss.csv", lss, ["factor", "layers", "source", "target", "lss"])
    run.write_json(LSS_SUMMARY, {"best_factor": "p_max*2"})
    run.append_jsonl("generations.jsonl", [{"text": "x"}])
    cells = [dict(task="udhr-ppl", factor="-" if t == "none" else "p_max", intervened=t, eval_lang="fr",
                  metric="nll_macro", value=2.0, n=3) for t in ("none", "fr")]
    run.write_csv(eval_csv("udhr-ppl"), cells, list(cells[0]))
    return path


def _identify(tiny_dirs, path, *extra):
    corpus = path.parent / "corpus"
    return ["identify", "--model", tiny_dirs["qwen2"], "--corpus", "files", "--corpus-path", corpus,
            "--langs", ",".join(LANGS), "--out", path, "--quiet", *extra]


def test_derived_artifacts_carry_the_run_fingerprint(used_run):
    import pandas as pd

    run = Run(used_run)
    fp = run.fingerprint()
    assert len(fp) == 16 and fp == run.neurons().fingerprint()
    assert set(pd.read_csv(run.file("lss.csv"), dtype=str)["run_fingerprint"]) == {fp}  # every row
    assert list(pd.read_csv(run.file("lss.csv")).columns)[-1] == "run_fingerprint"
    assert json.loads(run.file(LSS_SUMMARY).read_text())["run_fingerprint"] == fp
    assert run.read_jsonl("generations.jsonl")[0]["run_fingerprint"] == fp
    # the statistics' fingerprint is in the manifest, both safetensors files and the neuron set's provenance
    manifest = run.manifest()
    assert manifest["stats_fingerprint"] == run.stats().fingerprint() == run.neurons().provenance["stats_fingerprint"]


def test_identify_again_with_the_same_settings_keeps_the_results(used_run, tiny_dirs, capsys):
    before = Run(used_run).fingerprint()
    code, err = _cli(capsys, *_identify(tiny_dirs, used_run, "--top-rate", "0.2"))
    assert code == 0 and not err  # resumed: the same statistics and neurons, so the results still describe them
    assert Run(used_run).fingerprint() == before and (used_run / "lss.csv").exists()


def test_identify_with_new_settings_moves_old_results_aside(used_run, tiny_dirs, capsys):
    old = Run(used_run).fingerprint()
    code, err = _cli(capsys, *_identify(tiny_dirs, used_run, "--top-rate", "0.3"))
    assert code == 0
    assert len(err) == 1 and err[0].startswith("lens-steer: warning: moved 4 result(s)") and f"stale/{old}" in err[0]
    stale = used_run / "stale" / old
    assert {p.name for p in stale.iterdir()} == {"lss.csv", "lss_summary.json", "generations.jsonl",
                                                  "eval_udhr-ppl.csv"}
    assert not (used_run / "lss.csv").exists() and Run(used_run).fingerprint() != old
    # eval's default factor can no longer come from the old summary
    with pytest.raises(LensSteerError, match="no --factor"):
        Run(used_run).best_factor()


def test_stale_results_are_refused_or_left_out(used_run, tiny_dirs, capsys):
    import shutil

    keep = used_run.parent / "keep"
    shutil.copytree(used_run, keep, ignore=shutil.ignore_patterns("partial"))
    assert _cli(capsys, *_identify(tiny_dirs, used_run, "--top-rate", "0.3"))[0] == 0
    for name in ("lss.csv", LSS_SUMMARY, "generations.jsonl", eval_csv("udhr-ppl")):
        shutil.copy(keep / name, used_run / name)  # a user copies old results back in
    run = Run(used_run)
    with pytest.raises(LensSteerError, match="made from another neuron set") as err:
        run.best_factor()  # `eval` without --factor
    assert "\n" not in str(err.value) and "pass --factor" in str(err.value)
    with pytest.warns(UserWarning, match="left out: .*lss.csv was made from another neuron set"):
        assert run.table("lss.csv") is None
    with pytest.warns(UserWarning, match="left out 1 record"):
        assert run.read_jsonl("generations.jsonl") == []
    code, err = _cli(capsys, "report", used_run)
    assert code == 0 and all(line.startswith("lens-steer: warning: left out") for line in err), err
    assert len(err) == 3, err  # lss.csv (so its summary is not read), generations.jsonl, eval_udhr-ppl.csv
    page = (used_run / "report.html").read_text(encoding="utf-8")
    assert "Left out: results of another neuron set" in page and "eval_udhr-ppl.csv" in page
    assert f"content='{run.fingerprint()}'" in page
    code, err = _cli(capsys, "eval", used_run, "--task", "udhr-ppl")
    _one_error(err, "lss_summary.json", "another neuron set", "--factor")
    assert code == 2


def test_files_copied_from_another_run_are_refused(tiny_dirs, tmp_path, capsys):
    import shutil

    from helpers import tiny_run

    a = tiny_run(tiny_dirs["qwen2"], tmp_path / "a", ("en", "fr"))
    b = tiny_run(tiny_dirs["qwen2"], tmp_path / "b", ("ru", "zh"))  # other languages, the same count and shapes
    # same languages, other statistics (another model of the same shape): the fingerprints differ
    d = tiny_run(tiny_dirs["qwen2"], tmp_path / "d", ("en", "fr"), top_rate="0.3")
    e = tiny_run(tiny_dirs["llama"], tmp_path / "e", ("en", "fr"), top_rate="0.3")
    shutil.copy(e / "stats.safetensors", d / "stats.safetensors")
    code, err = _cli(capsys, "neurons", d)
    assert code == 2 and "different runs" in _one_error(err, d / "stats.safetensors", d / "manifest.json")
    # a neurons.json from another run
    f = tiny_run(tiny_dirs["qwen2"], tmp_path / "f", ("en", "fr"))
    shutil.copy(b / "neurons.json", f / "neurons.json")
    code, err = _cli(capsys, "neurons", f)
    _one_error(err, f / "neurons.json", f / "manifest.json", "ru,zh", "different runs")
    # the same languages and model, identified from other statistics
    shutil.copy(a / "neurons.json", f / "neurons.json")
    obj = json.loads((f / "neurons.json").read_text())
    obj["provenance"]["stats_fingerprint"] = "0123456789abcdef"
    (f / "neurons.json").write_text(json.dumps(obj))
    code, err = _cli(capsys, "neurons", f)
    _one_error(err, f / "neurons.json", "other statistics", "0123456789abcdef")


def test_one_writer_at_a_time(used_run, tiny_dirs, capsys):
    import subprocess
    import sys

    from lens_steer.run import LOCK_FILE

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = used_run / LOCK_FILE
        lock.write_text(json.dumps({"pid": sleeper.pid, "host": __import__("socket").gethostname(),
                                    "command": "identify", "since": "now"}))
        for argv in (_identify(tiny_dirs, used_run), ["lss", used_run], ["report", used_run],
                     ["steer", used_run, "--to", "fr", "hello"]):
            code, err = _cli(capsys, *argv)
            assert code == 2
            _one_error(err, "is being written by `lens-steer identify`", f"pid {sleeper.pid}")
        assert lock.exists()  # never taken from a live writer
    finally:
        sleeper.kill()
        sleeper.wait()
    # the holder died: the next writer takes the lock over, says so in one line, and releases it when done
    code, err = _cli(capsys, "report", used_run)
    assert code == 0 and len(err) == 1 and "took over the lock" in err[0] and f"pid {sleeper.pid}" in err[0]
    assert not (used_run / LOCK_FILE).exists()


def test_lock_released_after_an_error_and_reentrant(used_run):
    from lens_steer.run import LOCK_FILE

    run = Run(used_run)
    with pytest.raises(RuntimeError):
        with run.writing("lss"):
            assert (used_run / LOCK_FILE).exists()
            with Run(used_run).writing("forcing"):  # a stage that calls a stage holds the lock it already has
                pass
            assert (used_run / LOCK_FILE).exists()
            raise RuntimeError("boom")
    assert not (used_run / LOCK_FILE).exists()


def test_unwritable_places_are_one_line(used_run, tiny_dirs, tmp_path, capsys, monkeypatch):
    import lens_steer.models
    import lens_steer.run as run_module

    def no_model(*a, **k):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(lens_steer.models, "load_model", no_model)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    code, err = _cli(capsys, *_identify(tiny_dirs, a_file))
    assert code == 2 and "is a file, not a run directory" in _one_error(err, a_file)
    code, err = _cli(capsys, *_identify(tiny_dirs, a_file / "below"))
    _one_error(err, "cannot create the run directory")
    real_open = os.open

    def read_only(path, flags, *args):  # as root chmod does not stop writes: play a read-only file system
        if str(path).endswith(run_module.LOCK_FILE):
            raise PermissionError(30, "Read-only file system")
        return real_open(path, flags, *args)

    monkeypatch.setattr(run_module.os, "open", read_only)
    for argv in (["lss", used_run], ["steer", used_run, "--to", "fr", "hi"], _identify(tiny_dirs, used_run)):
        code, err = _cli(capsys, *argv)
        assert code == 2 and "Read-only file system" in _one_error(err, f"cannot write to {used_run}")
    fresh = tmp_path / "fresh"
    code, err = _cli(capsys, *_identify(tiny_dirs, fresh))
    assert code == 2 and not fresh.exists()  # the directory it made is removed again: nothing half-written


def test_bad_language_leaves_no_directory(tiny_dirs, tmp_path, capsys):
    out = tmp_path / "new"
    code, err = _cli(capsys, "identify", "--model", tiny_dirs["qwen2"], "--langs", "en,xx", "--out", out)
    assert code == 2 and len(err) == 1 and not out.exists()


def test_top_rate_keeping_no_neuron_stops_before_recording(tiny_dirs, tmp_path, capsys, monkeypatch):
    import lens_steer.recorder

    def no_record(*a, **k):
        raise AssertionError("nothing must be recorded")

    monkeypatch.setattr(lens_steer.recorder, "record", no_record)
    from helpers import SENTENCES

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for code in LANGS:
        (corpus / f"{code}.txt").write_text("\n".join(SENTENCES[code]))
    code, err = _cli(capsys, *_identify(tiny_dirs, tmp_path / "run", "--top-rate", "1e-9"))
    assert code == 2 and "keeps round(1e-09" in _one_error(err, "--top-rate", "0 neurons")
    from lens_steer.identification import IdentifyConfig

    for bad in (0, 2, float("nan")):  # the library refuses what argparse refuses on the command line
        with pytest.raises(LensSteerError, match="--top-rate"):
            IdentifyConfig(top_rate=bad)
    assert not (tmp_path / "run").exists()


def test_unwritable_cache_is_one_line(tmp_path, monkeypatch):
    from lens_steer.paths import atomic_path, cache_dir

    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("LENS_STEER_CACHE", str(blocker / "cache"))  # under a file: cannot be created, even as root
    with pytest.raises(LensSteerError, match="set LENS_STEER_CACHE to a writable folder") as err:
        cache_dir()
    assert "\n" not in str(err.value)
    with pytest.raises(LensSteerError, match="cannot write .*choose a writable place"):
        with atomic_path(blocker / "x.json"):
            pass
