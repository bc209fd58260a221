"""The statistics artifact: contract checks, damaged files, merging shards."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import SENTENCES
from lens_steer.errors import LensSteerError
from lens_steer.recorder import RecordConfig, record
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
    with pytest.raises(LensSteerError, match="re-run `lens-steer identify|made by `lens-steer identify`"):
        Stats.load(tmp_path)


def test_stats_from_another_model_are_refused(full):
    check_compatible(full.manifest, 2, 64)
    with pytest.raises(LensSteerError, match="record them again"):
        check_compatible(full.manifest, 18, 2048)


def test_one_p_max_definition_in_memory_on_disk_and_after_merge(native_model, tmp_path):
    """p_max / p_median / p_min are the statistics of the float16 sentence means that are stored: equal bit for bit
    in memory, in stats.safetensors, after loading, and after merging shards."""
    from safetensors.torch import load_file

    stats = record(native_model, {c: SENTENCES[c] for c in ("en", "fr")}, config=CFG, run_dir=tmp_path,
                   progress=False)
    raw = load_file(str(tmp_path / "stats.safetensors"))
    stored = load_file(str(tmp_path / "sent_means.safetensors"))["sent_means"]
    assert stored.dtype == torch.float16
    means = stored.float()
    assert torch.equal(raw["sent_max"], means.amax(dim=1))
    assert torch.equal(raw["sent_median"], means.median(dim=1).values)
    assert torch.equal(raw["sent_min"], means.amin(dim=1))
    loaded = Stats.load(tmp_path)
    assert torch.equal(stats.sent_means, means)  # the in-memory means are the stored float16 values
    for kind in ("max", "median", "min"):
        assert torch.equal(stats.sentence_stat(kind), loaded.sentence_stat(kind))
        assert torch.equal(stats.sentence_stat(kind), raw[f"sent_{kind}"])
    merged = merge_stats([stats.subset(["en"]), loaded.subset(["fr"])])
    assert torch.equal(merged.sentence_stat("max"), stats.sentence_stat("max"))


def test_stats_hold_float16_sentence_means():
    means = torch.tensor([0.1, 1.0, 2049.0]).view(1, 3, 1, 1)
    stats = Stats(torch.zeros(1, 1, 1, dtype=torch.long), torch.ones(1, dtype=torch.long),
                  torch.ones(1, dtype=torch.long), torch.zeros(1, 1, 1, dtype=torch.float64),
                  torch.zeros(1, 1, 1, dtype=torch.float64), means, {"languages": ["en"]})
    assert stats.sent_means.dtype == torch.float32
    assert stats.sent_means.flatten().tolist() == [0.0999755859375, 1.0, 2048.0]  # float16 values, held as float32
