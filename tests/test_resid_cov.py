"""The residual covariance recorded by identify and the covariance-matched null of residual steering."""

from __future__ import annotations

import pytest
import torch

from helpers import SENTENCES
from lens_steer.compare import controls_of
from lens_steer.errors import LensSteerError
from lens_steer.factors import Intervention, ResidualShift, parse_factor
from lens_steer.models import as_model
from lens_steer.neurons import NeuronSet
from lens_steer.recorder import RecordConfig, record
from lens_steer.resid_cov import NO_COV, ResidMoments, Whitening, draw_matched
from lens_steer.stats import Stats, merge_stats

TEXTS = {code: SENTENCES[code] for code in ("en", "fr", "ru")}


def _record(model, **kw) -> Stats:
    run_dir = kw.pop("run_dir", None)
    return record(model, TEXTS, config=RecordConfig(n_sentence_means=3, min_sentence_tokens=3, **kw),
                  run_dir=run_dir, progress=False)


def _direct_covariance(model, layers: int) -> list[torch.Tensor]:
    """The covariance of blocks.{l}.hook_resid_post over every counted token (BOS out), one sentence at a time."""
    model = as_model(model)
    rows: list[list[torch.Tensor]] = [[] for _ in range(layers)]
    for sentences in TEXTS.values():
        for sentence in sentences:
            ids = torch.tensor([[model.bos] + model.tokenizer(sentence, add_special_tokens=False)["input_ids"]])
            hooks = [(f"blocks.{layer}.hook_resid_post", lambda x, hook: rows[hook.layer()].append(x[0, 1:].double()))
                     for layer in range(layers)]
            with torch.inference_mode(), model.bridge.hooks(fwd_hooks=hooks):
                model.bridge(ids, return_type=None)
    return [torch.cov(torch.cat(r).T, correction=0) for r in rows]


@pytest.mark.parametrize("arch", ["gemma2", "native"])
def test_recorded_covariance_equals_the_hidden_states_covariance(tiny_models, native_model, arch):
    """Sigma_l from the pooled moments is the covariance of hook_resid_post over the counted tokens of every
    language, whatever the batch size or padding side, on the HF fast path and through the bridge hooks."""
    model = native_model if arch == "native" else tiny_models[arch]
    one = _record(model, batch_size=1)
    layers = one.n_layers
    direct = _direct_covariance(model, layers)
    assert one.resid_moments is not None and int(one.resid_moments.n) == int(one.n_tokens.sum())
    for layer in range(layers):
        torch.testing.assert_close(one.resid_covariance(layer), direct[layer], rtol=1e-4, atol=1e-5)
    for batch, side in [(16, "right"), (16, "left")]:
        other = _record(model, batch_size=batch, padding_side=side)
        for layer in range(layers):
            torch.testing.assert_close(other.resid_covariance(layer), one.resid_covariance(layer),
                                       rtol=1e-5, atol=1e-6)
    assert "resid_cov" in one.manifest
    off = _record(model, batch_size=16, resid_cov=False)
    assert off.resid_moments is None and "resid_cov" not in off.manifest


