"""`lens-steer lss` end to end on a tiny model with the offline CLDR cloze."""

from __future__ import annotations

import csv
import json

from helpers import SENTENCES
from lens_steer.cli import main


def test_lss_round_trip(tiny_dirs, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for code in ("en", "fr", "ru"):
        (corpus / f"{code}.txt").write_text("\n".join(SENTENCES[code]), encoding="utf-8")
    run = tmp_path / "run"
    assert main(["identify", "--model", str(tiny_dirs["llama"]), "--corpus", "files", "--corpus-path", str(corpus),
                 "--langs", "en,fr,ru", "--out", str(run), "--quiet", "--top-rate", "0.2"]) == 0
    capsys.readouterr()
    assert main(["lss", str(run), "--max-facts", "3", "--factors", "p_max,zero,scale:2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "best factor" in out
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
