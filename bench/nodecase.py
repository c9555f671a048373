"""One case over several nodes: what each node saw, the writer's verdict, and the ranks' side.

  local_view   this node's view after its torchrun ended: its ranks (the roster its ranks wrote), which
               wrote no result, their errors, where a hung one was (bench.stacks)
  combine      every node's view -> the case's rows on the writer: every rank's gathered records, or
               one failure naming node, host and rank (a rank that died > a node gone silent > a
               rank's own error > a timeout; errors caused by a peer's failure come last)
  ranks        the run's store as the process group's store (no rank listens), the roster
               (all_gather_object), every rank's payload to the writing node (gather_object)

The run-level side (the store, the lock-step, who writes) is bench/rendezvous.py.
"""

from __future__ import annotations

import json
import os
import re
import socket
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench import stacks

# Errors a rank sees because ANOTHER rank or node failed (gloo/NCCL/TCPStore wording): consequences,
# never the root cause when something else failed.
CONSEQUENCE = re.compile(
    r"Connection (closed|reset) by peer|Broken pipe|ECONNRESET|Connection refused|"
    r"communicator was aborted|remote process exited|Socket Timeout|recv.*0 bytes|"
    r"gathering the case's records failed",
    re.I,
)


def local_view(local: Any, tdp: Path, index: int, stopped: str = "") -> dict[str, Any]:
    """What this node saw: its ranks (from the roster its ranks wrote), which wrote no result,
    their errors, and the case's status and message as the runner judged them here. stopped: why
    this node ended its part early because of another node (its ranks' deaths are consequences)."""
    roster = _read_json(tdp / "roster.json") or {}
    files = {int(p.stem[4:]): _read_json(p) or {} for p in tdp.glob("rank*.json")}
    node = roster.get("node")
    ranks = sorted(e["rank"] for e in roster.get("ranks", []) if e.get("index") == index) or sorted(files)
    if node is None:
        node = next((p.get("labels", {}).get("node") for p in files.values() if p.get("labels")), None)
    errors = {
        str(r): {"status": p.get("status"), "message": str(p.get("message", ""))[:600]}
        for r, p in files.items()
        if p.get("status") not in ("ok", "skipped")
    }
    missing = [r for r in ranks if r not in files]
    hung, where = stacks.verdict(tdp, missing) if local.status == "timeout" else (None, "")
    return {
        "index": index,
        "host": socket.gethostname(),
        "node": node,
        "ranks": ranks,
        "status": local.status,
        "message": local.message[:1500],
        "missing": missing,
        "errors": errors,
        "roster": roster.get("ranks", []),
        "hung": hung,
        "where": where,
        "stopped": stopped,
    }


def with_node(local: Any, view: dict[str, Any]) -> Any:
    """A node's own failure row names itself (node, host) next to the failing rank."""
    if local.status != "ok":
        local.labels = {**local.labels, "failed_node": view["node"], "failed_host": view["host"]}
    return local


