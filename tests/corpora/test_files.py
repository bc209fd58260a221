"""The files corpus, and the checks load_corpus makes for every corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lens_steer.corpora import CORPORA, corpus_description, load_corpus
from lens_steer.errors import LensSteerError


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_txt_lines_are_stripped_and_blank_lines_skipped(tmp_path: Path) -> None:
    _write(tmp_path / "fr.txt", "\ufeffBonjour.\n\n   \n  Merci.  \r\nAu revoir.")
    assert load_corpus("files", ["fr"], path=str(tmp_path)) == {"fr": ["Bonjour.", "Merci.", "Au revoir."]}


def test_jsonl_text_field_is_read(tmp_path: Path) -> None:
    lines = [json.dumps({"text": " Hujambo ", "id": 1}), "", json.dumps({"text": "Asante"})]
    _write(tmp_path / "sw.jsonl", "\n".join(lines) + "\n")
    assert load_corpus("files", ["sw"], path=str(tmp_path)) == {"sw": ["Hujambo", "Asante"]}


def test_languages_keep_the_given_order_and_iso_keys(tmp_path: Path) -> None:
    _write(tmp_path / "en.txt", "Hello.")
    _write(tmp_path / "tr.txt", "Merhaba.")
    assert list(load_corpus("files", ["tur_Latn", "EN"], path=str(tmp_path))) == ["tr", "en"]


def test_split_reads_the_subfolder(tmp_path: Path) -> None:
    _write(tmp_path / "eval" / "it.txt", "Ciao.")
    assert load_corpus("files", ["it"], split="eval", path=str(tmp_path)) == {"it": ["Ciao."]}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{not json", "invalid JSON"),
        ('["a list"]', 'one JSON object per line'),
        ('{"sentence": "x"}', 'string "text" field'),
    ],
)
def test_bad_jsonl_line_is_named_by_file_and_number(tmp_path: Path, line: str, expected: str) -> None:
    path = _write(tmp_path / "ja.jsonl", json.dumps({"text": "一"}) + "\n\n" + line + "\n")
    with pytest.raises(LensSteerError) as err:
        load_corpus("files", ["ja"], path=str(tmp_path))
    assert f"{path}:3:" in str(err.value) and expected in str(err.value)


def test_missing_file_lists_the_files_found(tmp_path: Path) -> None:
    _write(tmp_path / "en.txt", "Hello.")
    _write(tmp_path / "nl.jsonl", json.dumps({"text": "Hallo."}))
    _write(tmp_path / "notes.md", "ignored")
    with pytest.raises(LensSteerError) as err:
        load_corpus("files", ["en", "qu"], path=str(tmp_path))
    message = str(err.value)
    assert "no qu.txt or qu.jsonl" in message and "found: en.txt, nl.jsonl)" in message and "\n" not in message


def test_txt_and_jsonl_for_one_language_is_ambiguous(tmp_path: Path) -> None:
    _write(tmp_path / "vi.txt", "Xin chào.")
    _write(tmp_path / "vi.jsonl", json.dumps({"text": "Xin chào."}))
    with pytest.raises(LensSteerError, match="keep only one"):
        load_corpus("files", ["vi"], path=str(tmp_path))


def test_empty_file_names_the_language(tmp_path: Path) -> None:
    _write(tmp_path / "th.txt", "\n  \n")
    with pytest.raises(LensSteerError, match="corpus files has no text for th"):
        load_corpus("files", ["th"], path=str(tmp_path))


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ru.txt").write_bytes("Привет".encode("cp1251"))
    with pytest.raises(LensSteerError, match="not UTF-8"):
        load_corpus("files", ["ru"], path=str(tmp_path))


def test_path_is_required_and_must_exist(tmp_path: Path) -> None:
    with pytest.raises(LensSteerError, match="needs --corpus-path"):
        load_corpus("files", ["en"])
    with pytest.raises(LensSteerError, match="does not exist"):
        load_corpus("files", ["en"], path=str(tmp_path / "absent"))


def test_unknown_corpus_lists_the_valid_names() -> None:
    assert CORPORA == ("udhr", "flores", "files")
    with pytest.raises(LensSteerError, match="unknown corpus 'wiki'; use one of udhr, flores, files"):
        load_corpus("wiki", ["en"])
    with pytest.raises(LensSteerError, match="unknown corpus"):
        corpus_description("wiki")


def test_language_errors_come_before_any_reading(tmp_path: Path) -> None:
    with pytest.raises(LensSteerError, match="unknown language 'xx'"):
        load_corpus("files", ["en", "xx"], path=str(tmp_path))
    with pytest.raises(LensSteerError, match="given twice"):
        load_corpus("files", ["fr", "fra_Latn"], path=str(tmp_path))


def test_description_of_files(tmp_path: Path) -> None:
    assert corpus_description("files", None, str(tmp_path)) == {
        "name": "files",
        "split": None,
        "source": "files",
        "version": None,
        "license": None,
        "path": str(tmp_path.resolve()),
    }
