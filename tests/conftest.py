"""Shared fixtures: the CLI as a subprocess, and the third-party test plugins really installed."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs CUDA (run on a GPU machine)")
    if not torch.cuda.is_available():
        for it in items:
            if "gpu" in it.keywords:
                it.add_marker(skip)


def pip_target(src: Path, dest: Path) -> Path:
    """A real install (dist-info with entry points) of a fixture package into dest."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(dest), str(src)],
        check=True,
        capture_output=True,
    )
    return dest


@pytest.fixture(scope="session")
def thirdparty(tmp_path_factory) -> Path:
    """bench-testplugins (plugins `toy` and `faulty`), installed in its own folder."""
    return pip_target(FIXTURES / "thirdparty", tmp_path_factory.mktemp("tp"))


def run_bench(*args: str, pythonpath: list[Path] | None = None, cwd: Path | None = None, timeout: float = 300,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    if pythonpath:
        e["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    if env:
        e.update(env)
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=e, timeout=timeout)


def worker_processes() -> list[str]:
    """Command lines of any bench case processes still alive (orphans)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "bench.worker" in cmd:
            out.append(cmd)
    return out
