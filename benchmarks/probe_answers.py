"""What a probe got back, in kinds: the exit code and stderr as the user saw them (one line, argparse usage, a
traceback, noise), how far the model load got (from the shim's log), and whether that is what the probe expects.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from benchmarks.probe_table import Probe


TRACEBACK = "Traceback (most recent call last):"
ERROR = "lens-steer: error:"
WARNING = "lens-steer: warning:"
ARGPARSE_ERROR = re.compile(r"^lens-steer(?: [\w-]+)?: error: ")
PROGRESS = re.compile(r"\d+%\||\|\s*\d+/\d+ \[|it/s\]|s/it\]")
LOAD_LEVELS = ("no", "checks", "booting", "loaded")  # how far a model load got, in order


def classify_stderr(stderr: str, returncode: int | None) -> dict[str, Any]:
    """What the user saw on stderr, in kinds.

    >>> classify_stderr("lens-steer: warning: x\\nlens-steer: error: no run at r; run identify\\n", 2)["kind"]
    'one line'
    >>> classify_stderr("Traceback (most recent call last):\\n  File \\"a.py\\"\\nOSError: [Errno 30] x\\n", 1)["error"]
    'OSError: [Errno 30] x'
    """
    lines, on_bar = [], False
    for raw in stderr.split("\n"):  # not splitlines(): it splits at the carriage returns too
        # A carriage return redraws a progress bar; what a terminal keeps is the last segment. An error printed
        # after a bar without a newline lands on the bar's line.
        segments = [s for s in raw.split("\r") if s.strip()]
        if not segments:
            continue
        last = segments[-1]
        if len(segments) > 1 and last.startswith((ERROR, WARNING)) and PROGRESS.search(segments[-2]):
            on_bar = True
        lines.append(last.rstrip())
    warnings = [ln for ln in lines if ln.startswith(WARNING)]
    errors = [ln for ln in lines if ln.startswith(ERROR)]
    progress = [ln for ln in lines if PROGRESS.search(ln) and not ln.startswith((ERROR, WARNING))]
    other = [ln for ln in lines if ln not in warnings and ln not in errors and ln not in progress]
    traceback = TRACEBACK in stderr
    usage = any(ln.startswith("usage: ") for ln in lines) and any(ARGPARSE_ERROR.match(ln) for ln in lines)
    error = ""
    if returncode is None:
        kind = "timeout"
    elif traceback:
        kind = "traceback"
        error = next((ln for ln in reversed(lines) if not ln.startswith((" ", WARNING))), "")
    elif returncode == 0:
        kind = "ok"
    elif usage and returncode == 2:
        kind = "argparse"
        error = next(ln for ln in lines if ARGPARSE_ERROR.match(ln))
    elif len(errors) == 1 and not other:
        kind = "one line"
        error = errors[0]
    elif errors:
        kind = "noisy"
        error = errors[-1]
    else:
        kind = "other"
        error = other[-1] if other else ""
    return {"kind": kind, "error": error, "warnings": warnings, "noise": other[-8:], "progress_lines": len(progress),
            "error_on_bar_line": on_bar}


def read_marker(path: str | Path) -> dict[str, Any]:
    """How far the model load got, from the shim's log: no, checks (load_model entered, weights never read),
    booting (the bridge began reading weights, load_model never returned), loaded.

    >>> import tempfile; f = Path(tempfile.mkdtemp()) / "m"
    >>> _ = f.write_text('{"event": "start", "t": 0.1}\\n{"event": "load_model", "t": 2}\\n')
    >>> read_marker(f)["model"], read_marker(f)["load_t"]
    ('checks', 2)
    """
    events: list[dict[str, Any]] = []
    if Path(path).exists():
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a killed process
    names = [e["event"] for e in events]
    level = ("loaded" if "loaded" in names else "booting" if "boot" in names
             else "checks" if "load_model" in names or "Model" in names else "no")
    load_t = next((e["t"] for e in events if e["event"] in ("load_model", "boot", "Model")), None)
    home = next((e.get("lens_steer") for e in events if e["event"] == "start"), None)
    return {"model": level, "load_t": load_t, "lens_steer": home, "loads": names.count("loaded")}


def meets(probe: Probe, result: dict[str, Any]) -> bool:
    """Whether the answer is what the probe expects (see :class:`Probe`)."""
    refused = result["exit"] == 2 and result["kind"] in ("one line", "argparse")
    early = not probe.before_load or LOAD_LEVELS.index(result["model"]) <= LOAD_LEVELS.index("checks")
    if probe.expect == "ok":
        return result["exit"] == 0
    if probe.expect == "warn" and result["exit"] == 0:
        return bool(result["warnings"])
    return refused and early
