"""Which rank of a timed-out torchrun case hung: each rank's Python stack, taken just before the kill.

Every torchrun rank registers faulthandler on SIGUSR1, writing to OUT_DIR/stack{R}.txt (bench.worker).
When a case passes its limit the runner sends SIGUSR1 to the ranks (psutil), waits DUMP_WAIT_S, then
kills the tree. A rank whose innermost frame is inside torch is waiting on the others (a collective,
the autograd engine finishing a DDP all-reduce); a rank whose innermost frame is elsewhere (the
plugin's own code) is the one that stopped: that rank is named. One such rank or none is told apart;
with several, all are listed.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from pathlib import Path
from typing import IO

DUMP_WAIT_S = 1.0
_open: list[IO[str]] = []  # faulthandler writes to these files until the process ends


def register(out_dir: Path, rank: int) -> None:
    """In a rank: dump every thread's stack to out_dir/stack{rank}.txt on SIGUSR1."""
    import faulthandler

    f = open(out_dir / f"stack{rank}.txt", "w")
    _open.append(f)
    faulthandler.register(signal.SIGUSR1, file=f, all_threads=True)


def dump(root_pid: int) -> None:
    """Ask every rank under root_pid (bench.worker processes) for its stack; give them time to write."""
    import psutil

    try:
        procs = psutil.Process(root_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return
    sent = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            if _module(p.cmdline()) == "bench.worker":  # a rank; not the agent or the supervisor naming it
                os.kill(p.pid, signal.SIGUSR1)
                sent += 1
    if sent:
        time.sleep(DUMP_WAIT_S)


def _module(argv: list[str]) -> str | None:
    """The module a `python [-u] -m MODULE ...` command line runs (its first -m), else None."""
    return next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-m"), None)


def where(text: str) -> tuple[bool, str] | None:
    """A faulthandler dump -> (waiting inside torch?, the innermost frame of the main thread), or
    None when there is no dump. The main thread is the one running bench/worker.py."""
    blocks = re.split(r"\n(?=(?:Current thread|Thread) 0x)", text.strip())
    main = next((b for b in blocks if "bench/worker.py" in b), None)
    if not main:
        return None
    frames = re.findall(r'File "([^"]+)", line (\d+) in (\S+)', main)
    if not frames:
        return None
    path, line, func = frames[0]  # faulthandler lists the most recent call first
    in_torch = "/torch/" in path.replace(os.sep, "/")
    return in_torch, f"{_short(path)}:{line} in {func}"


def verdict(tdp: Path, missing: list[int]) -> tuple[int | None, str]:
    """(the rank that hung, or None; words on where each rank without a result was)."""
    seen: dict[int, tuple[bool, str]] = {}
    for r in missing:
        try:
            w = where((tdp / f"stack{r}.txt").read_text(errors="replace"))
        except OSError:
            w = None
        if w:
            seen[r] = w
    if not seen:
        return None, ""
    stuck = [r for r, (in_torch, _) in seen.items() if not in_torch]
    parts = [
        f"rank {r} {'waited inside torch' if t else 'was in its own code'} at {at}"
        for r, (t, at) in sorted(seen.items())
    ]
    return (stuck[0] if len(stuck) == 1 else None), "; ".join(parts)


def _short(path: str) -> str:
    p = path.replace(os.sep, "/")
    for mark in ("/site-packages/", "/plugins/", "/bench/"):
        if mark in p:
            return mark.strip("/") + "/" + p.split(mark, 1)[1] if mark != "/site-packages/" else p.split(mark, 1)[1]
    return p
