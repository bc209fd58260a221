"""The run directory (lens_steer.run): one CSV writer, one-line errors, torn JSON lines, the one-model rule."""

from __future__ import annotations

import csv
import json

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


def test_jsonl_append_and_torn_lines(tmp_path):
    run = Run(tmp_path)
    assert run.read_jsonl("g.jsonl") == []
    run.append_jsonl("g.jsonl", [{"a": 1}])
    with run.file("g.jsonl").open("a", encoding="utf-8") as fh:
        fh.write('{"torn": ')  # an interrupted append
    run.append_jsonl("g.jsonl", [{"b": "日本"}])
    assert run.read_jsonl("g.jsonl") == [{"a": 1}, {"b": "日本"}]
    run.write_jsonl(eval_csv("x") + "l", [{"c": 2}])
    assert run.read_jsonl("eval_x.csvl") == [{"c": 2}]


def test_a_run_belongs_to_one_model(tmp_path):
    run = Run(tmp_path)
    run.refuse_other_model({"model": "a", "n_layers": 2, "d_mlp": 8})  # no manifest yet: anything goes
    (tmp_path / MANIFEST_FILE).write_text(json.dumps({"languages": ["en"], "model": {
        "model": "a", "n_layers": 2, "d_mlp": 8}}), encoding="utf-8")
    run.refuse_other_model({"model": "a", "n_layers": 2, "d_mlp": 8, "dtype": "float32"})
    with pytest.raises(LensSteerError, match="holds a run of a"):
        run.refuse_other_model({"model": "b", "n_layers": 2, "d_mlp": 8})
