"""`lens-steer --help` and every `lens-steer SUB --help` import no torch (torch alone takes seconds to import)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lens_steer.cli_parser import build_parser

ROOT = Path(__file__).parents[1]
# One line of `python -X importtime` per imported module: "import time: self | cumulative | <indent>name".
TORCH_LINE = re.compile(r"^import time:.*\|\s*torch(\.|$)", re.MULTILINE)


def _subcommands() -> list[str]:
    actions = [a for a in build_parser()._actions if a.choices and hasattr(a, "add_parser")]
    return sorted(name for a in actions for name in a.choices)


def _import_log(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


def test_every_subcommand_is_checked():
    assert {"identify", "lss", "compare", "setup"} <= set(_subcommands())


@pytest.mark.parametrize("sub", [None, *_subcommands()])
def test_help_imports_no_torch(sub):
    done = _import_log("-m", "lens_steer.cli", *([sub] if sub else []), "--help")
    assert done.returncode == 0 and "usage: lens-steer" in done.stdout, done.stderr[-2000:]
    assert "lens_steer.cli_parser" in done.stderr  # the import log is there, so no torch line means no torch
    torch_lines = TORCH_LINE.findall(done.stderr)
    assert not torch_lines, f"`lens-steer {sub or ''} --help` imported torch"


def test_the_import_log_would_show_torch():
    """The check above can fail: a module that imports torch shows torch lines in the same log."""
    done = _import_log("-c", "import lens_steer.models.handle")
    assert done.returncode == 0, done.stderr[-2000:]
    assert TORCH_LINE.search(done.stderr)
