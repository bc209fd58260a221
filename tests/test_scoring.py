"""Continuation scoring: equal to a naive full-forward computation, batch-size invariant, span-exact."""

from __future__ import annotations

import pytest
import torch

from helpers import logits_to_keep_spy
from lens_steer.errors import LensSteerError
from lens_steer.neurons import NeuronSet
from lens_steer.scoring import score
from lens_steer.steer import Intervention, Steerer

ARCHS = ("qwen2", "gemma2", "llama", "gpt2")  # as conftest.py

PROMPTS = ["The small cat sleeps on the", "Le petit chat dort sur le", "Маленький кот спит", "小猫今天睡在",
           "A river runs", "We walked home after the long"]
ANSWERS = [[" mat", " warm mat today"], [" tapis", " chaud"], [" на", " коврике."], ["温暖", "的垫子上。"],
           [" past", " past the old mill"], [" rainy evening", "ish"]]


def naive(model, prompt: str, answer: str, hook_rows=None) -> float:
    """One joint tokenisation, one full forward with full logits, sum over tokens that hold answer characters."""
    tok = model.tokenizer
    enc = tok(prompt + answer, add_special_tokens=False, return_offsets_mapping=True)
    bos = [tok.bos_token_id] if model.cfg.default_prepend_bos else []
    ids = torch.tensor([bos + enc["input_ids"]])
    logp = torch.log_softmax(model(ids).float(), dim=-1)[0]
    total = 0.0
    for i, (_, end) in enumerate(enc["offset_mapping"]):
        j = i + len(bos)
        if end > len(prompt):
            total += float(logp[j - 1, ids[0, j]])
    return total


def test_scores_equal_naive_computation(tiny_model):
    got = score(tiny_model, PROMPTS, ANSWERS, batch_size=4)
    with torch.inference_mode():
        for i, (p, answers) in enumerate(zip(PROMPTS, ANSWERS)):
            for a, ans in enumerate(answers):
                assert got.logp[i, a].item() == pytest.approx(naive(tiny_model, p, ans), abs=1e-4)
    assert (got.n_tokens >= 1).all()


def test_batch_size_one_equals_thirty_two(tiny_models):
    model = tiny_models["gemma2"]
    prompts, answers = PROMPTS * 6, ANSWERS * 6
    one = score(model, prompts, answers, batch_size=1)
    many = score(model, prompts, answers, batch_size=32)
    torch.testing.assert_close(one.logp, many.logp, rtol=1e-5, atol=1e-4)
    assert torch.equal(one.n_tokens, many.n_tokens)


def test_token_merging_across_the_boundary_is_scored(tiny_models):
    """'ish' merges with the previous word in a BPE: the merged token must be scored, exactly once."""
    model = tiny_models["qwen2"]
    prompt, answer = "The cat sat on the m", "at"
    tok = model.tokenizer
    joint = tok(prompt + answer, add_special_tokens=False)["input_ids"]
    alone = tok(prompt, add_special_tokens=False)["input_ids"]
    assert joint[: len(alone)] != alone or len(joint) <= len(alone)  # the tokenizer really merges here
    got = score(model, [prompt], [[answer, " dog"]])
    with torch.inference_mode():
        assert got.logp[0, 0].item() == pytest.approx(naive(model, prompt, answer), abs=1e-4)


def test_per_row_interventions_in_scoring_equal_single_runs(tiny_models):
    model = tiny_models["llama"]
    d = model.cfg.d_mlp
    neurons = NeuronSet(["en", "fr"], {"en": [list(range(0, d, 3))] * 2, "fr": [list(range(1, d, 3))] * 2}, 2, d)
    steerer = Steerer(model, neurons, None)
    rows = [Intervention("fr", "set:3"), None, Intervention("en", "scale:5"), Intervention("fr", "zero"),
            None, Intervention("en", "add:1")]
    batched = score(model, PROMPTS, ANSWERS, steerer=steerer, interventions=rows, batch_size=6)
    for i, iv in enumerate(rows):
        single = score(model, PROMPTS[i : i + 1], ANSWERS[i : i + 1], steerer=steerer, interventions=[iv])
        torch.testing.assert_close(batched.logp[i], single.logp[0], rtol=1e-5, atol=1e-4)
    plain = score(model, PROMPTS, ANSWERS)
    assert not torch.allclose(batched.logp[0], plain.logp[0])
    torch.testing.assert_close(batched.logp[1], plain.logp[1], rtol=1e-5, atol=1e-4)


