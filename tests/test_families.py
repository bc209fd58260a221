"""The paper's model families, as tiny random checkpoints built offline (helpers.FAMILY_ARCHS): Qwen2.5 (tied
embeddings), SeaLLMs-v3 (a Qwen2 with untied embeddings), Gemma-2 (soft-capping, sliding window), Gemma-3 text
(local/global RoPE, sliding window) and Llama-3 (llama3 RoPE scaling).

For each family: identification is batch- and padding-invariant and counts what HF's act_fn outputs; steering equals
patching HF's act_fn output directly; LSS rows equal a direct no-cache computation; KV-cached greedy generation
equals a no-cache loop. The sliding windows (4 tokens) are shorter than every sequence used here.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

import helpers
from helpers import FAMILY_ARCHS, FAMILY_SLIDING_WINDOW, SENTENCES, act_module
from lens_steer.cloze import Fact
from lens_steer.generation import greedy_generate
from lens_steer.identification import lape
from lens_steer.lss import LSS_COLUMNS, run_lss
from lens_steer.neurons import NeuronSet
from lens_steer.recorder import RecordConfig, record, tokenise
from lens_steer.steer import Intervention, Steerer, parse_factor, steering

LANGS = ("en", "fr", "ru", "zh")
TEXTS = {code: SENTENCES[code] for code in LANGS}
SLIDING = ("gemma2-soft", "gemma3")
TOP_RATE = 0.2  # 2-3 layers x 64 neurons: the paper's 1% would pick one or two neurons
TRAITS = {  # what each stand-in must share with its real model (read back from the loaded HF config)
    "qwen2.5": dict(model_type="qwen2", tie_word_embeddings=True, rms_norm_eps=1e-6, hidden_act="silu"),
    "seallms3": dict(model_type="qwen2", tie_word_embeddings=False, rms_norm_eps=1e-6, hidden_act="silu"),
    "gemma2-soft": dict(model_type="gemma2", tie_word_embeddings=True, attn_logit_softcapping=50.0,
                        final_logit_softcapping=30.0, hidden_activation="gelu_pytorch_tanh", head_dim=8,
                        query_pre_attn_scalar=8, sliding_window=FAMILY_SLIDING_WINDOW),
    "gemma3": dict(model_type="gemma3_text", tie_word_embeddings=True, hidden_activation="gelu_pytorch_tanh",
                   head_dim=8, query_pre_attn_scalar=8, sliding_window=FAMILY_SLIDING_WINDOW),
    "llama3": dict(model_type="llama", tie_word_embeddings=False, hidden_act="silu"),
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny matrices: one intra-op thread is fastest, and spinning threads slow the file ~6x on a busy 2-core CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=FAMILY_ARCHS)
def family(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def family_stats(family_models):
    """Statistics of every family on the four test languages (default batching)."""
    return {name: record(m, TEXTS, config=RecordConfig(min_sentence_tokens=3), progress=False)
            for name, m in family_models.items()}


def random_neurons(model, languages=LANGS, seed=0, per_layer=6) -> NeuronSet:
    """A fixed random neuron set (6 per layer and language): large enough that steering visibly moves the logits
    of a tiny model, which a LAPE set of one or two neurons might not."""
    g = torch.Generator().manual_seed(seed)
    layers, d = model.cfg.n_layers, model.cfg.d_mlp
    neurons = {c: [sorted(torch.randperm(d, generator=g)[:per_layer].tolist()) for _ in range(layers)]
               for c in languages}
    return NeuronSet(list(languages), neurons, layers, d)


# ---- the stand-ins are what they claim to be ----------------------------------------------------------------------

def test_family_checkpoint_keeps_the_family_traits(family, family_models):
    """The saved-and-reloaded checkpoint keeps the real family's settings (tying, capping, windows, RoPE)."""
    model = family_models[family]
    hf = model.original_model
    cfg = hf.config
    for key, want in TRAITS[family].items():
        assert getattr(cfg, key) == want, (family, key, getattr(cfg, key))
    tied = hf.lm_head.weight.data_ptr() == hf.get_input_embeddings().weight.data_ptr()
    assert tied == TRAITS[family]["tie_word_embeddings"]
    rope = cfg.rope_parameters
    if family in ("qwen2.5", "seallms3"):
        assert rope["rope_theta"] == 1e6
    elif family == "llama3":
        assert rope["rope_type"] == "llama3" and rope["rope_theta"] == 500_000.0 and rope["factor"] == 8.0
    elif family == "gemma3":
        assert rope["sliding_attention"]["rope_theta"] != rope["full_attention"]["rope_theta"]
    if family in SLIDING:
        assert {"sliding_attention", "full_attention"} <= set(cfg.layer_types)
    assert (model.cfg.n_layers, model.cfg.d_mlp) == (cfg.num_hidden_layers, cfg.intermediate_size)


