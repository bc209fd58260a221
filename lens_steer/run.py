"""The run directory: the one owner of every artifact's name, how each is read and written, and the model a run
was made with.

A run directory is made by ``lens-steer identify`` and grown by every later stage::

    stats.safetensors  sent_means.safetensors  manifest.json  partial/   (identify: the statistics)
    neurons.json                                                          (identify: the neuron set)
    lss.csv  lss_summary.json                                             (lss)
    forcing.csv  generations.jsonl                                        (lss --forcing, forcing, steer)
    eval_<task>.csv  eval_<task>_outputs.jsonl                            (eval)
    compare.csv  compare_summary.json                                     (compare)
    report.html                                                           (report)

Every file is written atomically (a temporary name, then a rename), so an interrupted stage never leaves a
half-written artifact; ``generations.jsonl`` is appended in one write.

>>> run = Run("runs/demo")
>>> run.file(LSS_CSV).as_posix(), run.file(eval_csv("udhr-mt")).name
('runs/demo/lss.csv', 'eval_udhr-mt.csv')
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lens_steer.errors import LensSteerError
from lens_steer.paths import atomic_path, write_json

if TYPE_CHECKING:
    from lens_steer.models import LoadConfig, Model
    from lens_steer.neurons import NeuronSet
    from lens_steer.stats import Stats

STATS_FILE = "stats.safetensors"
SENT_MEANS_FILE = "sent_means.safetensors"
MANIFEST_FILE = "manifest.json"
PARTIAL_DIR = "partial"
NEURONS_FILE = "neurons.json"
LSS_CSV = "lss.csv"
LSS_SUMMARY = "lss_summary.json"
FORCING_CSV = "forcing.csv"
GENERATIONS_FILE = "generations.jsonl"
COMPARE_CSV = "compare.csv"
COMPARE_SUMMARY = "compare_summary.json"
REPORT_FILE = "report.html"
EVAL_GLOB = "eval_*.csv"


def eval_csv(task: str) -> str:
    """The long-format table of one evaluation task (``task`` as labelled, e.g. ``xcopa-refjoin``)."""
    return f"eval_{task}.csv"


def eval_outputs(task: str) -> str:
    """The generated outputs of one translation task."""
    return f"eval_{task}_outputs.jsonl"


def format_cell(value: Any, digits: int = 6) -> Any:
    """How every CSV artifact writes a value: floats with ``digits`` significant digits, NaN as an empty cell.

    >>> format_cell(0.123456789), format_cell(float("nan")), format_cell(3), format_cell("p_max")
    ('0.123457', '', 3, 'p_max')
    """
    if isinstance(value, float):
        return "" if value != value else f"{value:.{digits}g}"
    return value


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Path:
    """The one CSV writer of lens_steer: ``columns`` in order (missing values empty), atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: format_cell(row.get(k, "")) for k in columns})
    return path


