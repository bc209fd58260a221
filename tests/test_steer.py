"""Interventions: equal to patching the HF activation directly, per-row batching, hook hygiene, generation."""

from __future__ import annotations

import pytest
import torch

import helpers
from helpers import SENTENCES
from lens_steer.errors import LensSteerError
from lens_steer.neurons import NeuronSet
from lens_steer.recorder import RecordConfig, record
from lens_steer.steer import Intervention, Steerer, parse_factor, steering

LANGS = ("en", "fr", "ru")


@pytest.fixture(scope="module")
def stats_by_arch(tiny_models):
    return {arch: record(m, {c: SENTENCES[c] for c in LANGS}, config=RecordConfig(min_sentence_tokens=3),
                         progress=False) for arch, m in tiny_models.items()}


def neuron_set(model, seed=0) -> NeuronSet:
    g = torch.Generator().manual_seed(seed)
    layers, d = model.cfg.n_layers, model.cfg.d_mlp
    neurons = {c: [torch.randperm(d, generator=g)[:6].tolist() for _ in range(layers)] for c in LANGS}
    return NeuronSet(list(LANGS), neurons, layers, d)


TOKENS = torch.tensor([[1, 40, 41, 42, 43, 44, 45], [1, 50, 51, 52, 53, 54, 55]])


def hf_patched_logits(model, neurons, target, fn, tokens=TOKENS, mask=None):
    return helpers.hf_patched_logits(model, neurons, target, fn, tokens, mask)


@pytest.mark.parametrize("factor", ["p_max", "p_median*2", "mean", "scale:3", "add:0.5", "set:1.5", "zero",
                                    "add:mean*2", "diffmean*3"])
def test_intervention_equals_direct_hf_patching(tiny_model, stats_by_arch, factor):
    stats = next(s for a, s in stats_by_arch.items() if s.manifest["model"]["model"].endswith(
        tiny_model.identity["model"].rsplit("/", 1)[-1]))
    neurons = neuron_set(tiny_model)
    f = parse_factor(factor)
    k = stats.languages.index("fr")
    table = {"max": stats.sentence_stat("max"), "median": stats.sentence_stat("median"), "mean": stats.mean()}
    means = stats.mean()
    others = torch.stack([means[j] for j in range(len(stats.languages)) if j != k]).mean(0)

    def direct(act, layer, idx, _full):
        if f.kind == "addmean":  # language arithmetics: act += a * mean_t
            return act + f.value * means[k, layer, idx]
        if f.kind == "diffmean":  # DiffMean in neuron space: act += a * (mean_t - mean of the others)
            return act + f.value * (means[k, layer, idx] - others[layer, idx])
        if f.kind == "stat":
            return torch.zeros_like(act) + f.value * table[f.stat][k, layer, idx]
        if f.kind == "scale":
            return act * f.value
        if f.kind == "add":
            return act + f.value
        if f.kind == "set":
            return torch.full_like(act, f.value)
        return torch.zeros_like(act)

    expected = hf_patched_logits(tiny_model, neurons, "fr", direct)
    with torch.inference_mode(), steering(tiny_model, Intervention("fr", factor), neurons, stats):
        got = tiny_model(TOKENS)
    baseline = tiny_model(TOKENS)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(got, baseline, atol=1e-4)  # the intervention did something


def test_per_row_interventions_equal_separate_runs(tiny_models, stats_by_arch):
    model, stats = tiny_models["gemma2"], stats_by_arch["gemma2"]
    neurons = neuron_set(model)
    rows = [Intervention("fr", "p_max"), None, Intervention("ru", "scale:4", layers=1),
            Intervention("en", "zero", deactivate="fr")]
    tokens = torch.cat([TOKENS, TOKENS])
    with torch.inference_mode():
        with steering(model, rows, neurons, stats):
            batched = model(tokens)
        for r, iv in enumerate(rows):
            with steering(model, iv, neurons, stats):
                single = model(tokens[r : r + 1])
            torch.testing.assert_close(batched[r : r + 1], single, rtol=1e-5, atol=1e-5)


def test_hooks_are_removed_after_an_exception(tiny_models, stats_by_arch):
    model = tiny_models["qwen2"]
    neurons = neuron_set(model)
    with torch.inference_mode():
        before = model(TOKENS)
        with pytest.raises(RuntimeError, match="boom"):
            with steering(model, Intervention("fr", "set:5"), neurons, stats_by_arch["qwen2"]):
                model(TOKENS)
                raise RuntimeError("boom")
        torch.testing.assert_close(model(TOKENS), before)
    assert not any(hp.fwd_hooks for hp in model.hook_dict.values())


