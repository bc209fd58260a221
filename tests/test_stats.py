"""The statistics artifact: contract checks, damaged files, merging shards."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import SENTENCES
from lens_steer.errors import LensSteerError
from lens_steer.record import RecordConfig, record
from lens_steer.stats import Stats, check_compatible, merge_stats

CFG = RecordConfig(n_sentence_means=4, min_sentence_tokens=3)


@pytest.fixture(scope="module")
def full(native_model) -> Stats:
    return record(native_model, {c: SENTENCES[c] for c in ("en", "fr")}, config=CFG, progress=False)


def test_merge_of_sentence_shards_equals_one_run(native_model, full):
    a = record(native_model, {c: SENTENCES[c][:2] for c in ("en", "fr")}, config=CFG, progress=False)
    b = record(native_model, {c: SENTENCES[c][2:] for c in ("en", "fr")}, config=CFG, progress=False)
    merged = merge_stats([a, b])
    assert torch.equal(merged.over_zero, full.over_zero)
    assert torch.equal(merged.n_tokens, full.n_tokens)
    torch.testing.assert_close(merged.act_sum, full.act_sum, rtol=1e-4, atol=1e-4)  # fp32 batch sums
    torch.testing.assert_close(merged.sent_means, full.sent_means[:, :4])
    torch.testing.assert_close(merged.sentence_stat("max"), full.sentence_stat("max"))


def test_merge_of_language_shards(native_model, full):
    en = full.subset(["en"])
    fr = full.subset(["fr"])
    merged = merge_stats([en, fr])
    assert merged.languages == ["en", "fr"]
    assert torch.equal(merged.over_zero, full.over_zero)


def test_merge_refuses_different_sites(native_model, full):
    post = record(native_model, {"en": SENTENCES["en"]}, config=RecordConfig(site="post", n_sentence_means=4,
                                                                              min_sentence_tokens=3), progress=False)
    with pytest.raises(LensSteerError, match="'site'"):
        merge_stats([full, post])


def test_derived_statistics(full):
    p = full.probability()
    assert p.shape == (2, 64, 2) and float(p.min()) >= 0 and float(p.max()) <= 1
    assert torch.all(full.std() >= 0)
    torch.testing.assert_close(full.mean(), (full.act_sum / full.n_tokens[:, None, None]).float())


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing", "manifest", "wrong_languages"])
def test_damaged_run_is_a_clear_error(full, tmp_path, damage):
    full.save(tmp_path)
    stats_file = tmp_path / "stats.safetensors"
    if damage == "truncate":
        stats_file.write_bytes(stats_file.read_bytes()[:100])
    elif damage == "garbage":
        stats_file.write_bytes(b"\x00" * 64)
    elif damage == "missing":
        stats_file.unlink()
    elif damage == "manifest":
        (tmp_path / "manifest.json").write_text("{")
    else:
        manifest = json.loads((tmp_path / "manifest.json").read_text())
        manifest["languages"] = ["en"]
        (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LensSteerError, match="re-run `lens-steer identify`|made by `lens-steer identify`"):
        Stats.load(tmp_path)


def test_stats_from_another_model_are_refused(full):
    check_compatible(full.manifest, 2, 64)
    with pytest.raises(LensSteerError, match="record them again"):
        check_compatible(full.manifest, 18, 2048)
