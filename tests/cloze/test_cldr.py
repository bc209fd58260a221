"""The cldr cloze: built offline from babel's CLDR data for every supported language."""

from __future__ import annotations

import pytest

from lens_steer.cloze import CLOZES, ClozeSet, Fact, load_cloze
from lens_steer.cloze.cldr import CLDR_EXCLUDED, RELATIONS, SUPPORTED
from lens_steer.errors import LensSteerError
from lens_steer.languages import LANGUAGES, PAPER_LANGUAGES, writes_spaces


@pytest.fixture(scope="module")
def cloze() -> ClozeSet:
    return load_cloze("cldr", list(SUPPORTED))


def test_every_registry_language_is_supported_or_excluded_with_a_reason() -> None:
    assert set(SUPPORTED) | set(CLDR_EXCLUDED) == set(LANGUAGES)
    assert not set(SUPPORTED) & set(CLDR_EXCLUDED)
    assert set(CLDR_EXCLUDED) == {"ht", "qu"}
    assert "cldr" in CLOZES


@pytest.mark.parametrize("lang", SUPPORTED)
def test_each_language_has_50_well_formed_facts(cloze: ClozeSet, lang: str) -> None:
    facts = cloze.for_source(lang)
    assert len(facts) >= 50
    assert len({fact.id for fact in facts}) == len(facts)
    for fact in facts:
        prompt, answer = fact.prompt[lang], fact.answer[lang]
        assert prompt and prompt == prompt.rstrip(), fact.id
        assert answer.strip() and answer == answer.strip(), fact.id  # bare: the prompt decides the separator
        # The separator rule: one space after a spaced-script prompt, none after ja/zh/th, for every answer.
        for other in fact.answer:
            joined = fact.continuation(lang, other)
            if writes_spaces(lang):
                assert joined[0] == " " and not joined[1].isspace(), fact.id
            else:
                assert not joined[0].isspace(), fact.id
        last_word = prompt.split()[-1].rstrip(",:")
        assert answer.strip() != last_word, fact.id
        assert "{" not in prompt and "}" not in prompt, fact.id


def test_all_relations_are_present_and_the_order_is_round_robin(cloze: ClozeSet) -> None:
    assert {fact.relation for fact in cloze.facts} == set(RELATIONS)
    assert [fact.relation for fact in cloze.facts[: len(RELATIONS)]] == list(RELATIONS)
    assert [fact.id for fact in cloze.facts[:2]] == ["weekday_next:0", "weekday_prev:0"]


def test_fact_ids_are_aligned_across_languages(cloze: ClozeSet) -> None:
    by_id = {fact.id: fact for fact in cloze.facts}
    fact = by_id["weekday_next:0"]  # Monday -> Tuesday
    assert fact.prompt["en"] + fact.continuation("en", "en") == "If today is Monday, tomorrow is Tuesday"
    assert fact.answer["fr"] == "mardi"
    assert fact.prompt["en"] + fact.continuation("en", "ja") == "If today is Monday, tomorrow is 火曜日"
    assert fact.prompt["ja"] + fact.continuation("ja", "en") == "今日が月曜日なら、明日はTuesday"
    assert fact.continuation("ja", "en", join="reference") == " Tuesday"
    assert fact.answer["ja"] == "火曜日"
    assert fact.answer["zh"] == "星期二"
    assert fact.answer["th"] == "วันอังคาร"
    month = by_id["month_next:1"]  # January -> February; ru needs the nominative (stand-alone) form
    assert month.answer["ru"] == "февраль"
    assert month.answer["vi"] == "tháng 2"
    country = by_id["country_language:JP"]
    assert (country.answer["en"], country.answer["ja"], country.answer["fr"]) == ("Japanese", "日本語", "japonais")
    # Every language that has a fact has both its prompt and its answer.
    for fact in cloze.facts:
        assert set(fact.prompt) == set(fact.answer), fact.id


def test_list_prompts_end_with_the_three_previous_names(cloze: ClozeSet) -> None:
    fact = next(f for f in cloze.facts if f.id == "weekday_list:3")  # Thursday
    assert fact.prompt["en"] == "Days of the week: Monday, Tuesday, Wednesday,"
    assert fact.answer["en"] == "Thursday"
    assert fact.prompt["ja"].endswith("月曜日、火曜日、水曜日、")


