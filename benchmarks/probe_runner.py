"""Running a probe against one checkout: inputs built once by that checkout's own code, a fresh scratch folder per
probe, read-only places that really refuse writes, and the answer measured in a subprocess through the shim.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks.probe_answers import classify_stderr, meets, read_marker
from benchmarks.probe_shim import MARKER_ENV
from benchmarks.probe_table import INPUTS, Probe

PROBES_PY = Path(__file__).resolve().with_name("probes.py")  # the entry point: `probes.py --shim ARGS` runs the CLI
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
DEFAULT_TIMEOUT = 150.0


def source_hash(root: Path) -> str:
    """A hash of ``root/lens_steer``'s Python sources: built inputs are reused only by the same code."""
    digest = hashlib.sha256()
    for path in sorted((root / "lens_steer").rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def readonly_method(scratch: Path) -> str | None:
    """How this machine makes a folder read-only for a probe, checked by a write that must fail: a read-only bind
    mount in a private mount namespace (``unshare -m``; root bypasses file modes), else ``chattr +i``."""
    test = scratch / "_rotest"
    shutil.rmtree(test, ignore_errors=True)
    test.mkdir(parents=True)
    try:
        if shutil.which("unshare"):
            script = _ro_script([test]) + ' touch "$1/probe" 2>/dev/null && exit 1; exit 0'
            done = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(test)], capture_output=True)
            if done.returncode == 0 and not (test / "probe").exists():
                return "unshare"
        if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(test)], capture_output=True).returncode == 0:
            try:
                (test / "probe").touch()
            except OSError:
                return "chattr"
            finally:
                subprocess.run(["chattr", "-i", str(test)], capture_output=True)
        return None
    finally:
        shutil.rmtree(test, ignore_errors=True)


def _ro_script(dirs: list[Path]) -> str:
    binds = "; ".join(f"mount --bind {shlex.quote(str(d))} {shlex.quote(str(d))} && mount -o remount,bind,ro"
                      f" {shlex.quote(str(d))} {shlex.quote(str(d))}" for d in dirs)
    return f"set -e; {binds}; set +e;"