def test_layers_and_positions(tiny_models, stats_by_arch):
    model, stats = tiny_models["llama"], stats_by_arch["llama"]
    neurons = neuron_set(model)
    with torch.inference_mode():
        base = model(TOKENS)
        with steering(model, Intervention("fr", "set:3", positions="generated"), neurons, stats, prompt_end=4):
            gen_only = model(TOKENS)
        with steering(model, Intervention("fr", "set:3", positions="prompt"), neurons, stats, prompt_end=4):
            prompt_only = model(TOKENS)
        with steering(model, Intervention("fr", "set:3", layers=[1]), neurons, stats):
            last_layer = model(TOKENS)
    torch.testing.assert_close(gen_only[:, :4], base[:, :4])  # causal: nothing before position 4 changes
    assert not torch.allclose(gen_only[:, 4:], base[:, 4:])
    assert not torch.allclose(prompt_only[:, :4], base[:, :4])
    assert not torch.allclose(last_layer, base)


@pytest.mark.parametrize("positions", ["all", "generated", "last:2"])
def test_kv_cached_steps_equal_one_full_forward(tiny_models, stats_by_arch, positions):
    """Steering a prompt pass + two one-token cached steps equals steering one full forward."""
    model, stats = tiny_models["qwen2"], stats_by_arch["qwen2"]
    neurons = neuron_set(model)
    seq = torch.tensor([[40, 41, 42, 43, 60, 61]])
    iv = Intervention("fr", "set:4", positions=positions)
    with torch.inference_mode():
        with steering(model, iv, neurons, stats, prompt_end=4):
            full = model(seq)
        with steering(model, iv, neurons, stats, prompt_end=4):
            logits, cache = model(seq[:, :4], return_type="logits_and_cache")
            steps = [logits]
            for t in (4, 5):
                logits, cache = model(seq[:, t : t + 1], past_key_values=cache, return_type="logits_and_cache",
                                      attention_mask=torch.ones(1, t + 1, dtype=torch.long))
                steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-4, atol=1e-4)


def test_steered_greedy_generation(tiny_models, stats_by_arch):
    model, stats = tiny_models["qwen2"], stats_by_arch["qwen2"]
    neurons = neuron_set(model)
    prompt = torch.tensor([[40, 41, 42, 43]])
    kwargs = dict(max_new_tokens=6, do_sample=False, verbose=False, stop_at_eos=False)
    plain = model.generate(prompt, **kwargs)
    with torch.inference_mode(), steering(model, Intervention("fr", "set:8"), neurons, stats):
        steered = model.generate(prompt, **kwargs)
        again = model.generate(prompt, **kwargs)
    assert torch.equal(steered, again)  # greedy is deterministic
    assert not torch.equal(steered, plain)
    assert torch.equal(model.generate(prompt, **kwargs), plain)  # hooks gone


@pytest.mark.parametrize("bad", ["p_maximum", "scale:", "scale:x", "p_max*", "*2", "add 1", "", "diffmean*x",
                                 "add:mean*"])
def test_bad_factor_names_the_valid_forms(bad):
    with pytest.raises(LensSteerError, match="valid forms"):
        parse_factor(bad)


@pytest.mark.parametrize("bad", ["control:zero", "control:scale:2", "control:control:p_max"])
def test_controls_apply_only_statistic_factors(bad):
    with pytest.raises(LensSteerError, match="a control applies a statistic factor"):
        parse_factor(bad)


def test_bad_interventions(tiny_models, stats_by_arch):
    model = tiny_models["qwen2"]
    neurons = neuron_set(model)
    steerer = Steerer(model, neurons, stats_by_arch["qwen2"])
    with pytest.raises(LensSteerError, match="no neuron set"):
        steerer.plan([Intervention("ja", "p_max")])
    with pytest.raises(LensSteerError, match="out of range"):
        steerer.plan([Intervention("fr", "p_max", layers=7)])
    with pytest.raises(LensSteerError, match="unknown positions"):
        Intervention("fr", "p_max", positions="middle").position_rule()
    with pytest.raises(LensSteerError, match="identify neurons again"):
        Steerer(model, NeuronSet(["fr"], {}, 3, 64), None)
    with pytest.raises(LensSteerError, match="record them again"):
        Steerer(tiny_models["gpt2"], NeuronSet(["fr"], {}, 2, 128), stats_by_arch["qwen2"])
    with pytest.raises(LensSteerError, match="needs the run's statistics"):
        Steerer(model, neurons, None).plan([Intervention("fr", "p_max")])


