"""Language identification: the pycld2 detector, the code mapping, and strict vs lenient matching."""

from __future__ import annotations

import pytest

from lens_steer.errors import LensSteerError
from lens_steer.lid import DETECTORS, Cld2Detector, Detector, get_detector, matches

# Our own short sentences (not from any corpus).
SENTENCES = {
    "fr": "Ma grand-mère prépare toujours une tarte aux pommes quand il pleut le dimanche.",
    "ru": "Вчера вечером мы долго гуляли по набережной и разговаривали о старых друзьях.",
    "ja": "昨日は雨が降っていたので、家で本を読みながら温かいお茶を飲みました。",
    "th": "เมื่อวานฝนตกหนักมาก พวกเราจึงอยู่บ้านและทำอาหารกินกันทั้งครอบครัว",
    "zh": "昨天下午我们在公园里散步，看到很多人在湖边钓鱼。",
    "jv": "Aku arep lunga menyang pasar karo simbok, amarga ing omah ora ana sega lan iwak.",
}


@pytest.fixture(scope="module")
def detector() -> Detector:
    return get_detector("cld2")


@pytest.mark.parametrize("lang", sorted(SENTENCES))
def test_detects_our_sentences(detector: Detector, lang: str) -> None:
    assert detector.detect(SENTENCES[lang]) == lang


def test_codes_are_mapped_to_the_registry(detector: Detector) -> None:
    assert detector.detect("這是一個關於臺灣歷史與文化的繁體中文句子，我們都很喜歡讀。") == "zh"  # zh-Hant
    assert detector.detect("זהו משפט בעברית על מזג האוויר היפה שהיה אתמול בירושלים.") is None  # iw: not ours


@pytest.mark.parametrize("text", ["", "   \n\t", None])
def test_empty_text_is_undetected(detector: Detector, text: str | None) -> None:
    assert detector.detect(text) is None  # type: ignore[arg-type]


def test_control_characters_and_lone_surrogates_do_not_break_detection(detector: Detector) -> None:
    assert detector.detect(SENTENCES["fr"] + "\x00\x07\x9f" + "\udcff") == "fr"
    assert detector.detect("\x00\x01\udcff") is None


def test_raising_detector_gives_none(monkeypatch: pytest.MonkeyPatch) -> None:
    detector = Cld2Detector()

    def broken(*args: object, **kwargs: object) -> None:
        raise detector._cld2.error("input contains invalid UTF-8 around byte 3")

    monkeypatch.setattr(detector._cld2, "detect", broken)
    assert detector.detect("bonjour") is None


def test_matches_strict_and_lenient() -> None:
    assert matches("id", "id", lenient=False)
    assert not matches("ms", "id", lenient=False)
    assert matches("ms", "id", lenient=True) and matches("id", "ms", lenient=True)
    assert not matches("jv", "id", lenient=True)
    assert not matches(None, "en", lenient=True)
    assert not matches("fr", "en", lenient=True)


def test_detector_registry() -> None:
    assert get_detector().name == "cld2"
    assert isinstance(get_detector(), Detector)
    assert "cld2" in DETECTORS
    with pytest.raises(LensSteerError, match="unknown language detector 'lingua'; use one of cld2"):
        get_detector("lingua")
