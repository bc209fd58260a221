"""Session fixtures: tiny offline models built once per test session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import helpers  # noqa: E402

ARCHS = ("qwen2", "gemma2", "llama", "gpt2")


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Saved tiny HF checkpoints, one per architecture, each with a disk-saved tokenizer."""
    root = tmp_path_factory.mktemp("tiny")
    return {arch: helpers.save_tiny_hf(arch, root / arch) for arch in ARCHS}


@pytest.fixture(scope="session")
def tiny_models(tiny_dirs: dict[str, Path]):
    from lens_steer.models import load_model

    return {arch: load_model(str(path)) for arch, path in tiny_dirs.items()}


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Saved tiny checkpoints shaped like the paper's model families (helpers.FAMILY_ARCHS; not in ARCHS)."""
    root = tmp_path_factory.mktemp("families")
    return {arch: helpers.save_tiny_hf(arch, root / arch) for arch in helpers.FAMILY_ARCHS}


@pytest.fixture(scope="session")
def family_models(family_dirs: dict[str, Path]):
    from lens_steer.models import load_model

    return {arch: load_model(str(path)) for arch, path in family_dirs.items()}


@pytest.fixture(params=ARCHS)
def tiny_model(request: pytest.FixtureRequest, tiny_models):
    return tiny_models[request.param]


@pytest.fixture(scope="session")
def native_model(tiny_dirs: dict[str, Path]):
    return helpers.native_bridge(tiny_dirs["qwen2"])


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    """A `--corpus files` folder with the invented en/fr/ru/zh sentences of tests/helpers.py."""
    d = tmp_path / "corpus"
    d.mkdir()
    for code in ("en", "fr", "ru", "zh"):
        (d / f"{code}.txt").write_text("\n".join(helpers.SENTENCES[code]) + "\n", encoding="utf-8")
    return d


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, request) -> None:
    """Tests never write to the user's cache, except the ones marked to use the real embedded material."""
    if request.node.get_closest_marker("slow") or request.node.get_closest_marker("udhr"):
        return
    monkeypatch.setenv("LENS_STEER_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(autouse=True)
def _invented_udhr_prompts(monkeypatch: pytest.MonkeyPatch, request) -> None:
    """The forcing prompt bank reads an invented declaration (helpers.udhr_like_units), never the network; the tests
    marked to use the real embedded material read the real one."""
    if request.node.get_closest_marker("slow") or request.node.get_closest_marker("udhr"):
        return
    from lens_steer import prompts

    monkeypatch.setattr(prompts, "udhr_units", helpers.udhr_like_units)
