"""The ``cldr`` cloze: parallel facts from the CLDR names shipped in ``babel``, the offline default.

Why: the paper's LSS data (MLAMA-dod-185) sits on the Hugging Face hub and covers only 15 of the 18
languages (no ht, qu, sw). CLDR, which ``babel`` ships with every install, has professionally reviewed
weekday, month, country and language names in almost all of ours, so a small factual cloze can be built
with no download. The templates are our own, one set per language, short, with the answer at the end.
The facts are easy on purpose: a 270M-parameter model must know the source-language answer well for a
*shift* towards another language's answer to mean anything.

Relations (ids are ``<relation>:<key>``; weekday keys 0-6 are CLDR's, 0 = Monday; month keys 1-12):
    ``weekday_next`` (7): "If today is Monday, tomorrow is" -> " Tuesday".
    ``weekday_prev`` (7): "If today is Tuesday, yesterday was" -> " Monday".
    ``weekday_list`` (7): "Days of the week: Friday, Saturday, Sunday," -> " Monday" (the three days
        before the answer, wrapping round the week).
    ``month_next`` (12), ``month_prev`` (12), ``month_list`` (12): the same for months.
    ``country_language`` (25, key = ISO 3166 code): "Country: France. Official language:" -> " French".
        The infobox form avoids articles, prepositions and case endings that a country name would need in
        a sentence (fr "au Japon", ru "во Франции", tr "Fransa'da"), which CLDR cannot inflect.

That is 82 facts per language (65 for su, whose CLDR data has only a few country and language names).
The order is fixed and round-robin over the relations (``weekday_next:0``, ``weekday_prev:0``, ...), so
that ``max_facts`` takes a mix of relations rather than one.

Name forms: CLDR's ``format``/``wide`` names, which CLDR writes in their mid-sentence casing (fr
``lundi``, id ``Senin``, tr ``Pazartesi``). Russian months are the exception: ``format`` is the genitive
(``января``, as in a date), while our templates need the nominative, which CLDR gives as
``stand-alone`` (``январь``). Language names are adapted to our templates: Vietnamese ``Tiếng Pháp``
becomes ``tiếng Pháp`` (mid-sentence), and the id/ms/jv/su templates end in ``bahasa``/``basa`` and the
th one in ``ภาษา``, so that prefix is removed from a name that carries it (su ``Basa Inggris``).

Known weaknesses: in id, ms, jv, su and th the language is named after the country (id ``Prancis`` ->
``bahasa Prancis``), so those country facts can be answered by copying; and several languages share
answers (id/ms/jv ``Selasa``, months everywhere). :meth:`ClozeSet.pair_facts` with
``drop_identical=True`` removes the shared ones per pair.

Excluded languages (:data:`CLDR_EXCLUDED`), checked with babel 2.19 (CLDR 49):
    ``ht``: CLDR has no Haitian Creole calendar or display names; babel returns the root locale's
        placeholders (weekdays ``Mon``, ``Tue``...; months ``M01``...; no country names at all).
    ``qu``: CLDR's Quechua weekday and month names are the Spanish ones (``Lunes``, ``Enero``; equal to
        babel ``es`` after casefolding, except ``Setiembre``), and 241 of its 295 country names are the
        Spanish ones. A qu fact would test Spanish vocabulary, not Quechua.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from lens_steer.cloze import ClozeSet, Fact, check_supported
from lens_steer.errors import LensSteerError
from lens_steer.languages import LANGUAGES

CLDR_EXCLUDED: dict[str, str] = {
    "ht": "CLDR has no Haitian Creole day, month or country names; babel falls back to root placeholders",
    "qu": "CLDR's Quechua day and month names are the Spanish ones, so the facts would test Spanish",
}
"""Registry languages the cldr cloze leaves out, with the reason (see the module docstring)."""

RELATIONS: tuple[str, ...] = (
    "weekday_next",
    "weekday_prev",
    "weekday_list",
    "month_next",
    "month_prev",
    "month_list",
    "country_language",
)

COUNTRIES: dict[str, str] = {
    "FR": "fr", "DE": "de", "IT": "it", "ES": "es", "PT": "pt", "RU": "ru", "JP": "ja", "CN": "zh",
    "KR": "ko", "TR": "tr", "GR": "el", "NL": "nl", "SE": "sv", "TH": "th", "VN": "vi", "ID": "id",
    "IR": "fa", "HU": "hu", "UA": "uk", "CZ": "cs", "EE": "et", "BR": "pt", "MX": "es", "AT": "de",
    "GB": "en",
}  # fmt: skip
"""ISO 3166 country -> its one official (or de facto national) language, for ``country_language``.

