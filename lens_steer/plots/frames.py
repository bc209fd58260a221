"""The CSV artifacts the figures read (``lss.csv``, ``compare.csv``, ``eval_*.csv``) as DataFrames, read the same way
whether a builder gets a file, a DataFrame or a list of row dicts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from lens_steer import run as run_artifacts


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV artifact (``lss.csv``, ``forcing.csv``, ``eval_*.csv``) as a DataFrame, ``layers`` kept as text
    (:func:`lens_steer.run.read_table`; :meth:`lens_steer.run.Run.table` also checks it belongs to the run)."""
    return run_artifacts.read_table(path)


def _as_frame(rows: pd.DataFrame | Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """A copy the builder may add columns to, ``layers`` as text: ``"all"`` and layer numbers share the column,
    and a table read from disk or built in memory must filter the same way."""
    frame = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if "layers" in frame:
        frame["layers"] = frame["layers"].astype(str)
    return frame
