"""The data of the downstream evaluations: XCOPA, XWinograd, INCLUDE-lite, FLORES+ and the held-out UDHR.

Every loader takes our ISO 639-1 codes (``langs``), an optional local copy (``path``, the CLI's ``--data``) and an
optional ``limit`` (the first N usable items per language), and returns plain dataclasses or strings keyed by the
ISO code. A language a dataset lacks, an unreachable hub, a missing file or a file without the required columns is a
one-line :class:`~lens_steer.errors.LensSteerError` that says what to do.

Hub datasets (read as parquet with ``datasets.load_dataset``; ``datasets`` 4+ refuses loading scripts):
    ``cambridgeltl/xcopa``: parquet on ``main`` (converted by the hub team), one config per language
        (``et ht id it qu sw ta th tr vi zh``, equal to our codes), splits ``validation`` (100) and ``test`` (500).
        Columns ``premise, choice1, choice2, question`` ("cause"/"effect"), ``label`` (0/1), ``idx``, ``changed``.
        Call: ``load_dataset("cambridgeltl/xcopa", "<lang>", split="<split>")``.
    ``Muennighoff/xwinograd``: ``main`` still holds a loading script (``xwinograd.py``), so we read the hub's own
        parquet export on the ``refs/convert/parquet`` branch, laid out ``<config>/<split>/0000.parquet``. Configs
        ``en fr jp pt ru zh`` (``jp`` is Japanese: our ``ja``), split ``test``. Columns ``sentence`` (one ``_``),
        ``option1``, ``option2``, ``answer`` ("1"/"2"). Call: ``load_dataset("parquet", data_files={"test":
        "hf://datasets/Muennighoff/xwinograd@refs/convert/parquet/jp/test/*.parquet"}, split="test")``. Rows
        whose sentence does not hold exactly one ``_`` are skipped with a warning.
    ``CohereLabs/include-lite-44``: parquet on ``main``, one config per language *name* (``Japanese``), split
        ``test`` (about 250 items). Columns ``language, country, domain, subject, regional_feature, level,
        question, choices`` (the four options, a list) and ``answer`` (0-3). The full ``include-base-44`` spells
        the options ``option_a`` ... ``option_d``; either form is accepted. Call: ``load_dataset(
        "CohereLabs/include-lite-44", "Japanese", split="test")``. Of the paper's 18 languages it covers 13 (not
        en, ht, qu, sw, th); of ours jv and su are missing too.
    FLORES+ (``openlanguagedata/flores_plus``, gated) comes through :mod:`lens_steer.corpora.flores`, with its
    local layout ``<path>/<split>/<flores code>.parquet`` (or ``.jsonl``).

Local copies (``path``) have the hub's columns, in ``.parquet`` or ``.jsonl`` (one JSON object per line) files.
For a language whose hub config is ``<config>`` (``qu``, ``jp``, ``Japanese``; our ISO code is accepted as
well) and a split ``<split>`` (``validation`` may be spelt ``val``), the first of these that exists is read:
    1. ``<path>/<config>/<split>.parquet`` or ``.jsonl``
    2. ``<path>/<config>/<split>-*.parquet`` or ``.jsonl`` (the hub's shards, ``test-00000-of-00001.parquet``), or
       ``<path>/<config>/<split>.*.jsonl`` (XCOPA's GitHub files, ``data/qu/test.qu.jsonl``)
    3. ``<path>/<config>/<split>/*.parquet`` (a download of ``refs/convert/parquet``)
    4. ``<path>/<split>/<config>.parquet`` or ``.jsonl`` (XWinograd's ``main``: ``test/jp.jsonl``)
    5. ``<path>/<config>.parquet`` or ``.jsonl``, for the datasets with one split (XWinograd, INCLUDE-lite).
So ``huggingface-cli download --repo-type dataset cambridgeltl/xcopa --local-dir D`` gives a usable ``D`` (the same
for ``CohereLabs/include-lite-44``; for XWinograd add ``--revision refs/convert/parquet``).

The UDHR loaders need no network: they read the embedded declaration (:mod:`lens_steer.corpora.udhr`), held-out
split ``eval`` (articles 25-30), which the neurons were not chosen on.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lens_steer.corpora import flores, load_corpus
from lens_steer.corpora.udhr import SPLITS, udhr_units
from lens_steer.errors import LensSteerError
from lens_steer.languages import LANGUAGES, parse_languages
from lens_steer.reader import Missing, Row, find_files, load_hub, needs, read_files

if TYPE_CHECKING:
    from lens_steer.corpora.udhr import Paragraph

XCOPA_HUB = "cambridgeltl/xcopa"
XWINOGRAD_HUB = "Muennighoff/xwinograd"
INCLUDE_HUB = "CohereLabs/include-lite-44"

XCOPA_CONFIGS: dict[str, str] = {
    code: code for code in ("et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh")
}
"""Our code -> XCOPA config (the same)."""

XWINOGRAD_CONFIGS: dict[str, str] = {"en": "en", "fr": "fr", "ja": "jp", "pt": "pt", "ru": "ru", "zh": "zh"}
"""Our code -> XWinograd config; the dataset calls Japanese ``jp``."""

INCLUDE_CONFIGS: dict[str, str] = {
    "nl": "Dutch", "id": "Indonesian", "ms": "Malay", "vi": "Vietnamese", "ja": "Japanese", "zh": "Chinese",
    "fr": "French", "pt": "Portuguese", "ru": "Russian", "et": "Estonian", "it": "Italian", "ta": "Tamil",
    "tr": "Turkish",
}  # fmt: skip
"""Our code -> INCLUDE-lite config (an English language name). INCLUDE has no English, Haitian Creole, Quechua,
Swahili, Thai, Javanese or Sundanese."""

XCOPA_LANGS: tuple[str, ...] = tuple(code for code in LANGUAGES if code in XCOPA_CONFIGS)
XWINOGRAD_LANGS: tuple[str, ...] = tuple(code for code in LANGUAGES if code in XWINOGRAD_CONFIGS)
INCLUDE_LANGS: tuple[str, ...] = tuple(code for code in LANGUAGES if code in INCLUDE_CONFIGS)
"""The languages each task covers, in registry order."""

_SPLIT_ALIASES: dict[str, tuple[str, ...]] = {"validation": ("validation", "val")}
_OPTION_COLUMNS = ("option_a", "option_b", "option_c", "option_d")


@dataclass(frozen=True)
class CopaItem:
    """One XCOPA item: which of two alternatives is the cause (or effect) of the premise.

    ``premise`` is kept exactly as in the data (with its final full stop); ``label`` is 0 for ``choice1``.
    """

    premise: str
    choice1: str
    choice2: str
    question: str
    label: int
    idx: int


@dataclass(frozen=True)
class WinogradItem:
    """One XWinograd item: ``sentence`` has one ``_`` that ``option1`` or ``option2`` fills; ``answer`` is 1 or 2."""

    sentence: str
    option1: str
    option2: str
    answer: int


@dataclass(frozen=True)
class IncludeItem:
    """One INCLUDE exam question with four options; ``answer`` indexes ``options`` (0-3)."""

    question: str
    options: tuple[str, str, str, str]
    answer: int
    subject: str


@dataclass(frozen=True)
class _Spec:
    """How one hub dataset is named, split and read."""

    name: str
    hub: str
    configs: dict[str, str]
    splits: tuple[str, ...]
    parquet_export: bool  # main holds a loading script: read refs/convert/parquet instead
    missing: Missing  # required columns absent from a column list
    convert: Callable[[Row], Any]  # a row to an item, or None when the row cannot make one
    skip_reason: str


def _include_missing(columns: Sequence[str]) -> list[str]:
    missing = needs("question", "answer")(columns)
    if "choices" not in columns and not all(column in columns for column in _OPTION_COLUMNS):
        missing.append("choices (or option_a..option_d)")
    return missing


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _int(value: Any) -> int | None:
    """An int from an int or a string of digits ("2"); None for anything else (bools included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _copa_item(row: Row) -> CopaItem | None:
    texts = [_text(row.get(k)) for k in ("premise", "choice1", "choice2")]
    label, idx, question = _int(row.get("label")), _int(row.get("idx")), row.get("question")
    if None in texts or label not in (0, 1) or idx is None or question not in ("cause", "effect"):
        return None
    premise, choice1, choice2 = texts
    return CopaItem(premise, choice1, choice2, question, label, idx)  # type: ignore[arg-type]


def _winograd_item(row: Row) -> WinogradItem | None:
    sentence, option1, option2 = (_text(row.get(k)) for k in ("sentence", "option1", "option2"))
    answer = _int(row.get("answer"))
    if sentence is None or sentence.count("_") != 1 or option1 is None or option2 is None or answer not in (1, 2):
        return None
    return WinogradItem(sentence, option1, option2, answer)


def _include_item(row: Row) -> IncludeItem | None:
    options = row.get("choices")
    if options is None:
        options = [row.get(column) for column in _OPTION_COLUMNS]
    question, answer = _text(row.get("question")), _int(row.get("answer"))
    if not isinstance(options, (list, tuple)) or len(options) != 4 or any(_text(o) is None for o in options):
        return None
    if question is None or answer not in (0, 1, 2, 3):
        return None
    subject = row.get("subject") if isinstance(row.get("subject"), str) else ""
    return IncludeItem(question, tuple(options), answer, subject)  # type: ignore[arg-type]


XCOPA = _Spec(
    "xcopa", XCOPA_HUB, XCOPA_CONFIGS, ("validation", "test"), False,
    needs("premise", "choice1", "choice2", "question", "label", "idx"), _copa_item,
    "lack a text, a 0/1 label, an integer idx, or a cause/effect question",
)  # fmt: skip
XWINOGRAD = _Spec(
    "xwinograd", XWINOGRAD_HUB, XWINOGRAD_CONFIGS, ("test",), True,
    needs("sentence", "option1", "option2", "answer"), _winograd_item,
    "do not have exactly one '_' in the sentence, two options and an answer of 1 or 2",
)  # fmt: skip
INCLUDE = _Spec(
    "include", INCLUDE_HUB, INCLUDE_CONFIGS, ("test",), False, _include_missing, _include_item,
    "lack a question, four non-empty options or an answer of 0-3",
)  # fmt: skip


# --- arguments ---------------------------------------------------------------------------------------------------


def _codes(langs: str | Sequence[str]) -> list[str]:
    """Our ISO codes for the given languages (any code the registry knows), in the given order."""
    return parse_languages(langs if isinstance(langs, str) else list(langs))


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise LensSteerError(f"limit must be a positive number of items per language, not {limit!r}")


def _check_covered(spec: _Spec, codes: Sequence[str]) -> None:
    missing = [code for code in codes if code not in spec.configs]
    if missing:
        covered = ", ".join(code for code in LANGUAGES if code in spec.configs)
        raise LensSteerError(f"{spec.name} does not cover {', '.join(missing)}; drop them or use some of {covered}")


def _check_split(spec: _Spec, split: str) -> None:
    if split not in spec.splits:
        raise LensSteerError(f"{spec.name} has no split {split!r}; use {' or '.join(spec.splits)}")


_LOCAL_HINT = f"pass --data PATH, a local copy laid out as <dir>/<config>/<split>.parquet (see {__name__})"


# --- local copies and the hub (both through lens_steer.reader) ------------------------------------------------------


def _layouts(split: str, single_split: bool) -> list[str]:
    """The local layouts of one split (module docstring), most preferred first; ``{name}`` is a config or our code.

    >>> _layouts("test", True)[:2], _layouts("test", True)[-1]
    (['{name}/test.parquet', '{name}/test.jsonl'], '{name}.jsonl')
    """
    patterns = []
    for s in _SPLIT_ALIASES.get(split, (split,)):
        patterns += [f"{{name}}/{s}.parquet", f"{{name}}/{s}.jsonl"]
        patterns += [f"{{name}}/{s}-*.parquet", f"{{name}}/{s}-*.jsonl", f"{{name}}/{s}.*.jsonl"]
        patterns += [f"{{name}}/{s}/*.parquet", f"{{name}}/{s}/*.jsonl"]
        patterns += [f"{s}/{{name}}.parquet", f"{s}/{{name}}.jsonl"]
    if single_split:
        patterns += ["{name}.parquet", "{name}.jsonl"]
    return patterns


def _load_local(spec: _Spec, folder: Path, lang: str, split: str) -> tuple[list[Row], str]:
    config = spec.configs[lang]
    wanted = (
        f"{spec.name} {split} data for {lang} ({config}/{split}.parquet or .jsonl, "
        f"or the hub's {config}/{split}-*.parquet)"
    )
    layouts = _layouts(split, len(spec.splits) == 1)
    files = find_files(folder, (config, lang), layouts, wanted=wanted, hint=_LOCAL_HINT)
    rows = read_files(files, spec.missing, f"{spec.name} hub")
    return rows, str(files[0]) if len(files) == 1 else f"{files[0].parent}/{split}*"


def _load_hub(spec: _Spec, lang: str, split: str) -> tuple[list[Row], str]:
    table = load_hub(
        spec.hub, [spec.configs[lang]], split, missing=spec.missing, user=f"the {spec.name} task", hint=_LOCAL_HINT,
        export=spec.parquet_export,
    )  # fmt: skip
    return table.rows, table.where


def _load(
    spec: _Spec, langs: str | Sequence[str], split: str, path: str | None, limit: int | None
) -> dict[str, list[Any]]:
    codes = _codes(langs)
    _check_covered(spec, codes)
    _check_split(spec, split)
    _check_limit(limit)
    out: dict[str, list[Any]] = {}
    for lang in codes:
        rows, where = _load_local(spec, Path(path), lang, split) if path is not None else _load_hub(spec, lang, split)
        items = [item for item in map(spec.convert, rows) if item is not None]
        skipped = len(rows) - len(items)
        if not items:
            raise LensSteerError(
                f"{where} has no usable {spec.name} item for {lang} ({len(rows)} rows); check the data"
            )
        if skipped:
            warnings.warn(
                f"{spec.name} {lang}: skipped {skipped} of {len(rows)} rows in {where} that {spec.skip_reason}",
                stacklevel=3,
            )
        out[lang] = items[:limit] if limit is not None else items
    return out


# --- the multiple-choice tasks -------------------------------------------------------------------------------------


def load_xcopa(
    langs: str | Sequence[str], split: str = "test", path: str | None = None, limit: int | None = None
) -> dict[str, list[CopaItem]]:
    """XCOPA items per language, in the dataset's order.

    Args:
        langs: ISO 639-1 codes, some of :data:`XCOPA_LANGS`.
        split: ``test`` (500 items) or ``validation`` (100).
        path: A local copy (module docstring); ``None`` reads ``cambridgeltl/xcopa`` from the hub.
        limit: Keep the first N usable items per language.

    Raises:
        LensSteerError: a language XCOPA lacks, an unknown split, an unreachable hub, a missing file or column.

    >>> load_xcopa(["qu"], limit=2)["qu"][0].question  # doctest: +SKIP
    'effect'
    """
    return _load(XCOPA, langs, split, path, limit)


def load_xwinograd(
    langs: str | Sequence[str], split: str = "test", path: str | None = None, limit: int | None = None
) -> dict[str, list[WinogradItem]]:
    """XWinograd items per language (``ja`` is the dataset's ``jp``); sentences without exactly one ``_`` are
    skipped with a warning.

    Args:
        langs: ISO 639-1 codes, some of :data:`XWINOGRAD_LANGS`.
        split: ``test``, the only split.
        path: A local copy (module docstring); ``None`` reads the hub's parquet export of ``Muennighoff/xwinograd``.
        limit: Keep the first N usable items per language.

    Raises:
        LensSteerError: a language XWinograd lacks, an unreachable hub, a missing file or column.
    """
    return _load(XWINOGRAD, langs, split, path, limit)


def load_include(
    langs: str | Sequence[str], split: str = "test", path: str | None = None, limit: int | None = None
) -> dict[str, list[IncludeItem]]:
    """INCLUDE-lite exam questions per language.

    Args:
        langs: ISO 639-1 codes, some of :data:`INCLUDE_LANGS`.
        split: ``test``, the only split of the lite version.
        path: A local copy (module docstring), folders named by config (``Japanese``) or by our code (``ja``);
            ``None`` reads ``CohereLabs/include-lite-44`` from the hub.
        limit: Keep the first N usable items per language.

    Raises:
        LensSteerError: a language INCLUDE lacks, an unreachable hub, a missing file or column.
    """
    return _load(INCLUDE, langs, split, path, limit)


# --- FLORES+ ---------------------------------------------------------------------------------------------------------


def _flores(codes: Sequence[str], split: str, path: str | None) -> dict[str, list[str]]:
    try:
        return flores.load(codes, split, path)
    except LensSteerError as exc:  # the corpus loader names the corpus commands' flag; here it is --data
        raise LensSteerError(str(exc).replace("--corpus-path", "--data")) from None


def load_flores_pairs(
    langs: str | Sequence[str], split: str = "devtest", path: str | None = None, limit: int | None = None
) -> dict[str, list[tuple[str, str]]]:
    """(English, x) FLORES+ sentence pairs per language, for en -> x translation.

    Both sides come from :func:`lens_steer.corpora.flores.load`, which orders each language by sentence id, so
    equal positions are equal ids; languages with a different number of sentences than English are refused
    rather than misaligned. Pairs with a blank side are dropped; texts are stripped.

    Args:
        langs: ISO 639-1 codes (``en`` gives English-English pairs).
        split: ``dev`` or ``devtest``.
        path: A local FLORES+ copy, ``<path>/<split>/<code>.parquet``; ``None`` reads the (gated) hub.
        limit: Keep the first N pairs per language.

    Raises:
        LensSteerError: an unknown language or split, an unreachable hub, a missing file, unequal lengths.
    """
    codes = _codes(langs)
    _check_limit(limit)
    texts = _flores(list(dict.fromkeys(["en", *codes])), split, path)
    english = texts["en"]
    out: dict[str, list[tuple[str, str]]] = {}
    for lang in codes:
        other = texts[lang]
        if len(other) != len(english):
            raise LensSteerError(
                f"FLORES+ {split} has {len(english)} English and {len(other)} {lang} sentences, so they cannot be "
                f"aligned by id; use complete copies of both"
            )
        pairs = [(e.strip(), x.strip()) for e, x in zip(english, other) if _text(e) and _text(x)]
        if not pairs:
            raise LensSteerError(f"FLORES+ {split} has no non-blank (en, {lang}) pair; check the data")
        out[lang] = pairs[:limit] if limit is not None else pairs
    return out


def load_flores_mono(
    langs: str | Sequence[str], split: str = "devtest", path: str | None = None, limit: int | None = None
) -> dict[str, list[str]]:
    """FLORES+ sentences per language (stripped, blanks dropped), for perplexity.

    Args:
        langs: ISO 639-1 codes.
        split: ``dev`` or ``devtest``.
        path: A local FLORES+ copy, ``<path>/<split>/<code>.parquet``; ``None`` reads the (gated) hub.
        limit: Keep the first N sentences per language.
    """
    codes = _codes(langs)
    _check_limit(limit)
    texts = _flores(codes, split, path)
    out: dict[str, list[str]] = {}
    for lang in codes:
        kept = [text.strip() for text in texts[lang] if _text(text)]
        if not kept:
            raise LensSteerError(f"FLORES+ {split} has no text for {lang}; check the data")
        out[lang] = kept[:limit] if limit is not None else kept
    return out


# --- the held-out UDHR -----------------------------------------------------------------------------------------------


def align_paragraphs(
    english: Sequence[Paragraph], other: Sequence[Paragraph], articles: Container[int]
) -> list[tuple[str, str]]:
    """(English, other) paragraph pairs of the given articles, aligned by (article, paragraph index).

    An article is kept only if both declarations have it with the same paragraph indices (so the same number of
    paragraphs); translations that split or merge an article's paragraphs would otherwise pair wrong texts.

    Args:
        english: English paragraphs, as :func:`lens_steer.corpora.udhr.udhr_units` gives them.
        other: The other language's paragraphs.
        articles: Article numbers to use (e.g. ``SPLITS["eval"]``).

    Returns:
        Pairs in English's article order, then paragraph order.

    >>> from lens_steer.corpora.udhr import Paragraph
    >>> en = [Paragraph(25, 0, "a"), Paragraph(25, 1, "b"), Paragraph(26, 0, "c")]
    >>> fr = [Paragraph(25, 0, "A"), Paragraph(26, 0, "C1"), Paragraph(26, 1, "C2")]
    >>> align_paragraphs(en, fr, range(25, 31))
    []
    >>> align_paragraphs(en, fr[:1] + [Paragraph(25, 1, "B")], range(25, 26))
    [('a', 'A'), ('b', 'B')]
    """

    def by_article(paragraphs: Sequence[Paragraph]) -> dict[int, dict[int, str]]:
        grouped: dict[int, dict[int, str]] = {}
        for p in paragraphs:
            if p.article in articles:
                grouped.setdefault(p.article, {})[p.paragraph_index] = p.text
        return grouped

    ours, theirs = by_article(english), by_article(other)
    pairs: list[tuple[str, str]] = []
    for article, paragraphs in ours.items():
        if article not in theirs or sorted(paragraphs) != sorted(theirs[article]):
            continue
        pairs += [(paragraphs[i], theirs[article][i]) for i in sorted(paragraphs)]
    return pairs


def load_udhr_pairs(langs: str | Sequence[str], limit: int | None = None) -> dict[str, list[tuple[str, str]]]:
    """(English, x) paragraph pairs of the UDHR's held-out articles 25-30, offline.

    Raises:
        LensSteerError: an unknown language, an unfetched UDHR, or no article that aligns.

    >>> len(load_udhr_pairs(["fr"])["fr"])  # doctest: +SKIP
    12
    """
    codes = _codes(langs)
    _check_limit(limit)
    english = udhr_units("en")
    out: dict[str, list[tuple[str, str]]] = {}
    for lang in codes:
        pairs = align_paragraphs(english, udhr_units(lang), SPLITS["eval"])
        if not pairs:
            raise LensSteerError(f"no UDHR article 25-30 of {lang} has the same paragraphs as English; drop {lang}")
        out[lang] = pairs[:limit] if limit is not None else pairs
    return out


def load_udhr_eval(langs: str | Sequence[str], limit: int | None = None) -> dict[str, list[str]]:
    """The paragraphs of the UDHR's held-out articles 25-30 per language (the udhr corpus's ``eval`` split).

    >>> len(load_udhr_eval(["en"])["en"])  # doctest: +SKIP
    12
    """
    _check_limit(limit)
    texts = load_corpus("udhr", _codes(langs), split="eval")
    return {lang: items[:limit] if limit is not None else items for lang, items in texts.items()}
