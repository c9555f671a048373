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


def pytest_configure(config):
    # Orphans of a test's subprocesses are reparented to this pytest process (Linux child
    # subreaper), so orphan checks look at this test session's own process tree only, never at
    # other work on the machine (another `bench run` may be running beside the tests).
    from bench.supervise import set_child_subreaper

    set_child_subreaper()
    _pin_xdist_worker()


def _pin_xdist_worker() -> None:
    """Under pytest-xdist (make test: 2 workers on 2 cores), each worker and everything it starts
    runs on its own cores: `bench run` sizes threads from its usable cores, so two workers' cases
    never oversubscribe the machine with spinning OpenMP threads."""
    worker, n = os.environ.get("PYTEST_XDIST_WORKER", ""), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if not worker.startswith("gw") or not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    if 1 < n <= len(cpus):
        mine = cpus[int(worker[2:]) % n :: n]
        os.sched_setaffinity(0, mine)
        torch.set_num_threads(len(mine))


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs CUDA (run on a GPU machine)")
    if not torch.cuda.is_available():
        for it in items:
            if "gpu" in it.keywords:
                it.add_marker(skip)


def pip_target(src: Path, dest: Path) -> Path:
    """A real install (dist-info with entry points) of a fixture package into dest."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(dest),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    return dest


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: a second torch thread only spin-waits (and on a busy machine slows them many times)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def thirdparty(tmp_path_factory) -> Path:
    """bench-testplugins (plugins `toy` and `faulty`), installed in its own folder."""
    return pip_target(FIXTURES / "thirdparty", tmp_path_factory.mktemp("tp"))


def run_bench(
    *args: str,
    pythonpath: list[Path] | None = None,
    cwd: Path | None = None,
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    if pythonpath:
        e["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    if env:
        e.update(env)
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env=e,
        timeout=timeout,
    )


def bench_cli(*args: str, pythonpath: list[Path] | None = None) -> subprocess.CompletedProcess:
    """The CLI run in this process, for commands that only read files (show, claims, report,
    summarize, compare, list): the same exit codes and streams as `run_bench` without an
    interpreter and torch start per call (~2.5 s of CPU each on 2 cores). Commands that launch
    cases, and the checks that no traceback reaches a real terminal, use `run_bench`."""
    from click.testing import CliRunner

    from bench.cli import main

    saved = list(sys.path)
    sys.path[:0] = [str(p) for p in pythonpath or []]
    try:
        r = CliRunner().invoke(main, list(args))
    finally:
        sys.path[:] = saved
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception  # a traceback: the test fails with it
    return subprocess.CompletedProcess(["bench", *args], r.exit_code, r.stdout, r.stderr)


CASE_MARKERS = ("bench.worker", "bench.supervise", "torch.distributed.run")


def worker_processes(grace_s: float = 5.0) -> list[str]:
    """Command lines of bench case processes still alive in THIS test session's process tree
    (orphans are reparented here: see pytest_configure), after up to grace_s for them to exit."""
    import time

    import psutil

    deadline = time.time() + grace_s
    while True:
        found = []
        for p in psutil.Process().children(recursive=True):
            try:
                if p.status() == psutil.STATUS_ZOMBIE:
                    p.wait(0)  # reap it: a zombie is an exited process
                    continue
                cmd = " ".join(p.cmdline())
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.TimeoutExpired):
                continue
            if any(m in cmd for m in CASE_MARKERS):
                found.append(cmd)
        if not found or time.time() >= deadline:
            return found
        time.sleep(0.2)
