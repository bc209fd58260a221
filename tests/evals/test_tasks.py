"""Prompt construction of the downstream tasks and the self/cross summary, on hand-made items."""

from __future__ import annotations

import math

import pytest

from lens_steer.evals import self_cross
from lens_steer.evals.tasks import (
    cut_translation,
    include_choice,
    max_new_tokens_for,
    mt_prompt,
    strip_final_punctuation,
    xcopa_choice,
    xwinograd_choice,
)


def test_xcopa_keeps_a_final_letter_thai():
    # The reference code cuts the premise's last character unconditionally; in Thai that is a letter.
    c = xcopa_choice("th", "ฉันหิวมาก", "ฉันกินข้าว", "ฉันนอน", "effect", 0)
    assert c.contexts[0] == "ฉันหิวมาก" + "ดังนั้น"  # no space in a script without word spaces
    assert c.continuations == ("ฉันกินข้าว", "ฉันนอน")


@pytest.mark.parametrize("premise", ["Mtu alivunja kidole.", "Mtu alivunja kidole!", "Mtu alivunja kidole"])
def test_xcopa_cuts_only_punctuation(premise):
    c = xcopa_choice("sw", premise, "Aliangusha nyundo.", "Alitembea.", "cause", 1)
    assert c.contexts == ("Mtu alivunja kidole kwa sababu",) * 2
    assert c.continuations == (" aliangusha nyundo.", " alitembea.")
    assert c.gold == 1


def test_xcopa_effect_connective_and_chinese_spacing():
    c = xcopa_choice("zh", "我饿了。", "我吃饭。", "我睡觉。", "effect", 0)
    assert c.contexts[0] == "我饿了所以" and c.continuations[0] == "我吃饭。"
    with pytest.raises(ValueError):
        xcopa_choice("it", "x.", "a", "b", "why", 0)


def test_strip_final_punctuation_unicode():
    assert strip_final_punctuation("Hello。") == "Hello"
    assert strip_final_punctuation("Hello ") == "Hello"
    assert strip_final_punctuation("") == ""


def test_xwinograd_partial_scoring():
    c = xwinograd_choice("Anna a donné sa poupée à Marie parce que _ était gentille.", "Anna", "Marie", 2)
    assert c.contexts == ("Anna a donné sa poupée à Marie parce que Anna",
                          "Anna a donné sa poupée à Marie parce que Marie")
    assert c.continuations == (" était gentille.",) * 2 and c.gold == 1


def test_xwinograd_blank_at_the_end_still_scores_something():
    c = xwinograd_choice("The winner was _", "Ann", "Bob", 1)
    assert c.continuations == (".", ".") and c.gold == 0


def test_include_letters_share_their_leading_space():
    c = include_choice("  Which is a prime?  ", ("4", "6", "7", "9"), 2)
    assert c.contexts[0] == "Which is a prime?\nA. 4\nB. 6\nC. 7\nD. 9\nAnswer:"
    assert c.continuations == (" A", " B", " C", " D") and c.gold == 2


def test_translation_prompt_cut_and_budget():
    assert mt_prompt("ta", " Hello. ") == "Translate from English to Tamil.\n\nEnglish: Hello.\nTamil:"
    assert cut_translation("  Vanakkam.\n\nEnglish: more") == "Vanakkam."
    assert cut_translation("\nlate start") == ""
    assert max_new_tokens_for("ta", 40) > max_new_tokens_for("fr", 40) > 50  # the paper's 50 truncates ta/th
    assert max_new_tokens_for("fr", 1) == 32


def _row(intervened, lang, value, metric="acc"):
    return dict(task="t", factor="-" if intervened == "none" else "p_max", intervened=intervened, eval_lang=lang,
                metric=metric, value=value, n=10)


def test_self_cross_known_answer():
    rows = [_row("none", "fr", 0.6), _row("none", "ja", 0.5), _row("none", "sw", 0.4),
            _row("fr", "fr", 0.7), _row("fr", "ja", 0.4), _row("fr", "sw", 0.1),
            _row("ja", "fr", 0.6), _row("ja", "ja", 0.5), _row("ja", "sw", 0.4)]
    (s,) = self_cross(rows)
    assert s["self"] == pytest.approx((0.1 + 0.0) / 2)
    assert s["cross"] == pytest.approx((-0.1 - 0.3 + 0.0 + 0.0) / 4)
    assert (s["n_self"], s["n_cross"], s["lower_is_better"]) == (2, 4, False)


def test_self_cross_skips_nan_and_marks_perplexity():
    rows = [_row("none", "fr", 10.0, "ppl_macro"), _row("fr", "fr", float("nan"), "ppl_macro"),
            _row("ja", "fr", 12.0, "ppl_macro")]
    (s,) = self_cross(rows)
    assert math.isnan(s["self"]) and s["cross"] == pytest.approx(2.0) and s["lower_is_better"]