class Run:
    """A run directory: where its files are, reading them with one-line errors, and the run's model.

    Stages take the loaded pieces (``run.stats()``, ``run.neurons()``, ``run.model()``) and write through
    :func:`write_csv` / :meth:`append_jsonl`; file names are never spelled outside this module.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._cache: dict[str, Any] = {}  # loaded artifacts, read once per Run

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def file(self, name: str) -> Path:
        return self.path / name

    def has(self, name: str) -> bool:
        return self.file(name).exists()

    def require(self, name: str, how: str) -> Path:
        """The path of an artifact that must exist; otherwise one line saying how to make it."""
        if not self.path.is_dir():
            raise LensSteerError(f"{self.path} is not a directory; give a run directory made by `lens-steer identify`")
        if not self.has(name):
            raise LensSteerError(f"{self.path} has no {name}; {how}")
        return self.file(name)

    # ---- the identification artifacts ----
    def stats(self) -> Stats:
        if "stats" not in self._cache:
            from lens_steer.stats import Stats

            self._cache["stats"] = Stats.load(self.path)
        return self._cache["stats"]

    def neurons(self) -> NeuronSet:
        if "neurons" not in self._cache:
            from lens_steer.neurons import NeuronSet

            self.require(NEURONS_FILE, f"run `lens-steer identify --out {self.path}` first")
            self._cache["neurons"] = NeuronSet.load(self.path)
        return self._cache["neurons"]

    def manifest(self) -> dict[str, Any]:
        from lens_steer.stats import read_manifest

        return read_manifest(self.path)

    # ---- the LSS summary ----
    def summary(self) -> dict[str, Any]:
        """``lss_summary.json``, checked to be a JSON object."""
        path = self.require(LSS_SUMMARY, f"run `lens-steer lss {self.path}` first")
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LensSteerError(f"{path} is not valid JSON ({exc}); run `lens-steer lss {self.path}` again") from None
        if not isinstance(summary, dict):
            raise LensSteerError(f"{path} is not an LSS summary; run `lens-steer lss {self.path}` again")
        return summary

    def best_factor(self) -> str:
        """The factor the LSS rule chose (``best_factor`` of ``lss_summary.json``)."""
        if not self.has(LSS_SUMMARY):
            raise LensSteerError(f"no --factor and no {self.file(LSS_SUMMARY)}; run `lens-steer lss {self.path}`"
                                 " first or pass --factor")
        best = self.summary().get("best_factor")
        if not isinstance(best, str):
            raise LensSteerError(f"{self.file(LSS_SUMMARY)} names no best_factor; pass --factor")
        return best

    # ---- the model ----
    def model(self, load: LoadConfig | str | None = None) -> Model:
        """The model the run's statistics were recorded with, placed as ``load`` says (a
        :class:`~lens_steer.models.LoadConfig`, or a device string), in the recorded dtype unless ``load.dtype``
        names another (steering then says so: :func:`lens_steer.steer.check_stats_for_model`)."""
        from lens_steer.models import LoadConfig, load_model

        load = LoadConfig(device=load) if isinstance(load, str) else (load or LoadConfig())
        manifest = self.stats().manifest
        return load_model(manifest["model"]["model"], **{**load.kwargs(), "dtype": load.dtype or manifest.get("dtype")})

    def refuse_other_model(self, identity: dict[str, Any]) -> None:
        """A run directory belongs to one model: never mix another model's statistics into it."""
        if not self.has(MANIFEST_FILE):
            return
        old = self.manifest().get("model", {})
        if any(old.get(k) != identity.get(k) for k in ("model", "n_layers", "d_mlp")):
            raise LensSteerError(f"{self.path} holds a run of {old.get('model')} ({old.get('n_layers')} layers x"
                                 f" {old.get('d_mlp')}), not of {identity.get('model')}; choose another --out or"
                                 " delete it")

    # ---- writing ----
    def write_csv(self, name: str, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Path:
        return write_csv(self.file(name), rows, columns)

    def write_json(self, name: str, obj: Any) -> Path:
        write_json(self.file(name), obj)
        return self.file(name)

    def write_jsonl(self, name: str, records: Sequence[dict[str, Any]]) -> Path:
        """Replace ``name`` with one JSON object per line, atomically."""
        with atomic_path(self.file(name)) as tmp:
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        return self.file(name)

    def append_jsonl(self, name: str, records: Sequence[dict[str, Any]]) -> Path:
        """Append records to ``name`` in one write (a torn last line of an interrupted append is skipped on read)."""
        path = self.file(name)
        torn = False
        if path.exists() and path.stat().st_size > 0:
            with path.open("rb") as fh:  # the last byte only: the file grows with every steer and forcing run
                fh.seek(-1, 2)
                torn = fh.read(1) != b"\n"
        with path.open("a", encoding="utf-8") as fh:  # after a torn line, start a new one: never glue onto it
            fh.write(("\n" if torn else "") + "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        return path

    def read_jsonl(self, name: str) -> list[dict[str, Any]]:
        """The records of a JSON-lines artifact; a torn line (an interrupted append) is skipped, not fatal."""
        if not self.has(name):
            return []
        out = []
        for line in self.file(name).read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line) if line.strip() else None
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                out.append(record)
        return out