Why these: one clear language each, and names in CLDR for (nearly) all our languages. Finland, Poland and
Denmark are left out because CLDR's Indonesian names for their languages are the endonyms (Suomi,
Polski, Dansk), which no Indonesian prompt would lead to."""

# Per language: one template per relation. "{x}" is the CLDR name (for *_list: the joined names).
# Each template ends where the answer starts; see the module docstring for the forms of the names.
_TEMPLATES: dict[str, dict[str, str]] = {
    "en": {
        "weekday_next": "If today is {x}, tomorrow is",
        "weekday_prev": "If today is {x}, yesterday was",
        "weekday_list": "Days of the week: {x}",
        "month_next": "If this month is {x}, next month is",
        "month_prev": "If this month is {x}, last month was",
        "month_list": "Months of the year: {x}",
        "country_language": "Country: {x}. Official language:",
    },
    "nl": {
        "weekday_next": "Als het vandaag {x} is, is het morgen",
        "weekday_prev": "Als het vandaag {x} is, was het gisteren",
        "weekday_list": "Dagen van de week: {x}",
        "month_next": "Als het deze maand {x} is, is het volgende maand",
        "month_prev": "Als het deze maand {x} is, was het vorige maand",
        "month_list": "Maanden van het jaar: {x}",
        "country_language": "Land: {x}. Officiële taal:",
    },
    "id": {
        "weekday_next": "Jika hari ini hari {x}, besok adalah hari",
        "weekday_prev": "Jika hari ini hari {x}, kemarin adalah hari",
        "weekday_list": "Nama hari dalam seminggu: {x}",
        "month_next": "Jika bulan ini bulan {x}, bulan depan adalah bulan",
        "month_prev": "Jika bulan ini bulan {x}, bulan lalu adalah bulan",
        "month_list": "Nama bulan dalam setahun: {x}",
        "country_language": "Negara: {x}. Bahasa resmi: bahasa",
    },
    "ms": {
        "weekday_next": "Jika hari ini hari {x}, esok ialah hari",
        "weekday_prev": "Jika hari ini hari {x}, semalam ialah hari",
        "weekday_list": "Hari dalam seminggu: {x}",
        "month_next": "Jika bulan ini bulan {x}, bulan depan ialah bulan",
        "month_prev": "Jika bulan ini bulan {x}, bulan lepas ialah bulan",
        "month_list": "Bulan dalam setahun: {x}",
        "country_language": "Negara: {x}. Bahasa rasmi: bahasa",
    },
    "vi": {
        "weekday_next": "Nếu hôm nay là {x} thì ngày mai là",
        "weekday_prev": "Nếu hôm nay là {x} thì hôm qua là",
        "weekday_list": "Các ngày trong tuần: {x}",
        "month_next": "Nếu tháng này là {x} thì tháng sau là",
        "month_prev": "Nếu tháng này là {x} thì tháng trước là",
        "month_list": "Các tháng trong năm: {x}",
        "country_language": "Quốc gia: {x}. Ngôn ngữ chính thức:",
    },
    "ja": {
        "weekday_next": "今日が{x}なら、明日は",
        "weekday_prev": "今日が{x}なら、昨日は",
        "weekday_list": "曜日の順番：{x}",
        "month_next": "今月が{x}なら、来月は",
        "month_prev": "今月が{x}なら、先月は",
        "month_list": "月の順番：{x}",
        "country_language": "国：{x}。公用語：",
    },
    "zh": {
        "weekday_next": "如果今天是{x}，那么明天是",
        "weekday_prev": "如果今天是{x}，那么昨天是",
        "weekday_list": "一周七天：{x}",
        "month_next": "如果这个月是{x}，那么下个月是",
        "month_prev": "如果这个月是{x}，那么上个月是",
        "month_list": "一年的月份：{x}",
        "country_language": "国家：{x}。官方语言：",
    },
    "fr": {
        "weekday_next": "Si aujourd'hui c'est {x}, demain ce sera",
        "weekday_prev": "Si aujourd'hui c'est {x}, hier c'était",
        "weekday_list": "Les jours de la semaine : {x}",
        "month_next": "Si nous sommes en {x}, le mois prochain sera",
        "month_prev": "Si nous sommes en {x}, le mois dernier était",
        "month_list": "Les mois de l'année : {x}",
        "country_language": "Pays : {x}. Langue officielle :",
    },
    "pt": {
        "weekday_next": "Se hoje é {x}, amanhã é",
        "weekday_prev": "Se hoje é {x}, ontem foi",
        "weekday_list": "Os dias da semana: {x}",
        "month_next": "Se este mês é {x}, o próximo mês é",
        "month_prev": "Se este mês é {x}, o mês passado foi",
        "month_list": "Os meses do ano: {x}",
        "country_language": "País: {x}. Língua oficial:",
    },
    "ru": {
        "weekday_next": "Если сегодня {x}, то завтра",
        "weekday_prev": "Если сегодня {x}, то вчера",
        "weekday_list": "Дни недели: {x}",
        "month_next": "Если сейчас {x}, то следующий месяц —",
        "month_prev": "Если сейчас {x}, то предыдущий месяц —",
        "month_list": "Месяцы года: {x}",
        "country_language": "Страна: {x}. Официальный язык:",
    },
    "et": {
        "weekday_next": "Kui täna on {x}, siis homme on",
        "weekday_prev": "Kui täna on {x}, siis eile oli",
        "weekday_list": "Nädalapäevad: {x}",
        "month_next": "Kui praegu on {x}, siis järgmine kuu on",
        "month_prev": "Kui praegu on {x}, siis eelmine kuu oli",
        "month_list": "Aasta kuud: {x}",
        "country_language": "Riik: {x}. Ametlik keel:",
    },
    "it": {
        "weekday_next": "Se oggi è {x}, domani è",
        "weekday_prev": "Se oggi è {x}, ieri era",
        "weekday_list": "I giorni della settimana: {x}",
        "month_next": "Se questo mese è {x}, il mese prossimo è",
        "month_prev": "Se questo mese è {x}, il mese scorso era",
        "month_list": "I mesi dell'anno: {x}",
        "country_language": "Paese: {x}. Lingua ufficiale:",
    },
    "sw": {
        "weekday_next": "Kama leo ni {x}, kesho ni",
        "weekday_prev": "Kama leo ni {x}, jana ilikuwa",
        "weekday_list": "Siku za wiki: {x}",
        "month_next": "Kama mwezi huu ni {x}, mwezi ujao ni",
        "month_prev": "Kama mwezi huu ni {x}, mwezi uliopita ulikuwa",
        "month_list": "Miezi ya mwaka: {x}",
        "country_language": "Nchi: {x}. Lugha rasmi:",
    },
    "ta": {
        "weekday_next": "இன்று {x} என்றால், நாளை",
        "weekday_prev": "இன்று {x} என்றால், நேற்று",
        "weekday_list": "வாரத்தின் நாட்கள்: {x}",
        "month_next": "இந்த மாதம் {x} என்றால், அடுத்த மாதம்",
        "month_prev": "இந்த மாதம் {x} என்றால், சென்ற மாதம்",
        "month_list": "ஆண்டின் மாதங்கள்: {x}",
        "country_language": "நாடு: {x}. அதிகாரப்பூர்வ மொழி:",
    },
    "th": {
        "weekday_next": "ถ้าวันนี้เป็น{x} พรุ่งนี้ก็เป็น",
        "weekday_prev": "ถ้าวันนี้เป็น{x} เมื่อวานเป็น",
        "weekday_list": "วันในสัปดาห์: {x}",
        "month_next": "ถ้าเดือนนี้เป็นเดือน{x} เดือนหน้าก็เป็นเดือน",
        "month_prev": "ถ้าเดือนนี้เป็นเดือน{x} เดือนที่แล้วเป็นเดือน",
        "month_list": "เดือนในหนึ่งปี: {x}",
        "country_language": "ประเทศ: {x} ภาษาราชการ: ภาษา",
    },
    "tr": {
        "weekday_next": "Bugün {x} ise yarın",
        "weekday_prev": "Bugün {x} ise dün",
        "weekday_list": "Haftanın günleri: {x}",
        "month_next": "Bu ay {x} ise gelecek ay",
        "month_prev": "Bu ay {x} ise geçen ay",
        "month_list": "Yılın ayları: {x}",
        "country_language": "Ülke: {x}. Resmî dil:",
    },
    "jv": {
        "weekday_next": "Yen dina iki dina {x}, sesuk dina",
        "weekday_prev": "Yen dina iki dina {x}, wingi dina",
        "weekday_list": "Jeneng dina: {x}",
        "month_next": "Yen sasi iki sasi {x}, sasi ngarep sasi",
        "month_prev": "Yen sasi iki sasi {x}, sasi kepungkur sasi",
        "month_list": "Jeneng sasi: {x}",
        "country_language": "Negara: {x}. Basa resmi: basa",
    },
    "su": {
        "weekday_next": "Upami dinten ieu dinten {x}, enjing dinten",
        "weekday_prev": "Upami dinten ieu dinten {x}, kamari dinten",
        "weekday_list": "Ngaran dinten: {x}",
        "month_next": "Upami bulan ieu bulan {x}, bulan payun bulan",
        "month_prev": "Upami bulan ieu bulan {x}, bulan kapengker bulan",
        "month_list": "Ngaran bulan: {x}",
        "country_language": "Nagara: {x}. Basa resmi: basa",
    },
}

# How a *_list prompt joins its three names and what follows the last one. Thai lists are separated by
# spaces and have no comma, so the prompt ends in "ถัดไปคือ" ("next is") instead.
_LIST_STYLE: dict[str, tuple[str, str]] = {"ja": ("、", "、"), "zh": ("、", "、"), "th": (" ", " ถัดไปคือ")}
_DEFAULT_LIST_STYLE = (", ", ",")

_MONTH_CONTEXT: dict[str, str] = {"ru": "stand-alone"}  # nominative; ru "format" months are genitive
_LANGUAGE_PREFIXES: dict[str, tuple[str, ...]] = {
    "id": ("bahasa ",),
    "ms": ("bahasa ",),
    "jv": ("basa ", "bahasa "),
    "su": ("basa ", "bahasa "),
    "th": ("ภาษา",),
}

SUPPORTED: tuple[str, ...] = tuple(code for code in LANGUAGES if code in _TEMPLATES)
"""The languages the cldr cloze covers, in registry order (all but :data:`CLDR_EXCLUDED`)."""


def _locale(lang: str) -> Any:
    try:
        from babel import Locale  # deferred: babel, only when a CLDR cloze is built (keeps the CLI light)
    except ImportError:
        raise LensSteerError("the cldr cloze needs the `babel` package; pip install babel") from None
    return Locale.parse(lang)


def _clean(name: Any) -> str:
    return " ".join(name.split()) if isinstance(name, str) else ""


def _language_name(lang: str, name: str) -> str:
    for prefix in _LANGUAGE_PREFIXES.get(lang, ()):
        if name.casefold().startswith(prefix):
            name = name[len(prefix) :]
    if lang == "vi" and name[:1].isupper():  # CLDR capitalises "Tiếng Pháp"; mid-sentence it is "tiếng"
        name = name[:1].lower() + name[1:]
    return name.strip()


def _names(lang: str) -> dict[str, dict[Any, str]]:
    """The CLDR names one language's facts use: weekdays 0-6, months 1-12, countries, languages."""
    locale = _locale(lang)
    days = locale.days["format"]["wide"]
    months = locale.months[_MONTH_CONTEXT.get(lang, "format")]["wide"]
    return {
        "weekday": {i: _clean(days.get(i)) for i in range(7)},
        "month": {m: _clean(months.get(m)) for m in range(1, 13)},
        "country": {code: _clean(locale.territories.get(code)) for code in COUNTRIES},
        "language": {
            code: _language_name(lang, _clean(locale.languages.get(code))) for code in dict.fromkeys(COUNTRIES.values())
        },
    }


