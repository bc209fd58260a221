"""The one hub-or-local reader: local layouts, the file error ladder and the hub error ladder; all offline."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bad_files import BAD_FILES, refused_in_one_line
from lens_steer.reader import PARQUET_EXPORT, find_files, listing, load_hub, needs, read_file, read_files

HINT = "pass --data PATH, a local copy"


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


# --- local layouts ---------------------------------------------------------------------------------------------------


def test_find_files_takes_the_first_name_and_layout_that_match(tmp_path: Path) -> None:
    _touch(tmp_path, "jp/test-1.parquet", "jp/test-0.parquet", "ja.jsonl", "jp.parquet", "jp/README.md")
    layouts = ["{name}.parquet", "{name}/test-*"]
    assert find_files(tmp_path, ["ja", "jp"], layouts, wanted="w", hint=HINT) == [tmp_path / "jp.parquet"]
    shards = find_files(tmp_path, ["jp"], layouts[1:], wanted="w", hint=HINT)
    assert shards == [tmp_path / "jp/test-0.parquet", tmp_path / "jp/test-1.parquet"]  # sorted, only data files


def test_a_tuple_layout_pools_its_globs(tmp_path: Path) -> None:
    _touch(tmp_path, "fr/test/0000.parquet", "fr/data-test.jsonl", "fr/train.parquet")
    pooled = ("{name}/**/*test*", "{name}/**/*test*/**/*")
    found = find_files(tmp_path, ["fr"], [pooled, "{name}/**/*"], wanted="w", hint=HINT)
    assert found == [tmp_path / "fr/data-test.jsonl", tmp_path / "fr/test/0000.parquet"]


def test_find_files_errors_are_one_line(tmp_path: Path) -> None:
    _touch(tmp_path, "b.txt", "a.parquet")
    message = refused_in_one_line(
        lambda: find_files(tmp_path, ["qu"], ["{name}.parquet"], wanted="qu.parquet", hint=HINT), "no qu.parquet in"
    )
    assert message.endswith(f"(found: a.parquet, b.txt); {HINT}")
    nowhere = tmp_path / "no"
    refused_in_one_line(lambda: find_files(nowhere, ["qu"], [], wanted="", hint=HINT), f"is not a folder; {HINT}")
    assert listing(tmp_path / "no") == "no such folder"
    (tmp_path / "empty").mkdir()
    assert listing(tmp_path / "empty") == "nothing"


# --- the file error ladder -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("suffix", "content", "message"), BAD_FILES)
def test_every_bad_file_is_one_line(tmp_path: Path, suffix: str, content: bytes, message: str) -> None:
    file = tmp_path / f"data{suffix}"
    file.write_bytes(content)
    text = refused_in_one_line(lambda: read_file(file, needs("text"), "FLORES+"), message)
    assert str(file) in text


def test_missing_file_and_unknown_suffix_are_one_line(tmp_path: Path) -> None:
    refused_in_one_line(lambda: read_file(tmp_path / "x.parquet", needs(), "s"), "x.parquet is not a file")
    (tmp_path / "x.csv").write_text("text\nHello\n", encoding="utf-8")
    refused_in_one_line(lambda: read_file(tmp_path / "x.csv", needs(), "s"), r"expected a \.parquet or \.jsonl file")


def test_parquet_and_jsonl_rows_and_columns(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": [2, 1], "text": ["b", "a"]}), tmp_path / "a.parquet")
    rows = [{"id": 3, "text": "c"}, {"text": "d", "extra": True}]
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    parquet = read_file(tmp_path / "a.parquet", needs("text"), "s")
    assert parquet.rows == [{"id": 2, "text": "b"}, {"id": 1, "text": "a"}] and parquet.columns == ("id", "text")
    jsonl = read_file(tmp_path / "b.jsonl", needs("text"), "s")
    assert jsonl.rows == rows and jsonl.columns is None and jsonl.where == str(tmp_path / "b.jsonl")
    assert read_files([tmp_path / "a.parquet", tmp_path / "b.jsonl"], needs("text"), "s") == parquet.rows + rows


def test_jsonl_names_the_line_without_the_column(tmp_path: Path) -> None:
    lines = [json.dumps({"text": "a"}), json.dumps({"other": 1})]
    (tmp_path / "c.jsonl").write_text("\n".join(lines), encoding="utf-8")
    refused_in_one_line(
        lambda: read_file(tmp_path / "c.jsonl", needs("text", "id"), "xcopa hub"),
        r"c\.jsonl:1: no id field; each line needs the xcopa hub columns",
    )


# --- the hub error ladder --------------------------------------------------------------------------------------------


class ConnectError(Exception):
    """Like httpx's ConnectError: what the hf:// file system raises without network (not an OSError)."""