# ---- the paper's test-time factors: testmax, testmax+, p10 --------------------------------------------------------
PADDED = torch.tensor([[0, 0, 1, 40, 41, 42], [1, 50, 51, 52, 53, 54]])  # row 0 left-padded (pad id 0), BOS 1
PADDED_MASK = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])


def hand_test_time(factor: str):
    """The test-time factor computed by hand on the act_fn output of one forward: per row, over every real
    position (BOS included, pads excluded) and all d_mlp neurons."""
    f = parse_factor(factor)
    valid = PADDED_MASK.bool()

    def fn(act, layer, idx, full):
        out = act.clone()
        for r in range(full.shape[0]):
            values = full[r][valid[r]].flatten()
            m = values.max() if f.stat in ("max", "max+") else torch.quantile(values, f.value)
            out[r] = (act[r] + f.value * m) if f.stat == "max+" else (
                f.value * m if f.stat == "max" else m).expand_as(act[r])
        return out
    return fn


@pytest.mark.parametrize("factor", ["testmax", "testmax+", "p10", "testmax*0.5"])
def test_test_time_factors_equal_a_hand_computation(tiny_models, stats_by_arch, factor):
    """Per row, over real positions only: equal to patching HF's act_fn output with the max / quantile computed by
    hand from that forward's own values; pads of another row never enter a row's statistic."""
    model, stats = tiny_models["llama"], stats_by_arch["llama"]
    neurons = neuron_set(model)
    expected = hf_patched_logits(model, neurons, "fr", hand_test_time(factor), PADDED, PADDED_MASK)
    with torch.inference_mode():
        with steering(model, Intervention("fr", factor), neurons, stats):
            got = model(PADDED, attention_mask=PADDED_MASK)
        base = model(PADDED, attention_mask=PADDED_MASK)
        with steering(model, Intervention("fr", factor), neurons, stats):
            alone = model(PADDED[:1, 2:], attention_mask=PADDED_MASK[:1, 2:])
    real = PADDED_MASK.bool()
    torch.testing.assert_close(got[real], expected[real], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got[0, 2:], alone[0], rtol=1e-4, atol=1e-4)  # the batch does not leak into a row
    assert not torch.allclose(got[real], base[real], atol=1e-4)


def test_test_time_factor_on_gpt2_reads_the_post_value(tiny_models, stats_by_arch):
    """Non-gated MLPs: the neuron value is hook_post itself; the statistic is taken on it."""
    model, stats = tiny_models["gpt2"], stats_by_arch["gpt2"]
    neurons = neuron_set(model)
    tokens, mask = PADDED[1:], PADDED_MASK[1:]
    expected = hf_patched_logits(model, neurons, "fr", hand_test_time("testmax"), tokens, mask)
    with torch.inference_mode(), steering(model, Intervention("fr", "testmax"), neurons, stats):
        got = model(tokens, attention_mask=mask)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bad", ["scale:1e400", "add:-1e999", "p_max*1e400", "testmax*1e400"])
def test_non_finite_factors_are_refused(bad):
    with pytest.raises(LensSteerError, match="non-finite"):
        parse_factor(bad)


@pytest.mark.parametrize("q", [0.1, 0.5, 0.9, 0.01])
def test_row_quantiles_equal_torch_quantile_per_row(q):
    """The batched per-row quantile equals torch.quantile of each row's real values exactly (ties included)."""
    from lens_steer.steer import row_statistic

    g = torch.Generator().manual_seed(0)
    values = torch.randn(5, 7, 33, generator=g).half().float()  # float16-rounded: many ties
    valid = torch.rand(5, 7, generator=g) > 0.3
    valid[0] = True
    valid[4] = False  # a row without a real position gets 0
    got = row_statistic(values, valid, ("quantile", q))
    for r in range(4):
        assert got[r].item() == torch.quantile(values[r][valid[r]].flatten(), q).item()
    assert got[4].item() == 0.0


def test_row_statistic_above_the_torch_quantile_limit():
    from lens_steer.steer import row_statistic

    x = torch.arange(17_000_001, dtype=torch.float32).flip(0).reshape(1, 17_000_001, 1)
    assert float(row_statistic(x, None, ("quantile", 0.1))[0]) == pytest.approx(1_700_000.0)