def test_moments_survive_save_load_subset_and_merge(native_model, tmp_path):
    whole = _record(native_model, run_dir=tmp_path / "run")
    loaded = Stats.load(tmp_path / "run")
    for name, t in whole.resid_moments.tensors().items():
        assert torch.equal(loaded.resid_moments.tensors()[name], t), name
    assert loaded.fingerprint() == whole.fingerprint()
    # The fingerprint covers the moments: another covariance is other statistics.
    changed = Stats(whole.over_zero, whole.n_tokens, whole.n_sentences, whole.act_sum, whole.act_sqsum,
                    whole.sent_means, whole.manifest, whole.resid_sum,
                    ResidMoments(whole.resid_moments.n, whole.resid_moments.total, whole.resid_moments.outer * 2))
    assert changed.fingerprint() != whole.fingerprint()
    # subset: the covariance describes the residual over all recorded text and is kept whole
    sub = loaded.subset(["fr", "en"])
    assert sub.resid_moments is loaded.resid_moments
    # merge: language shards add up to the run of every language
    parts = [record(native_model, {c: TEXTS[c]}, config=RecordConfig(n_sentence_means=3, min_sentence_tokens=3),
                    progress=False) for c in TEXTS]
    merged = merge_stats(parts)
    assert torch.equal(merged.resid_moments.n, whole.resid_moments.n)
    torch.testing.assert_close(merged.resid_moments.outer, whole.resid_moments.outer, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(merged.resid_covariance(1), whole.resid_covariance(1), rtol=1e-9, atol=1e-9)


def test_damaged_moments_are_one_line(native_model, tmp_path):
    from safetensors.torch import load_file, save_file

    _record(native_model, run_dir=tmp_path)
    tensors = load_file(str(tmp_path / "stats.safetensors"))
    tensors["resid_pool_outer"] = tensors["resid_pool_outer"][:, :3].contiguous()
    from safetensors import safe_open
    with safe_open(str(tmp_path / "stats.safetensors"), framework="pt") as f:
        meta = f.metadata()
    save_file(tensors, str(tmp_path / "stats.safetensors"), metadata=meta)
    with pytest.raises(LensSteerError, match="residual covariance tensors .* do not fit together"):
        Stats.load(tmp_path)


def _random_cov(d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(2, -2, d, dtype=torch.float64)  # strongly anisotropic, as a residual stream is
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return (q * scales) @ q.T


def test_drawn_direction_has_the_diffmeans_mahalanobis_norm_and_the_residuals_covariance():
    d = 12
    cov = _random_cov(d)
    w = Whitening.of(cov)
    direction = torch.randn(d, generator=torch.Generator().manual_seed(5)).float()
    target = w.mahalanobis(direction)
    inverse = torch.linalg.inv(cov)
    draws = []
    for seed in range(4000):
        r = draw_matched(direction, w, torch.Generator().manual_seed(seed))
        if seed < 20:
            assert w.mahalanobis(r) == pytest.approx(target, rel=1e-5)
            assert float((r.double() @ inverse @ r.double()).sqrt()) == pytest.approx(target, rel=1e-3)  # ridge 1e-6
        draws.append(r.double() / target)  # unit Mahalanobis norm: E[u u^T] = Sigma / d
    empirical = torch.stack(draws).T @ torch.stack(draws) / len(draws) * d
    rel = (empirical - cov).norm() / cov.norm()
    assert rel < 0.1, float(rel)
    # Along the covariance's largest direction the draw is far larger than along its smallest.
    values, vectors = torch.linalg.eigh(cov)
    spread = torch.stack(draws) @ vectors
    assert spread[:, -1].std() > 50 * spread[:, 0].std()  # sqrt(100 / 0.01) = 100 expected


def test_steerer_controls_cov_and_iso(tiny_models):
    from lens_steer.steer import Steerer

    model = tiny_models["llama"]
    stats = record(model, TEXTS, config=RecordConfig(min_sentence_tokens=3), progress=False)
    layers, d = model.cfg.n_layers, model.cfg.d_mlp
    neurons = NeuronSet(list(TEXTS), {c: [[1, 2]] * layers for c in TEXTS}, layers, d)
    steerer = Steerer(model, neurons, stats)
    real = steerer.resid_direction("fr", 1)
    cov = steerer.resid_direction("fr", 1, control_seed=0)
    iso = steerer.resid_direction("fr", 1, control_seed=0, null="iso")
    w = Whitening.of(stats.resid_covariance(1))
    assert w.mahalanobis(cov) == pytest.approx(w.mahalanobis(real), rel=1e-4)
    torch.testing.assert_close(iso.norm(), real.norm())
    assert torch.equal(cov, steerer.resid_direction("fr", 1, control_seed=0))  # seeded
    assert not torch.equal(cov, steerer.resid_direction("fr", 1, control_seed=1))
    plan = steerer.resid_plan([Intervention("fr", "control:resid:1*2"), Intervention("fr", "control-iso:resid:1*2")])
    torch.testing.assert_close(plan[1][0], 2 * cov)
    torch.testing.assert_close(plan[1][1], 2 * iso)


def test_a_run_without_covariance_refuses_the_covariance_control_in_one_line(tiny_models):
    from lens_steer.steer import Steerer

    model = tiny_models["llama"]
    s = record(model, TEXTS, config=RecordConfig(min_sentence_tokens=3, resid_cov=False), progress=False)
    layers, d = model.cfg.n_layers, model.cfg.d_mlp
    steerer = Steerer(model, NeuronSet(list(TEXTS), {c: [[1]] * layers for c in TEXTS}, layers, d), s)
    with pytest.raises(LensSteerError) as err:
        steerer.resid_plan([Intervention("fr", "control:resid:1*2")])
    assert str(err.value) == NO_COV and "\n" not in NO_COV and "record the run again" in NO_COV
    assert steerer.resid_plan([Intervention("fr", "control-iso:resid:1*2")])[1].norm() > 0  # asked for: allowed


def test_lss_on_a_run_without_covariance_refuses_control_resid_in_one_line(tiny_dirs, tmp_path, capsys):
    from helpers import tiny_run
    from lens_steer.cli import main

    run = tiny_run(tiny_dirs["qwen2"], tmp_path, ["en", "fr"], extra=("--no-resid-cov",))
    assert Stats.load(run).resid_moments is None and Stats.load(run).resid_sum is not None
    capsys.readouterr()
    assert main(["lss", str(run), "--factors", "resid:1*2,control:resid:1*2", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"lens-steer: error: {NO_COV}"


def test_grammar_names_both_controls_and_keeps_the_label():
    cov, iso, alias = (parse_factor(t) for t in ("control:resid:6*2", "control-iso:resid: 6 * 2", "control-cov:resid:6"))
    assert isinstance(iso, ResidualShift) and (cov.null, iso.null, alias.null) == ("cov", "iso", "cov")
    assert iso.text == "control-iso:resid: 6 * 2" and iso.control and iso.layer == 6 and iso.value == 2.0
    assert (cov.family, iso.family) == ("control:resid:6", "control-iso:resid:6")
    assert parse_factor("control-iso:resid:6").multiple is None
    for bad in ("control-iso:p_max", "control-iso:control:resid:6", "control-cov:prompt:en"):
        with pytest.raises(LensSteerError, match="two nulls of a residual shift"):
            parse_factor(bad)
    assert [p for p, _ in controls_of(parse_factor("resid:3*4"))] == ["control", "control-iso"]
    assert [f.null for _, f in controls_of(parse_factor("resid:3*4"))] == ["cov", "iso"]