def _sequence_facts(lang: str, unit: str, names: dict[Any, str]) -> dict[str, dict[str, tuple[str, str]]]:
    """The ``<unit>_next``, ``_prev`` and ``_list`` facts of one cyclic sequence (weekdays or months)."""
    templates = _TEMPLATES[lang]
    sep, end = _LIST_STYLE.get(lang, _DEFAULT_LIST_STYLE)
    keys = list(names)
    out: dict[str, dict[str, tuple[str, str]]] = {f"{unit}_{kind}": {} for kind in ("next", "prev", "list")}
    for i, key in enumerate(keys):
        # Why modulo: the week and the year wrap round (after Sunday comes Monday).
        after, before = names[keys[(i + 1) % len(keys)]], names[keys[i - 1]]
        previous = [names[keys[(i + k) % len(keys)]] for k in (-3, -2, -1)]
        here = names[key]
        if here and after:
            out[f"{unit}_next"][str(key)] = (templates[f"{unit}_next"].format(x=here), after)
        if here and before:
            out[f"{unit}_prev"][str(key)] = (templates[f"{unit}_prev"].format(x=here), before)
        if here and all(previous):
            out[f"{unit}_list"][str(key)] = (templates[f"{unit}_list"].format(x=sep.join(previous) + end), here)
    return out


