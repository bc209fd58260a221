"""The top-level API: `import lens_steer` is light (no torch), and every name it exports resolves.

Notebooks and README examples import the whole steering and scoring API from `lens_steer`; the names are resolved on
first use (PEP 562), so a typo in the name -> module table only shows when the name is used. These tests use each.
"""

from __future__ import annotations

import ast
import json
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import lens_steer

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# What the notebooks and the README's examples are expected to import from one place.
REQUIRED = {
    "Steerer", "Intervention", "steering", "run_lss", "lss_for_run", "LSSConfig", "compare_for_run", "CompareConfig",
    "forcing_for_run", "steer_for_run", "ForcingConfig", "SteerConfig", "eval_for_run", "EvalConfig",
    "identify_for_run", "IdentifyConfig", "RecordConfig", "Run", "NeuronSet", "Stats", "Model", "LoadConfig",
    "parse_factors", "Factor", "choose_factor", "setup_notebook",
}


def _subprocess(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)


def _code_cells(path: Path) -> list[str]:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in cells if c["cell_type"] == "code"]


def _readme_python() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.DOTALL)


def _imports(sources: list[str]) -> tuple[set[str], set[tuple[str, str]], set[str]]:
    """(names imported `from lens_steer import ...`, (module, name) imported from a submodule, `ls.X` attributes)."""
    top, sub, attrs = set(), set(), set()
    for source in sources:
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "lens_steer":
                top |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lens_steer."):
                sub |= {(node.module, alias.name) for alias in node.names}
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "ls":
                attrs.add(node.attr)
    return top, sub, attrs


def test_import_lens_steer_imports_no_torch():
    done = _subprocess("import sys, lens_steer, lens_steer.notebook; dir(lens_steer); "
                       "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers',"
                       " 'transformer_lens', 'datasets', 'plotly', 'pandas')))")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", f"`import lens_steer` imported {done.stdout.strip()}"


def test_a_lazy_name_loads_its_module_on_use():
    """The check above can fail: the same probe sees torch once a torch-backed name is used."""
    done = _subprocess("import sys, lens_steer; lens_steer.Steerer; print('torch' in sys.modules)")
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr[-2000:]


def test_every_exported_name_resolves():
    assert len(lens_steer.__all__) == len(set(lens_steer.__all__))
    unresolved = [name for name in lens_steer.__all__ if getattr(lens_steer, name, None) is None]
    assert not unresolved
    namespace: dict = {}
    exec("from lens_steer import *", namespace)
    assert set(lens_steer.__all__) <= set(namespace)


def test_the_required_names_are_exported():
    assert REQUIRED <= set(lens_steer.__all__), sorted(REQUIRED - set(lens_steer.__all__))
    assert set(lens_steer.__all__) <= set(dir(lens_steer))
    from lens_steer.lss import LSSConfig
    from lens_steer.steer import Steerer

    assert lens_steer.LSSConfig is LSSConfig and lens_steer.Steerer is Steerer  # the same objects, not copies


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'steer_everything'"):
        lens_steer.steer_everything  # noqa: B018
    with pytest.raises(ImportError):
        exec("from lens_steer import steer_everything", {})


def test_no_submodule_shadows_an_export():
    """Importing lens_steer.X binds X on the package: an exported name equal to a submodule's would be replaced."""
    submodules = {m.name for m in pkgutil.iter_modules(lens_steer.__path__)}
    assert {"steer", "lss", "plots"} <= submodules
    assert not submodules & set(lens_steer.__all__)
    assert set(lens_steer._SUBMODULES) <= submodules
    assert lens_steer.plots is sys.modules["lens_steer.plots"]


def test_notebooks_use_exported_names_from_lens_steer():
    """What the notebooks import from `lens_steer` (or use as `ls.X`) is exported, and what is exported they import
    from `lens_steer` rather than from the submodule that defines it."""
    assert len(NOTEBOOKS) == 4
    for path in NOTEBOOKS:
        top, sub, attrs = _imports(_code_cells(path))
        assert "setup_notebook" in top, f"{path.name} does not start with setup_notebook()"
        known = set(lens_steer.__all__) | set(lens_steer._SUBMODULES)
        assert top <= known, (path.name, sorted(top - known))
        assert attrs <= known, (path.name, sorted(attrs - known))
        assert not {name for _, name in sub} & set(lens_steer.__all__), (path.name, sorted(sub))


def test_readme_examples_use_exported_names():
    top, sub, attrs = _imports(_readme_python())
    known = set(lens_steer.__all__) | set(lens_steer._SUBMODULES)
    assert top and top <= known, sorted(top - known)
    assert attrs <= known, sorted(attrs - known)
    assert not {name for _, name in sub} & set(lens_steer.__all__), sorted(sub)


def test_setup_notebook_is_the_first_cell(monkeypatch, tmp_path, capsys):
    """The line it prints is the set-up cell's output tests/test_notebooks.py checks; the values are the budget's."""
    from lens_steer import setup_notebook

    monkeypatch.setenv("LENS_STEER_BUDGET", "small")
    monkeypatch.setenv("LENS_STEER_RUN_DIR", str(tmp_path))
    setup = setup_notebook(figures=False)
    assert capsys.readouterr().out == f"budget small: languages en, fr, ja; 500 tokens each; run dir {tmp_path}\n"
    assert (setup.langs, setup.max_tokens, setup.max_facts, setup.run_dir, setup.progress, setup.small) == (
        ["en", "fr", "ja"], 500, 10, tmp_path, False, True)


def test_without_chromium_figures_stay_interactive(monkeypatch, capsys):
    pio = pytest.importorskip("plotly.io")
    from lens_steer.notebook import static_figures

    monkeypatch.setenv("BROWSER_PATH", "/nonexistent/chromium")
    monkeypatch.setattr(pio.renderers, "default", pio.renderers.default)  # restored afterwards
    assert static_figures() == "plotly_mimetype" == pio.renderers.default
    assert "no Chromium" in capsys.readouterr().out
