"""`lens-steer steer` and `lens-steer forcing` on a tiny model: outputs, files, and bad inputs."""

from __future__ import annotations

import csv
import json

import pytest

from helpers import SENTENCES
from lens_steer.cli import main
from lens_steer.forcing import run_forcing
from lens_steer.neurons import NeuronSet
from lens_steer.steer import Steerer, parse_factors


@pytest.fixture(scope="module")
def run(tiny_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("steer")
    corpus = root / "corpus"
    corpus.mkdir()
    for code in ("en", "fr", "ru"):
        (corpus / f"{code}.txt").write_text("\n".join(SENTENCES[code]), encoding="utf-8")
    out = root / "run"
    assert main(["identify", "--model", str(tiny_dirs["gemma2"]), "--corpus", "files", "--corpus-path", str(corpus),
                 "--langs", "en,fr,ru", "--out", str(out), "--quiet", "--top-rate", "0.2"]) == 0
    neurons = NeuronSet.load(out)
    # Fixed sets, so the test does not depend on what LAPE finds in a random model; ru has none.
    neurons.neurons.update(en=[[0, 2, 4, 6]] * 2, fr=[[1, 3, 5, 7]] * 2, ru=[[], []])
    neurons.save(out)
    return out


def test_steer_prints_and_appends(run, capsys):
    assert main(["steer", str(run), "--to", "fr,en", "--max-new-tokens", "5", "--factor", "set:5",
                 "The cat"]) == 0
    out = capsys.readouterr().out
    assert "baseline" in out and "fr set:5" in out and "en set:5" in out
    lines = [json.loads(x) for x in (run / "generations.jsonl").read_text().splitlines()]
    assert [r["target"] for r in lines[-3:]] == [None, "fr", "en"]
    assert lines[-1]["factor"] == "set:5" and "match_lenient" in lines[-1] and lines[-1]["detector"] == "cld2"


@pytest.mark.parametrize("args,message", [
    (["--to", "ru"], "no neurons"),
    (["--to", "ja"], "not in the run"),
    (["--to", "fr", "--factor", "p_maximum"], "valid forms"),
    (["--to", "fr", "--layers", "9"], "out of range"),
    (["--to", "fr", "--layers", "x-y"], "cannot parse layers"),
    (["--to", "fr", "--positions", "middle"], "unknown positions"),
    (["--to", "fr", "--detector", "magic"], "magic"),
    (["--to", "fr", "--chat-template"], "has no chat template (a base model); drop --chat-template"),
])
def test_steer_bad_inputs(run, capsys, args, message):
    assert main(["steer", str(run), *args, "The cat"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_forcing_cli(run, capsys):
    assert main(["forcing", str(run), "--targets", "en,fr,ru", "--factors", "set:5", "--max-new-tokens", "4"]) == 0
    captured = capsys.readouterr()
    assert "skipping ru" in captured.err and "mean forcing success" in captured.out
    rows = list(csv.DictReader((run / "forcing.csv").open()))
    assert {r["target"] for r in rows} == {"en", "fr"}
    assert all(int(r["n"]) == 6 for r in rows)  # 3 prompts in each of the other 2 run languages (en, fr, ru)
    from lens_steer.prompts import forcing_prompts

    bank = forcing_prompts(["en", "fr", "ru"], 3)  # the generations record which prompts ran, and in which language
    lines = [json.loads(line) for line in (run / "generations.jsonl").open()]
    steered = [g for g in lines if g["kind"] == "forcing" and g["steered"]]
    assert steered and all(g["prompt"] in bank[g["source"]] and g["source"] != g["target"] for g in steered)
    from lens_steer.forcing import FORCING_COLUMNS
    from lens_steer.intervals import wilson_ci

    for r in rows:  # every share with its Wilson interval over the n generations, the means with their bootstrap
        for key in ("forcing_strict", "forcing_lenient", "baseline_strict"):
            i = FORCING_COLUMNS.index(key)
            assert FORCING_COLUMNS[i + 1:i + 3] == (f"{key}_low", f"{key}_high")
            assert (float(r[f"{key}_low"]), float(r[f"{key}_high"])) == pytest.approx(
                wilson_ci(float(r[key]) * 6, 6), abs=1e-5)
        for key in ("forcing_strict", "forcing_lenient", "baseline_strict", "distinct2", "repetition"):
            assert float(r[f"{key}_low"]) - 1e-5 <= float(r[key]) <= float(r[f"{key}_high"]) + 1e-5


@pytest.mark.parametrize("extra,message", [
    (["--forcing-prompts", "0"], "error: --forcing-prompts must be >= 1, not 0"),
    (["--forcing-prompts", "-2"], "error: --forcing-prompts must be >= 1, not -2"),
    (["--forcing-prompts", "500"], "error: --forcing-prompts 500: the udhr bank has"),
    (["--forcing-bank", "handwritten", "--forcing-prompts", "4"], "the handwritten bank has 3 prompts"),
])
def test_forcing_prompts_bad_sizes_are_one_line(run, capsys, extra, message):
    """A size the bank cannot give fails with one line and exit code 2, before the model loads."""
    assert main(["forcing", str(run), "--targets", "fr", "--factors", "p_max", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_forcing_handwritten_bank(run):
    assert main(["forcing", str(run), "--targets", "fr", "--factors", "set:5", "--max-new-tokens", "2",
                 "--forcing-bank", "handwritten", "--forcing-prompts", "2", "--quiet"]) == 0
    rows = list(csv.DictReader((run / "forcing.csv").open()))
    assert [int(r["n"]) for r in rows] == [4]  # 2 hand-written prompts in each of en and ru


class AlwaysFrench:
    name = "always-fr"

    def detect(self, text: str) -> str | None:
        return "fr"


def test_forcing_success_is_the_share_detected_as_target(tiny_models, run):
    from lens_steer.stats import Stats

    model = tiny_models["gemma2"]
    neurons, stats = NeuronSet.load(run), Stats.load(run)
    prompts = {"en": ("The cat",), "ru": ("Кот",), "fr": ("Le chat",)}
    rows, records = run_forcing(model, Steerer(model, neurons, stats), ["fr", "en"], parse_factors("zero"),
                                AlwaysFrench(), prompts=prompts, max_new_tokens=2)
    by_target = {r["target"]: r for r in rows}
    assert by_target["fr"]["n"] == 2  # the fr prompt is not used
    # Every non-empty output is "fr" to this detector; an output of only whitespace is a miss.
    assert by_target["fr"]["forcing_strict"] == 1.0 - by_target["fr"]["empty"] / 2
    assert by_target["en"]["forcing_strict"] == 0.0 and by_target["en"]["baseline_strict"] == 0.0
    assert len(records) == 3 + 4  # baselines + steered


def test_forcing_counts_empty_outputs_as_misses(tiny_dirs):
    """A steered output that is only newlines is counted in ``empty`` and is never a success, whatever the detector
    says about an empty string."""
    from scripted_model import NoSteerer, ScriptedModel
    from transformers import AutoTokenizer

    model = ScriptedModel(AutoTokenizer.from_pretrained(tiny_dirs["gemma2"]),
                          {"cat": ["\n", "\n\n", " \n"], "": ["Bonjour", " le", " monde"]})
    prompts = {"en": ("The cat",), "ru": ("Кот",), "fr": ("Le chat",)}
    rows, records = run_forcing(model, NoSteerer(), ["fr", "en"], parse_factors("zero"), AlwaysFrench(),
                                prompts=prompts, max_new_tokens=4)
    by_target = {r["target"]: r for r in rows}
    assert by_target["fr"]["empty"] == 1 and by_target["fr"]["n"] == 2  # the en prompt's output is empty
    assert by_target["fr"]["forcing_strict"] == 0.5  # only the ru prompt's "Bonjour le monde" counts
    assert by_target["en"]["empty"] == 0
    empty = [r for r in records if r["prompt"] == "The cat"]
    assert empty and all(r["empty"] and r["detected"] is None for r in empty)
    assert not any(r["empty"] for r in records if r["prompt"] != "The cat")


def test_forcing_csv_has_the_empty_column(run):
    assert main(["forcing", str(run), "--targets", "fr", "--factors", "set:5", "--max-new-tokens", "2"]) == 0
    rows = list(csv.DictReader((run / "forcing.csv").open()))
    assert "empty" in rows[0] and 0 <= int(rows[0]["empty"]) <= int(rows[0]["n"])


def test_steer_marks_empty_outputs(run, capsys, monkeypatch):
    import lens_steer.forcing  # steer_for_run generates through the name it imported

    monkeypatch.setattr(lens_steer.forcing, "greedy_generate",
                        lambda model, prompts, **kw: ["\n\n", " Bonjour le chat", " \n "][: len(prompts)])
    assert main(["steer", str(run), "--to", "fr,en", "--max-new-tokens", "3", "--factor", "set:5", "The cat"]) == 0
    lines = capsys.readouterr().out.splitlines()
    marked = [line for line in lines if "[empty]" in line]
    assert len(marked) == 2 and "baseline" in marked[0] and "en set:5" in marked[1]
    records = [json.loads(x) for x in (run / "generations.jsonl").read_text().splitlines()][-3:]
    assert [r["empty"] for r in records] == [True, False, True]