def _hub() -> Any:
    return load_hub("org/data", ["ja", "jp", "ja"], "test", missing=needs("text"), user="the flores corpus", hint=HINT)


@pytest.fixture
def datasets() -> Any:
    return pytest.importorskip("datasets")


def test_hub_tries_each_config_name_then_checks_the_schema(monkeypatch: pytest.MonkeyPatch, datasets: Any) -> None:
    calls: list[tuple[Any, ...]] = []

    def fake(*args: Any, **kwargs: Any) -> Any:
        calls.append((*args, kwargs))
        if args[1] == "ja":
            raise ValueError("BuilderConfig 'ja' not found.\nAvailable: ['jp']")
        return datasets.Dataset.from_list([{"id": 1, "text": "一"}])

    monkeypatch.setattr(datasets, "load_dataset", fake)
    table = _hub()
    assert table.rows == [{"id": 1, "text": "一"}] and table.columns == ("id", "text")
    assert table.where == "hf:org/data/jp/test"
    assert calls == [("org/data", "ja", {"split": "test"}), ("org/data", "jp", {"split": "test"})]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.Dataset.from_list([{"other": 1}]))
    refused_in_one_line(_hub, r"hf:org/data/ja/test lacks the column\(s\) text \(columns: other\); the hub schema")


def test_hub_export_reads_the_parquet_branch(monkeypatch: pytest.MonkeyPatch, datasets: Any) -> None:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(
        datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or datasets.Dataset.from_list([{"text": "x"}])
    )
    load_hub("org/data", ["jp"], "test", missing=needs("text"), user="u", hint=HINT, export=True)
    url = f"hf://datasets/org/data@{PARQUET_EXPORT}/jp/test/*.parquet"
    assert calls == [(("parquet",), {"data_files": {"test": url}, "split": "test"})]


def _failures() -> list[Any]:
    datasets = pytest.importorskip("datasets")
    return [
        pytest.param(datasets.exceptions.DatasetNotFoundError("gated"), r"no access to org/data .*login", id="gated"),
        pytest.param(FileNotFoundError("no files"), r"found no org/data ja/test data .*FileNotFoundError", id="files"),
        pytest.param(ValueError("BuilderConfig"), r"org/data has no config ja or jp with a test split", id="config"),
        pytest.param(ConnectionError("offline"), r"hub is unreachable \(ConnectionError\)", id="offline"),
        pytest.param(ConnectError("no DNS"), r"hub is unreachable \(ConnectError\)", id="httpx"),
    ]


@pytest.mark.parametrize(("error", "message"), _failures())
def test_every_hub_failure_is_one_line(monkeypatch: pytest.MonkeyPatch, datasets: Any, error: Exception,
                                       message: str) -> None:
    def failing(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(datasets, "load_dataset", failing)
    assert refused_in_one_line(_hub, message).endswith(HINT)


def test_hub_without_datasets_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` now raises ImportError
    text = refused_in_one_line(_hub, r"the flores corpus needs the `datasets` package \(pip install datasets\)")
    assert text.endswith(HINT)
