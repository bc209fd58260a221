"""notebooks/execute.py, the writer of the committed notebooks: what it strips, and that a failure writes nothing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

SCRIPT = Path(__file__).resolve().parent.parent / "notebooks" / "execute.py"
KERNEL = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}


@pytest.fixture(scope="module")
def execute():
    spec = importlib.util.spec_from_file_location("notebooks_execute", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _notebook(*sources: str):
    from nbformat.v4 import new_code_cell, new_notebook

    return new_notebook(cells=[new_code_cell(s) for s in sources], metadata=dict(KERNEL))


def test_strip_keeps_results_and_drops_what_changes_between_runs(execute):
    nb = _notebook("1 + 1", "w")
    nb.metadata["widgets"] = {"state": {}}
    nb.cells[0].metadata["execution"] = {"iopub.execute_input": "2026-12-03T08:00:00"}
    nb.cells[0].outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=1)]
    nb.cells[1].outputs = [nbformat.v4.new_output("display_data", {execute.WIDGET_MIME: {"model_id": "x"},
                                                                   "text/plain": "VBox(...)"})]
    execute.strip(nb, dict(KERNEL))
    assert nb.metadata == KERNEL
    assert "execution" not in nb.cells[0].metadata and nb.cells[0].outputs[0]["data"] == {"text/plain": "2"}
    assert nb.cells[1].outputs[0]["data"] == {"text/plain": execute.WIDGET_NOTE}


def test_first_error_names_the_cell(execute):
    nb = _notebook("x = 1", "1 / 0")
    nb.cells[1].outputs = [nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="division by zero",
                                                  traceback=[])]
    assert execute.first_error(nb) == "cell 1 raised ZeroDivisionError: division by zero"
    assert execute.first_error(_notebook("x = 1")) is None


def test_a_missing_notebook_is_one_line(execute, tmp_path, capsys):
    assert execute.main([str(tmp_path / "nope.ipynb"), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no notebook" in err


@pytest.mark.slow
def test_a_failing_notebook_writes_nothing(execute, tmp_path, capsys):
    path = tmp_path / "bad.ipynb"
    nbformat.write(_notebook("print('ok')", "raise ValueError('broken on purpose')"), path)
    before = path.read_bytes()
    out = tmp_path / "out"
    assert execute.main([str(path), "--run-dir", str(tmp_path / "run"), "--out", str(out), "--timeout", "60"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "execute.py: bad.ipynb: cell 1 raised ValueError: broken on purpose", err
    assert path.read_bytes() == before and not (out / "bad.ipynb").exists()
    nbformat.write(_notebook("print('ok')"), path)
    assert execute.main([str(path), "--run-dir", str(tmp_path / "run"), "--out", str(out), "--keep-run"]) == 0
    written = nbformat.read(out / "bad.ipynb", as_version=4)
    assert written.cells[0].outputs[0]["text"] == "ok\n" and written.cells[0].execution_count == 1
