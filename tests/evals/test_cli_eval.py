"""`lens-steer eval` round trips on a tiny model with the task fixtures, and every bad input."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from helpers import SENTENCES, tiny_run
from lens_steer.cli import main
from lens_steer.evals import EVAL_COLUMNS

FIXTURES = Path(__file__).parents[1] / "fixtures" / "evals"
LANGS = ("en", "fr", "ru", "zh")


@pytest.fixture(scope="module")
def run(tiny_dirs, tmp_path_factory) -> Path:
    return tiny_run(tiny_dirs["llama"], tmp_path_factory.mktemp("eval"), LANGS)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == (*EVAL_COLUMNS, "run_fingerprint")  # stamped by the run
        return list(reader)


def test_xwinograd_round_trip(run, capsys):
    capsys.readouterr()
    assert main(["eval", str(run), "--task", "xwinograd", "--data", str(FIXTURES / "xwinograd"),
                 "--factor", "p_max", "--eval-langs", "fr", "--targets", "fr,ru", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "self" in out and "cross" in out
    rows = _rows(run / "eval_xwinograd.csv")
    assert [(r["intervened"], r["eval_lang"], r["metric"]) for r in rows] == [
        ("none", "fr", "acc"), ("fr", "fr", "acc"), ("ru", "fr", "acc")]
    assert all(0 <= float(r["value"]) <= 1 and int(r["n"]) > 0 for r in rows)
    assert rows[0]["factor"] == "-" and rows[1]["factor"] == "p_max"


def test_default_factor_comes_from_lss_summary(run, capsys):
    (run / "lss_summary.json").write_text(json.dumps({"best_factor": "p_max*0.5"}), encoding="utf-8")
    try:
        assert main(["eval", str(run), "--task", "xcopa", "--data", str(FIXTURES / "xcopa"), "--eval-langs", "it",
                     "--targets", "en", "--limit", "3", "--quiet"]) == 0
    finally:
        (run / "lss_summary.json").unlink()
    rows = _rows(run / "eval_xcopa.csv")
    assert {r["factor"] for r in rows} == {"-", "p_max*0.5"} and {r["n"] for r in rows} == {"3"}
    assert "p_max*0.5" in capsys.readouterr().out


def test_include_and_translation_metrics(run):
    assert main(["eval", str(run), "--task", "include", "--data", str(FIXTURES / "include"), "--eval-langs", "tr",
                 "--targets", "fr", "--factor", "p_max", "--quiet"]) == 0
    assert {r["metric"] for r in _rows(run / "eval_include.csv")} == {"acc"}


def test_udhr_ppl_and_report_heatmap(run, monkeypatch):
    """udhr-ppl on a UDHR-shaped local stand-in: the loader is monkeypatched to our own text (no real UDHR here)."""
    from lens_steer.evals import data

    monkeypatch.setattr(data, "load_udhr_eval", lambda langs, limit=None: {c: SENTENCES[c][:3] for c in langs})
    assert main(["eval", str(run), "--task", "udhr-ppl", "--factor", "p_max", "--quiet"]) == 0
    rows = _rows(run / "eval_udhr-ppl.csv")
    assert rows[0]["metric"] == "ppl_macro"
    assert {r["intervened"] for r in rows} == {"none", *LANGS}
    assert all(float(r["value"]) > 0 for r in rows)
    from lens_steer.report import run_figures

    fig = run_figures(run)["downstream_udhr_ppl"]
    assert fig.data[0].zmid == 0 and len(fig.data[0].z) == len(LANGS)
    assert not any(math.isnan(v) for row in fig.data[0].z for v in row)


def test_udhr_mt_outputs(run, monkeypatch):
    from lens_steer.evals import data

    monkeypatch.setattr(data, "load_udhr_pairs",
                        lambda langs, limit=None: {c: list(zip(SENTENCES["en"][:2], SENTENCES[c][:2])) for c in langs})
    assert main(["eval", str(run), "--task", "udhr-mt", "--factor", "p_max", "--targets", "fr",
                 "--max-new-tokens", "5", "--quiet"]) == 0
    rows = _rows(run / "eval_udhr-mt.csv")
    assert {r["eval_lang"] for r in rows} == {"fr", "ru", "zh"}
    assert {r["metric"] for r in rows} == {"chrf++", "bleu", "empty_share"}
    outputs = [json.loads(line) for line in (run / "eval_udhr-mt_outputs.jsonl").read_text().splitlines()]
    assert len(outputs) == 3 * 2 * 2 and {"source", "reference", "hypothesis", "empty"} <= set(outputs[0])
    assert {o["prompt_style"] for o in outputs} == {"targeted"}
    for r in rows:  # empty_share says how many of the cell's hypotheses are empty, as written to the outputs
        if r["metric"] == "empty_share":
            cell = [o for o in outputs if (o["intervened"], o["eval_lang"]) == (r["intervened"], r["eval_lang"])]
            assert float(r["value"]) == pytest.approx(sum(o["hypothesis"] == "" for o in cell) / len(cell))


def test_udhr_mt_untargeted_prompt_gets_its_own_file(run, monkeypatch, capsys):
    from lens_steer.evals import data

    monkeypatch.setattr(data, "load_udhr_pairs",
                        lambda langs, limit=None: {c: list(zip(SENTENCES["en"][:1], SENTENCES[c][:1])) for c in langs})
    default = run / "eval_udhr-mt.csv"
    before = default.read_bytes() if default.exists() else None
    assert main(["eval", str(run), "--task", "udhr-mt", "--factor", "p_max", "--targets", "fr", "--eval-langs", "fr",
                 "--max-new-tokens", "3", "--prompt", "untargeted", "--quiet"]) == 0
    rows = _rows(run / "eval_udhr-mt-untargeted.csv")
    assert {r["task"] for r in rows} == {"udhr-mt-untargeted"}
    outputs = [json.loads(x) for x in (run / "eval_udhr-mt-untargeted_outputs.jsonl").read_text().splitlines()]
    assert {o["prompt_style"] for o in outputs} == {"untargeted"}
    assert (default.read_bytes() if default.exists() else None) == before  # the targeted results are untouched
    assert "udhr-mt-untargeted" in capsys.readouterr().out


def test_join_is_threaded_from_the_cli_to_the_items(run, monkeypatch):
    from lens_steer.evals import registry  # the task table's include builder looks include_choice up there

    seen = []
    real = registry.include_choice

    def spy(*args):
        seen.append(args[-1])
        return real(*args)

    monkeypatch.setattr(registry, "include_choice", spy)
    base = ["eval", str(run), "--task", "include", "--data", str(FIXTURES / "include"), "--eval-langs", "tr",
            "--targets", "fr", "--factor", "p_max", "--limit", "2", "--quiet"]
    assert main([*base, "--join", "reference"]) == 0
    assert main(base) == 0
    assert seen == ["reference"] * 2 + ["auto"] * 2
    assert {r["task"] for r in _rows(run / "eval_include-refjoin.csv")} == {"include-refjoin"}
    assert {r["task"] for r in _rows(run / "eval_include.csv")} == {"include"}


@pytest.mark.parametrize("argv, message", [
    (["--task", "mmlu"], "unknown task"),
    (["--task", "xcopa", "--eval-langs", "fr", "--factor", "p_max"], "xcopa has no fr"),
    (["--task", "xcopa", "--factor", "p_maximum", "--eval-langs", "it"], "valid forms"),
    (["--task", "xcopa", "--eval-langs", "it", "--targets", "ja", "--factor", "p_max"], "not in the run"),
    (["--task", "xcopa", "--eval-langs", "it", "--factor", "p_max", "--targets", "en", "--data", "/nonexistent"],
     "--data"),
    (["--task", "xcopa", "--eval-langs", "it"], "lens-steer lss"),
    (["--task", "xcopa", "--eval-langs", "it", "--factor", "p_max", "--targets", "en", "--positions", "middle"],
     "position"),
    (["--task", "xcopa", "--eval-langs", "it", "--factor", "p_max", "--prompt", "untargeted"], "--prompt applies"),
    (["--task", "udhr-mt", "--eval-langs", "fr", "--factor", "p_max", "--join", "reference"], "--join applies"),
    (["--task", "xcopa", "--eval-langs", "it", "--factor", "p_max", "--join", "spaced"], "unknown --join"),
    (["--task", "udhr-mt", "--eval-langs", "fr", "--factor", "p_max", "--prompt", "polite"], "unknown --prompt"),
])
def test_bad_inputs(run, capsys, argv, message):
    capsys.readouterr()
    data = [] if "--data" in argv else ["--data", str(FIXTURES / "xcopa")]
    assert main(["eval", str(run), *argv, *data]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not list(run.glob(".*.tmp"))


def test_missing_run(tmp_path, capsys):
    assert main(["eval", str(tmp_path), "--task", "udhr-ppl", "--factor", "p_max"]) == 2
    assert "lens-steer identify" in capsys.readouterr().err


@pytest.mark.parametrize("factor", ["diffmean*4", "resid:1*4", "prompt:en"])
def test_eval_with_the_peers_methods(run, capsys, factor):
    """The peers' methods run downstream like any factor and are written back verbatim."""
    assert main(["eval", str(run), "--task", "xwinograd", "--data", str(FIXTURES / "xwinograd"),
                 "--factor", factor, "--eval-langs", "fr", "--targets", "fr", "--quiet"]) == 0
    rows = _rows(run / "eval_xwinograd.csv")
    assert [r["factor"] for r in rows if r["intervened"] == "fr"] == [factor]
