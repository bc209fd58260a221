"""End to end on the embedded Gemma-3-270M over the UDHR (slow: needs `make setup`; runs in CI)."""

from __future__ import annotations

import json

import pytest
import torch

from lens_steer.cli import main
from lens_steer.neurons import NeuronSet
from lens_steer.stats import Stats

pytestmark = [pytest.mark.slow, pytest.mark.udhr]


def test_identify_on_gemma_udhr(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["identify", "--langs", "en,fr,ja", "--max-tokens", "400", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "Japanese" in printed
    stats = Stats.load(out)
    assert stats.over_zero.shape == (18, 2048, 3)
    assert all(0 < int(n) <= 400 for n in stats.n_tokens)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["model"] == "gemma-3-270m" and manifest["corpus"]["name"] == "udhr"
    assert manifest["corpus"]["split"] == "identify" and manifest["dtype"] == "float32"
    assert manifest["bos"].startswith("prepended")
    neurons = NeuronSet.load(out)
    assert neurons.languages == ["en", "fr", "ja"]
    assert sum(neurons.totals().values()) >= round(0.01 * 18 * 2048) * 0.5  # most candidates get a language
    # Japanese (its own script) must own neurons that English does not.
    assert neurons.totals()["ja"] > 0
    assert torch.isfinite(stats.sentence_stat("max")).all()
    assert neurons.provenance["stats"]["n_sentence_means"] == stats.sent_means.shape[1] > 0


def test_lss_and_steering_on_gemma(tmp_path, capsys):
    import csv

    out = tmp_path / "run"
    assert main(["identify", "--langs", "en,ja,ru", "--max-tokens", "600", "--out", str(out), "--quiet"]) == 0
    assert main(["lss", str(out), "--max-facts", "4", "--factors", "p_max,zero", "--quiet"]) == 0
    rows = list(csv.DictReader((out / "lss.csv").open()))
    p_max = [float(r["lss"]) for r in rows if r["factor"] == "p_max"]
    assert len(p_max) == 6 and sum(p_max) / 6 > 0.5  # amplification steers toward the target (paper: ~0.94)
    capsys.readouterr()
    assert main(["steer", str(out), "--to", "ja", "--max-new-tokens", "12", "Once upon a time, in a small village"]) == 0
    record = json.loads((out / "generations.jsonl").read_text().splitlines()[-1])
    assert record["target"] == "ja" and record["text"]