def test_diffmean_control_uses_the_matched_random_neurons(tiny_models, stats_by_arch):
    """control:diffmean*A adds A * (mean_t - mean_rest) of the matched random neurons, to those neurons only."""
    from lens_steer.steer import Steerer, diff_mean

    model, stats = tiny_models["llama"], stats_by_arch["llama"]
    neurons = neuron_set(model)
    steerer = Steerer(model, neurons, stats)
    plan = steerer.plan([Intervention("fr", "control:diffmean*2")])
    random = steerer.control_set(0)
    d = diff_mean(stats, "fr")
    for layer, one in plan.items():
        assert torch.equal(one.idx, torch.sort(random.indices("fr", layer)).values)
        torch.testing.assert_close(one.beta[0], 2 * d[layer, one.idx].float())
        assert torch.equal(one.alpha[0], torch.ones_like(one.alpha[0]))


@pytest.mark.parametrize("arch", ["qwen2", "gemma2", "gpt2"])
def test_residual_diffmean_equals_a_direct_hf_patch(tiny_models, stats_by_arch, arch):
    """resid:L*A adds A * (mu_t - mu_rest) to the HF decoder layer L's output at every position: the same logits
    as a forward hook on that HF layer adding the hand-computed vector."""
    from lens_steer.steer import Steerer

    model, stats = tiny_models[arch], stats_by_arch[arch]
    mu = stats.resid_mean()[:, 1]  # layer 1, [K, d_model]
    k = stats.languages.index("fr")
    vec = 3.0 * (mu[k] - torch.cat([mu[:k], mu[k + 1:]]).mean(0))
    layer = model.bridge.blocks[1].original_component

    def add(module, args, out):
        return (out[0] + vec, *out[1:]) if isinstance(out, tuple) else out + vec

    handle = layer.register_forward_hook(add)
    try:
        with torch.inference_mode():
            expected = model.original_model(TOKENS).logits
    finally:
        handle.remove()
    steerer = Steerer(model, neuron_set(model), stats)
    with torch.inference_mode():
        with steerer.apply(Intervention("fr", "resid:1*3")):
            got = model(TOKENS)
        baseline = model(TOKENS)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(got, baseline, atol=1e-3)


def test_isotropic_residual_control_is_a_random_direction_of_the_same_norm(tiny_models, stats_by_arch):
    from lens_steer.steer import Steerer

    model, stats = tiny_models["llama"], stats_by_arch["llama"]
    steerer = Steerer(model, neuron_set(model), stats)
    real = steerer.resid_direction("fr", 1)
    fake = steerer.resid_direction("fr", 1, control_seed=0, null="iso")  # the isotropic null (control-iso:)
    torch.testing.assert_close(fake.norm(), real.norm())
    assert abs(float(torch.nn.functional.cosine_similarity(fake, real, dim=0))) < 0.9
    assert torch.equal(fake, steerer.resid_direction("fr", 1, control_seed=0, null="iso"))  # seeded: the same draw
    assert not torch.equal(fake, steerer.resid_direction("fr", 1, control_seed=1, null="iso"))
    plan = steerer.resid_plan([None, Intervention("fr", "control-iso:resid:1*2"), Intervention("ru", "resid:0")])
    assert set(plan) == {0, 1} and torch.equal(plan[1][0], torch.zeros_like(plan[1][0]))
    torch.testing.assert_close(plan[1][1], 2 * fake)
    assert plan[0][2].norm() > 0 and plan[0][:2].abs().sum() == 0


def test_residual_methods_refuse_runs_without_residual_means(tiny_models, stats_by_arch):
    from lens_steer.stats import Stats
    from lens_steer.steer import Steerer

    model, s = tiny_models["llama"], stats_by_arch["llama"]
    old = Stats(s.over_zero, s.n_tokens, s.n_sentences, s.act_sum, s.act_sqsum, s.sent_means, s.manifest)
    steerer = Steerer(model, neuron_set(model), old)
    with pytest.raises(LensSteerError, match="record the run again"):
        with steerer.apply(Intervention("fr", "resid:1*2")):
            pass
    with pytest.raises(LensSteerError, match="resid:9 is out of range"):
        Steerer(model, neuron_set(model), s).resid_direction("fr", 9)