class Runner:
    """Runs probes against one checkout (``root``) with one Python, inputs under ``workdir``."""

    def __init__(self, root: Path, python: str, workdir: Path, timeout: float = DEFAULT_TIMEOUT,
                 rebuild: bool = False, keep: bool = False, log=print):  # noqa: ANN001 - a print-like callable
        self.root, self.python, self.timeout, self.keep, self.log = root.resolve(), python, timeout, keep, log
        tag = re.sub(r"[^\w.-]+", "_", str(self.root).strip("/")) or "root"
        self.base = workdir.resolve() / tag
        self.inputs_dir, self.scratch = self.base / "inputs", self.base / "scratch"
        self.rebuild = rebuild
        self.ro: str | None = None
        self.inputs: dict[str, Path] = {}

    def env(self, marker: Path | None, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", MARKER_ENV)}
        env.update(OFFLINE, PYTHONPATH=str(self.root), PYTHONDONTWRITEBYTECODE="1")
        if marker is not None:
            env[MARKER_ENV] = str(marker)
        env.update(extra or {})
        return env

    def command(self, argv: list[str]) -> list[str]:
        return [self.python, str(PROBES_PY), "--shim", *argv]

    def prepare(self) -> None:
        """Build (or reuse) the inputs with this root's code, and find how to make a folder read-only."""
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.ro = readonly_method(self.scratch)
        if self.ro is None:
            self.log("probes: cannot make a folder read-only here (no unshare -m, no chattr): those probes are skipped")
        stamp_file, stamp = self.inputs_dir / "stamp.json", {"source": source_hash(self.root), "inputs": INPUTS}
        if not self.rebuild and stamp_file.exists() and json.loads(stamp_file.read_text()) == stamp:
            self.inputs = {name: self.inputs_dir / name for name in INPUTS}
            return
        shutil.rmtree(self.inputs_dir, ignore_errors=True)
        self.inputs_dir.mkdir(parents=True)
        for name, spec in INPUTS.items():
            target = self.inputs_dir / name
            if "copy" in spec:
                shutil.copytree(self.inputs_dir / spec["copy"], target)
            argv = [a.replace("{self}", str(target)) for a in spec["argv"]]
            self.log(f"probes: building input {name}: lens-steer {shlex.join(argv)}")
            start = time.perf_counter()
            done = subprocess.run(self.command(argv), env=self.env(None), capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"probes: building input {name} failed (exit {done.returncode}):\n"
                                 f"{done.stderr[-3000:]}")
            self.log(f"probes:   {time.perf_counter() - start:.0f} s")
        stamp_file.write_text(json.dumps(stamp, indent=1))
        self.inputs = {name: self.inputs_dir / name for name in INPUTS}

    def fill(self, text: str, tmp: Path) -> str:
        """``text`` with its placeholders filled; an input it names is copied into ``tmp/_inputs`` first."""
        for name, path in self.inputs.items():
            if "{" + name + "}" in text:
                copy = tmp / "_inputs" / name
                if not copy.exists():
                    shutil.copytree(path, copy)
                text = text.replace("{" + name + "}", str(copy))
        return text.replace("{tmp}", str(tmp))

    def _setup(self, probe: Probe, tmp: Path) -> None:
        for step in probe.setup:
            op, dest = step[0], tmp / step[1]
            if op == "copy":
                shutil.copytree(self.inputs[step[1]], tmp / step[2])
            elif op == "put":
                src_input, _, rel = step[2].partition("/")
                shutil.copyfile(self.inputs[src_input] / rel, dest)
            elif op == "write":
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(step[2], encoding="utf-8")
            elif op == "rm":
                dest.unlink()
            elif op == "mkdir":
                dest.mkdir(parents=True, exist_ok=True)
            else:
                raise ValueError(f"unknown setup step {step!r}")

    def _clear(self, tmp: Path) -> None:
        if tmp.exists():
            if shutil.which("chattr"):
                subprocess.run(["chattr", "-R", "-i", str(tmp)], capture_output=True)
            shutil.rmtree(tmp)

    def run(self, probe: Probe) -> dict[str, Any]:
        tmp = self.scratch / probe.id
        self._clear(tmp)
        tmp.mkdir(parents=True)
        result: dict[str, Any] = {"id": probe.id, "probe": probe.what, "expect": probe.expect,
                                  "before_load_expected": probe.before_load}
        try:
            self._setup(probe, tmp)
            argv = [self.fill(a, tmp) for a in probe.argv]
            result["argv"] = [a if len(a) < 200 else f"<{len(a)} characters>" for a in argv]
            if probe.readonly and self.ro is None:
                return {**result, "exit": None, "kind": "skipped", "model": "no", "seconds": 0.0, "warnings": [],
                        "error": "no way to make a folder read-only here", "meets": None}
            ro_dirs = [tmp / d for d in probe.readonly]
            if self.ro == "chattr":
                for d in ro_dirs:
                    subprocess.run(["chattr", "-R", "+i", str(d)], check=True)
            env_extra = {k: self.fill(v, tmp) for k, v in probe.env.items()}
            first = None
            if probe.concurrent:
                first = self._popen(argv, tmp / "first.marker", env_extra, ro_dirs)
                self._wait_for_load(tmp / "first.marker", first)
            result.update(self._measure(argv, tmp / "marker", env_extra, ro_dirs, probe.timeout or self.timeout))
            if first is not None:
                try:
                    out, err = first.communicate(timeout=probe.timeout or self.timeout)
                except subprocess.TimeoutExpired:
                    self._kill(first)
                    out, err = first.communicate()
                result["first"] = {"exit": first.returncode, **classify_stderr(err, first.returncode),
                                   **read_marker(tmp / "first.marker")}
            result["meets"] = meets(probe, result)
            return result
        finally:
            if not self.keep:
                self._clear(tmp)

    def _popen(self, argv: list[str], marker: Path, env_extra: dict[str, str], ro_dirs: list[Path]):  # noqa: ANN202
        cmd = self.command(argv)
        if ro_dirs and self.ro == "unshare":
            cmd = ["unshare", "-m", "sh", "-c", _ro_script(ro_dirs) + ' exec "$@"', "sh", *cmd]
        # A session of its own: a timeout kills the whole group (unshare, sh, python and its workers).
        return subprocess.Popen(cmd, env=self.env(marker, env_extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True, start_new_session=True, cwd=str(marker.parent))

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    @staticmethod
    def _wait_for_load(marker: Path, proc: subprocess.Popen, limit: float = 60.0) -> None:
        """Let the first writer get going (its model load begun, or it has ended) before the second starts."""
        end = time.monotonic() + limit
        while time.monotonic() < end and proc.poll() is None:
            if marker.exists() and read_marker(marker)["model"] != "no":
                return
            time.sleep(0.2)

    def _measure(self, argv: list[str], marker: Path, env_extra: dict[str, str], ro_dirs: list[Path],
                 timeout: float) -> dict[str, Any]:
        start = time.perf_counter()
        proc = self._popen(argv, marker, env_extra, ro_dirs)
        try:
            out, err = proc.communicate(timeout=timeout)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            self._kill(proc)
            out, err = proc.communicate()
            code = None
        seconds = time.perf_counter() - start
        loaded = read_marker(marker)
        if loaded["lens_steer"] is not None and not Path(loaded["lens_steer"]).is_relative_to(self.root):
            raise SystemExit(f"probes: imported lens_steer from {loaded['lens_steer']}, not from {self.root}:"
                             " PYTHONPATH was not honoured")
        return {"exit": code, **classify_stderr(err, code), **loaded, "seconds": round(seconds, 2),
                "stdout_tail": out[-600:], "stderr_tail": err[-1500:]}
