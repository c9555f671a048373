"""The machine fingerprint recorded with every row, its two identities, and a short device label.

  machine_id   what decides speed: the CPU part (vendor, family, model, stepping, the ISA features
               torch, oneDNN and MKL dispatch on), logical and usable cores, the kernel set, torch,
               MKL and oneDNN versions; on a GPU the device name, SM count, compute capability, driver
               and CUDA. Timings are regressions only within one machine_id. A hypervisor that masks the
               model string ("Intel(R) Xeon(R) Processor") no longer hides a different part behind it.
  numerics_id  what decides the deterministic figures that follow the kernels (a loss after many
               steps): the libraries' versions and the kernel set; with the `portable` set
               (bench.kernels) not the CPU, which the pin takes out; with `native` kernels the CPU's
               vendor and dispatch features (and the GPU). Machine-bound metrics gate only within one
               numerics_id.

Rows recorded before (fingerprint schema 1: the model string only) keep their stored machine_id; their
numerics_id cannot be recomputed (no CPU features were recorded), so the gate compares only their
portable metrics and says so.
"""

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

from bench.kernels import PORTABLE

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
SCHEMA = 2  # 1: model string only (no cpu, libs, kernels, numerics_id)
# /proc/cpuinfo flags that torch (ATen capability, cpuinfo checks), oneDNN and MKL dispatch on
DISPATCH_FLAGS = (
    "sse4_1",
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512dq",
    "avx512cd",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx512vbmi",
    "avx512ifma",
    "avx_vnni",
    "avx_vnni_int8",
    "avx_ne_convert",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "amx_fp16",
    "asimd",
    "sve",
    "sve2",
    "bf16",
    "i8mm",
)


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


def cpu_info(text: str | None = None) -> dict[str, Any]:
    """The CPU part behind the model string: vendor, family, model, stepping and the dispatch-relevant
    ISA flags of the first processor in /proc/cpuinfo (text: its contents, for tests)."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            text = ""
    first: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if first:
                break
            continue
        k, _, v = line.partition(":")
        first.setdefault(k.strip(), v.strip())
    flags = set((first.get("flags") or first.get("Features") or "").split())
    return {
        "arch": platform.machine(),
        "vendor": first.get("vendor_id") or first.get("CPU implementer"),
        "family": first.get("cpu family") or first.get("CPU architecture"),
        "model": first.get("model") or first.get("CPU part"),
        "stepping": first.get("stepping") or first.get("CPU revision"),
        "flags": [f for f in DISPATCH_FLAGS if f in flags],
    }


def lib_versions() -> dict[str, Any]:
    """torch's BLAS (MKL) and oneDNN versions as built into it, from torch.__config__.show()."""
    import torch

    try:
        cfg = torch.__config__.show()
    except Exception:  # a build without the config text
        cfg = ""
    mkl = re.search(r"Math Kernel Library Version ([\w.\-]+)", cfg)
    dnn = re.search(r"(?:MKL-DNN|oneDNN) v([\w.\-]+)", cfg)
    blas = re.search(r"BLAS_INFO=(\w+)", cfg)
    return {
        "torch": torch.__version__,
        "blas": blas.group(1) if blas else None,
        "mkl": mkl.group(1) if mkl else None,
        "onednn": dnn.group(1) if dnn else None,
    }


def _gpus() -> list[dict[str, Any]]:
    import torch

    out = []
    for i in range(torch.cuda.device_count()):
        pr = torch.cuda.get_device_properties(i)
        out.append(
            {
                "name": pr.name,
                "sm_count": pr.multi_processor_count,
                "capability": f"{pr.major}.{pr.minor}",
                "memory_bytes": pr.total_memory,
            }
        )
    return out


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

    from bench.kernels import kernel_set

    cuda = torch.cuda.is_available()
    gpus = _gpus() if cuda else []
    devices = [g["name"] for g in gpus]
    fp: dict[str, Any] = {
        "schema": SCHEMA,
        "device_type": "cuda" if cuda else "cpu",
        "devices": devices,
        "device_count": len(devices),
        "gpus": gpus,
        "cuda": torch.version.cuda,
        "cpu_model": cpu_model(),
        "cpu": cpu_info(),
        "libs": lib_versions(),
        "kernels": kernel_set(),
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
    fp["numerics_id"] = numerics_id(fp)
    fp["label"] = device_label(fp)
    return fp


def _hash(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _gpu_key(fp: dict[str, Any]) -> dict[str, Any]:
    gpus = [{k: g.get(k) for k in ("name", "sm_count", "capability")} for g in fp.get("gpus") or []]
    return {"gpus": gpus, "cuda": fp.get("cuda"), "driver": fp.get("driver")}


def machine_id(fp: dict[str, Any]) -> str:
    """Hash of what decides speed (see the module docstring). Timings are compared as regressions only
    between rows with the same machine_id. A schema-1 fingerprint (no "cpu") hashes as it always did."""
    if "cpu" not in fp:  # schema 1: the model string only
        key = {k: fp.get(k) for k in ("devices", "cpu_model", "cpu_count", "cuda", "driver")}
        key["torch"] = fp.get("packages", {}).get("torch")
        return _hash(key)
    ks = fp.get("kernels") or {}
    key = {
        "cpu": fp.get("cpu"),
        "cpu_model": fp.get("cpu_model"),
        "cpu_count": fp.get("cpu_count"),
        "cpus_usable": fp.get("cpus_usable"),
        "libs": fp.get("libs"),
        "kernels": {"set": ks.get("set"), "env": ks.get("env"), "aten": ks.get("aten_capability")},
        **_gpu_key(fp),
    }
    return _hash(key)


def numerics_id(fp: dict[str, Any]) -> str | None:
    """Hash of what decides kernel-dependent deterministic figures (see the module docstring), or None
    for a schema-1 fingerprint, which did not record them."""
    if "cpu" not in fp:
        return None
    ks = fp.get("kernels") or {}
    cpu = fp.get("cpu") or {}
    key: dict[str, Any] = {
        "arch": cpu.get("arch"),
        "libs": fp.get("libs"),
        "kernels": {"set": ks.get("set"), "env": ks.get("env"), "aten": ks.get("aten_capability")},
        "device_type": fp.get("device_type"),
    }
    if ks.get("set") == "portable":  # the pinned variables decide; the host's own (MKL_ENABLE_INSTRUCTIONS) do not
        key["kernels"]["env"] = {k: v for k, v in (ks.get("env") or {}).items() if k in PORTABLE}
    else:  # native (or custom) kernels: the host's dispatch decides
        key["cpu"] = {k: cpu.get(k) for k in ("vendor", "family", "model", "flags")}
    if fp.get("device_type") == "cuda":
        key.update(_gpu_key(fp))
    return _hash(key)


def device_label(fp: dict[str, Any]) -> str:
    """'h100-80gb-hbm3' or 'cpu-intel-xeon-platinum-8481c': used in file names and columns."""
    if fp.get("devices"):
        name = fp["devices"][0].replace("NVIDIA", "")
    else:
        name = "cpu " + re.sub(r"\(R\)|\(TM\)|CPU|@.*|Processor", " ", fp.get("cpu_model", ""))
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:40] or "unknown"
