"""Fixtures for the corpus tests: an isolated cache and a small udhr-like package built from our fixture."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from lens_steer.languages import LANGUAGES

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
# Our own invented text in the udhr package's HTML layout (not the UDHR).
DECLARATION = (FIXTURES / "invented_garden_charter.html").read_text(encoding="utf-8")


@pytest.fixture
def declaration_html() -> str:
    """Our invented declaration in the udhr package's HTML layout."""
    return DECLARATION


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty cache; no offline tgz set."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("LENS_STEER_CACHE", str(cache))
    monkeypatch.delenv("LENS_STEER_UDHR_TGZ", raising=False)
    return cache


def _add(archive: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode("utf-8")
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


@pytest.fixture
def make_tgz(tmp_path: Path) -> Callable[..., Path]:
    """Build a udhr-like tgz: every registry declaration is the fixture, each paragraph tagged with its code.

    ``version`` sets package.json's version; ``skip`` leaves some udhr codes out.
    """

    def build(version: str = "6.0.0", skip: tuple[str, ...] = ()) -> Path:
        path = tmp_path / f"udhr-{version}-{len(skip)}.tgz"
        with tarfile.open(path, "w:gz") as archive:
            _add(archive, "package/package.json", json.dumps({"name": "udhr", "version": version}))
            for lang in LANGUAGES.values():
                if lang.udhr not in skip:
                    html = DECLARATION.replace("<p>", f"<p>[{lang.udhr}] ")
                    _add(archive, f"package/declaration/{lang.udhr}.html", html)
        return path

    return build
