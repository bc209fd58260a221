"""The :class:`Model` handle: one loaded bridge and everything lens_steer derives from it, decided once.

TransformerLens 4 has no ``HookedTransformer``: every model is a ``TransformerBridge`` around the HF module.
Everything downstream takes a :class:`Model`, or a bare bridge that :func:`as_model` wraps once.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Union

import torch
from jaxtyping import Float, Int
from torch import Tensor

from lens_steer.models.bypass import _bridge_positions, _find_act_modules, bare_hf
from lens_steer.models.load_config import LoadConfig, dtype_name
from lens_steer.models.padding import pad_rows
from lens_steer.models.site import ACT_FNS, MLPSite, describe_mlp

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

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

    Fast paths past the TransformerLens bridge, each taken only where a probe forward has shown it gives what the
    bridge gives (else the bridge), and each with a test that both paths give the same numbers:

    * :meth:`activations_forward`: the HF modules without the bridge's wrappers (:func:`bare_hf`) when no bridge
      hook is attached (tests/test_models.py ``test_direct_forward_is_proved_and_bit_identical``,
      tests/test_recorder.py ``test_direct_forward_records_what_the_bridge_records``).
    * :meth:`act_modules`: the neuron value read from the HF activation module, not ``act_fn`` recomputed on
      ``hook_pre`` (tests/test_recorder.py ``test_activation_module_path_equals_bridge_hooks``).
    * :meth:`masked_logits_ok`: logits of the scored positions only (tests/test_scoring.py
      ``test_masked_logits_equal_full_logits``); :meth:`no_logits`: none at all when only activations are wanted
      (tests/test_recorder.py ``test_recording_skips_the_unembedding``).

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
