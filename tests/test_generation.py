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


# ---- the cut: leading whitespace is skipped, an empty output is said to be empty --------------------------------

@pytest.fixture(scope="module")
def tokenizer(tiny_dirs):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dirs["gemma2"])


def test_a_leading_newline_does_not_end_the_row(tokenizer):
    """The first greedy token is a newline: the row goes on, and the cut keeps the text after it (it was '')."""
    from scripted_model import ScriptedModel

    model = ScriptedModel(tokenizer, {"cat": ["\n", "Le chat", "\n", "English"], "": ["\n", " \n", "\n"]})
    out = greedy_generate(model, ["The small cat", "The river"], max_new_tokens=12, stop_text="\n")
    assert out[0].startswith("\n") and "Le chat" in out[0]  # before: stopped at the first token, out[0] == "\n"
    assert "English" not in out[0]  # the newline after the text still stops the row
    from lens_steer.generation import cut_generation

    assert [cut_generation(t) for t in out] == ["Le chat", ""]
    assert out[1].strip() == ""  # only whitespace until EOS: nothing to keep, and nothing invented


def test_stopping_never_changes_the_cut_output(tokenizer, tiny_models):
    """With or without the stop, the cut output is the same (the stop only saves steps), newline first or not."""
    from scripted_model import ScriptedModel

    from lens_steer.generation import cut_generation

    scripted = ScriptedModel(tokenizer, {"cat": ["\n\n", "Le", " chat", "\n", "dort"], "": ["Oui", "\n", "non"]})
    for model, prompts in ((scripted, ["The cat", "The river"]), (tiny_models["gemma2"], PROMPTS)):
        full = greedy_generate(model, prompts, max_new_tokens=10)
        stopped = greedy_generate(model, prompts, max_new_tokens=10, stop_text="\n")
        assert [cut_generation(t) for t in stopped] == [cut_generation(t) for t in full]
        assert all(f.startswith(s) for f, s in zip(full, stopped))


@pytest.mark.parametrize("text, stop, cut", [
    ("\n\n Bonjour.\nEnglish: next", "\n", "Bonjour."),
    ("  \n\t", "\n", ""),
    ("", "\n", ""),
    (" Oui \n", "\n", "Oui"),
    ("\nline one\nline two ", None, "line one\nline two"),
])
def test_cut_generation(text, stop, cut):
    from lens_steer.generation import cut_generation, is_empty_generation, reached_stop

    assert cut_generation(text, stop) == cut
    assert is_empty_generation(text, stop) == (cut == "")
    if stop and reached_stop(text, stop):  # stopping here is safe: nothing generated later survives the cut
        assert cut_generation(text + "more\n", stop) == cut
    assert not reached_stop("\n \n", "\n")  # whitespace so far: keep generating


def _chat_model(tiny_dirs, tmp_path):
    """The tiny Llama with a tokenizer that has a chat template (saved to disk, as an instruct model ships it)."""
    import shutil

    from transformers import AutoTokenizer

    from lens_steer.models import load_model

    d = tmp_path / "chat"
    shutil.copytree(tiny_dirs["llama"], d)
    tok = AutoTokenizer.from_pretrained(d)
    tok.chat_template = ("{{ bos_token }}{% for m in messages %}<|user|> {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|> {% endif %}")
    tok.save_pretrained(d)
    return load_model(str(d))


def test_chat_template_wraps_the_prompt_as_a_user_turn(tiny_dirs, tmp_path):
    """--chat-template: the prompt goes through the tokenizer's own template (its BOS text dropped: generation adds
    the BOS id), and a prompt: method's instruction sits inside the user turn."""
    from lens_steer.generation import chat_prompts
    model = _chat_model(tiny_dirs, tmp_path)
    assert chat_prompts(model, ["Le chat"]) == ["<|user|> Le chat\n<|assistant|> "]
    wrapped = greedy_generate(model, ["Le chat"], max_new_tokens=4, stop_at_eos=False, chat=True)
    assert wrapped == greedy_generate(model, ["<|user|> Le chat\n<|assistant|> "], max_new_tokens=4, stop_at_eos=False)
    neurons = NeuronSet(["fr"], {"fr": [[0], [1]]}, 2, model.cfg.d_mlp)
    asked = greedy_generate(model, ["Le chat"], max_new_tokens=4, stop_at_eos=False, chat=True,
                            steerer=Steerer(model, neurons), interventions=[Intervention("fr", "prompt:en")])
    assert asked == greedy_generate(model, ["<|user|> Answer in French.\nLe chat\n<|assistant|> "], max_new_tokens=4,
                                    stop_at_eos=False)


def test_chat_template_is_refused_for_a_model_without_one(tiny_models):
    with pytest.raises(LensSteerError, match="has no chat template \\(a base model\\); drop --chat-template"):
        greedy_generate(tiny_models["qwen2"], ["x"], max_new_tokens=2, chat=True)