def combine(
    reports: dict[int, dict[str, Any] | None], gathered: list[dict[str, Any]] | None, hosts: dict[int, str], world: int
) -> tuple[str, str, dict[str, Any], list[dict[str, Any]]]:
    """Every node's view of one case -> (status, message, labels, records) of the case's rows.

    ok: every rank's payload reached the writer (gathered) -- then the agents' own exit does not
    matter. Otherwise the first failure, in this order: a rank that died without a result, a node
    that went silent (no report: its bench run is gone), a rank's own error (errors caused by a
    peer's failure -- connection closed -- come last), a timeout."""
    if gathered and len(gathered) == world and all(p.get("status") in ("ok", "skipped") for p in gathered):
        skipped = [p for p in gathered if p["status"] == "skipped"]
        if skipped:
            return "skipped", skipped[0].get("message", ""), {}, []
        records = []
        for p in sorted(gathered, key=lambda p: p["labels"].get("rank", 0)):
            info = p.get("node_info") or {}
            for rec in p.get("records", []):
                rec["labels"] = {**p.get("labels", {}), **rec.get("labels", {})}
                if info:
                    rec["fingerprint"], rec["env"] = info.get("fingerprint"), info.get("env")
                records.append(rec)
        return "ok", "", {}, records
    roster: list[dict[str, Any]] = next((v["roster"] for v in reports.values() if v and v.get("roster")), [])
    where = {e["rank"]: e for e in roster}

    def who(rank: int | None, view: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        e = where.get(rank) if rank is not None else None
        node = e["node"] if e else (view or {}).get("node")
        host = e["host"] if e else (view or {}).get("host", "?")
        text = f"rank {rank}" if rank is not None else "a rank"
        text += f" on node {node} ({host}" + (f", local rank {e['local_rank']})" if e else ")")
        return text, {"failed_rank": rank, "failed_node": node, "failed_host": host}

    views = [v for v in reports.values() if v]
    died = [
        (v, r)
        for v in views
        for r in v["missing"]
        if v["status"] not in ("timeout", "ok") and not v.get("stopped")  # stopped: killed by us, not dead
    ]
    silent = [j for j, v in reports.items() if v is None]
    errs = sorted(
        ((int(r), e, v) for v in views for r, e in v["errors"].items()),
        key=lambda t: (bool(t[2].get("stopped")) or bool(CONSEQUENCE.search(t[1]["message"])), t[0]),
    )

    def brief(errors: list[tuple[int, dict[str, Any], Any]]) -> str:
        return "; ".join(f"rank {r}: {_gist(e['message'])}" for r, e, _ in errors[:3])

    after = brief(errs)
    if died:
        v, r = died[0]
        text, labels = who(r, v)
        m = re.match(r"rank \d+ died without a result \((.*?)\)(;|$)", v["message"])
        why = m.group(1) if m else v["message"][:300]
        return "error", f"{text} died without a result ({why})" + (f"; then {after}" if after else ""), labels, []
    if silent:
        j = silent[0]
        ranks = [e["rank"] for e in roster if e.get("index") == j]
        # no roster (the process group never formed): the node by its place in the run
        text, labels = who(ranks[0] if ranks else None, {"host": hosts.get(j, "?"), "node": j})
        gone = f"node {j}'s bench run ({hosts.get(j, '?')}) sent no report: it is gone"
        return (
            "error",
            f"{gone}; its ranks {ranks or '?'} ended with it ({text})" + (f"; then {after}" if after else ""),
            labels,
            [],
        )
    if errs:
        r, e, v = errs[0]
        text, labels = who(r, v)
        rest = brief(errs[1:])
        return e["status"], f"{text}: {e['message']}" + (f"; then {rest}" if rest else ""), labels, []
    timed = [v for v in views if v["status"] == "timeout" and not v.get("stopped")]
    if timed:  # the rank that hung: the one outside torch while the others waited in it (bench.stacks)
        miss = sorted(r for v in timed for r in v["missing"])
        hung = [v["hung"] for v in timed if v.get("hung") is not None]
        name = hung[0] if len(hung) == 1 else (miss[0] if len(miss) == 1 else None)
        text, labels = who(name, timed[0])
        names = ", ".join(who(r)[0] for r in miss) or "none"
        places = "; ".join(v["where"] for v in timed if v.get("where"))
        msg = f"{timed[0]['message'].split(' (ranks')[0]}; ranks without a result: {names}"
        msg += (f"; {text} hung" if name is not None else "") + (f" ({places})" if places else "")
        return "timeout", msg, labels if name is not None else {}, []
    bad = next((v for v in views if v["status"] != "ok" and not v.get("stopped")), None)
    bad = bad or next((v for v in views if v["status"] != "ok"), None)
    if bad:
        why = f"; stopped: {bad['stopped']}" if bad.get("stopped") else ""
        return (
            bad["status"],
            f"node {bad['node']} ({bad['host']}): {bad['message']}{why}",
            {"failed_node": bad["node"], "failed_host": bad["host"]},
            [],
        )
    return "error", f"the writing node received {len(gathered or [])} of {world} ranks' records", {}, []


# --- the worker side (bench.worker, under torchrun on every node) ------------------------------------
def worker_init_kwargs(nodes: dict[str, Any], rank: int, world: int) -> dict[str, Any]:
    """init_process_group arguments: the run's store (a client: no rank listens), under this case's prefix."""
    import torch.distributed as dist

    store = dist.TCPStore(
        nodes["host"], int(nodes["port"]), is_master=False, timeout=timedelta(seconds=float(nodes["timeout_s"]))
    )
    return {"store": dist.PrefixStore(nodes["prefix"], store), "rank": rank, "world_size": world}


def share_roster(nodes: dict[str, Any], labels: dict[str, Any], out_dir: Path, local_rank: int) -> list[dict[str, Any]]:
    """Every rank learns who is where (all_gather_object); local rank 0 writes roster.json for its
    bench run, so a node can name the ranks of another that went silent."""
    import torch.distributed as dist

    me = {**labels, "index": nodes["index"], "writer": bool(nodes["writer"])}
    roster: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(roster, me)
    if local_rank == 0:
        tmp = out_dir / ".roster.json.tmp"
        tmp.write_text(json.dumps({"node": labels.get("node"), "ranks": roster}))
        os.replace(tmp, out_dir / "roster.json")
    return roster


def gather_payloads(
    nodes: dict[str, Any], payload: dict[str, Any], roster: list[dict[str, Any]], out_dir: Path
) -> dict[str, Any]:
    """Every rank's payload to the writing node's lowest rank (gather_object), which writes
    gathered.json for its bench run. Returns this rank's payload (an error if the gather failed)."""
    import torch.distributed as dist

    dst = min((e["rank"] for e in roster if e.get("writer")), default=0)
    mine = {**payload, "node_info": nodes.get("node_info") or {}}
    got: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == dst else None
    try:
        dist.gather_object(mine, got, dst=dst)
    except Exception as e:  # a peer died at the end: this rank's own work was fine, the case is not
        return {
            **payload,
            "status": "error",
            "message": f"gathering the case's records failed: {type(e).__name__}: {e}"[:2000],
        }
    if got is not None:
        from bench.results import clean

        tmp = out_dir / ".gathered.json.tmp"
        tmp.write_text(json.dumps(clean(got)))
        os.replace(tmp, out_dir / "gathered.json")
    return payload


def _gist(message: str) -> str:
    """An error message without torch's C++ source location, first line, at most 200 characters."""
    m = re.sub(r"\[[^\]]*\.(cc|cpp|h|hpp):\d+\]\s*", "", message.strip())
    return (m.splitlines() or [""])[0][:200]


def _read_json(p: Path) -> Any:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None
