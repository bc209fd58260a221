"""The mlama-dod cloze on a small invented copy in the MLAMA-dod-185 schema; no hub access."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bad_files import BAD_FILES, refused_in_one_line
from lens_steer.cloze import load_cloze
from lens_steer.cloze.mlama import HUB_DATASET, MLAMA_LANGUAGES, build_prompt
from lens_steer.errors import LensSteerError

# Invented facts (not from mLAMA): a made-up town and river, so that no answer leaks real knowledge.
SUBJECTS = {
    "en": ["Pim Vandel", "The Ossa Bridge"],
    "ja": ["ピム・ヴァンデル", "オッサ橋"],
    "zh": ["皮姆·范德尔", "奥萨桥"],
    "th": ["พิม แวนเดล", "สะพานออสซา"],
    "fr": ["Pim Vandel", "Le pont Ossa"],
}
OBJECTS = {
    "en": ["Lorwick", "the Tessel"],
    "ja": ["ロルウィック", "テッセル川"],
    "zh": ["洛尔威克", "泰塞尔河"],
    "th": ["ลอร์วิก", "แม่น้ำเทสเซล"],
    "fr": ["Lorwick", "la Tessel"],
}
TEMPLATES = {  # per config: P19 "born in" (object final), P177 "crosses" ([Y] mid-template in ja/th)
    "en": ["[X] was born in [Y] .", "[X] crosses [Y] ."],
    "ja": ["[X]は[Y]で生まれた。", "[X]は[Y]を渡る。"],
    "zh": ["[X]出生于[Y]。", "[X]横跨[Y]。"],
    "th": ["[X]เกิดที่[Y]", "[X]ข้าม[Y]"],
    "fr": ["[X] est né à [Y].", "[X] traverse [Y]."],
}
PREDICATES = ["P19", "P177"]


def _rows(config: str) -> list[dict[str, Any]]:
    rows = []
    for i, predicate in enumerate(PREDICATES):
        row: dict[str, Any] = {
            "template": TEMPLATES[config][i],
            "sub_label": SUBJECTS[config][i],
            "obj_label": OBJECTS[config][i],
            "predicate_id": predicate,
        }
        for lang in SUBJECTS:
            row[f"sub_{lang}"] = SUBJECTS[lang][i]
            row[f"obj_{lang}"] = OBJECTS[lang][i]
        rows.append(row)
    return rows


def _write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A local copy: en/ja/zh as parquet, th as JSONL, fr in the hub's <config>/<split>-*.parquet layout."""
    for config in ("en", "ja", "zh"):
        _write_parquet(tmp_path / f"{config}.parquet", _rows(config))
    _write_jsonl(tmp_path / "th.jsonl", _rows("th"))
    _write_parquet(tmp_path / "fr" / "test-00000-of-00001.parquet", _rows("fr"))
    return tmp_path


@pytest.mark.parametrize(
    ("template", "subject", "expected"),
    [
        ("[X] was born in [Y] .", "Pim", ("Pim was born in", True)),
        ("[X]は[Y]で生まれた。", "ピム", ("ピムは", False)),
        ("[X]出生于[Y]。", "皮姆", ("皮姆出生于", False)),
        ("[X]เกิดที่[Y]", "พิม", ("พิมเกิดที่", False)),
        ("[X] est né à  [Y]", " Pim ", ("Pim est né à", True)),
        ("[X] and [X] share [Y]", "A", ("A and A share", True)),
        ("[Y] is the capital of [X] .", "Oz", None),  # nothing to ask before the blank
        ("[X] has no blank", "Oz", None),
        ("[X] was born in [Y] .", "  ", None),
    ],
)
def test_build_prompt_cuts_at_the_blank(template: str, subject: str, expected: tuple[str, bool] | None) -> None:
    assert build_prompt(template, subject) == expected


def test_local_copy_builds_aligned_facts(copy: Path) -> None:
    cloze = load_cloze("mlama-dod", ["en", "ja", "zh", "th", "fr"], path=str(copy))
    assert [fact.id for fact in cloze.facts] == ["P19:Pim Vandel:Lorwick", "P177:The Ossa Bridge:the Tessel"]
    born, crosses = cloze.facts
    assert born.relation == "P19"
    assert born.prompt == {
        "en": "Pim Vandel was born in",
        "ja": "ピム・ヴァンデルは",
        "zh": "皮姆·范德尔出生于",
        "th": "พิม แวนเดลเกิดที่",
        "fr": "Pim Vandel est né à",
    }
    assert born.answer == {"en": "Lorwick", "ja": "ロルウィック", "zh": "洛尔威克", "th": "ลอร์วิก", "fr": "Lorwick"}
    assert born.prompt["ja"] + born.continuation("ja", "en") == "ピム・ヴァンデルはLorwick"
    assert born.prompt["en"] + born.continuation("en", "ja") == "Pim Vandel was born in ロルウィック"
    assert crosses.prompt["ja"] == "オッサ橋は"  # the text after [Y] ("を渡る。") is dropped
    assert crosses.answer["en"] == "the Tessel"
    for lang in cloze.languages:
        assert len(cloze.for_source(lang)) == 2
    assert cloze.meta["source"] == f"local:{copy.resolve()}"
    assert cloze.meta["skipped"] == {"en": 0, "ja": 0, "zh": 0, "th": 0, "fr": 0}


