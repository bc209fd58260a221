"""Bad local files that every hub-or-local loader (flores, mlama-dod, the eval tasks) must refuse in one line.

One table for all of them because they share one reader (:mod:`lens_steer.reader`); each loader's tests write
these files where that loader looks, so the whole error ladder is checked through every loader.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lens_steer.errors import LensSteerError


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


GOOD_PARQUET = _parquet_bytes(pa.table({"unrelated": [1, 2]}))

BAD_FILES = [  # (suffix, content, what the one-line message says)
    pytest.param(".parquet", b"not parquet at all", r"cannot read .* as parquet \(", id="malformed-parquet"),
    pytest.param(".parquet", GOOD_PARQUET[:-20], r"cannot read .* as parquet \(", id="truncated-parquet"),
    pytest.param(".parquet", GOOD_PARQUET, r"lacks the column\(s\) .* \(columns: unrelated\)", id="parquet-no-column"),
    pytest.param(".jsonl", b'{"unrelated": 1}\n', r"\.jsonl:1: no .* field", id="jsonl-no-field"),
    pytest.param(".jsonl", b"\n{not json\n", r"\.jsonl:2: invalid JSON", id="bad-json-line"),
    pytest.param(".jsonl", b"[1, 2]\n", r"\.jsonl:1: expected one JSON object per line", id="not-an-object"),
    pytest.param(".jsonl", b"\xff\xfe{}\n", r"is not UTF-8 .*; re-save it as UTF-8", id="not-utf8"),
]


def refused_in_one_line(load: Callable[[], object], message: str) -> str:
    """Call ``load``, expect a LensSteerError matching ``message`` on one line, and return its text."""
    with pytest.raises(LensSteerError, match=message) as err:
        load()
    assert "\n" not in str(err.value), str(err.value)
    return str(err.value)