def _lang_facts(lang: str) -> dict[str, dict[str, tuple[str, str]]]:
    """relation -> key -> (prompt, bare answer) for one language; facts with a missing name are left out."""
    names = _names(lang)
    out = {**_sequence_facts(lang, "weekday", names["weekday"]), **_sequence_facts(lang, "month", names["month"])}
    template = _TEMPLATES[lang]["country_language"]
    out["country_language"] = {
        country: (template.format(x=names["country"][country]), names["language"][language])
        for country, language in COUNTRIES.items()
        if names["country"][country] and names["language"][language]
    }
    return out


@lru_cache(maxsize=None)
def _all_facts() -> tuple[tuple[str, str, tuple[tuple[str, str, str], ...]], ...]:
    """Every fact of every supported language, in the fixed round-robin order.

    Returns:
        ``(id, relation, ((lang, prompt, answer), ...))`` tuples; cached because babel is slow to load.
    """
    per_lang = {lang: _lang_facts(lang) for lang in SUPPORTED}
    keys: dict[str, list[str]] = {}
    for relation in RELATIONS:
        seen: dict[str, None] = {}
        for lang in SUPPORTED:
            seen.update(dict.fromkeys(per_lang[lang][relation]))
        keys[relation] = list(seen)
    ordered: list[tuple[str, str, tuple[tuple[str, str, str], ...]]] = []
    for rank in range(max(len(k) for k in keys.values())):
        for relation in RELATIONS:
            if rank >= len(keys[relation]):
                continue
            key = keys[relation][rank]
            entries = []
            for lang in SUPPORTED:
                found = per_lang[lang][relation].get(key)
                if found is not None:
                    entries.append((lang, *found))
            ordered.append((f"{relation}:{key}", relation, tuple(entries)))
    return tuple(ordered)


