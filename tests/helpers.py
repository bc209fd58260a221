"""Builders for tiny, offline test models and hand-made statistics (the SAELens pattern: fixtures live here)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Invented multilingual sentences (no third-party text): enough to train a byte-level BPE and to record stats.
SENTENCES = {
    "en": ["The small cat sleeps on the warm mat today.", "A river runs past the old mill and the farm.",
           "We walked home after the long rainy evening.", "Children read books about stars and planets.",
           "Bread is baked early in the morning here."],
    "fr": ["Le petit chat dort sur le tapis chaud.", "Une rivière passe près du vieux moulin.",
           "Nous sommes rentrés après la longue soirée.", "Les enfants lisent des livres sur les étoiles.",
           "Le pain est cuit tôt le matin ici."],
    "ru": ["Маленький кот спит на тёплом коврике.", "Река течёт мимо старой мельницы.",
           "Мы пошли домой после долгого вечера.", "Дети читают книги о звёздах.",
           "Хлеб пекут рано утром здесь."],
    "zh": ["小猫今天睡在温暖的垫子上。", "一条河流过旧磨坊和农场。", "漫长的雨夜之后我们走回家。",
           "孩子们读关于星星的书。", "这里的面包早上很早就烤好了。"],
}


def chromium() -> str:
    """The system browser for the browser tests: fail loudly in CI (a green run must not hide a missing install),
    skip elsewhere."""
    import pytest

    from lens_steer.plots import browser_path

    path = browser_path()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: `make setup` installs it (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (make browser)")
    return path


def tiny_run(model_dir: Path, root: Path, langs, top_rate: str = "0.2", extra: tuple[str, ...] = ()) -> Path:
    """``root/run``: ``lens-steer identify`` of a tiny checkpoint over :data:`SENTENCES` of ``langs`` as a
    ``--corpus files`` folder (``root/corpus``), LAPE keeping ``top_rate`` of the neurons so every language has some."""
    from lens_steer.cli import main

    corpus = root / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for code in langs:
        (corpus / f"{code}.txt").write_text("\n".join(SENTENCES[code]), encoding="utf-8")
    run = root / "run"
    assert main(["identify", "--model", str(model_dir), "--corpus", "files", "--corpus-path", str(corpus),
                 "--langs", ",".join(langs), "--out", str(run), "--quiet", "--top-rate", top_rate, *extra]) == 0
    return run


def save_tokenizer(directory: Path) -> Path:
    """Train a small byte-level BPE on SENTENCES and save it (an in-memory tokenizer crashes the bridge)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = [s for sents in SENTENCES.values() for s in sents] * 10
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(directory)
    return directory


def save_tiny_hf(arch: str, directory: Path, seed: int = 0) -> Path:
    """Save a tiny random HF checkpoint of ``arch`` (qwen2, gemma2, llama, gpt2, or one of ``FAMILY_ARCHS``) with the
    test tokenizer."""
    import transformers as tf

    save_tokenizer(directory)
    common = dict(vocab_size=400, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if arch == "qwen2":
        cfg = tf.Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, **common)
        cls = tf.Qwen2ForCausalLM
    elif arch == "gemma2":
        cfg = tf.Gemma2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=8, sliding_window=64, **common)
        cls = tf.Gemma2ForCausalLM
    elif arch == "llama":
        cfg = tf.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, **common)
        cls = tf.LlamaForCausalLM
    elif arch == "gpt2":
        cfg = tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=128, vocab_size=400, bos_token_id=1,
                            eos_token_id=2, pad_token_id=0)
        cls = tf.GPT2LMHeadModel
    elif arch in FAMILY_ARCHS:
        cfg, cls = _family_config(arch, common)
    else:
        raise ValueError(arch)
    torch.manual_seed(seed)
    cls(cfg).save_pretrained(directory)
    return directory


# Tiny stand-ins for the paper's model families: the real configs' shape-independent settings (tied embeddings,
# RoPE base and scaling, soft-capping, sliding windows, activation, norms), at tiny sizes. The sliding windows (4)
# are shorter than the test sequences, so the window really masks something.
FAMILY_ARCHS = ("qwen2.5", "seallms3", "gemma2-soft", "gemma3", "llama3")
FAMILY_SLIDING_WINDOW = 4


def _family_config(arch: str, common: dict):
    """(config, model class) of one of ``FAMILY_ARCHS``."""
    import transformers as tf

    tiny = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, **common)
    if arch == "qwen2.5":  # Qwen/Qwen2.5-0.5B-Instruct (q/k/v biases are built into Qwen2)
        cfg = tf.Qwen2Config(tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 1e6},
                             rms_norm_eps=1e-6, hidden_act="silu", max_position_embeddings=128, **tiny)
        return cfg, tf.Qwen2ForCausalLM
    if arch == "seallms3":  # SeaLLMs/SeaLLMs-v3-1.5B-Chat (a Qwen2 with untied embeddings)
        cfg = tf.Qwen2Config(tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 1e6},
                             rms_norm_eps=1e-6, hidden_act="silu", max_position_embeddings=128, **tiny)
        return cfg, tf.Qwen2ForCausalLM
    if arch == "gemma2-soft":  # google/gemma-2-2b: soft-capping, alternating sliding/full attention
        cfg = tf.Gemma2Config(head_dim=8, query_pre_attn_scalar=8, sliding_window=FAMILY_SLIDING_WINDOW,
                              attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
                              hidden_activation="gelu_pytorch_tanh", max_position_embeddings=128,
                              layer_types=["sliding_attention", "full_attention"], **tiny)
        return cfg, tf.Gemma2ForCausalLM
    if arch == "gemma3":  # google/gemma-3-270m (text only): local/global RoPE bases, qk-norm, sliding layers
        cfg = tf.Gemma3TextConfig(
            head_dim=8, query_pre_attn_scalar=8, sliding_window=FAMILY_SLIDING_WINDOW,
            hidden_activation="gelu_pytorch_tanh", max_position_embeddings=128,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
                             "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0}},
            **dict(tiny, num_hidden_layers=3))
        return cfg, tf.Gemma3ForCausalLM
    if arch == "llama3":  # meta-llama/Llama-3.x: rope_theta 5e5 with llama3 RoPE scaling
        cfg = tf.LlamaConfig(hidden_act="silu", max_position_embeddings=128, rope_parameters={
            "rope_type": "llama3", "rope_theta": 500_000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}, **tiny)
        return cfg, tf.LlamaForCausalLM
    raise ValueError(arch)


