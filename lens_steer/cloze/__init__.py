"""Parallel cloze facts: the data the Language Steering Shift (LSS) is measured on.

Why parallel facts: LSS (Rahmanisa et al. 2025, §8 of the method notes) asks, for a prompt in source
language ``s`` and a fact ``i``, whether amplifying the neurons of target language ``t`` raises the
log-probability of the ``t``-language answer relative to the ``s``-language one. That needs, for each
fact, a prompt in ``s`` and the answer in *every* language, all about the same thing. A :class:`Fact`
holds exactly that; a :class:`ClozeSet` is a fixed, ordered list of them.

Clozes:
    ``cldr`` (default, offline): weekday, month and country facts built from the CLDR data shipped in
        ``babel``, with templates written for each language (:mod:`lens_steer.cloze.cldr`).
    ``mlama-dod``: the paper's ``inayarhmns/MLAMA-dod-185`` from the Hugging Face hub, or a local copy
        (:mod:`lens_steer.cloze.mlama`).

Conventions every cloze follows, so that the scorer can concatenate without guessing:
    * ``prompt[lang]`` never ends in whitespace; ``answer[lang]`` is the bare answer (``"mardi"``,
      ``"火曜日"``), with no leading or trailing whitespace.
    * The separator between them is a property of the **prompt**, never of the answer's language
      (:func:`lens_steer.languages.separator`): :meth:`Fact.continuation` gives what is appended to
      ``prompt[s]`` for the answer in any language. Default ``auto``: one space iff ``s`` writes spaces
      between words (not ja, zh, th); ``reference``: always one space, as the authors' code.
    * Fact ids are stable and equal across languages: ``prompt["fr"]`` and ``answer["ja"]`` of one fact
      are about the same thing.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from lens_steer.errors import LensSteerError
from lens_steer.languages import parse_languages, separator

CLOZES: tuple[str, ...] = ("cldr", "mlama-dod")

_MODULES: dict[str, str] = {"cldr": "cldr", "mlama-dod": "mlama"}


@dataclass(frozen=True)
class Fact:
    """One cloze fact, in every language that has it.

    Attributes:
        id: Stable id, equal across languages (``"weekday_next:3"``).
        relation: What is asked (``"weekday_next"``).
        prompt: Language -> prompt text; it never ends in whitespace.
        answer: Language -> the bare answer (``"mardi"``, ``"火曜日"``).

    >>> fact = Fact("weekday_next:0", "weekday_next", {"en": "If today is Monday, tomorrow is",
    ...             "ja": "今日が月曜日なら、明日は"}, {"en": "Tuesday", "ja": "火曜日"})
    >>> fact.prompt["en"] + fact.continuation("en", "ja"), fact.prompt["ja"] + fact.continuation("ja", "en")
    ('If today is Monday, tomorrow is 火曜日', '今日が月曜日なら、明日はTuesday')
    """

    id: str
    relation: str
    prompt: dict[str, str]
    answer: dict[str, str]

    def continuation(self, source: str, lang: str, join: str = "auto") -> str:
        """What is appended to ``prompt[source]`` to score the answer in ``lang``: the prompt's separator
        (:func:`~lens_steer.languages.separator`, the same for every answer of the prompt) + the answer."""
        return separator(source, join) + self.answer[lang]


def _same_answer(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


@dataclass
class ClozeSet:
    """A named, ordered list of parallel facts for some languages.

    Attributes:
        name: The cloze it came from (one of :data:`CLOZES`).
        languages: ISO 639-1 codes, in the order they were asked for.
        facts: The facts, in the cloze's fixed order.
        meta: Where the facts came from (``source``, ``version``, ``path``, ...), for run manifests.
    """

    name: str
    languages: list[str]
    facts: list[Fact]
    meta: dict[str, Any] = field(default_factory=dict)

    def for_source(self, lang: str) -> list[Fact]:
        """The facts that can be asked in ``lang``: those with both a prompt and an answer in it.

        >>> cloze = load_cloze("cldr", ["en", "fr"])
        >>> cloze.for_source("fr")[0].prompt["fr"]
        "Si aujourd'hui c'est lundi, demain ce sera"
        """
        return [fact for fact in self.facts if lang in fact.prompt and lang in fact.answer]

    def pair_facts(self, s: str, t: str, drop_identical: bool) -> list[Fact]:
        """The facts usable for the pair (source ``s``, target ``t``): an ``s`` prompt and answer, and a
        ``t`` answer.

        Args:
            s: Source language (the prompt's).
            t: Target language (the answer whose log-probability should rise).
            drop_identical: Drop facts whose ``s`` and ``t`` answers are the same string after strip and
                casefold (e.g. id/ms ``" Selasa"``). Why: the difference of differences is exactly 0 for
                them, so they can only count as misses; the paper's notes (P13) drop them.

        >>> cloze = load_cloze("cldr", ["id", "ms"])
        >>> len(cloze.pair_facts("id", "ms", drop_identical=True)) < len(cloze.pair_facts("id", "ms", False))
        True
        """
        facts = [fact for fact in self.for_source(s) if t in fact.answer]
        if drop_identical:
            facts = [fact for fact in facts if not _same_answer(fact.answer[s], fact.answer[t])]
        return facts


def check_supported(cloze: str, langs: Sequence[str], supported: Sequence[str], why: dict[str, str]) -> None:
    """Raise if a language is not covered by a cloze; for the cloze modules.

    Args:
        cloze: The cloze's name, for the message.
        langs: The languages asked for.
        supported: The languages the cloze covers, in registry order.
        why: Optional reason per unsupported language (``{"ht": "CLDR has no Haitian Creole names"}``).

    >>> check_supported("cldr", ["ht"], ["en", "fr"], {"ht": "no names"})
    Traceback (most recent call last):
    ...
    lens_steer.errors.LensSteerError: cloze cldr does not cover ht (no names); drop it or use one of en, fr
    """
    missing = [lang for lang in langs if lang not in supported]
    if not missing:
        return
    named = ", ".join(f"{lang} ({why[lang]})" if lang in why else lang for lang in missing)
    raise LensSteerError(f"cloze {cloze} does not cover {named}; drop it or use one of {', '.join(supported)}")


def supported_languages(name: str) -> tuple[str, ...]:
    """The languages a cloze covers, in registry order.

    >>> "ht" in supported_languages("cldr")
    False
    """
    module = importlib.import_module(f"lens_steer.cloze.{_MODULES[_check_name(name)]}")
    return tuple(getattr(module, "SUPPORTED", None) or module.MLAMA_LANGUAGES)


def _check_name(name: str) -> str:
    if name not in CLOZES:
        raise LensSteerError(f"unknown cloze {name!r}; use one of {', '.join(CLOZES)}")
    return name


def _first_per_source(facts: list[Fact], langs: Sequence[str], max_facts: int) -> list[Fact]:
    """Keep each language's prompt only on its first ``max_facts`` facts.

    Why prompts and not answers: a fact beyond ``t``'s first N may still be among ``s``'s first N, and the
    pair (s, t) needs ``t``'s answer for it.
    """
    keep: dict[str, set[str]] = {}
    for lang in langs:
        ids = [fact.id for fact in facts if lang in fact.prompt and lang in fact.answer]
        keep[lang] = set(ids[:max_facts])
    trimmed: list[Fact] = []
    for fact in facts:
        prompt = {lang: text for lang, text in fact.prompt.items() if fact.id in keep.get(lang, ())}
        if prompt:
            trimmed.append(replace(fact, prompt=prompt))
    return trimmed


def load_cloze(
    name: str,
    langs: Sequence[str],
    *,
    path: str | None = None,
    max_facts: int | None = None,
) -> ClozeSet:
    """Load a cloze set for some languages.

    Args:
        name: One of :data:`CLOZES`.
        langs: Language codes (ISO 639-1, or FLORES codes such as ``fra_Latn``).
        path: A local copy: accepted by ``mlama-dod`` (instead of the hub); ``cldr`` takes none.
        max_facts: Keep only the first N facts of each source language, in the fixed order.

    Returns:
        The facts, restricted to ``langs``.

    Raises:
        LensSteerError: unknown cloze or language, a language the cloze does not cover, a bad
            ``max_facts``, or (mlama-dod) an unreachable hub or unusable local copy.

    >>> cloze = load_cloze("cldr", ["en", "fr"], max_facts=3)
    >>> [fact.id for fact in cloze.for_source("fr")]
    ['weekday_next:0', 'weekday_prev:0', 'weekday_list:0']
    """
    _check_name(name)
    codes = parse_languages(list(langs))
    if max_facts is not None and (isinstance(max_facts, bool) or not isinstance(max_facts, int) or max_facts < 1):
        raise LensSteerError(f"max_facts must be a positive whole number, not {max_facts!r}; or omit it for all facts")
    module = importlib.import_module(f"lens_steer.cloze.{_MODULES[name]}")
    cloze: ClozeSet = module.load(codes, path)
    if max_facts is not None:
        cloze.facts = _first_per_source(cloze.facts, codes, max_facts)
        cloze.meta["max_facts"] = max_facts
    return cloze


__all__ = ["CLOZES", "ClozeSet", "Fact", "check_supported", "load_cloze", "supported_languages"]
