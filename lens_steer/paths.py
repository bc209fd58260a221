"""Where lens_steer keeps downloaded and converted material, and how it writes files safely."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lens_steer.errors import LensSteerError


def cache_dir() -> Path:
    """The cache folder: ``$LENS_STEER_CACHE`` or ``~/.cache/lens_steer`` (created on first use)."""
    root = os.environ.get("LENS_STEER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lens_steer")
    path = Path(root)
    try:
        path.mkdir(parents=True, exist_ok=True)  # an existing read-only cache that holds everything is fine
    except OSError as exc:
        raise LensSteerError(f"cannot use the cache folder {path} ({exc.strerror or exc}); set LENS_STEER_CACHE to a"
                             " writable folder") from None
    return path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only if the block succeeds.

    Why: an interrupted run must never leave a half-written artifact that a later run would trust.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:  # a read-only place: one line, before anything is written
        raise LensSteerError(f"cannot write {target} ({exc.strerror or exc}); choose a writable place") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600 files; give the artifact the usual umask-based mode
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(target: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON atomically (UTF-8, indented, keys in insertion order)."""
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_text(target: str | os.PathLike[str], text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