def test_su_lacks_only_country_facts(cloze: ClozeSet) -> None:
    su = {fact.id for fact in cloze.for_source("su")}
    en = {fact.id for fact in cloze.for_source("en")}
    assert su < en
    assert all(fact_id.startswith("country_language:") for fact_id in en - su)


@pytest.mark.parametrize("lang", sorted(CLDR_EXCLUDED))
def test_excluded_languages_raise_naming_them(lang: str) -> None:
    with pytest.raises(LensSteerError, match=rf"does not cover {lang} \(.+\); drop it or use one of en, nl"):
        load_cloze("cldr", ["en", lang])


def test_the_exclusions_still_hold_in_this_babel() -> None:
    """If CLDR ever gains real ht/qu names, this fails and the exclusion should be revisited."""
    from babel import Locale

    assert Locale("ht").days["format"]["wide"][0] == Locale("root").days["format"]["wide"][0]
    qu, es = Locale("qu").days["format"]["wide"], Locale("es").days["format"]["wide"]
    assert [qu[i].casefold() for i in range(7)] == [es[i].casefold() for i in range(7)]


def test_unknown_cloze_and_language_and_path_are_rejected() -> None:
    with pytest.raises(LensSteerError, match="unknown cloze 'lama'; use one of cldr, mlama-dod"):
        load_cloze("lama", ["en"])
    with pytest.raises(LensSteerError, match="unknown language 'xx'"):
        load_cloze("cldr", ["xx"])
    with pytest.raises(LensSteerError, match="takes no --cloze-path"):
        load_cloze("cldr", ["en"], path="somewhere")
    with pytest.raises(LensSteerError, match="max_facts"):
        load_cloze("cldr", ["en"], max_facts=0)


def test_languages_are_restricted_and_accept_flores_codes() -> None:
    cloze = load_cloze("cldr", ["fra_Latn", "en"])
    assert cloze.languages == ["fr", "en"]
    assert all(set(fact.prompt) <= {"fr", "en"} for fact in cloze.facts)
    assert cloze.meta["name"] == "cldr" and cloze.meta["source"].startswith("babel ")
    assert cloze.for_source("de") == []


def test_pair_facts_drops_identical_answers() -> None:
    cloze = load_cloze("cldr", ["id", "ms", "en"])
    kept = cloze.pair_facts("id", "ms", drop_identical=True)
    everything = cloze.pair_facts("id", "ms", drop_identical=False)
    assert len(kept) < len(everything) == len(cloze.for_source("id"))
    assert all(f.answer["id"].strip().casefold() != f.answer["ms"].strip().casefold() for f in kept)
    dropped = {f.id for f in everything} - {f.id for f in kept}
    assert "weekday_next:0" in dropped  # Selasa in both


def test_pair_facts_casefolds_and_needs_the_target_answer() -> None:
    facts = [
        Fact("a", "r", {"s": "p"}, {"s": " Word", "t": "word "}),
        Fact("b", "r", {"s": "p"}, {"s": " one", "t": " two"}),
        Fact("c", "r", {"s": "p"}, {"s": " only source"}),
        Fact("d", "r", {"t": "p"}, {"s": " no source prompt", "t": " x"}),
    ]
    cloze = ClozeSet("test", ["s", "t"], facts)
    assert [f.id for f in cloze.pair_facts("s", "t", drop_identical=False)] == ["a", "b"]
    assert [f.id for f in cloze.pair_facts("s", "t", drop_identical=True)] == ["b"]


def test_max_facts_takes_the_first_n_per_source() -> None:
    full = load_cloze("cldr", ["en", "su"])
    cut = load_cloze("cldr", ["en", "su"], max_facts=10)
    for lang in ("en", "su"):
        assert [f.id for f in cut.for_source(lang)] == [f.id for f in full.for_source(lang)][:10]
    assert cut.meta["max_facts"] == 10
    # Answers stay for every language, so a pair still finds the target answer.
    assert len(cut.pair_facts("en", "su", drop_identical=False)) == 10
    assert len(load_cloze("cldr", ["en"], max_facts=10_000).for_source("en")) == len(full.for_source("en"))


def test_the_paper_languages_minus_exclusions_load_together() -> None:
    langs = [lang for lang in PAPER_LANGUAGES if lang not in CLDR_EXCLUDED]
    cloze = load_cloze("cldr", langs)
    assert all(len(cloze.for_source(lang)) == 82 for lang in langs)
