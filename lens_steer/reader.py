"""One reader for data that lives on the Hugging Face hub or in a local copy of it (.parquet or .jsonl files).

Why one: the flores corpus (:mod:`lens_steer.corpora.flores`), the mlama-dod cloze (:mod:`lens_steer.cloze.mlama`)
and the evaluation tasks (:mod:`lens_steer.evals.data`) all read "a hub dataset, or a local copy of it"; one reader
gives them one error ladder, so a given bad input is the same one-line :class:`~lens_steer.errors.LensSteerError`
whichever loader meets it. The loaders keep what is theirs: the hub repository and config names, the local
layouts (glob patterns), the required columns, and the hint that says which flag takes a local copy.

Local copies, each failure one line that says how to fix it:
    * :func:`find_files`: the path is not a folder; no file in any of the loader's layouts (the message lists
      what the folder holds).
    * :func:`read_file`: a missing file; a suffix other than ``.parquet``/``.jsonl``; a parquet file pyarrow
      cannot read; a JSON-lines file that is not UTF-8, or a line that is not one JSON object; a required
      column missing (from the parquet schema; a JSON-lines file has no schema, so each line is checked and the
      message names the line).
The hub (:func:`load_hub`, ``datasets.load_dataset``):
    no ``datasets`` package; no access (a gated or missing repository); no data files; no config by any of the
    given names (or no such split); the hub unreachable; a required column missing (the hub schema changed).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lens_steer.errors import LensSteerError

Row = dict[str, Any]
Missing = Callable[[Sequence[str]], list[str]]
"""A schema check: the required columns absent from a list of column names (``[]`` when none is)."""

SUFFIXES = (".parquet", ".jsonl")
PARQUET_EXPORT = "refs/convert/parquet"
"""The hub's parquet export branch, for repositories whose ``main`` holds a loading script ``datasets`` refuses."""

Pattern = str | tuple[str, ...]
"""A local layout for :func:`find_files`: a glob with ``{name}`` in it, or several whose matches are pooled."""


@dataclass(frozen=True)
class Table:
    """Rows read from one file or one hub split.

    ``columns`` is the schema's column names (parquet, hub), or ``None`` for JSON lines, which have no schema;
    ``where`` names the source for messages (the file, or ``hf:<repo>/<config>/<split>``).
    """

    rows: list[Row]
    columns: tuple[str, ...] | None
    where: str


def needs(*required: str) -> Missing:
    """The schema check that asks for every one of ``required``.

    >>> needs("text", "id")(["id", "url"])
    ['text']
    >>> needs()(["id"])
    []
    """
    return lambda columns: [column for column in required if column not in columns]


def _check_columns(where: str, columns: Sequence[str], missing: Missing, fix: str) -> None:
    absent = missing(columns)
    if absent:
        raise LensSteerError(f"{where} lacks the column(s) {', '.join(absent)} (columns: {', '.join(columns)}); {fix}")


# --- local copies ----------------------------------------------------------------------------------------------------


