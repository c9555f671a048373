"""The warm worker: one interpreter (bench.worker --serve) that runs the cases a plugin marks
Launch(reuse=True) one after another, so cheap cases do not each pay the interpreter's and torch's
start-up. Each case keeps its own time limit: a hung case costs its row and the worker (the next
case gets a new one); a crash costs that case only."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.launch import worker_command
from bench.outcome import CaseResult, outcome, read_text
from bench.supervise import kill_tree, supervised


class WarmWorker:
    """One interpreter that runs reuse=True cases one after another (bench.worker --serve)."""

    def __init__(self, env: dict[str, str]):
        self.dir = Path(tempfile.mkdtemp(prefix=f"bench-warm-{os.getpid()}-"))
        self.log = open(self.dir / "worker.txt", "w+")
        self.proc = subprocess.Popen(
            supervised(worker_command(None), self.dir),
            stdin=subprocess.PIPE,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
            start_new_session=True,
        )

    def submit(self, spec_path: Path) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{spec_path}\n")
        self.proc.stdin.flush()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self, kill: bool = False) -> None:
        try:
            if kill:
                kill_tree(self.proc.pid)
            elif self.proc.stdin:
                self.proc.stdin.close()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    kill_tree(self.proc.pid)
        except (OSError, ValueError):
            kill_tree(self.proc.pid)
        self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_file(path: Path, proc: subprocess.Popen[Any], timeout: float) -> bool:
    """Until path exists (True), the process ends (False) or timeout (TimeoutExpired)."""
    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            return path.exists()
        if time.monotonic() >= end:
            raise subprocess.TimeoutExpired("case", timeout)
        time.sleep(0.02)
    return True


def run_warm(
    warm: dict[str, WarmWorker], spec_path: Path, tdp: Path, env: dict[str, str], timeout: float
) -> CaseResult:
    """One case in the run's warm worker (started, or restarted after a failure, with env)."""
    w = warm.get("w")
    if w is None or not w.alive:
        w = warm["w"] = WarmWorker(env)
    w.submit(spec_path)
    try:
        got = wait_file(tdp / "rank0.json", w.proc, timeout)
    except subprocess.TimeoutExpired:
        w.close(kill=True)
        del warm["w"]
        return outcome(tdp, read_text(tdp / "stderr.txt"), 1, False, True, timeout)
    except BaseException:
        w.close(kill=True)
        del warm["w"]
        raise
    if not got:  # the worker died with the case (a crash): the next case gets a new one
        w.proc.wait()
        (tdp / "exit.json").write_text(read_text(w.dir / "exit.json") or "{}")
        w.close(kill=True)
        del warm["w"]
    return outcome(tdp, read_text(tdp / "stderr.txt"), 1, False, False, timeout)
