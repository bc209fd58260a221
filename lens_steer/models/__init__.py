"""Loading models as TransformerLens 4 bridges, the embedded default, and where their MLP neurons live.

This package is the only place that knows how a model is loaded and what lens_steer derives from it (BOS, padding,
device, dtype, the MLP site, the capability probes); everything downstream takes a :class:`Model` handle, or a
bare bridge that :func:`as_model` wraps once. One idea per module:

* :mod:`~lens_steer.models.site`: :class:`MLPSite`, where the neurons live and what they mean; activation functions.
* :mod:`~lens_steer.models.handle`: the :class:`Model` handle, :func:`as_model`, the capability probes.
* :mod:`~lens_steer.models.bypass`: the bridge bypasses the handle takes for speed once proved equal (:func:`bare_hf`).
* :mod:`~lens_steer.models.hf_points`: where a plain HF model (no bridge) computes the bridge's hook points.
* :mod:`~lens_steer.models.padding`: :func:`pad_rows`.
* :mod:`~lens_steer.models.load_config`: :class:`LoadConfig` (device, device map, dtype, attention), checked; its
  fields declare the placement options of the CLI, so it imports no torch until a check asks about devices.
* :mod:`~lens_steer.models.loading`: :func:`load_model` and the checks that refuse a model name that cannot load.
* :mod:`~lens_steer.models.unembed`: :func:`neuron_logit_effect`, what a neuron writes straight to the logits.
* :mod:`~lens_steer.models.embedded`: the embedded Gemma-3-270M (:data:`EMBEDDED_MODEL`), converted once; no torch.

The names below are imported from their module on first use (PEP 562), so that importing
``lens_steer.models.embedded`` or ``lens_steer.models.load_config`` (the CLI parser does, for ``--help``) does not
import torch.

>>> from lens_steer.models import EMBEDDED_MODEL, load_model
>>> EMBEDDED_MODEL
'gemma-3-270m'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports each on first use
    from lens_steer.models.bypass import bare_hf
    from lens_steer.models.embedded import (EMBEDDED_HUB_ID, EMBEDDED_MODEL, EMBEDDED_PACKAGE, embedded_model_dir,
                                            ensure_embedded_model)
    from lens_steer.models.handle import Model, ModelLike, as_model
    from lens_steer.models.hf_points import HFPoints, hf_points
    from lens_steer.models.load_config import ATTENTIONS, LoadConfig, check_device, dtype_name, resolve_dtype
    from lens_steer.models.loading import check_model_spec, has_chat_template, hub_cached, load_model, offline
    from lens_steer.models.padding import pad_rows
    from lens_steer.models.site import ACT_FNS, MLPSite, describe_mlp
    from lens_steer.models.unembed import neuron_logit_effect

_LAZY = {
    "bare_hf": "bypass",
    **dict.fromkeys(("EMBEDDED_HUB_ID", "EMBEDDED_MODEL", "EMBEDDED_PACKAGE", "embedded_model_dir",
                     "ensure_embedded_model"), "embedded"),
    **dict.fromkeys(("Model", "ModelLike", "as_model"), "handle"),
    **dict.fromkeys(("HFPoints", "hf_points"), "hf_points"),
    **dict.fromkeys(("ATTENTIONS", "LoadConfig", "check_device", "dtype_name", "resolve_dtype"), "load_config"),
    **dict.fromkeys(("check_model_spec", "has_chat_template", "hub_cached", "load_model", "offline"), "loading"),
    "pad_rows": "padding",
    **dict.fromkeys(("ACT_FNS", "MLPSite", "describe_mlp"), "site"),
    "neuron_logit_effect": "unembed",
}


def __getattr__(name: str) -> Any:  # PEP 562 lazy re-exports
    if name in _LAZY:
        import importlib  # deferred: lazy API (PEP 562), only when a name is first used

        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value  # once: later lookups do not come back here
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = list(_LAZY)
