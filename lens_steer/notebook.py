"""The set-up the notebooks under notebooks/ share: budget, run directory, progress bars, figure rendering.

Each notebook used to start with the same copied cell, so a change to the budget or to where the run lives had to be
made four times. Now the first code cell is ``setup = setup_notebook()`` and a line naming the values the notebook
uses (notebooks/README.md shows it).

What it reads from the environment (``notebooks/execute.py`` and ``tests/test_notebooks.py`` set these for the
kernel):

- ``LENS_STEER_BUDGET``: ``small`` (CI: 3 languages, 500 tokens, 10 cloze facts) or unset / ``full``.
- ``LENS_STEER_RUN_DIR``: the run directory the notebooks share (02-04 reuse what 01 recorded); by default
  ``runs/notebooks`` or ``runs/notebooks-small`` at the repository root (git-ignored).
- ``LENS_STEER_PROGRESS=0``: no tqdm bars (saved outputs stay clean); the small budget never shows them.

No torch here: importing this module is cheap, and the figure set-up imports plotly only when asked.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lens_steer.errors import LensSteerError

# The budgets, by name: languages, UDHR tokens recorded per language (RecordConfig.max_tokens), CLDR cloze facts per
# source language. "small" is the CI/smoke size; "full" is a fuller but still moderate run (the committed outputs).
BUDGETS: dict[str, dict] = {
    "small": {"langs": ("en", "fr", "ja"), "max_tokens": 500, "max_facts": 10},
    "full": {"langs": ("en", "fr", "ru", "vi", "ja", "zh"), "max_tokens": 2000, "max_facts": 8},
}


@dataclass(frozen=True)
class NotebookSetup:
    """What a notebook needs to know about its run; ``str()`` is the one line the set-up cell prints."""

    budget: str               # "small" or "full"
    langs: list[str]
    max_tokens: int
    max_facts: int
    root: Path                # the repository root: see repository_root
    run_dir: Path             # the run directory the notebooks share
    progress: bool            # show tqdm bars

    @property
    def small(self) -> bool:
        return self.budget == "small"

    @property
    def shown_run_dir(self) -> Path:
        """The run directory relative to the repository root when it is inside it: saved outputs hold no absolute
        path of the machine that ran them."""
        return self.run_dir.relative_to(self.root) if self.run_dir.is_relative_to(self.root) else self.run_dir

    def __str__(self) -> str:
        return (f"budget {self.budget}: languages {', '.join(self.langs)}; {self.max_tokens} tokens each;"
                f" run dir {self.shown_run_dir}")


def repository_root(start: str | Path | None = None) -> Path:
    """The first folder from ``start`` (default: the working directory) upward that holds a pyproject.toml, else
    ``start``: notebooks run with notebooks/ as their working directory, the run directory lives at the root."""
    start = Path(start or Path.cwd()).resolve()
    return next((p for p in (start, *start.parents) if (p / "pyproject.toml").exists()), start)


def notebook_budget(environ: Mapping[str, str] | None = None, cwd: str | Path | None = None) -> NotebookSetup:
    """The budget and run directory from ``environ`` (default ``os.environ``); no side effects.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as here:                 # a folder outside any repository
    ...     small = notebook_budget({"LENS_STEER_BUDGET": "small"}, cwd=here)
    ...     full = notebook_budget({"LENS_STEER_PROGRESS": "0"}, cwd=here)
    >>> print(small)                                                # the run dir relative to the root
    budget small: languages en, fr, ja; 500 tokens each; run dir runs/notebooks-small
    >>> full.budget, full.max_tokens, full.progress, full.run_dir == full.root / "runs" / "notebooks"
    ('full', 2000, False, True)
    >>> notebook_budget({"LENS_STEER_BUDGET": "huge"})
    Traceback (most recent call last):
    ...
    lens_steer.errors.LensSteerError: LENS_STEER_BUDGET must be 'small' or unset/'full', not 'huge'
    """
    environ = os.environ if environ is None else environ
    budget = environ.get("LENS_STEER_BUDGET", "full").strip().lower() or "full"
    if budget not in BUDGETS:
        raise LensSteerError(f"LENS_STEER_BUDGET must be 'small' or unset/'full', not {budget!r}")
    values = BUDGETS[budget]
    root = repository_root(cwd)
    run_dir = environ.get("LENS_STEER_RUN_DIR") or root / "runs" / ("notebooks-small" if budget == "small"
                                                                     else "notebooks")
    return NotebookSetup(budget=budget, langs=list(values["langs"]), max_tokens=values["max_tokens"],
                         max_facts=values["max_facts"], root=root, run_dir=Path(run_dir),
                         progress=budget != "small" and environ.get("LENS_STEER_PROGRESS", "1") != "0")


def static_figures() -> str:
    """Make plotly show figures as static PNGs (kaleido + Chromium, offline) and return the renderer's name.

    A saved notebook then shows its figures in any viewer (GitHub included) and stays small. One kaleido server (one
    Chromium, MathJax off: nothing from a CDN) draws them all, as ``plots.save_figures`` does. Without Chromium the
    figures use the ``plotly_mimetype`` renderer (interactive in Jupyter) and one line says how to get PNGs.
    Calling it again (a re-run cell) keeps the server that runs."""
    # deferred: plotly (and torch, via plots), only when a notebook is set up
    import plotly.io as pio

    from lens_steer.plots import browser_path  # deferred: torch, pandas and plotly

    browser = browser_path()
    if browser is None:
        pio.renderers.default = "plotly_mimetype"
        print("no Chromium (run `make setup` or set BROWSER_PATH): figures are interactive, not static PNGs")
        return pio.renderers.default
    import kaleido  # deferred: kaleido, only with a Chromium to draw

    os.environ.setdefault("BROWSER_PATH", browser)
    try:
        kaleido.start_sync_server(mathjax=False, silence_warnings=True)
    except RuntimeError:
        pass  # already running: started by an earlier call in this kernel
    warnings.filterwarnings("ignore", message="The kopts argument is ignored")  # plotly's note about that server
    pio.renderers.default = "png"
    return pio.renderers.default


def setup_notebook(figures: bool = True) -> NotebookSetup:
    """The first cell of every notebook: read the budget (:func:`notebook_budget`), print it, set up the figures
    (:func:`static_figures`, unless ``figures=False``) and return the :class:`NotebookSetup`.

    The printed line is the set-up cell's output that ``tests/test_notebooks.py`` checks."""
    setup = notebook_budget()
    print(setup)
    if figures:
        static_figures()
    return setup