def test_identical_answers_are_dropped_per_pair(copy: Path) -> None:
    cloze = load_cloze("mlama-dod", ["en", "fr"], path=str(copy))
    assert [f.id for f in cloze.pair_facts("fr", "en", drop_identical=True)] == ["P177:The Ossa Bridge:the Tessel"]
    assert len(cloze.pair_facts("fr", "en", drop_identical=False)) == 2


def test_max_facts_and_unusable_rows(tmp_path: Path) -> None:
    rows = _rows("en")
    rows.insert(0, dict(rows[0], template="[Y] is where [X] was born .", sub_en="Someone Else"))
    _write_parquet(tmp_path / "en.parquet", rows)
    cloze = load_cloze("mlama-dod", ["en"], path=str(tmp_path))
    assert cloze.meta["skipped"] == {"en": 1}
    assert len(cloze.for_source("en")) == 2
    cut = load_cloze("mlama-dod", ["en"], path=str(tmp_path), max_facts=1)
    assert [f.id for f in cut.for_source("en")] == ["P19:Pim Vandel:Lorwick"]


def test_a_missing_config_borrows_the_object_column(copy: Path) -> None:
    """If config t lacks a fact, its answer comes from another config's obj_t (bare, like every answer)."""
    _write_parquet(copy / "zh.parquet", _rows("zh")[:1])
    cloze = load_cloze("mlama-dod", ["en", "zh"], path=str(copy))
    crosses = cloze.facts[1]
    assert "zh" not in crosses.prompt
    assert crosses.answer["zh"] == "泰塞尔河"
    assert [f.id for f in cloze.pair_facts("en", "zh", drop_identical=True)] == [f.id for f in cloze.facts]


def test_jp_config_name_is_accepted(tmp_path: Path) -> None:
    rows = [{k.replace("_ja", "_jp"): v for k, v in row.items()} for row in _rows("ja")]
    _write_parquet(tmp_path / "jp.parquet", rows)
    cloze = load_cloze("mlama-dod", ["ja"], path=str(tmp_path))
    assert cloze.for_source("ja")[0].prompt["ja"] == "ピム・ヴァンデルは"


def test_languages_outside_mlama_are_rejected(copy: Path) -> None:
    assert len(MLAMA_LANGUAGES) == 15
    with pytest.raises(LensSteerError, match=r"does not cover sw \(not in mLAMA; use the cldr cloze for it\)"):
        load_cloze("mlama-dod", ["en", "sw"], path=str(copy))


def test_bad_local_copies_say_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(LensSteerError, match=r"no nl.parquet or nl.jsonl in .*--cloze-path"):
        load_cloze("mlama-dod", ["nl"], path=str(tmp_path))
    with pytest.raises(LensSteerError, match="is not a folder"):
        load_cloze("mlama-dod", ["nl"], path=str(tmp_path / "missing"))
    _write_parquet(tmp_path / "nl.parquet", [{"text": "no template"}])
    # The message names the missing column, as before, in the one wording of lens_steer.reader.
    with pytest.raises(LensSteerError, match=r"lacks the column\(s\) template \(columns: text\); use the MLAMA-dod"):
        load_cloze("mlama-dod", ["nl"], path=str(tmp_path))
    (tmp_path / "et.jsonl").write_text("{not json\n", encoding="utf-8")
    with pytest.raises(LensSteerError, match=r"et.jsonl:1: invalid JSON"):
        load_cloze("mlama-dod", ["et"], path=str(tmp_path))


@pytest.mark.parametrize(("suffix", "content", "message"), BAD_FILES)
def test_every_bad_local_file_is_one_line(tmp_path: Path, suffix: str, content: bytes, message: str) -> None:
    (tmp_path / f"nl{suffix}").write_bytes(content)
    refused_in_one_line(lambda: load_cloze("mlama-dod", ["nl"], path=str(tmp_path)), message)


def test_malformed_parquet_in_the_hub_layout_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "nl" / "test").mkdir(parents=True)
    (tmp_path / "nl" / "test" / "0000.parquet").write_bytes(b"not parquet at all")
    refused_in_one_line(lambda: load_cloze("mlama-dod", ["nl"], path=str(tmp_path)), r"0000.parquet as parquet")


def test_offline_hub_gives_one_line_advice(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls: list[tuple[Any, ...]] = []

    def unreachable(*args: Any, **kwargs: Any) -> None:
        calls.append((*args, kwargs.get("split")))
        raise ConnectionError("Couldn't reach the Hub")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(LensSteerError) as info:
        load_cloze("mlama-dod", ["en", "ja"])
    message = str(info.value)
    assert "\n" not in message
    assert HUB_DATASET in message and "ConnectionError" in message and "--cloze-path" in message
    assert calls == [(HUB_DATASET, "en", "test")]  # stops at the first failure


def test_hub_rows_are_used_and_jp_is_tried_after_ja(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    tried: list[str] = []

    def fake(name: str, config: str, split: str) -> datasets.Dataset:
        tried.append(config)
        if config == "ja":
            raise ValueError("BuilderConfig 'ja' not found")
        source = "ja" if config == "jp" else config
        return datasets.Dataset.from_list(_rows(source))

    monkeypatch.setattr(datasets, "load_dataset", fake)
    cloze = load_cloze("mlama-dod", ["en", "ja"])
    assert tried == ["en", "ja", "jp"]
    assert cloze.facts[0].answer == {"en": "Lorwick", "ja": "ロルウィック"}
    assert cloze.meta["source"] == f"hf:{HUB_DATASET}"
