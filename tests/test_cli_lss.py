"""`lens-steer lss` end to end on a tiny model with the offline CLDR cloze."""

from __future__ import annotations

import csv
import json

import pytest

from helpers import SENTENCES
from lens_steer.cli import main


def _identified(tiny_dirs, tmp_path):
    """A tiny-model run identified over en/fr/ru text files."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for code in ("en", "fr", "ru"):
        (corpus / f"{code}.txt").write_text("\n".join(SENTENCES[code]), encoding="utf-8")
    run = tmp_path / "run"
    assert main(["identify", "--model", str(tiny_dirs["llama"]), "--corpus", "files", "--corpus-path", str(corpus),
                 "--langs", "en,fr,ru", "--out", str(run), "--quiet", "--top-rate", "0.2"]) == 0
    return run


def test_lss_round_trip(tiny_dirs, tmp_path, capsys):
    run = _identified(tiny_dirs, tmp_path)
    capsys.readouterr()
    assert main(["lss", str(run), "--max-facts", "3", "--factors", "p_max,zero,scale:2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "chosen factor" in out and "by LSS alone" in out
    rows = list(csv.DictReader((run / "lss.csv").open()))
    assert {r["factor"] for r in rows} == {"p_max", "zero", "scale:2"}
    assert all(r["source"] != r["target"] and r["lss"] != "" for r in rows)
    assert {r["n_facts"] for r in rows if not r["note"]} == {"3"}
    summary = json.loads((run / "lss_summary.json").read_text())
    assert summary["best_factor"] in ("p_max", "zero", "scale:2") and summary["languages"] == ["en", "fr", "ru"]


def test_lss_bad_inputs(tiny_dirs, tmp_path, capsys):
    assert main(["lss", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["lss", str(tmp_path), "--factors", "p_maximum"]) == 2
    assert "valid forms" in capsys.readouterr().err
    assert main(["lss", str(tmp_path), "--forcing", "--detector", "nope"]) == 2  # before the run is read
    err = capsys.readouterr().err
    assert "unknown language detector" in err and err.count("\n") == 1
    assert main(["lss", str(tmp_path), "--factors", "p_max,scale:1e400"]) == 2  # refused before any work
    err = capsys.readouterr().err
    assert "non-finite" in err and err.count("\n") == 1


def test_lss_paper_factors_in_the_paper_order(tiny_dirs, tmp_path, capsys):
    """The default factors are the paper's table, in its order, test-time ones included; the summary keeps that
    order and names the highest-mean-LSS factor as the paper's choice."""
    run = _identified(tiny_dirs, tmp_path)
    capsys.readouterr()
    assert main(["lss", str(run), "--max-facts", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    summary = json.loads((run / "lss_summary.json").read_text())
    assert list(summary["factors"]) == ["p_max", "p_median", "testmax", "testmax+", "zero", "p10"]
    best = max(summary["factors"], key=lambda f: summary["factors"][f]["mean_lss"])
    assert summary["best_lss_factor"] == best and f"it would be {best}" in out
    assert summary["join"] == "auto"
    rows = list(csv.DictReader((run / "lss.csv").open()))
    test_time = [r for r in rows if r["factor"] in ("testmax", "testmax+", "p10")]
    assert {r["factor_kind"] for r in test_time} == {"test"}
    # scored on the source and target answers only (one forward per answer): no wins or specificity, a baseline
    assert all(r["lss"] != "" and r["target_wins"] == "" and r["specificity"] == "" and r["target_wins_base"] != ""
               for r in test_time)
    assert all(r["target_wins"] != "" for r in rows if r["factor"] in ("p_max", "zero"))
    assert "     -" in out  # the table prints an unmeasured value as "-"


def test_lss_control_sweep_and_forcing(tiny_dirs, tmp_path, capsys):
    """The factor table carries every measure, the control rows average 2 seeds, the sweep adds its grid, forcing
    writes forcing.csv with degeneration columns, and the chosen factor follows the documented rule."""
    run = _identified(tiny_dirs, tmp_path)
    capsys.readouterr()
    assert main(["lss", str(run), "--max-facts", "2", "--factors", "p_max,zero,control:p_max", "--sweep", "add",
                 "--seeds", "2", "--forcing", "--quiet"]) == 0
    out = capsys.readouterr().out
    for word in ("LSS", "wins", "gain", "damage", "forcing", "repeat", "seeds", "chosen factor"):
        assert word in out
    rows = list(csv.DictReader((run / "lss.csv").open()))
    assert {r["factor"] for r in rows} == {"p_max", "zero", "control:p_max", "add:0.5", "add:1", "add:2", "add:4",
                                           "add:8"}
    ctrl = [r for r in rows if r["factor"] == "control:p_max"]
    assert {r["n_seeds"] for r in ctrl} == {"2"} and {r["factor_kind"] for r in ctrl} == {"control"}
    assert all(r["target_wins"] != "" and r["source_damage"] != "" for r in rows)
    summary = json.loads((run / "lss_summary.json").read_text())
    assert len(summary["factors"]["control:p_max"]["seed_mean_lss"]) == 2
    assert "forcing" in summary["factors"]["p_max"] and summary["reason"].startswith(summary["best_factor"])
    assert summary["forcing_bank"] == "handwritten (15)" and summary["forcing_prompts"] == 15  # the default
    assert summary["best_factor"] not in ("zero", "control:p_max")
    forcing = list(csv.DictReader((run / "forcing.csv").open()))
    assert {"distinct2", "repetition", "baseline_repetition"} <= set(forcing[0])
    # forcing covers the amplifying factors and the control, never a deactivation (zero cannot force a language)
    assert {r["factor"] for r in forcing} == {"p_max", "control:p_max", "add:0.5", "add:1", "add:2", "add:4", "add:8"}


def test_lss_in_another_dtype_is_reported(tiny_dirs, tmp_path, capsys):
    """Statistics recorded in float32, LSS run in bfloat16: it works, one warning line says so, and the summary
    records both dtypes."""
    run = _identified(tiny_dirs, tmp_path)
    capsys.readouterr()
    with pytest.warns(UserWarning, match="statistics were recorded in float32 and the model runs in bfloat16"):
        assert main(["lss", str(run), "--max-facts", "2", "--factors", "p_max", "--quiet", "--dtype", "bfloat16"]) == 0
    summary = json.loads((run / "lss_summary.json").read_text())
    assert summary["stats_dtype"] == "float32" and summary["model"]["dtype"] == "bfloat16"
    assert summary["model"]["attention"] == "eager" and summary["model"]["device"] == "cpu"


def test_lss_with_the_peers_neuron_space_methods(tiny_dirs, tmp_path, capsys):
    """Additive neuron steering (add:mean*A) and DiffMean in neuron space (diffmean*A), with DiffMean's matched
    random-neuron control, run through LSS and are written back verbatim."""
    run = _identified(tiny_dirs, tmp_path)
    factors = ("add:mean*2,diffmean*4,control:diffmean*4,resid:1*4,control:resid:1*4,control-iso:resid: 1*4,"
               "prompt:en,prompt:native")
    assert main(["lss", str(run), "--max-facts", "2", "--factors", factors, "--quiet", "--seeds", "1"]) == 0
    rows = list(csv.DictReader((run / "lss.csv").open()))
    assert {r["factor"] for r in rows} >= set(factors.split(","))
    kinds = {r["factor"]: r["factor_kind"] for r in rows}
    assert kinds["add:mean*2"] == "addmean" and kinds["diffmean*4"] == "diffmean"
    assert kinds["control:diffmean*4"] == "control" and kinds["resid:1*4"] == "resid"
    assert kinds["control:resid:1*4"] == kinds["control-iso:resid: 1*4"] == "control"  # both nulls, labels verbatim
    assert kinds["prompt:en"] == kinds["prompt:native"] == "prompt"
    shifted = [float(r["mean_shift"]) for r in rows if r["factor"] == "resid:1*4" and r["mean_shift"]]
    assert shifted and any(abs(x) > 0 for x in shifted)  # the residual direction moves the scores
    capsys.readouterr()
    assert main(["steer", str(run), "--to", "fr", "--factor", "resid:1*4", "--max-new-tokens", "3", "Le"]) == 0
    assert main(["lss", str(run), "--factors", "resid:7*2", "--quiet"]) == 2
    assert "resid:7 is out of range" in capsys.readouterr().err


def test_lss_forcing_prompts_from_a_bank(tiny_dirs, tmp_path, capsys):
    """--forcing-prompts N takes N prompts of --forcing-bank per scored language (the default stays the 15
    hand-written ones); a size the bank cannot give is one line, exit 2, before the model loads."""
    run = _identified(tiny_dirs, tmp_path)
    assert main(["lss", str(run), "--max-facts", "2", "--factors", "p_max", "--forcing", "--forcing-prompts", "0"]) == 2
    err = capsys.readouterr().err
    assert "error: --forcing-prompts must be >= 1, not 0" in err and len(err.strip().splitlines()) == 1
    assert not (run / "lss.csv").exists() and not (run / "forcing.csv").exists()
    assert main(["lss", str(run), "--max-facts", "2", "--factors", "p_max", "--forcing", "--forcing-tokens", "2",
                 "--forcing-bank", "handwritten", "--forcing-prompts", "2", "--quiet"]) == 0
    summary = json.loads((run / "lss_summary.json").read_text())
    assert summary["languages"] == ["en", "fr", "ru"] and summary["forcing_bank"] == "handwritten"
    assert summary["forcing_prompts"] == 6  # 2 hand-written prompts in each of en, fr, ru
    forcing = list(csv.DictReader((run / "forcing.csv").open()))
    assert forcing and all(int(r["n"]) == 4 for r in forcing)  # the other two languages' prompts per target
    sources = {json.loads(line)["source"] for line in (run / "generations.jsonl").open()}
    assert sources == {"en", "fr", "ru"}  # not id or ja, which the default's hand-written prompts include
