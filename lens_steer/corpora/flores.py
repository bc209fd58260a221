"""FLORES+: professionally translated, sentence-aligned text, for results that do not lean on the UDHR.

Why a second corpus: models have very likely memorised the UDHR, so neurons found or steering measured on
it may reflect recall more than language. FLORES+ (997 ``dev`` and 1012 ``devtest`` sentences per language,
CC BY-SA 4.0) is the standard check, but it sits on the Hugging Face hub behind a click-through gate and
must not be re-hosted, so it cannot be embedded.

Hub: ``openlanguagedata/flores_plus``, one parquet config per FLORES+ code (``fra_Latn``), splits ``dev``
and ``devtest``. Schema (FLORES+ 2.x): ``id`` (sentence number, equal across languages), ``iso_639_3``,
``iso_15924``, ``glottocode``, ``text``, ``url``, ``domain``, ``topic``, ``has_image``, ``has_hyperlink``,
``last_updated``. We read ``text`` and, where present, order rows by ``id`` so languages stay aligned.
FLORES+ renamed ``zho_Hans`` to ``cmn_Hans`` and ``est_Latn`` to ``ekk_Latn``; we ask for the new names.

Local copy (``path``), the same layout as the hub repository: ``<path>/<split>/<code>.parquet`` or
``<path>/<split>/<code>.jsonl`` (one object per line with ``text``), where ``<code>`` is the FLORES+ code
(``cmn_Hans``) or the FLORES-200 one (``zho_Hans``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lens_steer.corpora.files import read_jsonl
from lens_steer.errors import LensSteerError
from lens_steer.languages import FLORES_PLUS_RENAMES, get_language

HUB_DATASET = "openlanguagedata/flores_plus"
SPLITS = ("dev", "devtest")
TEXT_COLUMN = "text"
ID_COLUMN = "id"


def flores_plus_code(lang: str) -> str:
    """The FLORES+ config name of a language.

    >>> flores_plus_code("zh")
    'cmn_Hans'
    """
    flores = get_language(lang).flores
    return FLORES_PLUS_RENAMES.get(flores, flores)


def check_split(split: str) -> str:
    """Return ``split`` if FLORES+ has it, else raise LensSteerError listing the splits.

    >>> check_split("devtest")
    'devtest'
    """
    if split not in SPLITS:
        raise LensSteerError(f"unknown flores split {split!r}; use one of {', '.join(SPLITS)}")
    return split


def _in_id_order(texts: list[Any], ids: list[Any] | None) -> list[Any]:
    if ids is None:
        return texts
    return [text for _, text in sorted(zip(ids, texts, strict=True), key=lambda pair: pair[0])]


def _load_local(folder: Path, lang: str) -> list[str]:
    import pyarrow.parquet as pq  # a dependency of datasets; imported late to keep start-up fast

    codes = dict.fromkeys((flores_plus_code(lang), get_language(lang).flores))
    files = [folder / f"{code}{suffix}" for code in codes for suffix in (".parquet", ".jsonl")]
    found = [file for file in files if file.is_file()]
    if not found:
        listing = ", ".join(sorted(p.name for p in folder.iterdir())) if folder.is_dir() else "no such folder"
        wanted = " or ".join(file.name for file in files)
        raise LensSteerError(
            f"no {wanted} in {folder} (found: {listing or 'nothing'}); lay the copy out as <dir>/<split>/<code>.parquet"
        )
    file = found[0]
    if file.suffix == ".jsonl":
        return read_jsonl(file, TEXT_COLUMN)
    try:
        table = pq.read_table(file)
    except OSError as exc:
        reason = " ".join(str(exc).split())
        raise LensSteerError(
            f"cannot read {file} as parquet ({reason}); replace it with a FLORES+ parquet file"
        ) from None
    if TEXT_COLUMN not in table.column_names:
        raise LensSteerError(
            f"{file} has no {TEXT_COLUMN!r} column (columns: {', '.join(table.column_names)}); use the FLORES+ schema"
        )
    ids = table.column(ID_COLUMN).to_pylist() if ID_COLUMN in table.column_names else None
    return _in_id_order(table.column(TEXT_COLUMN).to_pylist(), ids)


def _load_hub(lang: str, split: str) -> list[str]:
    try:
        import datasets
    except ImportError:
        raise LensSteerError("the flores corpus needs the `datasets` package; pip install datasets") from None
    config = flores_plus_code(lang)
    local = "pass --corpus-path to a local copy laid out as <dir>/<split>/<code>.parquet"
    try:
        data = datasets.load_dataset(HUB_DATASET, config, split=split)
    # DatasetNotFoundError is an OSError too, so it must come first: it is what a gated repo gives.
    except datasets.exceptions.DatasetNotFoundError:
        raise LensSteerError(
            f"no access to {HUB_DATASET}: accept its conditions on the hub and run `huggingface-cli login`, or {local}"
        ) from None
    except OSError as exc:
        raise LensSteerError(f"the Hugging Face hub is unreachable ({type(exc).__name__}); {local}") from None
    except ValueError:
        raise LensSteerError(f"{HUB_DATASET} has no config {config} with a {split} split; {local}") from None
    ids = data[ID_COLUMN] if ID_COLUMN in data.column_names else None
    return _in_id_order(list(data[TEXT_COLUMN]), ids)


def load(langs: Sequence[str], split: str, path: str | None) -> dict[str, list[str]]:
    """The sentences of one FLORES+ split for each language, aligned by sentence id.

    Args:
        langs: Language codes.
        split: ``dev`` or ``devtest``.
        path: A local copy (see the module docstring); ``None`` loads from the hub.

    Raises:
        LensSteerError: unknown split, unreachable or gated hub, or a missing local file.

    >>> len(load(["fr"], "dev", None)["fr"])  # doctest: +SKIP
    997
    """
    check_split(split)
    if path is not None:
        return {lang: _load_local(Path(path) / split, lang) for lang in langs}
    return {lang: _load_hub(lang, split) for lang in langs}
