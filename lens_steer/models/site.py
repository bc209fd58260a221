"""Where the MLP neurons of a model live (:class:`MLPSite`: hook names, width, gating) and what they mean.

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

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from lens_steer.errors import LensSteerError

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

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
