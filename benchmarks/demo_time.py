"""P5: the wall time of ``make demo`` into a fresh run directory (nothing resumes), after ``make setup``, which
is not timed.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.timing import log, summary
from benchmarks.workload import ROOT


def bench_demo(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="lens-steer-bench-demo-"))
    logfile = workdir / "demo.log"
    with logfile.open("w") as fh:
        if args.demo_cmd:
            cmd = args.demo_cmd
        else:
            log("P5: make setup (not timed)")
            setup = subprocess.run(["make", "setup"], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
            if setup.returncode != 0:
                raise RuntimeError(f"make setup failed; see {logfile}")
            cmd = f"make demo RUN={shlex.quote(str(workdir / 'demo'))}"  # a fresh run directory: nothing resumes
        log(f"P5: {cmd} (log: {logfile})")
        start = time.perf_counter()
        proc = subprocess.run(cmd, shell=True, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = logfile.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"`{cmd}` failed (exit {proc.returncode}) after {seconds:.0f} s:\n{tail}")
    shutil.rmtree(workdir / "demo", ignore_errors=True)
    log(f"P5: {seconds:.0f} s")
    return {"P5_demo_seconds": summary([seconds]), "details": {"P5_command": cmd, "P5_log": str(logfile)}}
