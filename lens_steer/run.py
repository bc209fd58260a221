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
    explore_cache.json                                                    (explore: neuron pages)
    .lens_steer.lock                                                      (while a command writes)
    stale/<run_fingerprint>/                                              (results of an earlier neuron set)

Every file is written atomically (a temporary name, then a rename), so an interrupted stage never leaves a
half-written artifact; ``generations.jsonl`` is appended in one write.

Nothing in a run directory can silently belong to another run:

* the statistics files carry the statistics' fingerprint, checked against ``manifest.json`` on every read, and
  ``neurons.json`` names the statistics it was identified from, checked likewise (:meth:`Run.neurons`);
* every derived artifact (the rest) records ``run_fingerprint``, the neuron set's fingerprint (a CSV column, a JSON
  key, a key of every JSON line), written by :class:`Run`'s writers; its readers leave out or refuse one whose
  fingerprint is not the run's;
* ``identify`` (or ``merge``) into a used directory moves the derived files of the previous neuron set to
  ``stale/<its fingerprint>/`` and says so in one line;
* every writing command holds ``.lens_steer.lock`` (pid, host, command) while it runs (:meth:`Run.writing`): a
  second writer fails at once with one line; a lock left by a dead process is taken over with a warning.

>>> run = Run("runs/demo")
>>> run.file(LSS_CSV).as_posix(), run.file(eval_csv("udhr-mt")).name
('runs/demo/lss.csv', 'eval_udhr-mt.csv')
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import os
import shutil
import socket
import warnings
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

# Artifact names live in the leaf module lens_steer.artifacts; re-exported here, where they are read and written.
from lens_steer.artifacts import (COMPARE_CSV, COMPARE_SUMMARY, DERIVED_FILES, DERIVED_GLOBS,  # noqa: F401
                                  EVAL_GLOB, EXPLORE_CACHE, FINGERPRINT, FORCING_CSV, GENERATIONS_FILE, HARNESS_CSV,
                                  HARNESS_DIR, LOCK_FILE, LSS_CSV, LSS_SUMMARY, MANIFEST_FILE, NEURONS_FILE,
                                  PARTIAL_DIR, REPORT_FILE, SENT_MEANS_FILE, STABILITY_CSV, STABILITY_FILE, STALE_DIR,
                                  STATS_FILE, FOLDS_FILE, eval_csv, eval_outputs, harness_cell)
from lens_steer.errors import LensSteerError
from lens_steer.paths import atomic_path, write_json

if TYPE_CHECKING:
    from lens_steer.models import LoadConfig, Model
    from lens_steer.neurons import NeuronSet
    import pandas as pd

    from lens_steer.stats import Stats

