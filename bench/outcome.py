"""What a finished case's folder says: the rank files its processes wrote, the exit status its
supervisor recorded and torchrun's failure summary -> one CaseResult (ok / skipped / oom / error /
timeout, with the failing or hung rank named)."""

from __future__ import annotations

import json
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import stacks


@dataclass
class CaseResult:
    status: str
    message: str = ""
    records: list[dict[str, Any]] = field(default_factory=list)
    labels: dict[str, Any] = field(default_factory=dict)  # e.g. the failing rank
    env: dict[str, str] = field(default_factory=dict)  # the collective knobs the case ran with (launch.passthrough_env)


def root_cause(stderr: str) -> tuple[int | None, str]:
    """torchrun's failure summary -> (rank, "exitcode -9 (SIGKILL)") of the first observed failure."""
    part = stderr.split("Root Cause", 1)[1] if "Root Cause" in stderr else stderr
    m = re.search(r"rank\s*:\s*(\d+)\s*\(local_rank", part)
    e = re.search(r"exitcode\s*:\s*(-?\d+)[^\n]*?(\(SIG\w+\))?\s*$", part, re.M)
    why = f"exitcode {e.group(1)}" + (f" {e.group(2)}" if e.group(2) else "") if e else ""
    return (int(m.group(1)) if m else None), why


def read_text(p: Path) -> str:
    try:
        return p.read_text(errors="replace")
    except OSError:
        return ""


def outcome(
    tdp: Path, stderr: str, nranks: int, torchrun: bool, timed_out: bool, timeout: float, ranks: list[int] | None = None
) -> CaseResult:
    """ranks: the global ranks this node runs (several nodes); default 0..nranks-1."""
    tail = "\n".join(stderr.strip().splitlines()[-15:])
    rank_files = {int(p.stem[4:]): json.loads(p.read_text()) for p in tdp.glob("rank*.json")}
    try:
        rc = json.loads(read_text(tdp / "exit.json") or "{}").get("returncode")
    except json.JSONDecodeError:
        rc = None
    missing = [r for r in (ranks if ranks is not None else range(nranks)) if r not in rank_files]
    if timed_out:
        kept = [rec for r in sorted(rank_files) for rec in rank_files[r].get("records", [])]
        hung_rank: dict[str, Any] = {}
        msg = f"exceeded the case time limit of {timeout:g} s; process tree killed"
        if torchrun:  # the rank that hung: the one outside torch when the others waited in it
            hung, where = stacks.verdict(tdp, missing)
            hung = hung if hung is not None else (missing[0] if len(missing) == 1 else None)
            hung_rank = {"failed_rank": hung} if hung is not None else {}
            msg += f" (ranks without a result: {missing}" + (f"; {where}" if where else "") + ")"
        return CaseResult("timeout", msg, kept if not torchrun else [], hung_rank)
    failed = {r: p for r, p in rank_files.items() if p["status"] not in ("ok", "skipped")}
    if torchrun and missing and (rc not in (0, None) or failed):
        # a rank died without writing a result (killed, segfault): it is the root cause;
        # the others' errors (broken connections) are consequences
        fr, why = root_cause(stderr)
        fr = fr if fr in missing else missing[0]
        if not why and rc is not None and rc < 0:  # the agent itself was killed: its summary never came
            why = f"the torchrun agent was killed by {signal.Signals(-rc).name}"
        others = "; ".join(f"rank {r}: {p['message'][:200]}" for r, p in sorted(failed.items()))
        msg = f"rank {fr} died without a result ({why or 'no exit status'})" + (f"; then {others}" if others else "")
        return CaseResult("error", msg, [], {"failed_rank": fr})
    if failed:
        r = min(failed)
        return CaseResult(failed[r]["status"], failed[r]["message"], [], {"failed_rank": r} if torchrun else {})
    skipped = {r: p for r, p in rank_files.items() if p["status"] == "skipped"}
    if skipped and len(rank_files) >= nranks:
        return CaseResult("skipped", skipped[min(skipped)]["message"])
    if len(rank_files) < nranks:
        if rc is not None and rc < 0 and -rc == signal.SIGKILL and not torchrun:
            return CaseResult("oom", "killed by SIGKILL (most likely the kernel's OOM killer)")
        extra: dict[str, Any] = {}
        if torchrun:
            fr, _ = root_cause(stderr)
            extra = {"failed_rank": fr if fr is not None else (missing[0] if missing else None)}
        why = f"exit code {rc}" if rc is None or rc >= 0 else f"killed by signal {signal.Signals(-rc).name}"
        return CaseResult("error", f"case process failed ({why}): {tail[-800:]}", [], extra)
    records: list[dict[str, Any]] = []
    for r in sorted(rank_files):
        for rec in rank_files[r]["records"]:
            if torchrun:
                rec["labels"] = {**rank_files[r].get("labels", {"rank": r}), **rec.get("labels", {})}
            records.append(rec)
    return CaseResult("ok", "", records)
