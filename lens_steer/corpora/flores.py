"""FLORES+: professionally translated, sentence-aligned text, for results that do not lean on the UDHR.

Why a second corpus: models have very likely memorised the UDHR, so neurons found or steering measured on
it may reflect recall more than language. FLORES+ (997 ``dev`` and 1012 ``devtest`` sentences per language,
CC BY-SA 4.0) is the standard check, but it sits on the Hugging Face hub behind a click-through gate and
must not be re-hosted, so it cannot be embedded.

Hub: ``openlanguagedata/flores_plus``, one parquet config per FLORES+ code (``fra_Latn``), splits ``dev``
and ``devtest``. Schema (FLORES+ 2.x): ``id`` (sentence number, equal across languages), ``iso_639_3``,
``iso_15924``, ``glottocode``, ``text``, ``url``, ``domain``, ``topic``, ``has_image``, ``has_hyperlink``,
``last_updated``. We read ``text`` and, where present, order rows by ``id`` so languages stay aligned.
FLORES+ renamed ``zho_Hans`` to ``cmn_Hans`` and ``est_Latn`` to ``ekk_Latn``; we ask for the new names.

Local copy (``path``), the same layout as the hub repository: ``<path>/<split>/<code>.parquet`` or
``<path>/<split>/<code>.jsonl`` (one object per line with ``text``), where ``<code>`` is the FLORES+ code
(``cmn_Hans``) or the FLORES-200 one (``zho_Hans``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lens_steer.errors import check_choice
from lens_steer.languages import FLORES_PLUS_RENAMES, get_language
from lens_steer.reader import SUFFIXES, Table, find_files, load_hub, needs, read_file

HUB_DATASET = "openlanguagedata/flores_plus"
SPLITS = ("dev", "devtest")
TEXT_COLUMN = "text"
ID_COLUMN = "id"

_HINT = "pass --corpus-path to a local copy laid out as <dir>/<split>/<code>.parquet"


def flores_plus_code(lang: str) -> str:
    """The FLORES+ config name of a language.

    >>> flores_plus_code("zh")
    'cmn_Hans'
    """
    flores = get_language(lang).flores
    return FLORES_PLUS_RENAMES.get(flores, flores)


def check_split(split: str) -> str:
    """Return ``split`` if FLORES+ has it, else raise LensSteerError listing the splits.

    >>> check_split("devtest")
    'devtest'
    """
    return check_choice("flores split", split, SPLITS)


def _texts(table: Table) -> list[str]:
    """The texts in sentence-id order when the schema has ids (parquet, hub), else in file order (JSON lines).

    >>> _texts(Table([{"id": 2, "text": "b"}, {"id": 1, "text": "a"}], ("id", "text"), "x"))
    ['a', 'b']
    """
    texts = [row[TEXT_COLUMN] for row in table.rows]
    if table.columns is None or ID_COLUMN not in table.columns:
        return texts
    ids = [row[ID_COLUMN] for row in table.rows]
    return [text for _, text in sorted(zip(ids, texts, strict=True), key=lambda pair: pair[0])]


def _load_local(folder: Path, lang: str) -> Table:
    codes = list(dict.fromkeys((flores_plus_code(lang), get_language(lang).flores)))
    wanted = " or ".join(f"{code}{suffix}" for code in codes for suffix in SUFFIXES)
    files = find_files(folder, codes, [f"{{name}}{suffix}" for suffix in SUFFIXES], wanted=wanted, hint=_HINT)
    return read_file(files[0], needs(TEXT_COLUMN), "FLORES+")


def _load_hub(lang: str, split: str) -> Table:
    config = flores_plus_code(lang)
    return load_hub(HUB_DATASET, [config], split, missing=needs(TEXT_COLUMN), user="the flores corpus", hint=_HINT)


def load(langs: Sequence[str], split: str, path: str | None) -> dict[str, list[str]]:
    """The sentences of one FLORES+ split for each language, aligned by sentence id.

    Args:
        langs: Language codes.
        split: ``dev`` or ``devtest``.
        path: A local copy (see the module docstring); ``None`` loads from the hub.

    Raises:
        LensSteerError: unknown split, unreachable or gated hub, or a missing or unreadable local file (one line,
            from :mod:`lens_steer.reader`).

    >>> len(load(["fr"], "dev", None)["fr"])  # doctest: +SKIP
    997
    """
    check_split(split)
    if path is not None:
        return {lang: _texts(_load_local(Path(path) / split, lang)) for lang in langs}
    return {lang: _texts(_load_hub(lang, split)) for lang in langs}
