"""Folds and stability: the counts per fold add up to the totals, the split halves are what identify gives on each
half of the sentences, and `lens-steer stability` resamples them without the model."""

from __future__ import annotations

import csv

import pytest
import torch

from helpers import SENTENCES, tiny_run
from lens_steer.cli import main
from lens_steer.errors import LensSteerError
from lens_steer.folds import Folds
from lens_steer.identification import lape_from_probability
from lens_steer.recorder import RecordConfig, record
from lens_steer.stability import STABILITY_COLUMNS, jaccard, stability
from lens_steer.stats import Stats

LANGS = ("en", "fr", "ru", "zh")
PARAMS = {"top_rate": 0.2, "filter_rate": 0.95, "activation_bar_ratio": 0.95}


def _texts(pick=slice(None)):
    return {code: SENTENCES[code][pick] for code in LANGS}


def _record(model, texts, folds=10, **kw):
    return record(model, texts, config=RecordConfig(n_sentence_means=2, min_sentence_tokens=3, folds=folds, **kw),
                  progress=False)


def test_folds_add_up_to_the_totals_and_change_nothing(native_model):
    with_folds, one = _record(native_model, _texts()), _record(native_model, _texts(), folds=1)
    f = with_folds.folds
    assert f.over_zero.shape == (10, *with_folds.over_zero.shape) and f.over_zero.dtype == torch.int32
    assert torch.equal(f.over_zero.sum(0, dtype=torch.int64), with_folds.over_zero)
    assert torch.equal(f.n_tokens.sum(0), with_folds.n_tokens)
    assert torch.equal(f.n_sentences.sum(0), with_folds.n_sentences)
    assert f.n_sentences[:5].eq(1).all() and f.n_sentences[5:].eq(0).all()  # 5 sentences, one per fold
    assert torch.equal(with_folds.over_zero, one.over_zero)  # the totals never depend on the folds
    assert with_folds.fingerprint() == one.fingerprint()
    assert f.sent_fold.tolist() == [[0, 1]] * len(LANGS)  # the kept means' sentences 0 and 1


def test_each_fold_is_its_sentence_recorded_alone(native_model):
    f = _record(native_model, _texts(), folds=5).folds
    for i in range(5):
        alone = _record(native_model, {c: [SENTENCES[c][i]] for c in LANGS}, folds=1)
        assert torch.equal(f.over_zero[i].long(), alone.over_zero), i
        assert torch.equal(f.n_tokens[i], alone.n_tokens), i


def test_split_halves_equal_identify_on_each_half(native_model):
    stats = _record(native_model, _texts())
    result = stability(stats.folds, stats.languages, PARAMS, resamples=5)
    for half, pick in zip(result.halves, (slice(0, None, 2), slice(1, None, 2))):
        alone = _record(native_model, _texts(pick), folds=1)
        assert torch.equal(half, lape_from_probability(alone.probability(), **PARAMS))
    assert torch.equal(result.full, lape_from_probability(stats.probability(), **PARAMS))


def test_folds_survive_save_load_and_subset(native_model, tmp_path):
    stats = _record(native_model, _texts())
    stats.save(tmp_path)
    back = Stats.load(tmp_path)
    assert torch.equal(back.folds.over_zero, stats.folds.over_zero)
    assert torch.equal(back.subset(["ru", "en"]).folds.n_tokens, stats.folds.n_tokens[:, [2, 0]])
    # statistics saved without folds over a run that had them: the old folds go, the run still loads
    import dataclasses

    dataclasses.replace(stats, folds=None, over_zero=stats.over_zero + 1).save(tmp_path)
    assert not (tmp_path / "folds.safetensors").exists() and Stats.load(tmp_path).folds is None


def test_folds_of_another_run_are_refused(native_model, tmp_path):
    a, b = _record(native_model, _texts()), _record(native_model, _texts(slice(0, 3)))
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    (tmp_path / "b/folds.safetensors").replace(tmp_path / "a/folds.safetensors")
    with pytest.raises(LensSteerError, match="folds.safetensors.*another run"):
        Stats.load(tmp_path / "a")


