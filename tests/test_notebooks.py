"""The notebooks under notebooks/ run top to bottom on the embedded Gemma-3-270M (small budget), offline.

Each notebook is executed in a fresh kernel with nbclient; nothing executed is written back into the repository.
The three share one run directory, so 02 and 03 reuse what 01 recorded when they run after it (each still
records on its own when run alone).
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
PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


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


def check_figures(nb) -> None:
    """Every cell tagged "figure" shows exactly one plotly figure, as the small mimetype bundle."""
    cells = [c for c in nb.cells if "figure" in c.metadata.get("tags", [])]
    assert cells
    for cell in cells:
        shown = [o for o in cell.outputs if PLOTLY_MIME in o.get("data", {})]
        assert len(shown) == 1, cell.source
        assert shown[0]["data"][PLOTLY_MIME]["data"], cell.source
        assert "text/html" not in shown[0]["data"], "the plotly_mimetype renderer must not inline plotly.js"


@pytest.mark.parametrize("name", ["01_identify", "02_steering_and_lss", "03_layer_inspector"])
def test_notebook_runs(name: str, run_dir: Path, tmp_path: Path) -> None:
    source = NOTEBOOKS / f"{name}.ipynb"
    committed = nbformat.read(source, as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None
               for c in committed.cells if c.cell_type == "code"), f"{source.name} has committed outputs"

    nb = execute(source, run_dir, tmp_path)
    errors = [o for o in outputs(nb) if o.get("output_type") == "error"]
    assert not errors, errors
    check_figures(nb)
    budget = "".join(o.get("text", "") for o in nb.cells[1].outputs)
    assert budget.startswith("budget small: languages en, fr, ja; 500 tokens each"), budget

    if name == "01_identify":
        text = text_of(nb, "neuron-counts")
        m = re.search(r"(\d+) language-neuron assignments from (\d+) LAPE neurons", text)
        assert m and int(m.group(1)) >= int(m.group(2)) > 0, text
        assert "ja Japanese" in text
        assert (run_dir / "stats.safetensors").exists() and (run_dir / "neurons.json").exists()
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
    else:
        text = text_of(nb, "widget-check")
        assert re.search(r"widget callbacks ok: layer \d+, language \w+, \d+ rows", text), text
        widgets = [o for o in outputs(nb) if WIDGET_MIME in o.get("data", {})]
        assert widgets, "the inspector widgets were not displayed"
