"""The evaluation protocol on a tiny model: batching never changes a number, baselines are untouched by the
intervention rows beside them, and perplexity equals a direct computation."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import SENTENCES
from lens_steer.evals import choice_logps, eval_choice, eval_mt, eval_ppl, settings
from lens_steer.evals.tasks import include_choice, xcopa_choice, xwinograd_choice
from lens_steer.identification import lape
from lens_steer.intervals import bootstrap_mean_ci, wilson_ci
from lens_steer.recorder import RecordConfig, record
from lens_steer.steer import Steerer, parse_factor

LANGS = ("en", "fr", "ru")


@pytest.fixture(scope="module")
def run(tiny_models):
    model = tiny_models["llama"]
    stats = record(model, {c: SENTENCES[c] for c in LANGS}, config=RecordConfig(n_sentence_means=2,
                                                                                 min_sentence_tokens=2),
                   progress=False)
    neurons = lape(stats, top_rate=0.2)
    assert all(neurons.totals()[c] for c in LANGS)
    return model, Steerer(model, neurons, stats)


def _items():
    return {
        "fr": [xcopa_choice("it", s, "Una cosa.", "Un'altra cosa.", q, i % 2)
               for i, (s, q) in enumerate(zip(SENTENCES["fr"], ["cause", "effect"] * 5))],
        "ru": [xwinograd_choice("ru", s.replace(" ", " _ ", 1), "кот", "река", 1 + i % 2)
               for i, s in enumerate(SENTENCES["ru"])],
        "en": [include_choice(s, ("one", "two", "three", "four"), i % 4) for i, s in enumerate(SENTENCES["en"])],
    }


@pytest.mark.parametrize("lang", ["fr", "ru", "en"])
def test_choice_logps_batch_size_and_neighbour_rows(run, lang):
    model, steerer = run
    items = _items()[lang]
    setups = settings(parse_factor("p_max*2"), ["fr", "ru"])
    flat = [c for _ in setups for c in items]
    ivs = [iv for _, iv in setups for _ in items]
    big = choice_logps(model, flat, ivs, steerer, batch_size=16)
    one = choice_logps(model, flat, ivs, steerer, batch_size=1)
    torch.testing.assert_close(big, one, rtol=1e-4, atol=1e-4)
    plain = choice_logps(model, items, [None] * len(items), None, batch_size=4)
    torch.testing.assert_close(big[: len(items)], plain, rtol=1e-4, atol=1e-4)  # "none" rows see no hook
    assert not torch.allclose(big[len(items) : 2 * len(items)], plain)  # the intervention does something


def test_eval_choice_rows_and_batch_invariance(run):
    model, steerer = run
    items = {"fr": _items()["fr"]}
    setups = settings(parse_factor("p_max"), ["fr", "ru"])
    a = eval_choice("xcopa", model, steerer, items, setups, "p_max", batch_size=16)
    b = eval_choice("xcopa", model, steerer, items, setups, "p_max", batch_size=1)
    assert a == b
    assert [(r["intervened"], r["factor"]) for r in a] == [("none", "-"), ("fr", "p_max"), ("ru", "p_max")]
    assert all(r["metric"] == "acc" and 0 <= r["value"] <= 1 and r["n"] == len(items["fr"]) for r in a)
    n = len(items["fr"])
    for r in a:  # accuracy: Wilson over the items, its count the number of items
        assert r["interval"] == "wilson" and r["low"] <= r["value"] <= r["high"]
        assert (r["low"], r["high"]) == pytest.approx(wilson_ci(round(r["value"] * n), n))


def test_eval_ppl_equals_a_direct_computation(run):
    model, steerer = run
    texts = {"en": SENTENCES["en"][:4]}
    rows = eval_ppl("ppl", model, steerer, texts, settings(None, []), "-", batch_size=3)
    got = {r["metric"]: r["value"] for r in rows}
    tok = model.tokenizer
    nll, n_tok, per_sentence = 0.0, 0, []
    for text in texts["en"]:
        ids = [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logits = model(torch.tensor([ids]), return_type="logits")[0].float()
        lp = torch.log_softmax(logits[:-1], dim=-1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
        nll += float(-lp.sum())
        n_tok += len(ids) - 1
        per_sentence.append(float(-lp.mean()))
    assert got["nll_micro"] == pytest.approx(nll / n_tok, rel=1e-4)
    assert got["nll_macro"] == pytest.approx(sum(per_sentence) / len(per_sentence), rel=1e-4)
    assert got["ppl_macro"] == pytest.approx(math.exp(got["nll_macro"]), rel=1e-6)
    assert [r["n"] for r in rows if r["metric"] == "ppl_micro"] == [n_tok]
    by = {r["metric"]: r for r in rows}
    for r in rows:  # the bootstrap over sentences; perplexity's interval is exp of the NLL's
        assert r["interval"] == "bootstrap" and r["low"] <= r["value"] <= r["high"], r["metric"]
    assert by["nll_macro"]["n"] == len(texts["en"])
    assert (by["ppl_macro"]["low"], by["ppl_macro"]["high"]) == pytest.approx(
        (math.exp(by["nll_macro"]["low"]), math.exp(by["nll_macro"]["high"])))
    assert (by["nll_macro"]["low"], by["nll_macro"]["high"]) == pytest.approx(
        bootstrap_mean_ci(torch.tensor(per_sentence)), rel=1e-4)


def test_eval_ppl_batch_invariance_under_intervention(run):
    model, steerer = run
    texts = {"fr": SENTENCES["fr"][:5]}
    setups = settings(parse_factor("p_max"), ["fr", "en"])
    a = eval_ppl("ppl", model, steerer, texts, setups, "p_max", batch_size=16)
    b = eval_ppl("ppl", model, steerer, texts, setups, "p_max", batch_size=1)
    assert [r["value"] for r in a] == pytest.approx([r["value"] for r in b], rel=1e-5)
    base = {r["metric"]: r["value"] for r in a if r["intervened"] == "none"}
    steered = {r["metric"]: r["value"] for r in a if r["intervened"] == "fr"}
    assert base["nll_macro"] != steered["nll_macro"]


def test_eval_mt_batch_invariance_and_outputs(run):
    model, steerer = run
    pairs = {"fr": list(zip(SENTENCES["en"][:3], SENTENCES["fr"][:3]))}
    setups = settings(parse_factor("p_max"), ["fr"])
    rows16, out16 = eval_mt("udhr-mt", model, steerer, pairs, setups, "p_max", batch_size=16, max_new_tokens=6,
                            spbleu=False)
    rows1, out1 = eval_mt("udhr-mt", model, steerer, pairs, setups, "p_max", batch_size=1, max_new_tokens=6,
                          spbleu=False)
    assert [o["hypothesis"] for o in out16] == [o["hypothesis"] for o in out1]
    no_nan = (lambda rows: [{k: (None if v != v else v) for k, v in r.items()} for r in rows])  # noqa: E731
    assert no_nan(rows16) == no_nan(rows1)  # corpus metrics have no interval: NaN bounds
    assert [r["metric"] for r in rows16[:3]] == ["chrf++", "bleu", "empty_share"] and len(out16) == 6
    assert all("\n" not in o["hypothesis"] for o in out16)


def test_stop_text_is_a_prefix_cut(run):
    """Stopping at the first token holding the stop text gives the unstopped output cut after that token."""
    from lens_steer.generation import greedy_generate

    model, steerer = run
    tok = model.tokenizer
    prompts = SENTENCES["en"][:4] + SENTENCES["fr"][:4]
    full_ids = [tok(greedy_generate(model, [p], max_new_tokens=12)[0], add_special_tokens=False)["input_ids"]
                for p in prompts[:1]]
    stop = tok.decode([full_ids[0][3]]).strip() or tok.decode([full_ids[0][3]])  # a piece generated at step 4
    full = greedy_generate(model, prompts, max_new_tokens=12)
    cut = greedy_generate(model, prompts, max_new_tokens=12, stop_text=stop)
    assert len(cut[0]) < len(full[0]) and stop in cut[0]
    for f, c in zip(full, cut):
        assert f.startswith(c)
        assert (stop in c) if stop in f else c == f
        if stop in f:
            assert c.index(stop) == f.index(stop)
    assert greedy_generate(model, prompts, max_new_tokens=12, stop_text=None) == full


# ---- translation: empty outputs, BLEU, the untargeted prompt (a scripted model: its first token is a newline) -----

@pytest.fixture(scope="module")
def tokenizer(tiny_dirs):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dirs["llama"])


def _scripted_mt(tokenizer, prompt="targeted"):
    from scripted_model import ScriptedModel

    model = ScriptedModel(tokenizer, {"cat": ["\n", "Le chat dort.", "\n", "English: more"],
                                      "river": ["\n", " ", "\n\n"]})
    pairs = {"fr": [("The cat sleeps.", "Le chat dort."), ("The river runs.", "La rivière coule.")]}
    with pytest.warns(UserWarning, match="1 of 2 outputs are empty"):  # never silently
        rows, outputs = eval_mt("udhr-mt", model, None, pairs, settings(None, []), "-", max_new_tokens=12,
                                spbleu=False, prompt=prompt)
    return model, rows, outputs


def test_eval_mt_leading_newline_is_skipped_and_empty_outputs_are_counted(tokenizer):
    _, rows, outputs = _scripted_mt(tokenizer)
    assert [o["hypothesis"] for o in outputs] == ["Le chat dort.", ""]  # were ["", ""]
    assert [o["empty"] for o in outputs] == [False, True]
    got = {r["metric"]: r for r in rows}
    assert got["empty_share"]["value"] == 0.5 and got["empty_share"]["n"] == 2
    assert got["empty_share"]["interval"] == "wilson"
    assert (got["empty_share"]["low"], got["empty_share"]["high"]) == pytest.approx(wilson_ci(1, 2))
    assert got["bleu"]["interval"] == "" and got["bleu"]["low"] != got["bleu"]["low"]  # a corpus metric: none
    assert list(got) == ["chrf++", "bleu", "empty_share"]  # the quality metric first: the one tables and plots use


def test_eval_mt_bleu_is_one_corpus_bleu_over_the_written_hypotheses(tokenizer):
    import sacrebleu

    _, rows, outputs = _scripted_mt(tokenizer)
    hyps, refs = [o["hypothesis"] for o in outputs], [o["reference"] for o in outputs]
    bleu = next(r["value"] for r in rows if r["metric"] == "bleu")
    assert bleu == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)  # default tokenize="13a"
    assert 0 < bleu < 100


def test_eval_mt_untargeted_prompt_is_used_and_recorded(tokenizer):
    model, _, outputs = _scripted_mt(tokenizer, prompt="untargeted")
    assert model.prompts and all(p.endswith("\nTarget language: ") and "French" not in p for p in model.prompts)
    assert {o["prompt_style"] for o in outputs} == {"untargeted"}
    targeted, _, out_t = _scripted_mt(tokenizer)
    assert all(p.endswith("\nFrench:") for p in targeted.prompts) and out_t[0]["prompt_style"] == "targeted"
