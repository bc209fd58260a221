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
    """Save a tiny random HF checkpoint of ``arch`` (qwen2, gemma2, llama, gpt2) with the test tokenizer."""
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
    else:
        raise ValueError(arch)
    torch.manual_seed(seed)
    cls(cfg).save_pretrained(directory)
    return directory


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


@contextmanager
def logits_to_keep_spy(model) -> Iterator[list]:
    """Collect the ``logits_to_keep`` argument of every forward of ``model`` inside the block."""
    seen: list = []
    model = getattr(model, "bridge", model)  # a Model handle calls its bridge
    real = model.forward

    def spy(*args, **kwargs):
        seen.append(kwargs.get("logits_to_keep"))
        return real(*args, **kwargs)

    model.forward = spy
    try:
        yield seen
    finally:
        del model.forward
