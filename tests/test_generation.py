"""Greedy generation: batched per-row steering equals one prompt at a time, and matches TransformerLens."""

from __future__ import annotations

import pytest

from lens_steer.errors import LensSteerError
from lens_steer.generation import greedy_generate
from lens_steer.neurons import NeuronSet
from lens_steer.steer import Intervention, Steerer

PROMPTS = ["The small cat", "Le petit chat dort sur", "Маленький кот", "小猫"]


@pytest.fixture
def steerer(tiny_models):
    model = tiny_models["gemma2"]
    d = model.cfg.d_mlp
    neurons = NeuronSet(["en", "fr"], {"en": [list(range(0, d, 2))] * 2, "fr": [list(range(1, d, 2))] * 2}, 2, d)
    return Steerer(model, neurons, None)


def test_unsteered_equals_transformer_lens_greedy(tiny_models):
    model = tiny_models["gemma2"]
    for prompt in PROMPTS[:2]:
        ours = greedy_generate(model, [prompt], max_new_tokens=8, stop_at_eos=False)[0]
        theirs = model.generate(prompt, max_new_tokens=8, do_sample=False, verbose=False, stop_at_eos=False)
        assert ours and theirs == prompt + ours


def test_batched_per_row_equals_single(tiny_models, steerer):
    model = tiny_models["gemma2"]
    ivs = [Intervention("fr", "set:6"), None, Intervention("en", "scale:4"), Intervention("fr", "zero")]
    batched = greedy_generate(model, PROMPTS, max_new_tokens=8, steerer=steerer, interventions=ivs, batch_size=4)
    for prompt, iv, text in zip(PROMPTS, ivs, batched):
        assert greedy_generate(model, [prompt], max_new_tokens=8, steerer=steerer, interventions=[iv]) == [text]
    plain = greedy_generate(model, PROMPTS, max_new_tokens=8)
    assert batched[1] == plain[1] and batched[0] != plain[0]


def test_bad_arguments(tiny_models, steerer):
    with pytest.raises(LensSteerError, match="max-new-tokens"):
        greedy_generate(tiny_models["gemma2"], ["x"], max_new_tokens=0)
    with pytest.raises(LensSteerError, match="one entry per prompt"):
        greedy_generate(tiny_models["gemma2"], ["x", "y"], steerer=steerer, interventions=[None])
