"""What machine a run was measured on: CPU, cores, RAM, package versions and the load average, so that a figure
can be judged (a busy machine stalls torch's threads) and reproduced.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
from pathlib import Path
from typing import Any

import torch


def machine_info(args: argparse.Namespace) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        ram = round(int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0]) / 2**20, 1)
    versions = {}
    for pkg in ("torch", "transformers", "transformer-lens", "lens-steer"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    info: dict[str, Any] = {
        "hostname": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
        "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "ram_gib": ram,
        "device": args.device, "versions": versions,
    }
    if str(args.device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    with contextlib.suppress(OSError):
        info["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    return info
