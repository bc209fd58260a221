"""Where a plain HF causal LM (no bridge) computes what the bridge's hook points see, for code that runs the HF model
itself (the lm-evaluation-harness model, :mod:`lens_steer.harness`).

Per layer, with the bridge's names (:class:`~lens_steer.models.site.MLPSite`):

* ``hook_pre`` is the output of the gate projection (gated MLPs: ``gate_proj``; GPT-2: ``c_fc``; BLOOM:
  ``dense_h_to_4h``);
* ``hook_pre_linear`` is the output of ``up_proj`` (gated MLPs only);
* ``hook_post`` is the input of the down projection (``down_proj``, ``c_proj``, ``dense_4h_to_h``): ``act_fn(gate) *
  up``, or ``act_fn(pre)``;
* ``hook_resid_post`` is the output of the decoder layer.

The site is described from the HF config with the same rules as :func:`~lens_steer.models.site.describe_mlp`, so a
neuron set of the bridge fits the HF model (the shapes are checked against the run by the steerer). Tests:
``tests/test_harness.py`` (the steered HF forward equals the bridge's steered scores).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lens_steer.errors import LensSteerError
from lens_steer.models.site import _POSITIVE_IFF_POSITIVE, MLPSite

# (gate, up, down) attribute names of the HF MLP module, per family; up is None for non-gated MLPs.
_MLP_NAMES = (("gate_proj", "up_proj", "down_proj"), ("c_fc", None, "c_proj"), ("dense_h_to_4h", None, "dense_4h_to_h"))
_LAYER_LISTS = ("model.layers", "transformer.h", "model.decoder.layers", "gpt_neox.layers")


@dataclass(frozen=True)
class HFPoints:
    """The modules of a plain HF model whose inputs or outputs are the bridge's hook points, per layer."""

    site: MLPSite
    gate: list[torch.nn.Module]  # output: hook_pre
    up: list[torch.nn.Module | None]  # output: hook_pre_linear (gated MLPs)
    down: list[torch.nn.Module]  # input: hook_post
    layers: list[torch.nn.Module]  # output: hook_resid_post
    embed: torch.nn.Module  # called once per forward (positions of a KV-cached step)


def _get(obj: object, dotted: str) -> object | None:
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _width(module: torch.nn.Module) -> int:
    """Output width of a projection: ``nn.Linear.out_features`` or GPT-2's ``Conv1D.nf``."""
    width = getattr(module, "out_features", None) or getattr(module, "nf", None)
    if not isinstance(width, int):
        raise LensSteerError(f"cannot tell the width of {type(module).__name__}")
    return width


def hf_points(hf: torch.nn.Module) -> HFPoints:
    """The hook modules of a plain HF causal LM (Gemma-2/3, Qwen2, Llama, GPT-2, BLOOM); its site is the one the
    bridge describes.

    >>> from lens_steer.models import as_model, bare_hf
    >>> with bare_hf(bridge.original_model):  # the HF model without the bridge's wrappers
    ...     points = hf_points(bridge.original_model)
    >>> points.site == as_model(bridge).site, type(points.down[0]).__name__
    (True, 'Linear')
    """
    layers = next((list(found) for name in _LAYER_LISTS if (found := _get(hf, name)) is not None), None)
    if not layers:
        raise LensSteerError(f"{type(hf).__name__} is not supported: no decoder layers found (supported families:"
                             " Gemma-2/3, Qwen2/2.5, Llama, GPT-2, BLOOM)")
    gate, up, down = [], [], []
    for layer in layers:
        mlp = getattr(layer, "mlp", None)
        names = next((n for n in _MLP_NAMES if mlp is not None and isinstance(getattr(mlp, n[0], None),
                                                                                 torch.nn.Module)), None)
        if names is None:
            raise LensSteerError(f"{type(hf).__name__} is not supported: its MLP has no known projections")
        gate.append(getattr(mlp, names[0]))
        up.append(getattr(mlp, names[1]) if names[1] else None)
        down.append(getattr(mlp, names[2]))
    gated = up[0] is not None
    config = hf.config.get_text_config() if hasattr(hf.config, "get_text_config") else hf.config
    raw_act = next((str(v).lower() for key in ("hidden_activation", "hidden_act", "activation_function")
                    if isinstance(v := getattr(config, key, None), str)), "gelu_tanh" if "Bloom" in type(hf).__name__
                   else "")
    act = _POSITIVE_IFF_POSITIVE.get(raw_act)
    if act is None:
        raise LensSteerError(f"{type(hf).__name__} uses activation {raw_act!r}; lens_steer needs one of"
                             f" {sorted(_POSITIVE_IFF_POSITIVE)}")
    site = MLPSite(n_layers=len(layers), d_mlp=_width(gate[0]), gated=gated, act_fn=act,
                   hook_pre_linear="blocks.{l}.mlp.hook_pre_linear" if gated else None)
    return HFPoints(site, gate, up, down, layers, hf.get_input_embeddings())