def native_bridge(tokenizer_dir: Path, seed: int = 0):
    """A tiny gated TransformerLens-native model (random init, seeded) with the saved test tokenizer."""
    from transformer_lens import TransformerBridge, TransformerBridgeConfig
    from transformers import AutoTokenizer

    cfg = TransformerBridgeConfig(d_model=32, d_head=8, n_heads=4, n_layers=2, n_ctx=128, d_vocab=400, d_mlp=64,
                                  gated_mlp=True, act_fn="silu", normalization_type="RMS",
                                  positional_embedding_type="rotary", final_rms=True, seed=seed, device="cpu",
                                  default_prepend_bos=True)
    return TransformerBridge.boot_native(cfg, tokenizer=AutoTokenizer.from_pretrained(tokenizer_dir)).eval()


def hf_mlp(bridge, layer: int):
    """The HF MLP module of ``layer`` inside a bridge made from an HF checkpoint."""
    model = bridge.original_model
    inner = getattr(model, "model", None) or getattr(model, "transformer")
    blocks = getattr(inner, "layers", None) or getattr(inner, "h")
    return blocks[layer].mlp


def act_module(model, layer: int) -> torch.nn.Module:
    """The activation module HF's MLP of ``layer`` applies to its gate (its output is the neuron value)."""
    hf = hf_mlp(model, layer).original_component
    return getattr(hf, "act_fn", None) or getattr(hf, "act")


def hf_patched_logits(model, neurons, target, fn, tokens, mask=None):
    """Logits of the plain HF model with a forward hook on its act_fn output (the reference codes' way);
    ``fn(selected, layer, idx, full_output)`` returns the new values of the target's neurons."""
    handles = []
    for layer in range(model.cfg.n_layers):
        idx = neurons.indices(target, layer)

        def hook(_m, _i, out, layer=layer, idx=idx):
            out = out.clone()
            out[..., idx] = fn(out[..., idx], layer, idx, out)
            return out

        handles.append(act_module(model, layer).register_forward_hook(hook))
    try:
        with torch.inference_mode():
            return model.original_model(tokens, attention_mask=mask).logits
    finally:
        for h in handles:
            h.remove()


@contextmanager
def logits_to_keep_spy(model) -> Iterator[list]:
    """Collect the ``logits_to_keep`` argument of every forward of ``model``'s HF module inside the block (the bridge
    passes it on; a direct forward, :func:`lens_steer.models.bare_hf`, calls the HF module itself)."""
    seen: list = []
    model = getattr(model, "bridge", model)  # a Model handle calls its bridge
    model = getattr(model, "original_model", model)
    real = model.forward

    def spy(*args, **kwargs):
        seen.append(kwargs.get("logits_to_keep"))
        return real(*args, **kwargs)

    model.forward = spy
    try:
        yield seen
    finally:
        del model.forward


_GARDEN = ("gardener", "water", "seed", "bed", "fence", "path", "harvest", "compost", "shade", "root", "leaf", "gate")
_KANA = "あいうえおかきくけこさしすせそたちつてとなにぬねの"


def udhr_like_units(lang: str):
    """An invented declaration in the shape :func:`lens_steer.corpora.udhr.udhr_units` returns (not the UDHR):
    the preamble and articles 1-30, 3 paragraphs each, 2 sentences per paragraph of 3 clauses, every clause
    distinct (it names its article, paragraph and sentence) and prefixed with the language code; CJK-like text
    without spaces for the languages written without them."""
    from lens_steer.corpora.udhr import Paragraph
    from lens_steer.languages import writes_spaces

    def clause(a: int, p: int, s: int, c: int) -> str:
        if not writes_spaces(lang):
            return f"第{a}条{p}{s}{c}" + "".join(_KANA[(a * 7 + p * 5 + s * 3 + c + k) % len(_KANA)] for k in range(9))
        words = [f"{_GARDEN[(a + p + s + c + k) % len(_GARDEN)]}{a}" for k in range(6)]  # every piece names a
        return f"{lang} rule {a} part {p} line {s} clause {c} " + " ".join(words)

    comma, stop = (",", ".") if writes_spaces(lang) else ("、", "。")
    units = []
    for a in range(31):
        for p in range(3):
            text = " ".join(f"{comma} ".join(clause(a, p, s, c) for c in range(3)) + stop for s in range(2))
            units.append(Paragraph(a, p, text))
    return units