@pytest.mark.parametrize("name", SLIDING)
def test_the_sliding_window_shapes_the_logits(name, family_models, family_dirs):
    """The window is really shorter than the test sequences: without it (a window of 1000) the logits of a
    12-token sequence change, while a sequence that fits in the window is unchanged."""
    from transformers import AutoModelForCausalLM

    model = family_models[name]
    wide = AutoModelForCausalLM.from_pretrained(family_dirs[name], sliding_window=1000, attn_implementation="eager")
    wide.eval()
    long_ids = torch.tensor([[1] + list(range(40, 51))])
    short_ids = long_ids[:, :FAMILY_SLIDING_WINDOW]
    with torch.inference_mode():
        torch.testing.assert_close(model(short_ids), wide(short_ids).logits, rtol=1e-5, atol=1e-5)
        got, without = model(long_ids), wide(long_ids).logits
    torch.testing.assert_close(got[:, :FAMILY_SLIDING_WINDOW], without[:, :FAMILY_SLIDING_WINDOW], rtol=1e-5,
                               atol=1e-5)
    assert not torch.allclose(got[:, FAMILY_SLIDING_WINDOW:], without[:, FAMILY_SLIDING_WINDOW:], atol=1e-4)


# ---- a. identification --------------------------------------------------------------------------------------------