def read_text(path: Path) -> str:
    """The text of a UTF-8 file (a leading BOM is dropped); another encoding is a one-line error."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LensSteerError(f"{path} is not UTF-8 ({exc.reason} at byte {exc.start}); re-save it as UTF-8") from None


def read_jsonl_objects(path: Path) -> list[tuple[int, Row]]:
    """(line number, object) for each non-blank line of a JSON-lines file; a bad line is a one-line error."""
    records: list[tuple[int, Row]] = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LensSteerError(f"{path}:{number}: invalid JSON ({exc.msg}); fix or remove that line") from None
        if not isinstance(record, dict):
            raise LensSteerError(f"{path}:{number}: expected one JSON object per line; fix that line")
        records.append((number, record))
    return records


def _jsonl_rows(file: Path, missing: Missing, schema: str) -> list[Row]:
    rows = []
    for number, record in read_jsonl_objects(file):
        absent = missing(list(record))
        if absent:
            raise LensSteerError(
                f"{file}:{number}: no {', '.join(absent)} field; each line needs the {schema} columns"
            )
        rows.append(record)
    return rows


def _parquet_table(file: Path, schema: str) -> Any:
    import pyarrow as pa  # deferred: pyarrow (a dependency of datasets), to keep start-up fast
    import pyarrow.parquet as pq  # deferred: as above

    try:
        return pq.read_table(file)
    # Garbage bytes give ArrowInvalid (a ValueError), a truncated file an OSError; any Arrow error means the same.
    except (OSError, ValueError, pa.ArrowException) as exc:
        reason = " ".join(str(exc).split())
        raise LensSteerError(
            f"cannot read {file} as parquet ({reason}); replace it with a valid parquet file in the {schema} schema"
        ) from None


def read_file(file: Path, missing: Missing, schema: str) -> Table:
    """The rows of one local ``.parquet`` or ``.jsonl`` file (one JSON object per line), its columns checked.

    Args:
        file: The file.
        missing: The schema check (:func:`needs`).
        schema: The schema's name for messages (``FLORES+``, ``xcopa hub``).

    Raises:
        LensSteerError: see the module docstring.
    """
    if not file.is_file():
        raise LensSteerError(f"{file} is not a file; check the path, or copy the file there")
    if file.suffix == ".jsonl":
        return Table(_jsonl_rows(file, missing, schema), None, str(file))
    if file.suffix != ".parquet":
        raise LensSteerError(f"cannot read {file}: expected a {' or '.join(SUFFIXES)} file; convert it to one")
    table = _parquet_table(file, schema)
    _check_columns(str(file), table.column_names, missing, f"use the {schema} schema")
    return Table(table.to_pylist(), tuple(table.column_names), str(file))


def read_files(files: Sequence[Path], missing: Missing, schema: str) -> list[Row]:
    """The rows of several files (the shards of one split), in order; each file as :func:`read_file` reads it."""
    return [row for file in files for row in read_file(file, missing, schema).rows]


def listing(folder: Path) -> str:
    """What a folder holds, for the ``found:`` part of a message.

    >>> listing(Path("/no/such/folder"))
    'no such folder'
    """
    if not folder.is_dir():
        return "no such folder"
    return ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"


def find_files(
    folder: Path, names: Sequence[str], patterns: Sequence[Pattern], *, wanted: str, hint: str
) -> list[Path]:
    """A language's data files in a local copy: the first layout that matches.

    Args:
        folder: The copy's root.
        names: The language's names (config names, codes), tried in order.
        patterns: The layouts, most preferred first: globs with ``{name}`` (``"{name}/test-*.parquet"``); a tuple
            pools the matches of its globs. Only ``.parquet`` and ``.jsonl`` files count.
        wanted: What was looked for, for the message (``"fra_Latn.parquet"``).
        hint: How to lay the copy out, ending the messages.

    Returns:
        The files of the first (name, layout) that matches, sorted (several for a sharded split).

    Raises:
        LensSteerError: ``folder`` is not a folder, or nothing matches (the message lists what is there).
    """
    if not folder.is_dir():
        raise LensSteerError(f"{folder} is not a folder; {hint}")
    for name in dict.fromkeys(names):
        for pattern in patterns:
            globs = (pattern,) if isinstance(pattern, str) else pattern
            found = {p for glob in globs for p in folder.glob(glob.format(name=name)) if p.suffix in SUFFIXES}
            files = sorted(p for p in found if p.is_file())
            if files:
                return files
    raise LensSteerError(f"no {wanted} in {folder} (found: {listing(folder)}); {hint}")


# --- the hub ---------------------------------------------------------------------------------------------------------


def _load_dataset(datasets: Any, repo: str, config: str, split: str, export: bool, hint: str) -> Any:
    """``datasets.load_dataset``; every failure but a missing config (ValueError) becomes a one-line error."""
    try:
        if export:
            url = f"hf://datasets/{repo}@{PARQUET_EXPORT}/{config}/{split}/*.parquet"
            return datasets.load_dataset("parquet", data_files={split: url}, split=split)
        return datasets.load_dataset(repo, config, split=split)
    # DatasetNotFoundError is a FileNotFoundError (an OSError) too, so it must come first: a gated or missing repo.
    except datasets.exceptions.DatasetNotFoundError:
        raise LensSteerError(
            f"no access to {repo} on the Hugging Face hub: run `huggingface-cli login` (and accept its conditions "
            f"if it is gated), or {hint}"
        ) from None
    except FileNotFoundError as exc:  # DataFilesNotFoundError: the parquet export lacks these files
        raise LensSteerError(
            f"found no {repo} {config}/{split} data on the Hugging Face hub ({type(exc).__name__}); check the "
            f"network, or {hint}"
        ) from None
    except ValueError:  # datasets: "BuilderConfig 'jp' not found" or "Unknown split"; the caller tries the next name
        raise
    # Why so broad: offline, the hub stack raises many types (ConnectionError, OfflineModeIsEnabled, httpx's
    # ConnectError, which is not an OSError, LocalEntryNotFoundError...); all mean the same to the user.
    except Exception as exc:  # noqa: BLE001
        raise LensSteerError(
            f"cannot load {repo}: the Hugging Face hub is unreachable ({type(exc).__name__}); get network access "
            f"(and `huggingface-cli login` if asked), or {hint}"
        ) from None


def load_hub(
    repo: str,
    configs: Sequence[str],
    split: str,
    *,
    missing: Missing,
    user: str,
    hint: str,
    export: bool = False,
) -> Table:
    """One split of a hub dataset, from the first of ``configs`` the repository has.

    Args:
        repo: The hub repository (``cambridgeltl/xcopa``).
        configs: Config names to try in order (``("ja", "jp")``): a name the repository lacks moves to the next.
        split: The split.
        missing: The schema check (:func:`needs`).
        user: Who needs the data, for the message without ``datasets`` (``"the flores corpus"``).
        hint: How to use a local copy instead, ending every message (``"pass --data PATH, ..."``).
        export: Read the hub's parquet export (:data:`PARQUET_EXPORT`), ``<config>/<split>/*.parquet``, instead
            of ``main``.

    Raises:
        LensSteerError: see the module docstring.

    >>> load_hub("cambridgeltl/xcopa", ["qu"], "test", missing=needs(), user="", hint="").where  # doctest: +SKIP
    'hf:cambridgeltl/xcopa/qu/test'
    """
    try:
        import datasets  # deferred: datasets (seconds); missing, it is refused in one line
    except ImportError:
        raise LensSteerError(f"{user} needs the `datasets` package (pip install datasets), or {hint}") from None
    names = list(dict.fromkeys(configs))
    for config in names:
        try:
            data = _load_dataset(datasets, repo, config, split, export, hint)
        except ValueError:
            continue
        where = f"hf:{repo}/{config}/{split}"
        columns = tuple(data.column_names)
        _check_columns(where, columns, missing, f"the hub schema changed: {hint}")
        rows = list(data.to_list()) if hasattr(data, "to_list") else [dict(row) for row in data]
        return Table(rows, columns, where)
    raise LensSteerError(f"{repo} has no config {' or '.join(names)} with a {split} split; {hint}")
