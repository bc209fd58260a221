"""What one MLP neuron writes straight to the logits: its output weight through the norms' scales and the unembedding.

The direct logit effect of neuron ``j`` of layer ``l`` is ``(W_out[l][j] * g_post * g_final) @ W_U``: the vector the
neuron adds to the residual stream per unit of its value (``W_out[l][j]``, the down projection's column), scaled
elementwise by the post-MLP norm where the block has one (Gemma-2/3's ``post_feedforward_layernorm``) and by the final
norm, then unembedded, minus its mean over the vocabulary: a shift of every logit by the same amount changes no
probability, and the unembedding gives every token a common component (on Gemma-3-270M a neuron's raw effects can
all share one sign). The norms' division by the residual's RMS is left out (it depends on the whole residual, not on
the neuron), so the numbers rank tokens; they are not the logit change of a forward pass.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from lens_steer.errors import check_neuron
from lens_steer.models.handle import ModelLike, as_model


def norm_scale(component: torch.nn.Module, d_model: int) -> Float[Tensor, " d_model"]:
    """The elementwise scale a norm module applies after normalising: a LayerNorm's ``weight``; for an RMSNorm
    (whose weight may be stored as ``w`` or ``1 + w``, Gemma) the module's own output on a vector of ones, whose RMS
    is 1, so the family's convention is the module's, never guessed here."""
    module = getattr(component, "original_component", None) or component
    if isinstance(module, torch.nn.LayerNorm):
        return module.weight.detach().float() if module.weight is not None else torch.ones(d_model)
    param = next(module.parameters(), None)
    ones = torch.ones(1, d_model, dtype=param.dtype if param is not None else torch.float32,
                      device=param.device if param is not None else "cpu")
    with torch.inference_mode():
        return module(ones)[0].detach().float().cpu()


def neuron_logit_effect(model: ModelLike, layer: int, neuron: int) -> Float[Tensor, " d_vocab"]:
    """The direct logit effect of neuron (``layer``, ``neuron``) on every vocabulary token (module docstring).

    >>> effect = neuron_logit_effect(bridge, 1, 5)
    >>> effect.shape[0] == bridge.cfg.d_vocab, bool(effect.isfinite().all()), abs(float(effect.mean())) < 1e-4
    (True, True, True)
    """
    model = as_model(model)
    site = model.site
    check_neuron(layer, neuron, site.n_layers, site.d_mlp)
    bridge = model.bridge
    block = bridge.blocks[layer]
    with torch.inference_mode():
        direction = block.mlp.W_out[neuron].detach().float().cpu()  # [d_model], TL orientation [d_mlp, d_model]
        d_model = direction.shape[0]
        post = getattr(block, "ln2_post", None)  # Gemma-2/3: the MLP output is normed before the residual add
        if post is not None:
            direction = direction * norm_scale(post, d_model)
        final = getattr(bridge, "ln_final", None)
        if final is not None:
            direction = direction * norm_scale(final, d_model)
        effect = direction @ bridge.W_U.detach().float().cpu()
        return effect - effect.mean()