def test_identify_is_finite_and_batch_and_padding_invariant(family, family_models):
    """Recording on en/fr/ru/zh: the counted tokens are the sentences' tokens (BOS excluded), every statistic is
    finite, and batch size 1 vs 4 and right vs left padding give exactly the same counts (sums to float tolerance)
    and so the same LAPE neurons, of which there are some."""
    model = family_models[family]
    tok = model.tokenizer

    def rec(batch_size, side):
        return record(model, TEXTS, config=RecordConfig(min_sentence_tokens=3, batch_size=batch_size,
                                                        padding_side=side), progress=False)

    ref = rec(1, "right")
    layers, d = model.cfg.n_layers, model.cfg.d_mlp
    n_expected = [sum(len(tok(s, add_special_tokens=False)["input_ids"]) for s in TEXTS[c]) for c in LANGS]
    assert ref.n_tokens.tolist() == n_expected
    assert ref.n_sentences.tolist() == [len(TEXTS[c]) for c in LANGS]
    assert ref.over_zero.shape == (layers, d, len(LANGS))
    assert ref.over_zero.sum() > 0 and bool((ref.over_zero <= ref.n_tokens).all())
    for name in ("act_sum", "act_sqsum", "sent_means"):
        assert torch.isfinite(getattr(ref, name)).all(), name
    assert torch.isfinite(ref.sentence_stat("max")).all() and torch.isfinite(ref.mean()).all()
    ref_neurons = lape(ref, top_rate=TOP_RATE)
    assert sum(ref_neurons.totals().values()) > 0
    assert all(len(per_layer) == layers and all(0 <= j < d for idx in per_layer for j in idx)
               for per_layer in ref_neurons.neurons.values())
    for batch_size, side in [(4, "left"), (4, "right")]:
        other = rec(batch_size, side)
        assert torch.equal(other.over_zero, ref.over_zero), (batch_size, side)
        assert torch.equal(other.n_tokens, ref.n_tokens)
        torch.testing.assert_close(other.act_sum, ref.act_sum, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(other.act_sqsum, ref.act_sqsum, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(other.sent_means, ref.sent_means, rtol=1e-4, atol=1e-5)
        assert lape(other, top_rate=TOP_RATE).neurons == ref_neurons.neurons


def test_recorded_counts_equal_hf_act_fn(family, family_models, family_stats):
    """over_zero and act_sum of one language equal what HF's own act_fn outputs, counted by hand one sentence at a
    time (no padding, BOS excluded)."""
    model = family_models[family]
    layers, d = model.cfg.n_layers, model.cfg.d_mlp
    counts = torch.zeros(layers, d, dtype=torch.long)
    sums = torch.zeros(layers, d, dtype=torch.float64)
    skip = 1 if model.bos is not None else 0
    handles = []
    for layer in range(layers):
        def hook(_m, _inp, out, layer=layer):
            counts[layer] += (out[0, skip:] > 0).sum(0)
            sums[layer] += out[0, skip:].double().sum(0)

        handles.append(act_module(model, layer).register_forward_hook(hook))
    try:
        with torch.inference_mode():
            for ids in tokenise(model, TEXTS["ru"], RecordConfig()).ids:
                model.original_model(torch.tensor([ids]))
    finally:
        for handle in handles:
            handle.remove()
    stats = family_stats[family]
    k = stats.languages.index("ru")
    assert counts.sum() > 0
    assert torch.equal(stats.over_zero[..., k], counts)
    torch.testing.assert_close(stats.act_sum[k], sums, rtol=1e-4, atol=1e-4)


# ---- b. steering --------------------------------------------------------------------------------------------------

# Row 0 left-padded (pad id 0) to the 9 positions of row 1; both are longer than the sliding window.
PADDED = torch.tensor([[0, 0, 1, 40, 41, 42, 43, 44, 45], [1, 50, 51, 52, 53, 54, 55, 56, 57]])
PADDED_MASK = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1], [1] * 9])


def hf_patched_logits(model, neurons, target, fn, tokens=PADDED, mask=PADDED_MASK):
    return helpers.hf_patched_logits(model, neurons, target, lambda act, layer, idx, _full: fn(act, layer, idx),
                                     tokens, mask)