def test_stability_by_hand():
    over = torch.zeros(4, 1, 4, 2, dtype=torch.int32)
    over[:, 0, 0, 0] = 5  # neuron 0: language a in every fold
    over[0::2, 0, 1, 1] = 9  # neuron 1: language b, but only in the even folds
    over[1::2, 0, 2, 1] = 9  # neuron 2: language b in the odd folds
    f = Folds(over, torch.full((4, 2), 10), torch.ones(4, 2), torch.zeros(2, 0, dtype=torch.long))
    params = {"top_rate": 0.75, "filter_rate": 0.5, "activation_bar_ratio": 0.5}
    s = stability(f, ["a", "b"], params, resamples=300, seed=1)
    assert s.frequency[0, 0, 0] == 1.0  # always chosen
    assert 0.5 < float(s.frequency[1, 0, 1]) < 1.0  # chosen unless only odd folds are drawn
    rows = s.rows()
    assert [r["lang"] for r in rows] == ["a", "b"] and rows[0]["jaccard_mean"] == 1.0
    assert rows[1]["jaccard_low"] <= rows[1]["jaccard_mean"] <= rows[1]["jaccard_high"] and rows[1]["jaccard_low"] < 1
    assert rows[1]["split_half_jaccard"] == 0.0  # even folds choose neuron 1 for b, odd folds neuron 2
    assert rows[0]["share_stable"] == 1.0
    again = stability(f, ["a", "b"], params, resamples=300, seed=1)
    assert torch.equal(again.frequency, s.frequency) and torch.equal(again.jaccard, s.jaccard)


def test_jaccard_of_empty_sets_is_one():
    empty = torch.zeros(1, 3, 2, dtype=torch.bool)
    assert jaccard(empty, empty).tolist() == [1.0, 1.0]


def test_one_fold_is_refused():
    f = Folds(torch.zeros(1, 1, 2, 2, dtype=torch.int32), torch.ones(1, 2), torch.ones(1, 2),
              torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(LensSteerError, match="--folds 10"):
        stability(f, ["a", "b"], PARAMS)


@pytest.fixture(scope="module")
def run(tiny_dirs, tmp_path_factory):
    return tiny_run(tiny_dirs["qwen2"], tmp_path_factory.mktemp("stability"), LANGS)


def test_stability_command_writes_its_files(run, capsys):
    assert main(["stability", str(run), "--resamples", "30", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "split-half" in out and "30 bootstrap resamples of 10 folds" in out
    with open(run / "stability.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["lang"] for r in rows] == list(LANGS)
    assert list(rows[0]) == [*STABILITY_COLUMNS, "run_fingerprint"]
    from safetensors.torch import load_file

    freq = load_file(str(run / "stability.safetensors"))["frequency"]
    assert freq.shape[0] == len(LANGS) and 0 <= float(freq.min()) and float(freq.max()) <= 1
    first = (run / "stability.csv").read_bytes()
    assert main(["stability", str(run), "--resamples", "30", "--quiet"]) == 0
    assert (run / "stability.csv").read_bytes() == first  # seeded: the same numbers on every run
    # inspect lists the selection frequency beside the neuron once stability has run
    neurons = __import__("json").loads((run / "neurons.json").read_text())["neurons"]
    code = next(c for c in LANGS if any(neurons[c]))
    layer = next(i for i, idx in enumerate(neurons[code]) if idx)
    from lens_steer.run import Run
    from lens_steer.top_tokens import neuron_profile

    _, table = neuron_profile(Run(run), layer, neurons[code][layer][0])
    assert "selection" in table and float(table[table.language == code].selection.iloc[0]) > 0


def test_stability_without_folds_is_one_line(run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "nofolds"
    shutil.copytree(run, copy)
    (copy / "folds.safetensors").unlink()
    assert main(["stability", str(copy)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "re-run `lens-steer identify`" in err


def test_figure_report_and_results_show_stability(run, tmp_path):
    import json

    from lens_steer.report import build_report, run_figures, run_results

    assert main(["stability", str(run), "--resamples", "20", "--quiet"]) == 0
    figs = run_figures(run)
    fig = figs["set_stability"]
    assert [t.type for t in fig.data] == ["scatter", "scatter", "heatmap"]
    assert fig.data[0].error_x.array is not None  # the 95% interval as whiskers
    assert "resamples" in figs["layer_inspector"].data[0].hovertemplate  # each neuron's own selection share
    results = run_results(run)
    assert [r["lang"] for r in results["stability"]] == list(LANGS)
    page = build_report(run, out=tmp_path / "r.html").read_text(encoding="utf-8")
    assert "id='stability'" in page and "fig-set_stability" in page
    assert json.dumps(results)  # JSON-ready