def test_bad_inputs():
    with pytest.raises(LensSteerError, match="empty answer"):
        from lens_steer.scoring import _encode

        class Tok:
            def __call__(self, text, **kw):
                return {"input_ids": [1] * len(text), "offset_mapping": [(i, i + 1) for i in range(len(text))]}

        _encode(Tok(), None, "abc", [""])


@pytest.mark.parametrize("arch", ARCHS)
def test_masked_logits_equal_full_logits(arch, tiny_models):
    """Projecting only the scored positions (boolean logits_to_keep) gives the full-logits numbers on every HF head
    (Gemma-2's soft-capping included)."""
    model = tiny_models[arch]
    prompts = ["The small cat", "Le petit chat dort sur", "A"]
    answers = [[" sleeps on the mat", " runs", " x y z w"], [" le tapis chaud", " ici", " b"],
               [" river runs past", " c", " d e"]]
    model._masked_logits = False  # the handle's probe result, forced: full logits
    full = score(model, prompts, answers, batch_size=2)
    model._masked_logits = None  # probe again
    fast = score(model, prompts, answers, batch_size=2)
    assert model._masked_logits in (True, False)
    torch.testing.assert_close(fast.logp, full.logp, rtol=1e-4, atol=1e-4)
    assert torch.equal(fast.n_tokens, full.n_tokens)


def test_masked_logits_are_used_on_hf_heads(tiny_models):
    """The HF models project only what they score, and never call the full-logits path."""
    llama = tiny_models["llama"]
    llama._masked_logits = None  # not probed yet
    with logits_to_keep_spy(llama) as seen:
        score(llama, ["The small cat"], [[" sleeps on the mat", " x"]])
    assert llama._masked_logits is True
    masks = [k for k in seen if isinstance(k, torch.Tensor) and k.dtype == torch.bool and k.shape == (2, k.shape[1])]
    assert masks, f"no boolean logits_to_keep in the continuation pass: {seen}"
    assert None not in seen[-2:], f"a scoring pass asked for full logits: {seen}"


@pytest.mark.parametrize("arch", ["qwen2", "gemma2"])
def test_test_time_factors_score_prompt_and_answer_in_one_forward(tiny_models, arch):
    """testmax/p10 rows bypass the shared prompt cache: each (prompt, answer) is scored in one forward whose statistic
    covers the whole row, so the result equals steering one unpadded forward of prompt + answer by hand."""
    from lens_steer.neurons import NeuronSet
    from lens_steer.scoring import _encode
    from lens_steer.steer import Intervention, Steerer, steering

    model = tiny_models[arch]
    layers, d = model.cfg.n_layers, model.cfg.d_mlp
    neurons = NeuronSet(["fr"], {"fr": [list(range(0, d, 5))] * layers}, layers, d)
    prompts, answers = ["The small cat", "Une rivière passe"], [[" sleeps", " mill today"], [" près", " du vieux"]]
    iv = Intervention("fr", "p10")
    got = score(model, prompts, answers, steerer=Steerer(model, neurons), interventions=[iv, iv], batch_size=2)
    bos = model.tokenizer.bos_token_id if model.cfg.default_prepend_bos else None
    for p, (prompt, ans) in enumerate(zip(prompts, answers)):
        enc = _encode(model.tokenizer, bos, prompt, ans)
        for a, (cont, first) in enumerate(zip(enc.conts, enc.first_scored)):
            seq = torch.tensor([enc.prefix + cont])
            with torch.inference_mode(), steering(model, iv, neurons):
                lp = torch.log_softmax(model(seq)[0].float(), dim=-1)
            start = len(enc.prefix) + first
            want = sum(float(lp[j - 1, seq[0, j]]) for j in range(start, seq.shape[1]))
            assert got.logp[p, a].item() == pytest.approx(want, abs=1e-4)
    cached = score(model, prompts, answers, steerer=Steerer(model, neurons),
                   interventions=[Intervention("fr", "set:0.3")] * 2, batch_size=2)
    assert got.n_tokens.tolist() == cached.n_tokens.tolist()
