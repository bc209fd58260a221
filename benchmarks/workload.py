"""What the benchmarks run on: the model (the embedded Gemma, a HF directory, or a tiny random Llama), its plain
HF twin, the corpus and the recording configuration, each built as ``lens-steer identify`` builds it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TINY_LANGS = "en,fr,ru,zh"  # the tiny model's own sentences (tests/helpers.py)
DEFAULT_LANGS = "en,fr,ja,ru"


def resolve_model(args: argparse.Namespace) -> str:
    """``tiny`` builds a tiny random Llama (tests/helpers.py) in a temporary directory; anything else as given."""
    if args.model != "tiny":
        return args.model
    sys.path.insert(0, str(ROOT / "tests"))
    import helpers  # tests/helpers.py

    directory = Path(tempfile.mkdtemp(prefix="lens-steer-bench-tiny-"))
    with contextlib.redirect_stderr(open(os.devnull, "w")):
        helpers.save_tiny_hf("llama", directory / "llama")
    corpus = directory / "corpus"
    corpus.mkdir()
    for lang, sentences in helpers.SENTENCES.items():
        (corpus / f"{lang}.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    if args.corpus is None:
        args.corpus, args.corpus_path = "files", str(corpus)
    return str(directory / "llama")


def hf_source(spec: str) -> str:
    from lens_steer.models import EMBEDDED_MODEL, ensure_embedded_model

    return str(ensure_embedded_model()) if spec == EMBEDDED_MODEL else spec


def load_bridge(spec: str, args: argparse.Namespace):
    from lens_steer.models import load_model

    return load_model(spec, device=args.device, dtype=args.dtype, attention=getattr(args, "attention", "eager"))


def load_plain_hf(spec: str, bridge, device: str):
    """The same weights as a plain, unhooked ``AutoModelForCausalLM`` (default attention implementation)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    dtype = next(bridge.parameters()).dtype
    return AutoModelForCausalLM.from_pretrained(hf_source(spec), dtype=dtype).to(device).eval()


def load_texts(args: argparse.Namespace) -> dict[str, list[str]]:
    from lens_steer.corpora import load_corpus

    return load_corpus(args.corpus or "udhr", args.langs.split(","), split=args.split, path=args.corpus_path)


def prepend_bos(bridge) -> bool:
    return bool(getattr(bridge.cfg, "default_prepend_bos", False)) and bridge.tokenizer.bos_token_id is not None


def record_config(args: argparse.Namespace, max_tokens: int | None = -1):
    from lens_steer.recorder import RecordConfig

    return RecordConfig(batch_size=args.batch_size, max_tokens=args.max_tokens if max_tokens == -1 else max_tokens)


def describe_model(bridge, hf) -> dict[str, Any]:
    """The model as results.json records it: its MLP shape, size, dtype and the plain HF module's attention."""
    from lens_steer.models import describe_mlp

    site = describe_mlp(bridge)
    return {"n_layers": site.n_layers, "d_mlp": site.d_mlp, "params": sum(p.numel() for p in hf.parameters()),
            "dtype": str(next(bridge.parameters()).dtype).removeprefix("torch."),
            "plain_hf_attention": hf.config._attn_implementation}