_HELD: dict[str, int] = {}  # run directories this process holds the lock of (re-entrant: stages call stages)
F = TypeVar("F", bound=Callable[..., Any])


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


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV artifact (``lss.csv``, ``forcing.csv``, ``eval_*.csv``...) as a DataFrame, ``layers`` and ``factor``
    kept as text and empty cells as NaN (how :func:`write_csv` writes them). No fingerprint check: see
    :meth:`Run.table`."""
    import pandas as pd  # deferred: pandas is only needed where tables are read

    path = Path(path)
    if not path.exists():
        raise LensSteerError(f"{path} not found; run the command that writes it first")
    # A fingerprint is hex text: "0123..." or "12e4..." must not turn into numbers.
    return pd.read_csv(path, dtype={"layers": str, "factor": str, FINGERPRINT: str}, keep_default_na=False,
                       na_values=[""])


def writes(command: str) -> Callable[[F], F]:
    """Decorate a stage ``fn(run, ...)`` that writes into ``run``: it runs holding the run's lock
    (:meth:`Run.writing`), taken before any other work, so a second writer or a read-only directory fails at once."""
    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(run: Run | str | Path, *args: Any, **kwargs: Any) -> Any:
            run = run if isinstance(run, Run) else Run(run)
            with run.writing(command):
                return fn(run, *args, **kwargs)
        return wrapper  # type: ignore[return-value]
    return decorate


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
            from lens_steer.stats import Stats  # deferred: torch; the CLI imports run.py

            self._cache["stats"] = Stats.load(self.path)
        return self._cache["stats"]

    def neurons(self) -> NeuronSet:
        """``neurons.json``, checked against ``manifest.json`` (languages, model, the statistics it came from)."""
        if "neurons" not in self._cache:
            from lens_steer.neurons import NeuronSet  # deferred: torch; the CLI imports run.py

            self.require(NEURONS_FILE, f"run `lens-steer identify --out {self.path}` first")
            neurons = NeuronSet.load(self.path)
            self._check_neurons(neurons)
            self._cache["neurons"] = neurons
        return self._cache["neurons"]

    def _check_neurons(self, neurons: NeuronSet) -> None:
        """Refuse a ``neurons.json`` that does not belong to this run's statistics (copied from another run, or left
        by an interrupted ``identify``), naming both files."""
        if not self.has(MANIFEST_FILE):
            return  # a bare neuron set (an export, an import): nothing to check it against
        manifest = self.manifest()
        here, there = self.file(NEURONS_FILE), self.file(MANIFEST_FILE)
        redo = f"run `lens-steer identify --out {self.path}` again (it resumes), or copy the whole run directory"
        if set(neurons.languages) != set(manifest["languages"]):
            raise LensSteerError(f"{here} lists languages {','.join(neurons.languages)} but {there} has"
                                 f" {','.join(manifest['languages'])}: the two files come from different runs; {redo}")
        model = manifest.get("model") or {}
        theirs = ((neurons.provenance.get("stats") or {}).get("model") or {}).get("model")
        shape = (model.get("n_layers"), model.get("d_mlp"))
        if (theirs and model.get("model") and theirs != model.get("model")) or (
                shape[0] is not None and shape != (neurons.n_layers, neurons.d_mlp)):
            raise LensSteerError(f"{here} was identified on {theirs or '?'} ({neurons.n_layers} layers x"
                                 f" {neurons.d_mlp}) but {there} records {model.get('model')} ({shape[0]} x {shape[1]}):"
                                 f" the two files come from different runs; {redo}")
        made_from, recorded = neurons.provenance.get("stats_fingerprint"), manifest.get("stats_fingerprint")
        if made_from and recorded and made_from != recorded:
            raise LensSteerError(f"{here} was identified from other statistics (fingerprint {made_from}) than the"
                                 f" ones {there} records ({recorded}); {redo}")

    def fingerprint(self) -> str:
        """The run's fingerprint: the neuron set's (:meth:`NeuronSet.fingerprint`, which names the statistics'),
        recorded by every derived artifact as ``run_fingerprint``."""
        return self.neurons().fingerprint()

    def manifest(self) -> dict[str, Any]:
        from lens_steer.stats import read_manifest  # deferred: torch; the CLI imports run.py

        return read_manifest(self.path)

    # ---- derived artifacts: stamped on writing, checked on reading ----
    def stale(self, name: str, stamp: object) -> str | None:
        """None when an artifact stamped ``stamp`` belongs to the current neuron set (or carries no stamp: written
        before lens_steer kept one, which a warning says once); else the one line saying why it was left out."""
        if stamp is None or stamp == "" or stamp != stamp:  # no stamp (NaN: an empty CSV cell)
            if name not in self._cache.setdefault("unstamped", set()):
                self._cache["unstamped"].add(name)
                warnings.warn(f"{self.file(name)} has no {FINGERPRINT} (written before lens_steer kept one), so it"
                              " cannot be checked against this run's neuron set", stacklevel=3)
            return None
        current = self.fingerprint()
        if str(stamp) == current:
            return None
        command = _MAKER.get(name, "`lens-steer eval`" if name.startswith("eval_") else "the command that wrote it")
        return (f"{self.file(name)} was made from another neuron set ({FINGERPRINT} {stamp}; the run's is {current}),"
                f" e.g. before `identify` ran again; run {command} again")

    def summary(self, name: str = LSS_SUMMARY) -> dict[str, Any]:
        """A JSON summary (``lss_summary.json`` by default), checked to be a JSON object of this neuron set: one
        made from another neuron set is refused with one line."""
        path = self.require(name, f"run {_MAKER.get(name, 'the command that writes it')} first")
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LensSteerError(f"{path} is not valid JSON ({exc}); run {_MAKER.get(name, 'its command')} again"
                                 ) from None
        if not isinstance(summary, dict):
            what = {LSS_SUMMARY: "an LSS summary", COMPARE_SUMMARY: "a compare summary"}.get(name, "a summary")
            raise LensSteerError(f"{path} is not {what}; run {_MAKER.get(name, 'its command')} again")
        problem = self.stale(name, summary.get(FINGERPRINT))
        if problem:
            raise LensSteerError(problem)
        return summary

    def table(self, name: str) -> pd.DataFrame | None:
        """A derived CSV of this neuron set as a DataFrame; None (with a one-line warning) when it is missing, or
        was made from another neuron set: readers such as the report and the figures then leave it out."""
        if not self.has(name) or name in self.left_out():
            return None
        frame = read_table(self.file(name))
        stamps = frame[FINGERPRINT].unique().tolist() if FINGERPRINT in frame else [None]
        problems = [p for p in (self.stale(name, s) for s in stamps) if p]
        if problems:
            warnings.warn(f"left out: {problems[0]}", stacklevel=2)
            self.left_out(name)
            return None
        return frame

    def left_out(self, name: str | None = None) -> list[str]:
        """The derived artifacts readers of this :class:`Run` left out as made from another neuron set (``name``:
        add one)."""
        names = self._cache.setdefault("left_out", [])
        if name is not None and name not in names:
            names.append(name)
        return names

    def best_factor(self) -> str:
        """The factor the LSS rule chose (``best_factor`` of ``lss_summary.json``)."""
        if not self.has(LSS_SUMMARY):
            raise LensSteerError(f"no --factor and no {self.file(LSS_SUMMARY)}; run `lens-steer lss {self.path}`"
                                 " first or pass --factor")
        try:
            best = self.summary().get("best_factor")
        except LensSteerError as exc:
            raise LensSteerError(f"{exc}, or pass --factor") from None
        if not isinstance(best, str):
            raise LensSteerError(f"{self.file(LSS_SUMMARY)} names no best_factor; pass --factor")
        return best

    # ---- the model ----
    def model(self, load: LoadConfig | str | None = None) -> Model:
        """The model the run's statistics were recorded with, placed as ``load`` says (a
        :class:`~lens_steer.models.LoadConfig`, or a device string), in the recorded dtype unless ``load.dtype``
        names another (steering then says so: :func:`lens_steer.steer.check_stats_for_model`)."""
        from lens_steer.models import LoadConfig, load_model  # deferred: torch; the CLI imports run.py

        load = LoadConfig.of(load)
        manifest = self.stats().manifest
        if load.dtype is None:  # the recorded dtype
            load = LoadConfig.of(load, dtype=manifest.get("dtype"))
        return load_model(manifest["model"]["model"], load)

    def refuse_other_model(self, identity: dict[str, Any]) -> None:
        """A run directory belongs to one model: never mix another model's statistics into it."""
        if not self.has(MANIFEST_FILE):
            return
        old = self.manifest().get("model", {})
        if any(old.get(k) != identity.get(k) for k in ("model", "n_layers", "d_mlp")):
            raise LensSteerError(f"{self.path} holds a run of {old.get('model')} ({old.get('n_layers')} layers x"
                                 f" {old.get('d_mlp')}), not of {identity.get('model')}; choose another --out or"
                                 " delete it")

    # ---- writing derived artifacts: every one stamped with the run's fingerprint ----
    def write_csv(self, name: str, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Path:
        """A derived CSV, atomically, with the ``run_fingerprint`` column last. Like every writer of :class:`Run`,
        it writes on the process that writes the run only (rank 0 under torchrun; the others return the path)."""
        if not _writes():
            return self.file(name)
        stamp = {FINGERPRINT: self.fingerprint()}
        return write_csv(self.file(name), [{**r, **stamp} for r in rows], [*columns, FINGERPRINT])

    def write_json(self, name: str, obj: dict[str, Any]) -> Path:
        """A derived JSON object, atomically, with its ``run_fingerprint``."""
        if not _writes():
            return self.file(name)
        write_json(self.file(name), {**obj, FINGERPRINT: self.fingerprint()})
        return self.file(name)

    def write_jsonl(self, name: str, records: Sequence[dict[str, Any]]) -> Path:
        """Replace ``name`` with one JSON object per line (each with its ``run_fingerprint``), atomically."""
        if not _writes():
            return self.file(name)
        stamp = {FINGERPRINT: self.fingerprint()}
        with atomic_path(self.file(name)) as tmp:
            tmp.write_text("".join(json.dumps({**r, **stamp}, ensure_ascii=False) + "\n" for r in records),
                           encoding="utf-8")
        return self.file(name)

    def append_jsonl(self, name: str, records: Sequence[dict[str, Any]]) -> Path:
        """Append records (each with its ``run_fingerprint``) to ``name`` in one write (a torn last line of an
        interrupted append is skipped on read)."""
        if not _writes():
            return self.file(name)
        stamp = {FINGERPRINT: self.fingerprint()}
        records = [{**r, **stamp} for r in records]
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
        """The records of a JSON-lines artifact that belong to this neuron set; a torn line (an interrupted append)
        is skipped, not fatal, and records of another neuron set are left out with a one-line warning."""
        if not self.has(name):
            return []
        out, stale = [], []
        for line in self.file(name).read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line) if line.strip() else None
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                problem = self.stale(name, record.get(FINGERPRINT))
                (stale if problem else out).append(problem or record)
        if stale:
            warnings.warn(f"left out {len(stale)} record(s): {stale[0]}", stacklevel=2)
        return out

    # ---- one writer at a time ----
    @contextlib.contextmanager
    def writing(self, command: str) -> Iterator[Run]:
        """Hold the run directory's lock while ``command`` writes into it (re-entrant within a process).

        Taken first, before any model work: a directory that cannot be written, a file in its place, or a second
        writer is one line at once. Under torchrun rank 0 takes it and every rank stops if it could not. A directory
        this call created is removed again if the command leaves it empty (nothing half-written)."""
        from lens_steer.distributed import barrier, check_all, current  # deferred: torch; the CLI imports run.py

        key = os.path.abspath(self.path)
        if key in _HELD:
            _HELD[key] += 1
            try:
                yield self
            finally:
                _HELD[key] -= 1
            return
        world = current()
        error, created = None, False
        if world.writes:
            try:
                created = self._lock(command)
            except LensSteerError as exc:
                error = exc
        check_all(error)  # a world of one raises it here; under torchrun every rank stops with it
        _HELD[key] = 1
        try:
            yield self
            barrier()  # no rank leaves before rank 0 has written (its writers skip on the other ranks)
        finally:
            del _HELD[key]
            if world.writes:
                self.file(LOCK_FILE).unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    if created and not any(self.path.iterdir()):
                        self.path.rmdir()

    def _lock(self, command: str) -> bool:
        """Create the lock file (and the directory); True when the directory was created here."""
        if self.path.exists() and not self.path.is_dir():
            raise LensSteerError(f"{self.path} is a file, not a run directory; choose another directory")
        created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LensSteerError(f"cannot create the run directory {self.path} ({exc.strerror or exc}); choose a"
                                 " writable place") from None
        try:
            self._create_lock(command)
        except LensSteerError:
            if created:  # leave no empty directory behind
                with contextlib.suppress(OSError):
                    self.path.rmdir()
            raise
        return created

    def _create_lock(self, command: str) -> None:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
              "since": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}
        lock = self.file(LOCK_FILE)
        for _ in range(3):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over(lock, command)
                continue
            except OSError as exc:
                raise LensSteerError(f"cannot write to {self.path} ({exc.strerror or exc}); `lens-steer {command}`"
                                     " writes its results there: make it writable or copy the run to a writable"
                                     " place") from None
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(me, fh)
            return
        raise LensSteerError(f"could not take the lock {lock}; another lens-steer command keeps taking it: retry")

    def _take_over(self, lock: Path, command: str) -> None:
        """Refuse if the lock's holder still runs; remove a lock whose process is gone, saying so."""
        try:
            holder = json.loads(lock.read_text(encoding="utf-8"))
            pid, host = int(holder["pid"]), str(holder["host"])
        except FileNotFoundError:
            return  # released meanwhile: try again
        except (OSError, ValueError, KeyError, TypeError):
            holder, pid, host = {}, -1, socket.gethostname()  # unreadable: a torn lock of a killed process
        who = f"`lens-steer {holder.get('command', '?')}` (pid {pid} on {host}, since {holder.get('since', '?')})"
        if host != socket.gethostname():
            raise LensSteerError(f"{self.path} is being written by {who}; wait for it, or delete {lock} if nothing"
                                 f" runs there any more")
        if _alive(pid):
            raise LensSteerError(f"{self.path} is being written by {who}; wait for it to finish or choose another"
                                 " directory")
        warnings.warn(f"took over the lock of {self.path} left by {who}, which is no longer running", stacklevel=4)
        lock.unlink(missing_ok=True)

    # ---- a new neuron set retires the old results ----
    def derived_files(self) -> list[Path]:
        """The derived artifacts present (everything a later stage made from the neuron set)."""
        found = [self.file(n) for n in DERIVED_FILES if self.has(n)]
        for pattern in DERIVED_GLOBS:
            found += [p for p in sorted(self.path.glob(pattern)) if p not in found]
        return found

    def retire_derived(self, new_fingerprint: str) -> tuple[list[Path], Path] | None:
        """Before a new neuron set is written: move the derived artifacts of the previous one (if it differs) to
        ``stale/<previous fingerprint>/`` and say so in one line. Returns what moved where, or None."""
        files = self.derived_files()
        try:
            old = self.fingerprint() if self.has(NEURONS_FILE) else "unknown"
        except LensSteerError:
            old = "unknown"  # a neuron set that no longer matches its statistics: its results are stale too
        self._cache.pop("neurons", None)
        if not files or old == new_fingerprint:
            return None
        dest = self.path / STALE_DIR / old
        n = 1
        while dest.exists():  # the same old set retired twice: keep both
            n += 1
            dest = self.path / STALE_DIR / f"{old}-{n}"
        dest.mkdir(parents=True)
        for path in files:
            shutil.move(str(path), dest / path.name)
        warnings.warn(f"moved {len(files)} result(s) of the previous neuron set ({', '.join(p.name for p in files)})"
                      f" to {dest}: they do not describe the new one", stacklevel=2)
        return files, dest


def _writes() -> bool:
    """Whether this process writes run files: rank 0 under torchrun, every shard, a single process."""
    from lens_steer.distributed import current  # deferred: torch; the CLI imports run.py

    return current().writes


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


# Which command makes each derived artifact (for "run ... again" messages).
_MAKER = {LSS_CSV: "`lens-steer lss`", LSS_SUMMARY: "`lens-steer lss`",
          FORCING_CSV: "`lens-steer forcing` (or `lss --forcing`)",
          GENERATIONS_FILE: "`lens-steer steer` / `forcing`", COMPARE_CSV: "`lens-steer compare`",
          COMPARE_SUMMARY: "`lens-steer compare`", REPORT_FILE: "`lens-steer report`",
          STABILITY_CSV: "`lens-steer stability`", STABILITY_FILE: "`lens-steer stability`",
          EXPLORE_CACHE: "`lens-steer explore`"}
