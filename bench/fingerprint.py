"""The machine fingerprint recorded with every row, and a short device label."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

PACKAGES = (
    "llm-blocks-bench",
    "torch",
    "numpy",
    "pandas",
    "click",
    "tabulate",
    "bitsandbytes",
    "torchao",
    "nvidia-ml-py",
    "pytest-benchmark",
)
REPO = Path(__file__).resolve().parent.parent


def _pkg_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_info(repo: Path = REPO) -> dict[str, Any]:
    def run(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    sha = run("rev-parse", "HEAD")
    status = run("status", "--porcelain", "--untracked-files=no")
    return {"sha": sha, "dirty": bool(status) if status is not None else None}


def _nvml() -> dict[str, Any]:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            drv = pynvml.nvmlSystemGetDriverVersion()
            h = pynvml.nvmlDeviceGetHandleByIndex(0)
            clocks = {
                "sm_max_mhz": pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM),
                "mem_max_mhz": pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_MEM),
            }
            return {"driver": drv.decode() if isinstance(drv, bytes) else drv, "clocks": clocks}
        finally:
            pynvml.nvmlShutdown()
    except Exception as e:  # NVMLError_LibraryNotFound without a GPU
        return {"driver": None, "nvml_error": type(e).__name__}


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity (a container's cpuset, `taskset`, a SLURM or
    Kubernetes allocation), not the machine's count. Threads per case are sized from it: 64 threads
    on the 4 cores a job was given would only spin against each other."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


@lru_cache(maxsize=1)
def fingerprint() -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    fp: dict[str, Any] = {
        "device_type": "cuda" if cuda else "cpu",
        "devices": devices,
        "device_count": len(devices),
        "cuda": torch.version.cuda,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable_cpus(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "packages": {p: _pkg_version(p) for p in PACKAGES},
        "git": git_info(),
    }
    fp.update(_nvml() if cuda else {"driver": None})
    fp["machine_id"] = machine_id(fp)
    fp["label"] = device_label(fp)
    return fp


def machine_id(fp: dict[str, Any]) -> str:
    """Hash of what decides speed: devices, CPU, core count, torch and CUDA versions.

    Timings are compared as regressions only between rows with the same machine_id.
    """
    key = {k: fp.get(k) for k in ("devices", "cpu_model", "cpu_count", "cuda", "driver")}
    key["torch"] = fp.get("packages", {}).get("torch")
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def device_label(fp: dict[str, Any]) -> str:
    """'h100-80gb-hbm3' or 'cpu-intel-xeon-platinum-8481c': used in file names and columns."""
    if fp.get("devices"):
        name = fp["devices"][0].replace("NVIDIA", "")
    else:
        name = "cpu " + re.sub(r"\(R\)|\(TM\)|CPU|@.*|Processor", " ", fp.get("cpu_model", ""))
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:40] or "unknown"
