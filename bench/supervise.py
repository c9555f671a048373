"""`python -m bench.supervise --dir TMP --parent PID -- CMD...`: the one process between `bench run`
and a case (a worker, a warm worker, or torchrun and its ranks).

It starts CMD, waits for it, and writes CMD's exit status to TMP/exit.json (the runner tells an
OOM kill from a crash by it). It watches `bench run`: when that dies however it dies (SIGHUP,
SIGKILL, a closed terminal) -- told by the kernel's parent-death signal where Linux has it, and by
polling the parent pid everywhere -- it kills the whole case tree (psutil, SIGTERM then SIGKILL)
and removes TMP, so no rank keeps running with its ports open and no temporary folder stays.
SIGTERM / SIGINT / SIGHUP to the supervisor itself do the same (without removing TMP: the runner
still reads what the case wrote). When `bench run` is gone, every temporary folder named with its pid
goes too (a warm worker's cases have folders of their own); the next `bench run` or `bench regress`
removes those of any bench process that is gone (clean_stale_tmp).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

PR_SET_PDEATHSIG = 1  # linux/prctl.h
PDEATH = signal.SIGUSR2  # the supervisor's parent-death signal (nothing else sends it)
PR_SET_CHILD_SUBREAPER = 36
POLL_S = 0.5


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send `sig` to this process when its parent dies (Linux prctl)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def supervised(cmd: list[str], tdp: Path) -> list[str]:
    """CMD run under this module, watching the calling process (`bench run`)."""
    return [sys.executable, "-m", "bench.supervise", "--dir", str(tdp), "--parent", str(os.getpid()), "--", *cmd]


def set_child_subreaper() -> bool:
    """Make orphaned descendants of this process its children (Linux prctl), not init's."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def kill_tree(pid: int, grace_s: float = 3.0, include_root: bool = True) -> None:
    """SIGTERM a process and every descendant (psutil), then SIGKILL what is left after grace_s."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = root.children(recursive=True) + ([root] if include_root else [])
    except psutil.NoSuchProcess:
        return
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            p.kill()
    psutil.wait_procs(alive, timeout=5.0)


@contextlib.contextmanager
def interrupt_on(*signums: int) -> Iterator[None]:
    """Within the block, these signals (SIGTERM, SIGHUP) raise KeyboardInterrupt in the main thread, as
    Ctrl-C does: the `finally` and `except BaseException` clean-ups run (kill the case tree, remove
    temporary folders) instead of the process vanishing with them left behind. No-op off the main thread."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    old = {s: signal.signal(s, _raise) for s in signums}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


TMP_PREFIXES = ("bench-case-", "bench-warm-", "bench-regress-")


def clean_stale_tmp(tmp: str | None = None, only_pid: int | None = None) -> list[str]:
    """Remove temporary folders of bench processes that are gone (named <prefix><pid>-...): left by
    a `bench run` or `bench regress` killed with SIGKILL, which no handler sees. Only this user's,
    only where that pid no longer runs (only_pid: that pid's, known gone). Returns the folders removed."""
    import tempfile

    base = Path(tmp or tempfile.gettempdir())
    removed = []
    try:
        entries = list(base.iterdir())
    except OSError:
        return []
    for d in entries:
        prefix = next((p for p in TMP_PREFIXES if d.name.startswith(p)), None)
        if prefix is None:
            continue
        pid_text = d.name[len(prefix) :].split("-", 1)[0]
        if not pid_text.isdigit() or (only_pid is not None and int(pid_text) != only_pid):
            continue
        try:
            if d.is_symlink() or not d.is_dir() or d.stat().st_uid != os.getuid():
                continue
        except OSError:
            continue
        if only_pid is None and _running(int(pid_text)):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(str(d))
    return removed


def _running(pid: int) -> bool:
    """The pid runs (a zombie -- killed, not yet reaped -- does not)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True


class _Stop(Exception):
    def __init__(self, signum: int):
        self.signum = signum


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.supervise")
    ap.add_argument("--dir", required=True, type=Path, help="the case's temporary folder")
    ap.add_argument("--parent", required=True, type=int, help="pid of `bench run`")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    # its own signal: a parent killed while other threads of it still exit reparents this process to one
    # of those threads first (same pid: getppid() unchanged), so the signal alone says "bench run is going"
    set_parent_death_signal(PDEATH)

    def orphaned() -> bool:
        return os.getppid() != a.parent or not _running(a.parent)

    def gone_soon() -> bool:  # after the parent-death signal: its last threads exit within moments
        end = time.monotonic() + 2.0
        while not orphaned():
            if time.monotonic() > end:
                return False
            time.sleep(0.05)
        return True

    import psutil  # noqa: F401  -- loaded now: the clean-up after a signal must not stall on an import

    stopping: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        # One stop only: a second signal (the parent-death SIGTERM arriving next to a SIGHUP, a user's
        # kill) raised inside kill_tree would end this process with the case tree still running.
        if stopping:
            return
        stopping.append(signum)
        raise _Stop(signum)

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, PDEATH):
        signal.signal(s, on_signal)
    if orphaned():  # bench run died before we could watch it
        shutil.rmtree(a.dir, ignore_errors=True)
        clean_stale_tmp(only_pid=a.parent)
        return 1
    child = subprocess.Popen(cmd)
    rc: int | None = None
    try:
        while rc is None:
            try:
                rc = child.wait(timeout=POLL_S)
            except subprocess.TimeoutExpired:
                if orphaned():
                    raise _Stop(signal.SIGHUP) from None
    except _Stop as stop:
        kill_tree(child.pid)
        if orphaned() or (
            stop.signum in (PDEATH, signal.SIGHUP) and gone_soon()
        ):  # bench run is gone (SIGKILL): its case folders too (a warm worker's case is in its own)
            shutil.rmtree(a.dir, ignore_errors=True)
            clean_stale_tmp(only_pid=a.parent)
            return 128 + stop.signum
        rc = child.poll()
        _write_exit(a.dir, rc, stopped=stop.signum)
        return 128 + stop.signum
    kill_tree(child.pid, grace_s=1.0, include_root=False)  # a rank's stray children
    _write_exit(a.dir, rc)
    return 0 if rc == 0 else 1


def _write_exit(d: Path, rc: int | None, stopped: int | None = None) -> None:
    with contextlib.suppress(OSError):
        tmp = d / ".exit.json.tmp"
        tmp.write_text(json.dumps({"returncode": rc, "stopped_by": stopped, "at": time.time()}))
        os.replace(tmp, d / "exit.json")


if __name__ == "__main__":
    sys.exit(main())
