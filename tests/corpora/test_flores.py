"""The flores corpus: local parquet/JSONL copies in the FLORES+ schema, and hub failures, all offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bad_files import BAD_FILES, refused_in_one_line
from lens_steer.corpora import corpus_description, load_corpus
from lens_steer.corpora.flores import HUB_DATASET, flores_plus_code
from lens_steer.errors import LensSteerError


def _write_parquet(path: Path, ids: list[int], texts: list[str], code: str) -> None:
    """A table with the FLORES+ 2.x columns; only id and text matter to us."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lang, script = code.split("_")
    n = len(ids)
    table = pa.table(
        {
            "id": ids,
            "iso_639_3": [lang] * n,
            "iso_15924": [script] * n,
            "glottocode": ["none0000"] * n,
            "text": texts,
            "url": ["https://example.org"] * n,
            "domain": ["wikinews"] * n,
            "topic": ["testing"] * n,
            "has_image": [0] * n,
            "has_hyperlink": [0] * n,
            "last_updated": ["2.0"] * n,
        }
    )
    pq.write_table(table, path)


def test_local_parquet_is_read_in_id_order_and_cleaned(tmp_path: Path) -> None:
    _write_parquet(tmp_path / "dev" / "fra_Latn.parquet", [3, 1, 2], ["  trois ", "un", "   "], "fra_Latn")
    _write_parquet(tmp_path / "dev" / "eng_Latn.parquet", [1, 2, 3], ["one", "two", "three"], "eng_Latn")
    corpus = load_corpus("flores", ["fra_Latn", "en"], path=str(tmp_path))
    assert corpus == {"fr": ["un", "trois"], "en": ["one", "two", "three"]}


def test_split_picks_the_subfolder(tmp_path: Path) -> None:
    _write_parquet(tmp_path / "dev" / "swh_Latn.parquet", [1], ["dev text"], "swh_Latn")
    _write_parquet(tmp_path / "devtest" / "swh_Latn.parquet", [1], ["devtest text"], "swh_Latn")
    assert load_corpus("flores", ["sw"], split="devtest", path=str(tmp_path)) == {"sw": ["devtest text"]}
    assert load_corpus("flores", ["sw"], path=str(tmp_path)) == {"sw": ["dev text"]}


@pytest.mark.parametrize("filename", ["cmn_Hans.parquet", "zho_Hans.parquet"])
def test_renamed_flores_plus_codes_are_found(tmp_path: Path, filename: str) -> None:
    _write_parquet(tmp_path / "dev" / filename, [1], ["中文"], filename.split(".")[0])
    assert load_corpus("flores", ["zh"], path=str(tmp_path)) == {"zh": ["中文"]}


def test_flores_plus_names() -> None:
    assert flores_plus_code("zh") == "cmn_Hans"
    assert flores_plus_code("et") == "ekk_Latn"
    assert flores_plus_code("ms") == "zsm_Latn"


def test_local_jsonl_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    lines = [json.dumps({"id": 1, "text": "Habari"}), "", json.dumps({"id": 2, "text": "dunia"})]
    (tmp_path / "dev" / "swh_Latn.jsonl").write_text("\n".join(lines), encoding="utf-8")
    assert load_corpus("flores", ["sw"], path=str(tmp_path)) == {"sw": ["Habari", "dunia"]}


def test_missing_local_file_lists_what_is_there(tmp_path: Path) -> None:
    _write_parquet(tmp_path / "dev" / "fra_Latn.parquet", [1], ["un"], "fra_Latn")
    with pytest.raises(LensSteerError) as err:
        load_corpus("flores", ["fr", "ta"], path=str(tmp_path))
    message = str(err.value)
    assert "tam_Taml.parquet" in message and "found: fra_Latn.parquet" in message and "\n" not in message


def test_parquet_without_text_column_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    pq.write_table(pa.table({"id": [1], "sentence": ["x"]}), tmp_path / "dev" / "fra_Latn.parquet")
    # The message names the missing column, as before, in the one wording of lens_steer.reader.
    with pytest.raises(LensSteerError, match=r"lacks the column\(s\) text \(columns: id, sentence\); use the FLORES\+"):
        load_corpus("flores", ["fr"], path=str(tmp_path))


@pytest.mark.parametrize(("suffix", "content", "message"), BAD_FILES)
def test_every_bad_local_file_is_one_line(tmp_path: Path, suffix: str, content: bytes, message: str) -> None:
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / f"fra_Latn{suffix}").write_bytes(content)
    refused_in_one_line(lambda: load_corpus("flores", ["fr"], path=str(tmp_path)), message)


def test_missing_split_folder_is_one_line(tmp_path: Path) -> None:
    message = r"dev is not a folder; pass --corpus-path"
    refused_in_one_line(lambda: load_corpus("flores", ["fr"], path=str(tmp_path)), message)


def test_all_blank_language_is_named(tmp_path: Path) -> None:
    _write_parquet(tmp_path / "dev" / "hat_Latn.parquet", [1, 2], [" ", ""], "hat_Latn")
    with pytest.raises(LensSteerError, match="corpus flores has no text for ht"):
        load_corpus("flores", ["ht"], path=str(tmp_path))


def test_unknown_split_lists_the_splits(tmp_path: Path) -> None:
    with pytest.raises(LensSteerError, match="use one of dev, devtest"):
        load_corpus("flores", ["fr"], split="test", path=str(tmp_path))


def test_hub_is_asked_for_the_flores_plus_config(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    calls: list[tuple[Any, ...]] = []

    def fake_load_dataset(name: str, config: str, split: str) -> Any:
        calls.append((name, config, split))
        return datasets.Dataset.from_dict({"id": [2, 1], "text": ["second", "first"]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert load_corpus("flores", ["zh", "et"], split="devtest") == {
        "zh": ["first", "second"],
        "et": ["first", "second"],
    }
    assert calls == [(HUB_DATASET, "cmn_Hans", "devtest"), (HUB_DATASET, "ekk_Latn", "devtest")]


def test_unreachable_hub_points_to_corpus_path(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")

    def offline(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("Couldn't reach 'openlanguagedata/flores_plus' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(LensSteerError) as err:
        load_corpus("flores", ["fr"])
    message = str(err.value)
    assert "hub is unreachable" in message and "--corpus-path" in message and "\n" not in message


def test_gated_hub_says_to_log_in(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")

    def gated(*args: Any, **kwargs: Any) -> Any:
        raise datasets.exceptions.DatasetNotFoundError("Dataset is a gated dataset on the Hub.")

    monkeypatch.setattr(datasets, "load_dataset", gated)
    with pytest.raises(LensSteerError, match=r"accept its conditions.*--corpus-path"):
        load_corpus("flores", ["fr"])


def test_description_tells_hub_from_local(tmp_path: Path) -> None:
    assert corpus_description("flores")["source"] == f"hf:{HUB_DATASET}"
    local = corpus_description("flores", "devtest", str(tmp_path))
    assert local["source"] == f"local:{tmp_path.resolve()}" and local["split"] == "devtest"
    assert local["path"] == str(tmp_path.resolve())


def test_unknown_hub_config_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")

    def no_config(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("BuilderConfig 'cmn_Hans' not found.\nAvailable: ['ace_Arab', ...]")

    monkeypatch.setattr(datasets, "load_dataset", no_config)
    with pytest.raises(LensSteerError) as err:
        load_corpus("flores", ["zh"])
    assert "no config cmn_Hans with a dev split" in str(err.value) and "\n" not in str(err.value)
