"""The evaluation data loaders on small invented copies in the hub schemas, and the hub's failures; all offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bad_files import BAD_FILES, refused_in_one_line
from lens_steer.corpora import load_corpus
from lens_steer.corpora.udhr import SPLITS, Paragraph
from lens_steer.errors import LensSteerError
from lens_steer.evals import data
from lens_steer.evals.data import (
    CopaItem,
    IncludeItem,
    WinogradItem,
    align_paragraphs,
    load_flores_mono,
    load_flores_pairs,
    load_include,
    load_udhr_eval,
    load_udhr_pairs,
    load_xcopa,
    load_xwinograd,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "evals"


def _write_parquet(path: Path, table: pa.Table) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def _copa_table(premises: list[str], questions: list[str] | None = None) -> pa.Table:
    """The XCOPA hub schema and dtypes (label and idx int32, changed bool)."""
    n = len(premises)
    return pa.table(
        {
            "premise": premises,
            "choice1": [f"Chaguo la kwanza {i}." for i in range(n)],
            "choice2": [f"Chaguo la pili {i}." for i in range(n)],
            "question": questions or ["cause"] * n,
            "label": pa.array([i % 2 for i in range(n)], pa.int32()),
            "idx": pa.array(list(range(1, n + 1)), pa.int32()),
            "changed": [False] * n,
        }
    )


INCLUDE_META = {
    "language": "Japanese",
    "country": "Japan",
    "domain": "STEM",
    "subject": "Mathematics",
    "regional_feature": "region agnostic",
    "level": "High school",
}


def _include_rows(lite: bool = True) -> list[dict[str, Any]]:
    questions = [("三角形の内角の和は何度か。", ("90度", "180度", "270度", "360度"), 1),
                 ("一週間は何日か。", ("五日", "六日", "七日", "八日"), 2)]  # fmt: skip
    rows = []
    for question, options, answer in questions:
        row: dict[str, Any] = {**INCLUDE_META, "question": question, "answer": answer}
        if lite:
            row["choices"] = list(options)
        else:
            row.update(dict(zip(("option_a", "option_b", "option_c", "option_d"), options)))
        rows.append(row)
    return rows


# --- XCOPA -----------------------------------------------------------------------------------------------------------


def test_xcopa_local_jsonl_keeps_premise_and_fields() -> None:
    items = load_xcopa(["it"], path=str(FIXTURES / "xcopa"))["it"]
    assert [item.idx for item in items] == [1, 2, 3]
    assert items[0] == CopaItem(
        "La bambina ha lasciato il gelato al sole.", "Il gelato si è sciolto.", "Il gelato è diventato più freddo.",
        "effect", 0, 1,
    )  # fmt: skip
    assert items[2].label == 1 and items[2].premise.endswith("casa.")


def test_xcopa_validation_reads_the_github_val_file() -> None:
    items = load_xcopa("it", split="validation", path=str(FIXTURES / "xcopa"))["it"]
    assert [item.premise for item in items] == ["Il telefono ha smesso di funzionare."]


def test_xcopa_hub_shard_layout_in_parquet(tmp_path: Path) -> None:
    _write_parquet(tmp_path / "sw" / "test-00000-of-00001.parquet", _copa_table(["Mvua ilinyesha.", "Jua liliwaka."]))
    _write_parquet(tmp_path / "sw" / "validation-00000-of-00001.parquet", _copa_table(["Upepo ulivuma."]))
    loaded = load_xcopa(["sw"], path=str(tmp_path))
    assert [item.premise for item in loaded["sw"]] == ["Mvua ilinyesha.", "Jua liliwaka."]
    assert all(isinstance(item.label, int) and isinstance(item.idx, int) for item in loaded["sw"])
    assert load_xcopa(["sw"], split="validation", path=str(tmp_path))["sw"][0].premise == "Upepo ulivuma."


def test_limit_keeps_the_first_items() -> None:
    assert [item.idx for item in load_xcopa(["it"], path=str(FIXTURES / "xcopa"), limit=2)["it"]] == [1, 2]


@pytest.mark.parametrize("limit", [0, -1, 1.5, True])
def test_bad_limit_is_refused(limit: Any) -> None:
    with pytest.raises(LensSteerError, match="positive number"):
        load_xcopa(["it"], path=str(FIXTURES / "xcopa"), limit=limit)


def test_uncovered_language_lists_the_covered_ones() -> None:
    with pytest.raises(LensSteerError) as err:
        load_xcopa(["it", "fr", "ja"], path=str(FIXTURES / "xcopa"))
    message = str(err.value)
    assert message.startswith("xcopa does not cover fr, ja;") and "qu" in message and "ht" in message
    with pytest.raises(LensSteerError, match="unknown language 'xx'"):
        load_xcopa(["xx"], path=str(FIXTURES / "xcopa"))


def test_unknown_split_lists_the_splits() -> None:
    with pytest.raises(LensSteerError, match="no split 'dev'; use validation or test"):
        load_xcopa(["it"], split="dev", path=str(FIXTURES / "xcopa"))


def test_missing_language_file_lists_what_is_there() -> None:
    with pytest.raises(LensSteerError) as err:
        load_xcopa(["it", "qu"], path=str(FIXTURES / "xcopa"))
    message = str(err.value)
    assert "for qu" in message and "qu/test.parquet" in message and "found: it" in message and "\n" not in message


def test_path_that_is_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(LensSteerError, match="is not a folder"):
        load_xcopa(["it"], path=str(tmp_path / "nowhere"))


def test_parquet_without_a_required_column_is_refused(tmp_path: Path) -> None:
    _write_parquet(tmp_path / "qu" / "test.parquet", _copa_table(["Para chayamurqa."]).drop(["label"]))
    with pytest.raises(LensSteerError, match=r"lacks the column\(s\) label \(columns: premise"):
        load_xcopa(["qu"], path=str(tmp_path))


def test_jsonl_line_without_a_required_field_names_the_line(tmp_path: Path) -> None:
    good = {"premise": "P.", "choice1": "A.", "choice2": "B.", "question": "cause", "label": 0, "idx": 1}
    bad = {k: v for k, v in good.items() if k != "choice2"}
    (tmp_path / "qu").mkdir()
    (tmp_path / "qu" / "test.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n", encoding="utf-8")
    with pytest.raises(LensSteerError, match=r"test.jsonl:2: no choice2 field"):
        load_xcopa(["qu"], path=str(tmp_path))


def test_unreadable_parquet_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "qu").mkdir()
    (tmp_path / "qu" / "test.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(LensSteerError, match="cannot read .* as parquet") as err:
        load_xcopa(["qu"], path=str(tmp_path))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("suffix", "content", "message"), BAD_FILES)
def test_every_bad_local_file_is_one_line(tmp_path: Path, suffix: str, content: bytes, message: str) -> None:
    (tmp_path / "qu").mkdir()
    (tmp_path / "qu" / f"test{suffix}").write_bytes(content)
    refused_in_one_line(lambda: load_xcopa(["qu"], path=str(tmp_path)), message)


def test_malformed_flores_parquet_is_one_line(tmp_path: Path) -> None:
    _write_flores(tmp_path, "eng_Latn", [1], ["One."])
    (tmp_path / "devtest" / "fra_Latn.parquet").write_bytes(b"not parquet at all")
    refused_in_one_line(lambda: load_flores_pairs(["fr"], path=str(tmp_path)), r"fra_Latn.parquet as parquet")


def test_unusable_rows_are_skipped_with_a_warning(tmp_path: Path) -> None:
    _write_parquet(tmp_path / "tr" / "test.parquet", _copa_table(["Bir.", "İki.", "Üç."], ["cause", "why", "effect"]))
    with pytest.warns(UserWarning, match="xcopa tr: skipped 1 of 3 rows"):
        items = load_xcopa(["tr"], path=str(tmp_path))["tr"]
    assert [item.premise for item in items] == ["Bir.", "Üç."]


def test_a_language_without_usable_rows_is_an_error(tmp_path: Path) -> None:
    _write_parquet(tmp_path / "tr" / "test.parquet", _copa_table(["Bir."], ["why"]))
    with pytest.raises(LensSteerError, match="no usable xcopa item for tr"):
        load_xcopa(["tr"], path=str(tmp_path))


# --- XWinograd -------------------------------------------------------------------------------------------------------


def test_xwinograd_maps_ja_to_jp_and_skips_rows_without_one_blank() -> None:
    with pytest.warns(UserWarning, match="xwinograd ja: skipped 2 of 5 rows .* exactly one '_'"):
        loaded = load_xwinograd(["ja", "fr"], path=str(FIXTURES / "xwinograd"))
    assert list(loaded) == ["ja", "fr"]
    assert [item.answer for item in loaded["ja"]] == [2, 1, 2]
    assert loaded["ja"][0] == WinogradItem("猫は箱に入れなかった。_が小さすぎたからだ。", "猫", "箱", 2)
    assert loaded["fr"][1].option2 == "Jean" and loaded["fr"][1].answer == 2


def test_xwinograd_refs_convert_parquet_layout(tmp_path: Path) -> None:
    table = pa.table({"sentence": ["A Ana emprestou o livro à Maria porque _ já o tinha lido."], "option1": ["Ana"],
                      "option2": ["Maria"], "answer": ["1"]})  # fmt: skip
    _write_parquet(tmp_path / "pt" / "test" / "0000.parquet", table)
    assert load_xwinograd(["pt"], path=str(tmp_path))["pt"][0].answer == 1


def test_xwinograd_single_file_named_by_our_code(tmp_path: Path) -> None:
    rows = [{"sentence": "Мяч не влез в сумку, потому что _ был большой.", "option1": "мяч", "option2": "сумка",
             "answer": 1}]  # fmt: skip
    (tmp_path / "ru.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    assert load_xwinograd(["ru"], path=str(tmp_path))["ru"][0].answer == 1


def test_xwinograd_does_not_cover_swahili() -> None:
    with pytest.raises(LensSteerError, match="xwinograd does not cover sw; drop them or use some of en, ja, zh"):
        load_xwinograd(["sw"], path=str(FIXTURES / "xwinograd"))


# --- INCLUDE ---------------------------------------------------------------------------------------------------------


def test_include_lite_jsonl_with_choices_lists() -> None:
    items = load_include(["tr"], path=str(FIXTURES / "include"))["tr"]
    assert items[0] == IncludeItem("Türkiye'nin başkenti hangi şehirdir?", ("İstanbul", "Ankara", "İzmir", "Bursa"),
                                   1, "Geography")  # fmt: skip
    assert [item.answer for item in items] == [1, 2, 2]
    assert all(isinstance(item.options, tuple) and len(item.options) == 4 for item in items)


@pytest.mark.parametrize("lite", [True, False], ids=["choices", "option_a-d"])
def test_include_parquet_in_the_hub_layout(tmp_path: Path, lite: bool) -> None:
    _write_parquet(tmp_path / "Japanese" / "test-00000-of-00001.parquet", pa.Table.from_pylist(_include_rows(lite)))
    items = load_include(["ja"], path=str(tmp_path), limit=1)["ja"]
    assert items == [IncludeItem("三角形の内角の和は何度か。", ("90度", "180度", "270度", "360度"), 1, "Mathematics")]


def test_include_folder_may_use_our_code(tmp_path: Path) -> None:
    _write_parquet(tmp_path / "ja" / "test.parquet", pa.Table.from_pylist(_include_rows()))
    assert len(load_include(["ja"], path=str(tmp_path))["ja"]) == 2


def test_include_without_options_is_refused(tmp_path: Path) -> None:
    rows = [{k: v for k, v in row.items() if k != "choices"} for row in _include_rows()]
    _write_parquet(tmp_path / "Japanese" / "test.parquet", pa.Table.from_pylist(rows))
    with pytest.raises(LensSteerError, match=r"lacks the column\(s\) choices \(or option_a..option_d\)"):
        load_include(["ja"], path=str(tmp_path))


def test_include_coverage() -> None:
    assert data.INCLUDE_LANGS == ("nl", "id", "ms", "vi", "ja", "zh", "fr", "pt", "ru", "et", "it", "ta", "tr")
    with pytest.raises(LensSteerError, match="include does not cover en, th;"):
        load_include(["en", "th", "tr"], path=str(FIXTURES / "include"))


# --- the hub (faked) -------------------------------------------------------------------------------------------------


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """``datasets.load_dataset`` answering from in-memory tables in each dataset's schema; records the calls."""
    datasets = pytest.importorskip("datasets")
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def fake_load_dataset(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        if args[0] == data.XCOPA_HUB:
            return datasets.Dataset.from_list(_copa_table(["Wayta t'ikarirqan."]).to_pylist())
        if args[0] == "parquet":
            row = {"sentence": "A fit _ B.", "option1": "a", "option2": "b", "answer": "2"}
            return datasets.Dataset.from_list([row])
        return datasets.Dataset.from_list(_include_rows())

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    return calls


def test_hub_calls(fake_hub: list[tuple[tuple[Any, ...], dict[str, Any]]]) -> None:
    assert load_xcopa(["qu"])["qu"][0].premise == "Wayta t'ikarirqan."
    assert load_xwinograd(["ja"])["ja"] == [WinogradItem("A fit _ B.", "a", "b", 2)]
    assert len(load_include(["ja"], limit=1)["ja"]) == 1
    url = "hf://datasets/Muennighoff/xwinograd@refs/convert/parquet/jp/test/*.parquet"
    assert fake_hub == [
        (("cambridgeltl/xcopa", "qu"), {"split": "test"}),
        (("parquet",), {"data_files": {"test": url}, "split": "test"}),
        (("CohereLabs/include-lite-44", "Japanese"), {"split": "test"}),
    ]


class ConnectError(Exception):
    """Like httpx's ConnectError: what the hf:// file system raises without network (not an OSError)."""


def _offline_errors() -> list[Any]:
    datasets = pytest.importorskip("datasets")
    return [
        ConnectionError("Couldn't reach 'cambridgeltl/xcopa' on the Hub (OfflineModeIsEnabled)"),
        OSError("offline"),
        ConnectError("[Errno -2] Name or service not known"),
        datasets.exceptions.DatasetNotFoundError("Dataset is a gated dataset on the Hub."),
    ]


@pytest.mark.parametrize("index", range(4), ids=["ConnectionError", "OSError", "ConnectError", "DatasetNotFound"])
@pytest.mark.parametrize("loader", [load_xcopa, load_xwinograd, load_include])
def test_offline_hub_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, loader: Any, index: int) -> None:
    datasets = pytest.importorskip("datasets")
    error = _offline_errors()[index]

    def offline(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(LensSteerError) as err:
        loader(["zh"])
    message = str(err.value)
    assert "--data PATH" in message and "huggingface-cli login" in message and "\n" not in message


def test_hub_without_the_config_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")

    def no_config(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("BuilderConfig 'Japanese' not found.\nAvailable: ['Albanian', ...]")

    monkeypatch.setattr(datasets, "load_dataset", no_config)
    with pytest.raises(LensSteerError, match="has no config Japanese with a test split; pass --data") as err:
        load_include(["ja"])
    assert "\n" not in str(err.value)


def test_hub_schema_drift_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.Dataset.from_dict({"text": ["x"]}))
    with pytest.raises(LensSteerError, match=r"hf:cambridgeltl/xcopa/et/test lacks the column\(s\) premise"):
        load_xcopa(["et"])


# --- FLORES+ ---------------------------------------------------------------------------------------------------------


def _write_flores(root: Path, code: str, ids: list[int], texts: list[str], split: str = "devtest") -> None:
    _write_parquet(root / split / f"{code}.parquet", pa.table({"id": ids, "text": texts}))


def test_flores_pairs_align_by_sentence_id(tmp_path: Path) -> None:
    _write_flores(tmp_path, "eng_Latn", [1, 2, 3], ["One.", "Two.", "Three."])
    _write_flores(tmp_path, "fra_Latn", [3, 1, 2], ["Trois.", "Un.", " Deux. "])
    _write_flores(tmp_path, "jpn_Jpan", [2, 3, 1], ["二。", "", "一。"])
    pairs = load_flores_pairs(["fr", "ja"], path=str(tmp_path))
    assert pairs == {
        "fr": [("One.", "Un."), ("Two.", "Deux."), ("Three.", "Trois.")],
        "ja": [("One.", "一。"), ("Two.", "二。")],  # the blank Japanese sentence 3 is dropped
    }
    assert load_flores_pairs(["fr"], path=str(tmp_path), limit=1) == {"fr": [("One.", "Un.")]}


def test_flores_pairs_refuse_unequal_lengths(tmp_path: Path) -> None:
    _write_flores(tmp_path, "eng_Latn", [1, 2], ["One.", "Two."])
    _write_flores(tmp_path, "fra_Latn", [1], ["Un."])
    with pytest.raises(LensSteerError, match="2 English and 1 fr sentences, so they cannot be aligned"):
        load_flores_pairs(["fr"], path=str(tmp_path))


def test_flores_mono_strips_drops_blanks_and_limits(tmp_path: Path) -> None:
    _write_flores(tmp_path, "swh_Latn", [2, 1, 3], ["Pili. ", "Moja.", "  "], split="dev")
    assert load_flores_mono(["sw"], split="dev", path=str(tmp_path)) == {"sw": ["Moja.", "Pili."]}
    assert load_flores_mono(["sw"], split="dev", path=str(tmp_path), limit=1) == {"sw": ["Moja."]}


def test_flores_offline_names_the_data_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")

    def offline(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("Couldn't reach 'openlanguagedata/flores_plus' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(LensSteerError) as err:
        load_flores_mono(["fr"])
    assert "--data" in str(err.value) and "--corpus-path" not in str(err.value)


def test_flores_missing_file_and_split(tmp_path: Path) -> None:
    _write_flores(tmp_path, "eng_Latn", [1], ["One."])
    with pytest.raises(LensSteerError, match="no fra_Latn.parquet"):
        load_flores_pairs(["fr"], path=str(tmp_path))
    with pytest.raises(LensSteerError, match="unknown flores split 'test'"):
        load_flores_mono(["fr"], split="test", path=str(tmp_path))


# --- the held-out UDHR -----------------------------------------------------------------------------------------------

EN = [
    Paragraph(24, 0, "Rest."),
    Paragraph(25, 0, "Food for all."),
    Paragraph(25, 1, "Care for mothers."),
    Paragraph(26, 0, "School for all."),
    Paragraph(27, 0, "Culture for all."),
    Paragraph(27, 1, "Authors are protected."),
    Paragraph(30, 0, "Nothing here allows harm."),
]


def test_align_pairs_paragraphs_of_the_eval_articles() -> None:
    other = [Paragraph(p.article, p.paragraph_index, p.text.upper()) for p in EN]
    pairs = align_paragraphs(EN, other, SPLITS["eval"])
    assert pairs == [(p.text, p.text.upper()) for p in EN if p.article >= 25]


def test_align_drops_articles_split_differently_or_missing() -> None:
    other = [
        Paragraph(25, 0, "Chakula na matunzo kwa wote."),  # article 25 merged into one paragraph: dropped
        Paragraph(26, 0, "Shule kwa wote."),
        Paragraph(26, 1, "Elimu ya msingi ni bure."),  # 26 split in two: dropped
        Paragraph(27, 1, "Waandishi wanalindwa."),
        Paragraph(27, 0, "Utamaduni kwa wote."),  # out of order: still aligned by index
        # 30 missing: dropped
    ]
    assert align_paragraphs(EN, other, SPLITS["eval"]) == [
        ("Culture for all.", "Utamaduni kwa wote."),
        ("Authors are protected.", "Waandishi wanalindwa."),
    ]


def test_align_respects_the_articles() -> None:
    assert align_paragraphs(EN, EN, range(24, 25)) == [("Rest.", "Rest.")]
    assert align_paragraphs(EN, EN, []) == []


def test_udhr_pairs_on_fake_units(monkeypatch: pytest.MonkeyPatch) -> None:
    import lens_steer.evals.data as data

    fake = {"en": EN, "sw": [Paragraph(30, 0, "Hakuna kinachoruhusu madhara.")], "ta": [Paragraph(25, 0, "x")]}
    monkeypatch.setattr(data, "udhr_units", lambda lang: fake[lang])  # evals.data imports it at the top
    assert load_udhr_pairs(["sw"]) == {"sw": [("Nothing here allows harm.", "Hakuna kinachoruhusu madhara.")]}
    with pytest.raises(LensSteerError, match="no UDHR article 25-30 of ta has the same paragraphs as English"):
        load_udhr_pairs(["ta"])


@pytest.mark.udhr
def test_real_udhr_pairs_and_eval_text() -> None:
    """Runs on the cache `make data` fills; skipped where it was never fetched."""
    from lens_steer.corpora import udhr

    if not (udhr.udhr_dir() / "udhr.json").is_file():
        pytest.skip("real UDHR not fetched; run `python -m lens_steer.corpora.udhr`")
    english = load_corpus("udhr", ["en"], split="eval")["en"]
    pairs = load_udhr_pairs(["fr", "ja", "qu"])
    for lang, lang_pairs in pairs.items():
        assert [e for e, _ in lang_pairs] == english, lang  # articles 25-30 align in every language
        assert all(x and x != e for e, x in lang_pairs), lang
    assert len(load_udhr_pairs(["sw"], limit=3)["sw"]) == 3
    mono = load_udhr_eval(["en", "th"])
    assert mono == load_corpus("udhr", ["en", "th"], split="eval")
    assert load_udhr_eval(["th"], limit=2)["th"] == mono["th"][:2]
