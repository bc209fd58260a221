"""The language registry and the parsing of user language lists."""

from __future__ import annotations

import dataclasses

import pytest

from lens_steer.errors import LensSteerError
from lens_steer.languages import (
    FLORES_PLUS_RENAMES,
    LANGUAGES,
    PAPER_LANGUAGES,
    get_language,
    parse_languages,
)


def test_paper_languages_in_paper_order_then_extras() -> None:
    assert PAPER_LANGUAGES == (
        "en",
        "nl",
        "id",
        "ms",
        "vi",
        "ja",
        "zh",
        "fr",
        "pt",
        "ru",
        "et",
        "ht",
        "it",
        "qu",
        "sw",
        "ta",
        "th",
        "tr",
    )
    assert list(LANGUAGES) == [*PAPER_LANGUAGES, "jv", "su"]


def test_codes_agree_with_each_other() -> None:
    for code, lang in LANGUAGES.items():
        assert lang.code == code
        iso3, script = lang.flores.split("_")
        assert lang.iso3 == iso3
        assert lang.script == script
        assert lang.script in {"Latn", "Jpan", "Hans", "Cyrl", "Taml", "Thai"}
    assert len({lang.udhr for lang in LANGUAGES.values()}) == len(LANGUAGES)


def test_udhr_declaration_codes() -> None:
    assert {code: lang.udhr for code, lang in LANGUAGES.items()} == {
        "en": "eng", "nl": "nld", "id": "ind", "ms": "mly_latn", "vi": "vie", "ja": "jpn", "zh": "cmn_hans",
        "fr": "fra", "pt": "por_PT", "ru": "rus", "et": "est", "ht": "hat_kreyol", "it": "ita", "qu": "quy",
        "sw": "swh", "ta": "tam", "th": "tha", "tr": "tur", "jv": "jav", "su": "sun",
    }  # fmt: skip


def test_low_resource_group() -> None:
    assert {code for code, lang in LANGUAGES.items() if lang.low_resource} == {"ht", "qu", "sw", "jv", "su"}


def test_language_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        LANGUAGES["en"].name = "Anglais"  # type: ignore[misc]


def test_none_means_the_paper_languages() -> None:
    assert parse_languages(None) == list(PAPER_LANGUAGES)


def test_string_is_split_stripped_and_lower_cased() -> None:
    assert parse_languages(" EN, ,fr ,,Sw ") == ["en", "fr", "sw"]


def test_sequence_keeps_order() -> None:
    assert parse_languages(["su", " jv", "en"]) == ["su", "jv", "en"]


@pytest.mark.parametrize(
    ("alias", "code"),
    [
        ("fra_Latn", "fr"),
        ("FRA_LATN", "fr"),
        ("zho_Hans", "zh"),
        ("cmn_Hans", "zh"),
        ("ekk_Latn", "et"),
        ("zsm_Latn", "ms"),
        ("quy", "qu"),
    ],
)
def test_flores_and_iso3_aliases(alias: str, code: str) -> None:
    assert parse_languages(alias) == [code]
    assert get_language(alias).code == code


def test_flores_plus_renames_only_touch_known_codes() -> None:
    assert set(FLORES_PLUS_RENAMES) <= {lang.flores for lang in LANGUAGES.values()}


@pytest.mark.parametrize("spec", ["en,fr,en", ["fr", "fra_Latn"], "zh, cmn_Hans"])
def test_duplicates_are_rejected(spec: str | list[str]) -> None:
    with pytest.raises(LensSteerError, match="given twice"):
        parse_languages(spec)


def test_unknown_code_lists_the_valid_ones() -> None:
    with pytest.raises(LensSteerError) as err:
        parse_languages("en,xx")
    message = str(err.value)
    assert "'xx'" in message and "\n" not in message
    assert all(code in message for code in LANGUAGES)
    with pytest.raises(LensSteerError, match="unknown language 'de'"):
        get_language("de")


@pytest.mark.parametrize("spec", ["", " , ", []])
def test_empty_list_is_rejected(spec: str | list[str]) -> None:
    with pytest.raises(LensSteerError, match="no language given"):
        parse_languages(spec)
