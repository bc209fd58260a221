"""Your own text: a folder with one file per language.

Why: to find or test neurons on text other than the UDHR or FLORES+ (a domain of your own, a language
variety the other corpora lack) without writing a loader. The folder holds ``<lang>.txt`` (one sentence
per line) or ``<lang>.jsonl`` (one JSON object per line with a ``"text"`` field), where ``<lang>`` is the
ISO 639-1 code (``fr.txt``). With a split, the files are read from ``<path>/<split>/`` instead, so one
folder can hold e.g. ``identify/`` and ``eval/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lens_steer.errors import LensSteerError
from lens_steer.reader import read_jsonl_objects, read_text  # the one reader of local files; re-exported here

SUFFIXES = (".txt", ".jsonl")


def read_lines(path: Path) -> list[str]:
    """The non-blank lines of a UTF-8 text file (a leading BOM is dropped).

    >>> read_lines(Path("fr.txt"))  # doctest: +SKIP
    ['Bonjour.', 'Merci.']
    """
    return [line for line in read_text(path).splitlines() if line.strip()]


def read_jsonl(path: Path, field: str = "text") -> list[Any]:
    """The ``field`` of each JSON object in a JSON-lines file, blank lines skipped.

    Raises:
        LensSteerError: naming the file and line of the first line that is not an object with ``field``.

    >>> read_jsonl(Path("fr.jsonl"))  # doctest: +SKIP
    ['Bonjour.', 'Merci.']
    """
    values: list[Any] = []
    for number, record in read_jsonl_objects(path):
        if not isinstance(record.get(field), str):
            raise LensSteerError(f'{path}:{number}: expected an object with a string "{field}" field; fix that line')
        values.append(record[field])
    return values


def _found(folder: Path) -> str:
    names = sorted(p.name for p in folder.iterdir() if p.suffix in SUFFIXES)
    return ", ".join(names) if names else "no .txt or .jsonl file"


def load(langs: Sequence[str], split: str | None, path: str | None) -> dict[str, list[str]]:
    """The lines of ``<path>[/<split>]/<lang>.txt`` or ``.jsonl`` for each language.

    Args:
        langs: ISO 639-1 codes.
        split: Sub-folder of ``path`` to read, or ``None`` for ``path`` itself.
        path: The folder.

    Raises:
        LensSteerError: no path, no such folder, a missing file (the message lists the files found), a
            language with both a .txt and a .jsonl, or a bad JSONL line.

    >>> load(["fr"], None, "my_corpus")["fr"][:1]  # doctest: +SKIP
    ['Bonjour.']
    """
    if not path:
        raise LensSteerError("the files corpus needs --corpus-path DIR, a folder of <lang>.txt or <lang>.jsonl files")
    folder = Path(path) / split if split else Path(path)
    if not folder.is_dir():
        raise LensSteerError(f"corpus folder {folder} does not exist; pass --corpus-path a folder of <lang>.txt files")
    texts: dict[str, list[str]] = {}
    for lang in langs:
        candidates = [folder / f"{lang}{suffix}" for suffix in SUFFIXES if (folder / f"{lang}{suffix}").is_file()]
        if not candidates:
            raise LensSteerError(f"no {lang}.txt or {lang}.jsonl in {folder} (found: {_found(folder)}); add one")
        if len(candidates) > 1:
            raise LensSteerError(f"both {lang}.txt and {lang}.jsonl are in {folder}; keep only one")
        file = candidates[0]
        texts[lang] = read_jsonl(file) if file.suffix == ".jsonl" else read_lines(file)
    return texts
