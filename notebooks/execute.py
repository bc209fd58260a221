"""Execute notebooks in a fresh kernel and write them back with their outputs: the form they are committed in.

    .venv/bin/python notebooks/execute.py                    # every notebooks/*.ipynb, full budget (`make notebooks`)
    .venv/bin/python notebooks/execute.py --budget small notebooks/02_steering_and_lss.ipynb

The budget is the notebooks' own: ``full`` removes LENS_STEER_BUDGET from the kernel's environment, ``small`` sets
it. The notebooks run in the order given (by name by default) and share one run directory, runs/notebooks or
runs/notebooks-small at the repository root (git-ignored), which is emptied first so that 01 records from scratch
(``--keep-run`` resumes it instead). Progress bars are off (LENS_STEER_PROGRESS=0).

What is written is kept small and stable: no execution timing metadata, no widget state (the ipywidgets of 03 need a
live kernel anyway; their outputs become one line saying so), the notebook metadata as it was before the run (no
kernel version). Nothing is written for a notebook that fails: an error output, a dead kernel or a cell timeout ends
the script with one line on stderr and exit status 2. Needs nbformat, nbclient and ipykernel
(``pip install -e '.[notebooks]'``).
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


class Failed(Exception):
    """A notebook did not run cleanly; the message is the one line to print."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Execute notebooks in a fresh kernel and write them back with outputs.")
    p.add_argument("notebooks", nargs="*", type=Path, help="notebook files (default: notebooks/*.ipynb, by name)")
    p.add_argument("--budget", choices=("full", "small"), default="full",
                   help="full: LENS_STEER_BUDGET unset (default); small: LENS_STEER_BUDGET=small")
    p.add_argument("--run-dir", type=Path, default=None,
                   help="run directory shared by the notebooks (default: runs/notebooks[-small] at the repository"
                        " root)")
    p.add_argument("--keep-run", action="store_true",
                   help="resume the run directory instead of emptying it first")
    p.add_argument("--out", type=Path, default=None,
                   help="write the executed notebooks into this folder instead of in place")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per cell (default 1800)")
    return p.parse_args(argv)


def prepare_run_dir(run_dir: Path, keep: bool) -> None:
    if run_dir.exists() and not keep:
        runs = (ROOT / "runs").resolve()
        if not run_dir.resolve().is_relative_to(runs):
            raise Failed(f"{run_dir} is outside {runs}: empty it yourself or pass --keep-run")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def first_error(nb) -> str | None:
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.get("output_type") == "error":
                value = " ".join(str(out.get("evalue", "")).split())[:200]
                return f"cell {index} raised {out.get('ename', 'an error')}: {value}"
    return None


def execute(path: Path, timeout: int):
    """The executed notebook; :class:`Failed` on an error output, a dead kernel or a timeout."""
    import nbclient
    import nbformat
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    for attempt in (1, 2):
        nb = nbformat.read(path, as_version=4)
        client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=False,
                                         record_timing=False, resources={"metadata": {"path": str(path.parent)}})
        try:
            client.execute()
        except DeadKernelError as exc:
            if attempt == 1:  # a kernel killed by memory pressure on a busy machine: try once more
                time.sleep(1)
                continue
            raise Failed(f"the kernel died ({' '.join(str(exc).split())[:200]})") from exc
        except CellTimeoutError as exc:
            raise Failed(f"a cell ran past --timeout {timeout} s") from exc
        except CellExecutionError as exc:
            raise Failed(first_error(nb) or f"{exc.ename}: {' '.join(str(exc.evalue).split())[:200]}") from exc
        error = first_error(nb)
        if error:
            raise Failed(error)
        return nb
    raise AssertionError("unreachable")


WIDGET_NOTE = "(an interactive ipywidgets view: run the notebook to use it)"


def strip(nb, metadata: dict) -> None:
    """Drop what changes from run to run without being a result: timing metadata, widget state, kernel version.

    A widget view cannot be shown without its kernel (its state is not saved), so its output keeps one line of
    plain text saying so instead of the widget's repr."""
    nb.metadata = metadata
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            out.get("metadata", {}).pop("execution", None)
            data = out.get("data", {})
            if WIDGET_MIME in data:
                out["data"] = {"text/plain": WIDGET_NOTE}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import nbformat
    except ImportError:
        print("execute.py: needs nbformat, nbclient and ipykernel: pip install -e '.[notebooks]'", file=sys.stderr)
        return 2
    paths = [p.resolve() for p in args.notebooks] or sorted(HERE.glob("*.ipynb"))
    missing = [p for p in paths if not p.is_file()]
    if not paths or missing:
        print(f"execute.py: no notebook {missing[0] if missing else HERE / '*.ipynb'}", file=sys.stderr)
        return 2
    run_dir = (args.run_dir or ROOT / "runs" / ("notebooks-small" if args.budget == "small" else "notebooks")).resolve()

    env = {"LENS_STEER_RUN_DIR": str(run_dir), "LENS_STEER_PROGRESS": "0"}
    if args.budget == "small":
        env["LENS_STEER_BUDGET"] = "small"
    else:
        os.environ.pop("LENS_STEER_BUDGET", None)
    os.environ.update(env)  # the kernel inherits this process's environment
    for key, value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(key, value)

    total = time.perf_counter()
    try:
        prepare_run_dir(run_dir, args.keep_run)
        for path in paths:
            start = time.perf_counter()
            metadata = copy.deepcopy(nbformat.read(path, as_version=4).metadata)
            try:
                nb = execute(path, args.timeout)
            except Failed as exc:
                raise Failed(f"{path.name}: {exc}") from exc
            strip(nb, metadata)
            target = (args.out / path.name) if args.out else path
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=target.parent, suffix=".tmp",
                                             delete=False) as tmp:
                nbformat.write(nb, tmp)
            os.replace(tmp.name, target)
            print(f"{path.name}: {time.perf_counter() - start:.0f} s, {target.stat().st_size / 1024:.0f} KB"
                  f" -> {target}", flush=True)
    except Failed as exc:
        print(f"execute.py: {exc}", file=sys.stderr)
        return 2
    print(f"{len(paths)} notebook(s), budget {args.budget}, run dir {run_dir}: {time.perf_counter() - total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
