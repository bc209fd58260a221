"""The notebooks under notebooks/: committed with their outputs, and still running top to bottom, offline.

Two properties. The committed files are what a reader sees without running anything: every code cell executed
once, in order, without an error; figures as static PNGs; no widget state, no timing metadata; small; no UDHR
sentence in any output (results, not corpus text). And each notebook runs fresh on the embedded Gemma-3-270M at the
small budget: a copy is executed in a fresh kernel with nbclient and nothing executed is written back. The four
share one run directory, so 02-04 reuse what 01 recorded when they run after it (each still records on its own when
run alone). `make notebooks` (notebooks/execute.py) writes the committed form at the full budget.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("ipywidgets")

pytestmark = [pytest.mark.slow, pytest.mark.udhr]

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ["01_identify", "02_steering_and_lss", "03_layer_inspector", "04_compare_methods"]
PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
MAX_COMMITTED_KB = 600  # a handful of PNG figures and tables; a notebook above this carries something it should not


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("notebook-run")


def execute(path: Path, run_dir: Path, workdir: Path):
    """Execute a copy of the notebook in a fresh kernel (small budget); retry once if the kernel dies."""
    from nbclient.exceptions import DeadKernelError

    env = {"LENS_STEER_BUDGET": "small", "LENS_STEER_RUN_DIR": str(run_dir)}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        for attempt in (1, 2):
            nb = nbformat.read(path, as_version=4)
            client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", store_widget_state=False,
                                             resources={"metadata": {"path": str(workdir)}})
            try:
                client.execute()
                return nb
            except DeadKernelError:
                if attempt == 2:
                    raise
                time.sleep(1)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    raise AssertionError("unreachable")


def outputs(nb, tag: str | None = None) -> list[dict]:
    cells = [c for c in nb.cells if c.cell_type == "code" and (tag is None or tag in c.metadata.get("tags", []))]
    if tag is not None:
        assert cells, f"no cell tagged {tag!r}"
    return [o for c in cells for o in c.get("outputs", [])]


def text_of(nb, tag: str) -> str:
    return "".join(o.get("text", "") for o in outputs(nb, tag) if o.get("output_type") == "stream")


def shown_text(nb) -> str:
    """Everything a reader sees as text: streams, plain-text and HTML results."""
    parts = []
    for out in outputs(nb):
        parts.append(out.get("text", ""))
        for mime in ("text/plain", "text/html"):
            value = out.get("data", {}).get(mime, "")
            parts.append("".join(value) if isinstance(value, list) else value)
    return "\n".join(parts)


def check_figures(nb, png: bool) -> None:
    """Every cell tagged "figure" shows exactly one figure: a static PNG where Chromium is there (the committed
    form), else plotly's small mimetype bundle (never inlined plotly.js)."""
    cells = [c for c in nb.cells if "figure" in c.metadata.get("tags", [])]
    assert cells
    for cell in cells:
        mime = "image/png" if png else PLOTLY_MIME
        shown = [o for o in cell.outputs if mime in o.get("data", {})]
        assert len(shown) == 1, (mime, cell.source)
        assert shown[0]["data"][mime], cell.source
        assert "text/html" not in shown[0]["data"], "figures must not inline plotly.js"


# ---------------------------------------------------------------------------------------------------------------
# The committed form
# ---------------------------------------------------------------------------------------------------------------
def test_every_notebook_is_tested() -> None:
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_committed_with_outputs(name: str) -> None:
    path = NOTEBOOKS / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "run it once in order: make notebooks"
    assert all(c.outputs for c in code if c.metadata.get("tags")), "a tagged cell has no output"
    assert not [o for o in outputs(nb) if o.get("output_type") == "error"]
    check_figures(nb, png=True)
    assert "budget full:" in "".join(o.get("text", "") for o in nb.cells[1].outputs)
    assert "widgets" not in nb.metadata and not any("execution" in c.metadata for c in code)
    assert not any(WIDGET_MIME in o.get("data", {}) for o in outputs(nb)), "widget views need a kernel: strip them"
    assert path.stat().st_size < MAX_COMMITTED_KB * 1024, f"{path.name} is {path.stat().st_size // 1024} KB"
    text = shown_text(nb)
    assert "/root/" not in text and str(Path.home()) + "/" not in text, "an absolute path of the machine it ran on"


