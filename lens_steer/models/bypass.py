"""The bridge bypasses :class:`~lens_steer.models.handle.Model` may take for speed, once a probe proves them equal.

* :func:`bare_hf` runs a bridge's HF module without the bridge's wrappers, given the position ids the bridge would
  derive (:func:`_bridge_positions`): the recorder's direct forward (``Model.activations_forward``).
* :func:`_find_act_modules` finds each layer's HF activation module, whose output is the neuron value itself (no
  ``act_fn`` recomputed on ``hook_pre``; ``Model.act_modules``).

The probes that decide whether they are used live on the handle; the tests that show both paths equal are named
in its docstring.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from jaxtyping import Int
from torch import Tensor

from lens_steer.errors import LensSteerError
from lens_steer.models.site import MLPSite

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


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
    from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent  # deferred: transformer_lens (seconds)

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
