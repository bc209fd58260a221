"""Streaming statistics: exact counts, independent of batching and padding, resumable."""

from __future__ import annotations

import pytest
import torch

from helpers import SENTENCES, logits_to_keep_spy
from lens_steer.errors import LensSteerError
from lens_steer.models import as_model
from lens_steer.models.handle import _UNPROBED
from lens_steer.recorder import RecordConfig, record
from lens_steer.stats import Stats

TEXTS = {code: SENTENCES[code] for code in ("en", "fr", "ru", "zh")}


def _record(model, **kw):
    run_dir = kw.pop("run_dir", None)
    return record(model, TEXTS, config=RecordConfig(n_sentence_means=4, min_sentence_tokens=3, **kw),
                  run_dir=run_dir, progress=False)


def assert_same_stats(a: Stats, b: Stats) -> None:
    assert torch.equal(a.over_zero, b.over_zero)
    assert torch.equal(a.n_tokens, b.n_tokens) and torch.equal(a.n_sentences, b.n_sentences)
    torch.testing.assert_close(a.act_sum, b.act_sum, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(a.act_sqsum, b.act_sqsum, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(a.sent_means, b.sent_means, rtol=1e-4, atol=1e-5)
    for name in ("over_zero", "n_tokens", "n_sentences", "sent_fold"):  # the folds are exact counts too
        assert torch.equal(getattr(a.folds, name), getattr(b.folds, name)), f"folds.{name}"


def test_batch_size_and_padding_side_do_not_change_statistics(tiny_model):
    reference = _record(tiny_model, batch_size=1)
    for batch_size, side in [(16, "right"), (16, "left"), (3, "left")]:
        assert_same_stats(reference, _record(tiny_model, batch_size=batch_size, padding_side=side))


def test_over_zero_equals_direct_hf_act_fn(tiny_model):
    """Count act_fn(gate_proj(x)) > 0 with a plain forward hook on the HF module and compare."""
    from helpers import hf_mlp
    from lens_steer.recorder import tokenise

    cfg = RecordConfig()
    site_layers = tiny_model.cfg.n_layers
    counts = torch.zeros(site_layers, tiny_model.cfg.d_mlp, dtype=torch.long)
    handles = []
    for layer in range(site_layers):
        hf = hf_mlp(tiny_model, layer).original_component
        module = getattr(hf, "act_fn", None) or getattr(hf, "act")

        def hook(_m, _inp, out, layer=layer):
            counts[layer] += (out[0, 1:] > 0).sum(0) if as_model(tiny_model).bos is not None else (out[0] > 0).sum(0)

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            for ids in tokenise(tiny_model, TEXTS["fr"], cfg).ids:  # batch 1: no padding at all
                tiny_model.original_model(torch.tensor([ids]))
    finally:
        for handle in handles:
            handle.remove()
    stats = record(tiny_model, {"fr": TEXTS["fr"]}, config=cfg, progress=False)
    assert counts.sum() > 0
    assert torch.equal(stats.over_zero[..., 0], counts)


def test_counts_exclude_bos_and_pads(tiny_model):
    stats = _record(tiny_model, batch_size=5)
    from lens_steer.recorder import tokenise

    for k, code in enumerate(TEXTS):
        data = tokenise(tiny_model, TEXTS[code], RecordConfig())
        assert int(stats.n_tokens[k]) == sum(data.n_counted)
        assert int(stats.over_zero[..., k].max()) <= int(stats.n_tokens[k])


def test_site_post_counts_hook_post(native_model):
    act = record(native_model, TEXTS, config=RecordConfig(site="act"), progress=False)
    post = record(native_model, TEXTS, config=RecordConfig(site="post"), progress=False)
    assert act.manifest["site"] == "act" and post.manifest["site"] == "post"
    assert not torch.equal(act.over_zero, post.over_zero)  # different quantities for a gated MLP


def test_token_budget_keeps_whole_sentences(native_model):
    full = record(native_model, {"en": TEXTS["en"]}, config=RecordConfig(), progress=False)
    budget = int(full.n_tokens[0]) // 2
    part = record(native_model, {"en": TEXTS["en"]}, config=RecordConfig(max_tokens=budget), progress=False)
    assert 0 < int(part.n_tokens[0]) <= budget
    assert int(part.n_sentences[0]) < int(full.n_sentences[0])


def test_sentence_means_same_n_for_every_language(native_model):
    stats = record(native_model, TEXTS, config=RecordConfig(n_sentence_means=100, min_sentence_tokens=3),
                   progress=False)
    assert stats.sent_means.shape[:2] == (4, 5)  # min(100, available), the same for every language
    texts = dict(TEXTS, fr=TEXTS["fr"][:2])
    assert record(native_model, texts, config=RecordConfig(min_sentence_tokens=3), progress=False).sent_means.shape[1] == 2
    with pytest.warns(UserWarning, match="no sentence means kept"):
        none = record(native_model, TEXTS, config=RecordConfig(min_sentence_tokens=500), progress=False)
    assert none.sentence_stat("max").isnan().all()
    assert torch.all(stats.sentence_stat("max") >= stats.sentence_stat("median"))
    assert torch.all(stats.sentence_stat("median") >= stats.sentence_stat("min"))


def test_saved_stats_round_trip_with_contract(native_model, tmp_path):
    stats = _record(native_model, run_dir=tmp_path)
    loaded = Stats.load(tmp_path)
    assert loaded.languages == list(TEXTS)
    assert loaded.over_zero.dtype == torch.int64 and loaded.over_zero.shape == (2, 64, 4)
    assert torch.equal(stats.over_zero, loaded.over_zero)
    torch.testing.assert_close(stats.sent_means, loaded.sent_means, rtol=1e-3, atol=1e-3)  # fp16 on disk
    from safetensors.torch import load_file

    raw = load_file(str(tmp_path / "stats.safetensors"))
    assert raw["sent_max"].shape == (4, 2, 64) and raw["act_sum"].dtype == torch.float64


def test_resume_skips_finished_languages(native_model, tmp_path, monkeypatch):
    first = _record(native_model, run_dir=tmp_path)
    import lens_steer.recorder as rec

    calls = []
    real = rec._run_language
    monkeypatch.setattr(rec, "_run_language", lambda *a, **k: calls.append(k["desc"]) or real(*a, **k))
    (tmp_path / "partial" / "ru.safetensors").unlink()
    again = _record(native_model, run_dir=tmp_path)
    assert calls == ["ru"]
    assert torch.equal(first.over_zero, again.over_zero)


def test_resume_after_interruption(native_model, tmp_path, monkeypatch):
    import lens_steer.recorder as rec

    real = rec._run_language

    def dies_on_zh(*a, **k):
        if k["desc"] == "zh":
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(rec, "_run_language", dies_on_zh)
    with pytest.raises(KeyboardInterrupt):
        _record(native_model, run_dir=tmp_path)
    assert not (tmp_path / "stats.safetensors").exists()  # nothing half-written
    assert sorted(p.stem for p in (tmp_path / "partial").glob("*.safetensors")) == ["en", "fr", "ru"]
    done = []
    monkeypatch.setattr(rec, "_run_language", lambda *a, **k: done.append(k["desc"]) or real(*a, **k))
    _record(native_model, run_dir=tmp_path)
    assert done == ["zh"]


def test_changed_settings_are_recomputed(native_model, tmp_path, monkeypatch):
    _record(native_model, run_dir=tmp_path)
    import lens_steer.recorder as rec

    calls = []
    real = rec._run_language
    monkeypatch.setattr(rec, "_run_language", lambda *a, **k: calls.append(k["desc"]) or real(*a, **k))
    _record(native_model, run_dir=tmp_path, site="post")
    assert calls == list(TEXTS)


def test_empty_language_is_a_clear_error(native_model):
    with pytest.raises(LensSteerError, match="'fr' has no text"):
        record(native_model, {"en": TEXTS["en"], "fr": []}, progress=False)


def test_bad_config_is_a_clear_error():
    with pytest.raises(LensSteerError, match="unknown site"):
        RecordConfig(site="resid")
    with pytest.raises(LensSteerError, match="padding_side"):
        RecordConfig(padding_side="middle")


def _force_bridge_hooks(model):
    """Record through blocks.{l}.mlp.hook_pre + act_fn instead of the HF activation modules; returns an undo."""
    handle = as_model(model)
    old = handle._act_modules
    handle.forget_act_modules()

    def undo():
        handle._act_modules = old
    return undo


def test_activation_module_path_equals_bridge_hooks(tiny_model):
    """Reading act_fn(gate) from the HF activation module gives exactly the statistics of hook_pre through act_fn."""

    as_model(tiny_model)._act_modules = _UNPROBED  # probe again
    assert as_model(tiny_model).act_modules() is not None, "the probe should accept every tiny HF architecture"
    fast = _record(tiny_model, batch_size=3, padding_side="left")
    undo = _force_bridge_hooks(tiny_model)
    try:
        slow = _record(tiny_model, batch_size=3, padding_side="left")
    finally:
        undo()
    assert torch.equal(fast.over_zero, slow.over_zero)
    torch.testing.assert_close(fast.act_sum, slow.act_sum, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(fast.act_sqsum, slow.act_sqsum, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(fast.sent_means, slow.sent_means, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("arch", ["qwen2", "gemma2", "llama"])
def test_direct_forward_records_what_the_bridge_records(tiny_models, monkeypatch, arch):
    """The recorder's bare HF forward (Model.activations_forward past the bridge) gives bit-identical statistics to
    the forward through the bridge, left padding over several batches included."""
    handle = as_model(tiny_models[arch])
    assert handle.direct_ok()
    calls = []
    real = handle._direct_forward
    monkeypatch.setattr(handle, "_direct_forward", lambda *a, **k: calls.append(1) or real(*a, **k))
    fast = _record(handle, batch_size=3, padding_side="left")
    assert calls, "the recorder should have taken the direct forward"
    monkeypatch.setattr(handle, "_direct", False)  # as a model the probe refused: every forward through the bridge
    n_direct = len(calls)
    slow = _record(handle, batch_size=3, padding_side="left")
    assert len(calls) == n_direct
    for name in ("over_zero", "n_tokens", "n_sentences", "act_sum", "act_sqsum", "sent_means"):
        assert torch.equal(getattr(fast, name), getattr(slow, name)), name


def test_native_model_has_no_activation_modules(native_model):

    assert as_model(native_model).act_modules() is None  # recorded through the bridge hooks (the tests above)


def test_activation_modules_that_stop_firing_fall_back_to_bridge_hooks(tiny_models):
    """If the verified modules are no longer called (e.g. weights processed since), the language is recorded again
    through the bridge hooks, not silently left empty."""
    model = tiny_models["llama"]
    undo = _force_bridge_hooks(model)
    try:
        expected = _record(model)
    finally:
        undo()
    n_layers = model.cfg.n_layers
    as_model(model)._act_modules = [torch.nn.SiLU() for _ in range(n_layers)]  # never called
    try:
        got = _record(model)
        assert as_model(model)._act_modules is None
    finally:
        as_model(model)._act_modules = _UNPROBED
    assert_same_stats(expected, got)


@pytest.mark.parametrize("fast", [True, False])
def test_hooks_are_removed_after_an_exception(tiny_models, monkeypatch, fast):
    from lens_steer.recorder import _Accumulator

    model = tiny_models["qwen2"]
    as_model(model)._act_modules = _UNPROBED
    mods = as_model(model).act_modules()
    assert mods is not None
    undo = (lambda: None) if fast else _force_bridge_hooks(model)

    def boom(self, layer, *args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(_Accumulator, "add", boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            _record(model)
    finally:
        undo()
    assert all(not m._forward_hooks for m in mods)
    assert all(not hp._forward_hooks for hp in model.hook_dict.values())


def test_recording_skips_the_unembedding(tiny_models):
    """Recording projects no position to the vocabulary (an empty boolean logits_to_keep) on HF models, and the
    statistics are those of a forward that keeps the last logit."""

    model = tiny_models["gemma2"]
    as_model(model)._masked_logits = None
    assert as_model(model).masked_logits_ok() and as_model(model).act_modules()  # probed here: the spy sees only recording forwards
    with logits_to_keep_spy(model) as seen:
        headless = _record(model, batch_size=4)
    masks = [k for k in seen if isinstance(k, torch.Tensor)]
    assert masks and len(masks) == len(seen), seen
    assert all(k.dtype == torch.bool and not k.any() for k in masks), seen
    as_model(model)._masked_logits = False  # as a model without boolean logits_to_keep: logits_to_keep=1
    try:
        with_head = _record(model, batch_size=4)
    finally:
        as_model(model)._masked_logits = None
    assert_same_stats(headless, with_head)


def test_nan_activations_are_a_clear_error(native_model):
    """A model that produces NaN in its MLP (a broken checkpoint, fp16 overflow) stops with one line saying so."""
    def poison(pre, hook):
        return pre * float("nan")

    with native_model.hooks(fwd_hooks=[("blocks.0.mlp.hook_pre", poison)]):
        with pytest.raises(LensSteerError, match="NaN/inf MLP activations"):
            _record(native_model)


def test_resume_gives_byte_identical_files(native_model, tmp_path):
    """A resumed run (some languages from RUN_DIR/partial, one recomputed) writes the very same bytes."""
    _record(native_model, run_dir=tmp_path)
    names = ("stats.safetensors", "sent_means.safetensors")
    first = {name: (tmp_path / name).read_bytes() for name in names}
    (tmp_path / "partial" / "fr.safetensors").unlink()
    _record(native_model, run_dir=tmp_path)
    assert {name: (tmp_path / name).read_bytes() for name in names} == first


def _direct_reference_counts(model, sentences):
    """The authors' recording, written out independently: HF forward on tokens of "\\n" + 12 spaces + sentence
    (no special tokens), one sentence at a time, counting act_fn(gate) > 0 from token 2 on."""
    from helpers import hf_mlp

    tok = model.tokenizer
    layers, d = model.cfg.n_layers, model.cfg.d_mlp
    counts = torch.zeros(layers, d, dtype=torch.long)
    means = torch.zeros(len(sentences), layers, d)
    n_tokens = 0
    seen: dict[int, torch.Tensor] = {}
    handles = []
    for layer in range(layers):
        hf = hf_mlp(model, layer).original_component
        module = getattr(hf, "act_fn", None) or getattr(hf, "act")
        handles.append(module.register_forward_hook(lambda _m, _i, out, layer=layer: seen.__setitem__(layer, out[0])))
    try:
        with torch.inference_mode():
            for i, text in enumerate(sentences):
                ids = tok("\n            " + text, add_special_tokens=False)["input_ids"]
                model.original_model(torch.tensor([ids]))
                n_tokens += len(ids) - 2
                for layer, out in seen.items():
                    counts[layer] += (out[2:] > 0).sum(0)
                    means[i, layer] = out[2:].float().mean(0)
    finally:
        for handle in handles:
            handle.remove()
    return counts, means, n_tokens


def test_reference_compat_records_as_the_authors_code(tiny_model):
    from lens_steer.recorder import REFERENCE_PREFIX, tokenise

    assert REFERENCE_PREFIX == "\n" + " " * 12  # data_sets.py Flores: f"""\n            {sentence}"""
    cfg = RecordConfig(reference_compat=True)
    data = tokenise(tiny_model, TEXTS["fr"], cfg)
    tok = tiny_model.tokenizer
    for text, ids, n in zip(TEXTS["fr"], data.ids, data.n_counted):
        assert ids == tok(REFERENCE_PREFIX + text, add_special_tokens=False)["input_ids"]
        assert tok.bos_token_id not in ids and n == len(ids) - 2
    stats = record(tiny_model, {"fr": TEXTS["fr"]}, config=cfg, progress=False)
    counts, means, n_tokens = _direct_reference_counts(tiny_model, TEXTS["fr"])
    assert int(stats.n_tokens[0]) == n_tokens == sum(data.n_counted)
    assert torch.equal(stats.over_zero[..., 0], counts)
    torch.testing.assert_close(stats.sent_means[0], means, rtol=2e-3, atol=1e-4)  # float16-rounded
    m = stats.manifest
    assert m["reference_compat"] is True and m["bos"].startswith("none") and m["leading_tokens_skipped"] == 2
    assert m["text_prefix"] == REFERENCE_PREFIX


def test_reference_compat_keeps_the_first_n_sentence_means_and_default_is_unchanged(native_model):
    compat = record(native_model, TEXTS, config=RecordConfig(reference_compat=True, min_sentence_tokens=500),
                    progress=False)
    assert compat.sent_means.shape[1] == 5 and compat.manifest["min_sentence_tokens"] == 1
    default = _record(native_model)
    assert default.manifest["reference_compat"] is False and default.manifest["text_prefix"] == ""
    assert default.manifest["leading_tokens_skipped"] == 1  # the BOS of this model
    assert default.manifest["bos"] == "prepended, excluded from counts"
    assert not torch.equal(default.over_zero, compat.over_zero)


def test_switching_reference_compat_recomputes(native_model, tmp_path, monkeypatch):
    _record(native_model, run_dir=tmp_path)
    import lens_steer.recorder as rec

    calls = []
    real = rec._run_language
    monkeypatch.setattr(rec, "_run_language", lambda *a, **k: calls.append(k["desc"]) or real(*a, **k))
    _record(native_model, run_dir=tmp_path, reference_compat=True)
    assert calls == list(TEXTS)
    assert Stats.load(tmp_path).manifest["reference_compat"] is True


def test_importing_the_recorder_never_shadows_ls_record():
    """`ls.record` stays the function after any import of the recorder module (a submodule named `record` would
    have replaced it on the package)."""
    import lens_steer as ls
    import lens_steer.identification as ident
    import lens_steer.recorder as rec

    assert callable(ls.record) and ls.record is rec.record and ls.Model is not None
    assert callable(ls.identify) and ls.identify is ident.identify  # the same trap, the same cure


def test_residual_sums_equal_a_direct_count_on_both_paths(tiny_models, tmp_path):
    """resid_sum[k, l] is the sum of blocks.{l}.hook_resid_post over the counted tokens (BOS and pads out), the same
    through the HF layers (fast path) and the bridge hooks; it survives save/load, and resid_mean divides by
    n_tokens."""
    model = tiny_models["gemma2"]
    fast = _record(model, batch_size=3, padding_side="left", run_dir=tmp_path / "run")
    undo = _force_bridge_hooks(model)
    try:
        slow = _record(model, batch_size=3, padding_side="left")
    finally:
        undo()
    assert fast.resid_sum is not None and fast.resid_sum.shape == (4, 2, 32)
    torch.testing.assert_close(fast.resid_sum, slow.resid_sum, rtol=1e-5, atol=1e-5)
    k = list(TEXTS).index("ru")
    want = torch.zeros(2, 32, dtype=torch.float64)
    for sentence in TEXTS["ru"]:
        ids = torch.tensor([[model.bos] + model.tokenizer(sentence, add_special_tokens=False)["input_ids"]])
        seen = {}
        with torch.inference_mode(), model.hooks(fwd_hooks=[
                (f"blocks.{layer}.hook_resid_post", lambda x, hook: seen.__setitem__(hook.layer(), x[0, 1:].sum(0)))
                for layer in range(2)]):
            model(ids, return_type=None)
        want += torch.stack([seen[0], seen[1]]).double()
    torch.testing.assert_close(fast.resid_sum[k], want, rtol=1e-4, atol=1e-4)
    loaded = Stats.load(tmp_path / "run")
    assert torch.equal(loaded.resid_sum, fast.resid_sum)
    torch.testing.assert_close(loaded.resid_mean()[k], (want / int(fast.n_tokens[k])).float())


def test_runs_without_residual_sums_refuse_resid_means(native_model):
    stats = _record(native_model)
    assert stats.resid_sum is not None  # native models record them through the bridge hooks
    old = Stats(stats.over_zero, stats.n_tokens, stats.n_sentences, stats.act_sum, stats.act_sqsum, stats.sent_means,
                stats.manifest)
    with pytest.raises(LensSteerError, match="record the run again with `lens-steer identify` to use resid: methods"):
        old.resid_mean()