def test_committed_outputs_hold_no_corpus_text() -> None:
    """Results, tables and generations only: no sentence of the UDHR the notebooks record over."""
    from lens_steer.corpora import load_corpus

    shown = "\n".join(shown_text(nbformat.read(NOTEBOOKS / f"{n}.ipynb", as_version=4)) for n in NAMES)
    corpus = load_corpus("udhr", ["en", "fr", "ru", "vi", "ja", "zh"], split="all")
    long = [s for sentences in corpus.values() for s in sentences if len(s) >= 40]
    assert len(long) > 100
    leaked = [s for s in long if s[:40] in shown]
    assert not leaked, leaked[:2]


# ---------------------------------------------------------------------------------------------------------------
# Executed fresh, small budget
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name: str, run_dir: Path, tmp_path: Path) -> None:
    from lens_steer.plots import browser_path

    nb = execute(NOTEBOOKS / f"{name}.ipynb", run_dir, tmp_path)
    errors = [o for o in outputs(nb) if o.get("output_type") == "error"]
    assert not errors, errors
    check_figures(nb, png=bool(browser_path()))
    budget = "".join(o.get("text", "") for o in nb.cells[1].outputs)
    assert budget.startswith("budget small: languages en, fr, ja; 500 tokens each"), budget

    if name == "01_identify":
        text = text_of(nb, "neuron-counts")
        m = re.search(r"(\d+) language-neuron assignments from (\d+) LAPE neurons", text)
        assert m and int(m.group(1)) >= int(m.group(2)) > 0, text
        assert "ja Japanese" in text
        assert (run_dir / "stats.safetensors").exists() and (run_dir / "neurons.json").exists()
        stability = outputs(nb, "stability")[-1]["data"]["text/plain"]
        assert "jaccard_mean" in stability and "split_half_jaccard" in stability, stability
        assert (run_dir / "stability.csv").exists() and (run_dir / "stability.safetensors").exists()
    elif name == "02_steering_and_lss":
        table = outputs(nb, "next-token")[-1]["data"]["text/plain"]
        assert "ja p_max" in table and "none" in table
        summary = text_of(nb, "lss-summary")
        assert re.search(r"best factor: (p_max\*0\.5|p_max|p_max\*2|zero)\b", summary), summary
        lss = outputs(nb, "lss-summary")[-1]["data"]["text/plain"]
        for factor in ("p_max*0.5", "p_max*2", "zero"):
            assert factor in lss
        generated = text_of(nb, "generation")
        assert re.search(r"baseline \((\w+|None)\): ", generated) and "ja p_max (" in generated, generated
        assert (run_dir / "lss.csv").exists()
    elif name == "03_layer_inspector":
        text = text_of(nb, "widget-check")
        assert re.search(r"widget callbacks ok: layer \d+, language \w+, \d+ rows", text), text
        widgets = [o for o in outputs(nb) if WIDGET_MIME in o.get("data", {})]
        assert widgets, "the inspector widgets were not displayed"
    else:
        from lens_steer.compare import COMPARE_COLUMNS
        from lens_steer.plots import read_table

        assert "4 methods on en, fr, ja in" in text_of(nb, "compare")
        table = outputs(nb, "compare-table")[-1]["data"]["text/plain"]
        for method in ("none", "p_max", "control:diffmean*best", "resid:best", "control:prompt:en"):
            assert method in table, table
        frame = read_table(run_dir / "compare.csv")
        assert tuple(frame.columns) == (*COMPARE_COLUMNS, "run_fingerprint") and len(frame) == 10  # resid:best has two nulls
        verdicts = outputs(nb, "verdicts")[-1]["data"]["text/plain"]
        assert "rank_first" in verdicts and "reference" in verdicts, verdicts  # p_max's own row
        assert re.search(r"\] (better|worse|indistinguishable)", verdicts), verdicts
        choices = text_of(nb, "choices")
        assert re.search(r"diffmean\*best: chose diffmean\*\d+ on held-out facts", choices), choices
        assert re.search(r"resid:best: chose resid:\d+\*\d+ on held-out facts", choices), choices
        generated = text_of(nb, "generation")
        assert "target ja" in generated and re.search(r"resid:best = resid:\d+\*\d+ \[\w+\]: ", generated)