def load(langs: Sequence[str], path: str | None) -> ClozeSet:
    """The cldr facts for some languages.

    Args:
        langs: ISO 639-1 codes, already checked against the registry.
        path: Must be ``None``: the data ship with babel.

    Raises:
        LensSteerError: a path was given, or a language is not covered (ht, qu).

    >>> cloze = load(["en", "ja"], None)
    >>> fact = cloze.for_source("ja")[0]
    >>> fact.prompt["ja"] + fact.continuation("ja", "ja"), fact.answer["en"]
    ('今日が月曜日なら、明日は火曜日', 'Tuesday')
    """
    if path is not None:
        raise LensSteerError("the cldr cloze takes no --cloze-path (its data ship with babel); omit it")
    check_supported("cldr", langs, SUPPORTED, CLDR_EXCLUDED)
    wanted = set(langs)
    facts: list[Fact] = []
    for fact_id, relation, entries in _all_facts():
        chosen = [(lang, prompt, answer) for lang, prompt, answer in entries if lang in wanted]
        if chosen:
            facts.append(
                Fact(
                    id=fact_id,
                    relation=relation,
                    prompt={lang: prompt for lang, prompt, _ in chosen},
                    answer={lang: answer for lang, _, answer in chosen},
                )
            )
    # deferred: babel, only when a CLDR cloze is built (keeps the CLI light)
    import babel
    import babel.core

    meta = {
        "name": "cldr",
        "source": f"babel {babel.__version__}",
        "version": f"CLDR {babel.core.get_cldr_version()}",
        "license": "Unicode-3.0 (CLDR data); templates MIT",
        "path": None,
        "relations": list(RELATIONS),
        "excluded": dict(CLDR_EXCLUDED),
    }
    return ClozeSet(name="cldr", languages=list(langs), facts=facts, meta=meta)