@pytest.mark.parametrize("factor", ["p_max", "scale:3", "zero"])
def test_steering_equals_direct_hf_patching(family, family_models, family_stats, factor):
    """Amplifying fr's neurons (p_max, scale:3) or silencing them (zero) through the bridge hooks gives the logits
    of patching HF's act_fn output directly, on a left-padded batch longer than any sliding window; and the
    logits do change."""
    model, stats = family_models[family], family_stats[family]
    neurons = random_neurons(model)
    f = parse_factor(factor)
    p_max = stats.sentence_stat("max")[stats.languages.index("fr")]

    def direct(act, layer, idx):
        if f.kind == "stat":
            return torch.zeros_like(act) + p_max[layer, idx]
        if f.kind == "scale":
            return act * f.value
        return torch.zeros_like(act)

    expected = hf_patched_logits(model, neurons, "fr", direct)
    with torch.inference_mode():
        with steering(model, Intervention("fr", factor), neurons, stats):
            got = model(PADDED, attention_mask=PADDED_MASK)
        base = model(PADDED, attention_mask=PADDED_MASK)
    real = PADDED_MASK.bool()
    assert torch.isfinite(got[real]).all()
    torch.testing.assert_close(got[real], expected[real], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(got[real], base[real], atol=1e-3)  # the intervention did something


# ---- c. LSS -------------------------------------------------------------------------------------------------------

LSS_LANGS = ["en", "fr", "ru"]
WORDS = {"en": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"],
         "fr": ["lundi", "mardi", "mercredi", "jeudi", "vendredi"],
         "ru": ["понедельник", "вторник", "среда", "четверг", "пятница"]}
PROMPTS = {"en": "After {} comes", "fr": "Après {} vient", "ru": "После {} идёт"}


def day_facts() -> dict[str, list[Fact]]:
    return {s: [Fact(f"day:{i}", "day", {s: PROMPTS[s].format(WORDS[s][i])},
                     {u: WORDS[u][i + 1] for u in LSS_LANGS}) for i in range(4)] for s in LSS_LANGS}


def direct_logp(model, prompt: str, continuation: str, iv, neurons, stats) -> float:
    """log p(continuation | prompt) from one unpadded, uncached forward of the jointly tokenised text: every token
    holding a character of the continuation is scored."""
    tok = model.tokenizer
    enc = tok(prompt + continuation, add_special_tokens=False, return_offsets_mapping=True)
    lead = [model.bos] if model.bos is not None else []
    ids = lead + list(enc["input_ids"])
    ends = [0] * len(lead) + [end for _, end in enc["offset_mapping"]]
    first = next(i for i, end in enumerate(ends) if end > len(prompt))
    assert first >= 1 and len(ids) > FAMILY_SLIDING_WINDOW
    ctx = steering(model, iv, neurons, stats) if iv is not None else contextlib.nullcontext()
    with torch.inference_mode(), ctx:
        logp = model(torch.tensor([ids]))[0].double().log_softmax(-1)
    return float(sum(logp[i - 1, ids[i]] for i in range(first, len(ids))))


def test_lss_rows_are_well_formed_and_equal_a_direct_computation(family, family_models, family_stats):
    """run_lss with p_max on en/fr/ru day facts: one finite, well-formed row per (source, target != source), and the
    (en -> fr) row's LSS, mean shift, target gain and source damage equal those computed from direct no-cache
    forwards of each prompt + answer."""
    model, stats = family_models[family], family_stats[family]
    neurons = random_neurons(model, LSS_LANGS)
    facts = day_facts()
    rows = run_lss(model, neurons, stats, facts, LSS_LANGS, [parse_factor("p_max")], progress=False)
    assert sorted((r["source"], r["target"]) for r in rows) == sorted(
        (s, t) for s in LSS_LANGS for t in LSS_LANGS if s != t)
    for r in rows:
        assert set(LSS_COLUMNS) <= set(r), set(LSS_COLUMNS) - set(r)
        assert r["factor"] == "p_max" and r["layers"] == "all" and r["note"] == ""
        assert r["n_facts"] == 4 and 0 <= r["n_ties"] <= 4
        for key in ("lss", "lss_nontie", "mean_shift", "ci_low", "ci_high", "target_gain", "source_damage",
                    "target_wins", "target_wins_base", "chance", "specificity"):
            assert r[key] == r[key] and abs(r[key]) != float("inf"), (key, r[key])
        assert 0.0 <= r["lss"] <= 1.0 and r["ci_low"] <= r["mean_shift"] <= r["ci_high"]
        assert r["chance"] == pytest.approx(1 / 3)

    row = next(r for r in rows if (r["source"], r["target"]) == ("en", "fr"))
    iv = Intervention("fr", "p_max")
    shift, gain, damage = [], [], []
    for fact in facts["en"]:
        prompt = fact.prompt["en"]
        cont_s, cont_t = fact.continuation("en", "en"), fact.continuation("en", "fr")
        base_s, base_t = (direct_logp(model, prompt, c, None, neurons, stats) for c in (cont_s, cont_t))
        int_s, int_t = (direct_logp(model, prompt, c, iv, neurons, stats) for c in (cont_s, cont_t))
        shift.append((int_t - int_s) - (base_t - base_s))
        gain.append(int_t - base_t)
        damage.append(int_s - base_s)
    shift_t = torch.tensor(shift)
    assert shift_t.abs().max() > 1e-3  # the intervention moved the answers
    assert row["mean_shift"] == pytest.approx(float(shift_t.mean()), abs=1e-4)
    assert row["target_gain"] == pytest.approx(sum(gain) / 4, abs=1e-4)
    assert row["source_damage"] == pytest.approx(sum(damage) / 4, abs=1e-4)
    assert row["lss"] == pytest.approx(float((shift_t > 0).double().mean()))


# ---- d. generation ------------------------------------------------------------------------------------------------

GEN_PROMPTS = ["The small cat sleeps", "Le petit chat dort sur"]  # 12 and 10 tokens: left padding, past the window


def no_cache_greedy(model, prompt: str, iv, neurons, stats, n: int) -> tuple[list[int], list[int], torch.Tensor]:
    """Greedy decoding by hand: each step runs the whole sequence (no KV cache, no padding) under the steering
    context, with the prompt end at the prompt's length, and takes the argmax of the last logits.
    Returns (prompt ids, generated ids, each step's last logits [n, vocab])."""
    tok = model.tokenizer
    prompt_ids = ([model.bos] if model.bos is not None else []) + tok(prompt, add_special_tokens=False)["input_ids"]
    ids, steps = list(prompt_ids), []
    for _ in range(n):
        ctx = (steering(model, iv, neurons, stats, prompt_end=len(prompt_ids)) if iv is not None
               else contextlib.nullcontext())
        with torch.inference_mode(), ctx:
            last = model(torch.tensor([ids]))[0, -1]
        steps.append(last)
        ids.append(int(last.argmax()))
    return prompt_ids, ids[len(prompt_ids):], torch.stack(steps)


@contextlib.contextmanager
def last_logits_spy(model):
    """Collect the last-position logits [batch, vocab] of every forward of the model inside the block."""
    seen: list[torch.Tensor] = []

    def hook(_m, _args, out):
        logits = out[0] if isinstance(out, tuple) else out
        seen.append(logits[:, -1].detach().clone())

    handle = model.bridge.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


@pytest.mark.parametrize("positions", ["all", "generated"])
def test_cached_greedy_generation_equals_a_no_cache_loop(family, family_models, family_stats, positions):
    """greedy_generate (left-padded batch, KV cache, per-row steering: row 0 plain, row 1 fr at p_max) gives the
    tokens, and at every step the next-token logits, of a hand-written loop that reruns the full unpadded sequence
    each step; the prompts are longer than the sliding window. Row 1 is really steered: its logits differ from the
    plain model's (so a generation that dropped the steering would fail, even where tiny models keep the argmax)."""
    model, stats = family_models[family], family_stats[family]
    neurons = random_neurons(model)
    steer_iv = Intervention("fr", "p_max", positions=positions)
    ivs = [None, steer_iv]
    with last_logits_spy(model) as seen:
        got = greedy_generate(model, GEN_PROMPTS, max_new_tokens=6, steerer=Steerer(model, neurons, stats),
                              interventions=ivs, stop_at_eos=False)
    tok = model.tokenizer
    expected = [no_cache_greedy(model, p, iv, neurons, stats, 6) for p, iv in zip(GEN_PROMPTS, ivs)]
    for (prompt_ids, new, _), p in zip(expected, GEN_PROMPTS):
        assert len(prompt_ids) > FAMILY_SLIDING_WINDOW and len(new) == 6, p
    assert got == [tok.decode(new, skip_special_tokens=True) for _, new, _ in expected]
    assert len(seen) == 6  # the prompt pass and five cached one-token steps
    cached = torch.stack(seen, dim=1)  # [row, step, vocab]
    order = sorted(range(len(GEN_PROMPTS)), key=lambda i: len(expected[i][0]))  # greedy_generate's row order
    for row, i in enumerate(order):
        torch.testing.assert_close(cached[row], expected[i][2], rtol=1e-4, atol=1e-4)
    _, new, steered = expected[1]
    _, plain_new, plain = no_cache_greedy(model, GEN_PROMPTS[1], None, neurons, stats, 6)
    # Row 1 is steered: other tokens or, where a tiny model keeps the argmax, other logits once the sequence holds a
    # steered position (step 0 of "generated" sees the prompt only).
    assert new != plain_new or not torch.allclose(steered[1:], plain[1:], atol=1e-4)