@pytest.mark.parametrize("which,line", [("en", "Answer in French.\n"), ("native", "Français:\n")])
def test_prompt_methods_ask_in_the_prompt_and_touch_no_activation(tiny_models, stats_by_arch, which, line):
    """prompt:en / prompt:native score and generate exactly as the instruction line + the prompt without any
    intervention, and install no neuron or residual change (deactivate still zeroes the source's neurons)."""
    from lens_steer.generation import greedy_generate
    from lens_steer.scoring import score
    from lens_steer.steer import Steerer

    model, stats = tiny_models["llama"], stats_by_arch["llama"]
    steerer = Steerer(model, neuron_set(model), stats)
    iv = Intervention("fr", f"prompt:{which}")
    assert steerer.plan([iv]) == {} and steerer.resid_plan([iv]) == {}
    asked = score(model, ["Le chat"], [[" dort", " sleeps"]], steerer=steerer, interventions=[iv])
    by_hand = score(model, [line + "Le chat"], [[" dort", " sleeps"]])
    assert torch.equal(asked.logp, by_hand.logp)
    assert not torch.equal(asked.logp, score(model, ["Le chat"], [[" dort", " sleeps"]]).logp)
    got = greedy_generate(model, ["Le chat"], max_new_tokens=4, steerer=steerer, interventions=[iv], stop_at_eos=False)
    assert got == greedy_generate(model, [line + "Le chat"], max_new_tokens=4, stop_at_eos=False)
    both = Intervention("fr", f"prompt:{which}", deactivate="en")
    assert set(steerer.plan([both])) == set(range(model.cfg.n_layers))  # the source's neurons are still zeroed


def test_prompt_control_names_another_run_language(tiny_models, stats_by_arch):
    """control:prompt:en scores exactly as the instruction for the language control_language draws (never the
    target, the same per seed, another for some seed), and refuses to run without the run's languages."""
    from lens_steer.scoring import score
    from lens_steer.steer import Steerer, control_language, instruction, instructed

    model, stats = tiny_models["llama"], stats_by_arch["llama"]
    steerer = Steerer(model, neuron_set(model), stats)
    drawn = {control_language("fr", seed, LANGS) for seed in range(12)}
    assert "fr" not in drawn and len(drawn) > 1 and drawn <= set(LANGS)
    iv = Intervention("fr", "control:prompt:en", seed=3)
    u = control_language("fr", 3, LANGS)
    assert control_language("fr", 3, LANGS) == u
    asked = score(model, ["Le chat"], [[" dort", " sleeps"]], steerer=steerer, interventions=[iv])
    by_hand = score(model, [instruction(u, "en") + "Le chat"], [[" dort", " sleeps"]])
    assert torch.equal(asked.logp, by_hand.logp)
    assert steerer.plan([iv]) == {} and steerer.resid_plan([iv]) == {}
    with pytest.raises(LensSteerError, match="run's languages"):
        instructed(["Le chat"], [iv])


def test_prepare_gives_the_prompts_as_the_model_sees_them(tiny_models, stats_by_arch):
    """Steerer.prepare, what scoring and generation ask: a prompt: row gets its instruction first (its control names
    control_language of the neuron set's languages), other rows stay as given; test_time says a row's statistic needs
    the whole row in one forward."""
    from lens_steer.instructions import control_language, instruction, instructed
    from lens_steer.steer import Prepared

    model, stats = tiny_models["llama"], stats_by_arch["llama"]
    steerer = Steerer(model, neuron_set(model), stats)
    rows = [Intervention("fr", "prompt:en"), None, Intervention("ru", "control:prompt:native", seed=2),
            Intervention("fr", "p_max"), Intervention("en", "resid:1*2")]
    prompts = ["a", "b", "c", "d", "e"]
    prepared = steerer.prepare(prompts, rows)
    assert prepared.prompts == ["Answer in French.\na", "b", instruction(control_language("ru", 2, LANGS), "native") + "c",
                                "d", "e"]
    assert prepared.prompts == instructed(prompts, rows, LANGS)
    assert prepared.interventions == rows and not prepared.test_time
    assert steerer.prepare(prompts, [None] * 4 + [Intervention("fr", "p10")]).test_time
    assert steerer.prepare(prompts, None) == Prepared(prompts, None)
    with pytest.raises(LensSteerError, match="5 interventions for 2 prompts"):
        steerer.prepare(prompts[:2], rows)


@pytest.mark.parametrize("bad", ["prompt:", "prompt:fr", "prompt:en*2", "control:control:prompt:en", "control:zero"])
def test_bad_prompt_methods(bad):
    with pytest.raises(LensSteerError):
        parse_factor(bad)
