"""Prompt construction of the downstream tasks and the self/cross summary, on hand-made items."""

from __future__ import annotations

import math

import pytest

from lens_steer.errors import LensSteerError
from lens_steer.evals import self_cross, task_label
from lens_steer.evals.tasks import (
    XCOPA_CONNECTIVES,
    include_choice,
    max_new_tokens_for,
    mt_prompt,
    strip_final_punctuation,
    xcopa_choice,
    xwinograd_choice,
)
from lens_steer.generation import cut_generation
from lens_steer.languages import separator


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
    c = xwinograd_choice("fr", "Anna a donné sa poupée à Marie parce que _ était gentille.", "Anna", "Marie", 2)
    assert c.contexts == ("Anna a donné sa poupée à Marie parce que Anna",
                          "Anna a donné sa poupée à Marie parce que Marie")
    assert c.continuations == (" était gentille.",) * 2 and c.gold == 1


def test_xwinograd_blank_at_the_end_still_scores_something():
    c = xwinograd_choice("en", "The winner was _", "Ann", "Bob", 1)
    assert c.continuations == (".", ".") and c.gold == 0


def test_include_options_are_formatted_as_the_reference():
    c = include_choice("  Which is a prime?  ", ("4", "6", "7", "9"), 2)
    assert c.contexts[0] == "Which is a prime?\nA) 4\nB) 6\nC) 7\nD) 9\nAnswer:"  # was "A. 4"
    assert c.continuations == (" A", " B", " C", " D") and c.gold == 2  # auto: every letter with its space


def test_include_reference_join_scores_the_bare_letter():
    """P15: the reference reads the first token of "A" (no space) right after "Answer:"."""
    auto, ref = (include_choice("Q?", ("a", "b", "c", "d"), 0, join=j) for j in ("auto", "reference"))
    assert ref.contexts == auto.contexts and ref.contexts[0].endswith("\nAnswer:")
    assert ref.continuations == ("A", "B", "C", "D")
    # Japanese questions too: the letters follow "Answer:", which is English.
    assert include_choice("日本の首都は？", ("東京", "大阪", "京都", "札幌"), 0).continuations[0] == " A"


@pytest.mark.parametrize("lang", sorted(XCOPA_CONNECTIVES))
def test_xcopa_joins_follow_the_shared_separator(lang):
    for join in ("auto", "reference"):
        c = xcopa_choice(lang, "Premise.", "Choice one.", "Choice two.", "cause", 0, join=join)
        sep = separator(lang, join)
        assert c.contexts[0] == "Premise" + sep + XCOPA_CONNECTIVES[lang][0]
        assert c.continuations == (sep + "choice one.", sep + "choice two.")


def test_xcopa_reference_join_always_spaces():
    # lm-eval-harness: premise[:-1] + " " + connective, then context + " " + choice, in every language.
    c = xcopa_choice("zh", "我饿了。", "我吃饭。", "我睡觉。", "effect", 0, join="reference")
    assert c.contexts[0] == "我饿了 所以" and c.continuations == (" 我吃饭。", " 我睡觉。")
    auto = xcopa_choice("zh", "我饿了。", "我吃饭。", "我睡觉。", "effect", 0)
    assert auto.contexts[0] == "我饿了所以" and auto.continuations == ("我吃饭。", "我睡觉。")


def test_xwinograd_joins():
    ja = "猫は箱に入れなかった。_ が小さすぎたからだ。"
    assert xwinograd_choice("ja", ja, "猫", "箱", 2).continuations[0] == "が小さすぎたからだ。"
    # The reference (lm-eval's partial target with a space delimiter): " " + rest.strip(), Japanese included.
    assert xwinograd_choice("ja", ja, "猫", "箱", 2, join="reference").continuations[0] == " が小さすぎたからだ。"
    en = "The man could not lift _ son because he was weak."
    for join in ("auto", "reference"):
        c = xwinograd_choice("en", en, "his", "the", 1, join=join)
        assert c.continuations[0] == " son because he was weak." and c.contexts[0].endswith("lift his")
    # Punctuation right after the blank stays attached in auto; the reference puts its space anyway.
    poss = "Ann thanked Mary because _'s help was great."
    assert xwinograd_choice("en", poss, "Ann", "Mary", 2).continuations[0] == "'s help was great."
    assert xwinograd_choice("en", poss, "Ann", "Mary", 2, join="reference").continuations[0] == " 's help was great."


def test_unknown_join_is_one_line():
    with pytest.raises(LensSteerError, match="auto or reference"):
        xcopa_choice("it", "x.", "a", "b", "cause", 0, join="spaced")


def test_untargeted_prompt_is_the_references_verbatim():
    assert mt_prompt("ja", "Hello.", "untargeted") == (
        "Translate from English into the target language.\n\nEnglish: Hello.\nTarget language: ")
    assert "Japanese" not in mt_prompt("ja", "Hello.", "untargeted")
    assert mt_prompt("ja", "Hello.") == "Translate from English to Japanese.\n\nEnglish: Hello.\nJapanese:"
    with pytest.raises(LensSteerError, match="targeted or untargeted"):
        mt_prompt("ja", "Hello.", "polite")


def test_task_label_names_the_variant_and_refuses_misplaced_options():
    assert task_label("flores-mt") == "flores-mt" and task_label("xcopa", join="auto") == "xcopa"
    assert task_label("flores-mt", prompt="untargeted") == "flores-mt-untargeted"
    assert task_label("xwinograd", join="reference") == "xwinograd-refjoin"
    with pytest.raises(LensSteerError, match="--prompt applies to flores-mt and udhr-mt"):
        task_label("xcopa", prompt="untargeted")
    with pytest.raises(LensSteerError, match="--join applies to"):
        task_label("udhr-mt", join="reference")


def test_translation_prompt_cut_and_budget():
    assert mt_prompt("ta", " Hello. ") == "Translate from English to Tamil.\n\nEnglish: Hello.\nTamil:"
    assert cut_generation("  Vanakkam.\n\nEnglish: more") == "Vanakkam."
    assert cut_generation("\nlate start") == "late start"  # was "": a leading newline emptied the translation
    assert cut_generation("\n \n") == ""
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
