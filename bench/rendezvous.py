"""Several nodes, one run: the store `bench run` hosts for the run, and the lock-step of its cases.

`bench run --nnodes N --nproc-per-node M --rdzv-endpoint HOST:PORT [--rdzv-id ID]` on every node:

  join    the node that owns HOST binds HOST:PORT (that address only: TCPStore's master_listen_fd)
          and hosts a TCPStore for the whole run; the others connect (retrying up to
          --rdzv-timeout). Every node checks in with a digest of its case plan; a node missing
          after --rdzv-timeout, or one with another plan, ends the run with one line.
  agree   before each case every node says "run" or why not (unavailable here, deadline): all run
          it or all skip it with that reason. A node that is gone or never arrives: a skipped row
          for the case and for each remaining one, saying which node.
  case    torchrun on every node, c10d rendezvous id ID-<case id> against this store; the ranks'
          process group uses it too, gloo/NCCL on the interface that reaches the store
          (bench.launch.collective_env). The ranks gather their records on the writing node's
          lowest rank (gather_object, see the worker side below). While it runs each node polls
          the store (watch): a node whose part failed says so (mark_failed) and the others kill
          theirs at once; a node whose heartbeat stopped, or a store that is gone, ends it too.
  settle  every node publishes its view of the case (status, its ranks, which died); the writer
          combines them: the gathered records, or one failure row naming the node, host and rank
          that failed first (a rank that died > a node that went silent > an error > a timeout).
  close   every node says it leaves; the writer keeps the store up until all have.

The writer is the node hosting the store (the first node of a SLURM allocation): it alone appends
to --out. The others write nothing -- unless the writer is gone (the store unreachable): then each
writes its own view of the case that broke and of the cases it could not start. Each bench run
bumps a heartbeat counter every HEARTBEAT_S; a node whose counter stands still for STALE_S is gone.
Our keys (bench/<ID>/...) hold JSON; torch's c10d rendezvous state in the same store is pickled by
torch (README, "Security").
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.errors import HarnessError, UsageError
from bench.launch import (
    LOOPBACK,
    collective_env,
    is_loopback,
    local_addresses,
    loopback_env,
    multinode_command,
    parse_endpoint,
    resolve,
)
from bench.nodecase import _read_json, combine, local_view, with_node

HEARTBEAT_S = 0.5
STALE_S = 5.0  # a heartbeat that has not moved for this long: that bench run is gone
POLL_S = 0.1
GRACE_S = 30.0  # after a case's limit: time for the others' kill, clean-up and report


@dataclass(frozen=True)
class NodeConfig:
    """The multi-node options of `bench run`, validated."""

    nnodes: int
    nproc_per_node: int
    host: str
    port: int
    rdzv_id: str
    timeout_s: float
    all_local: bool

    @property
    def endpoint(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def node_config(
    nnodes: int,
    nproc_per_node: int | None,
    endpoint: str | None,
    rdzv_id: str | None,
    timeout_s: float,
    all_local: bool,
    worlds: list[tuple[str, str, int | None]],
) -> NodeConfig | None:
    """Check the multi-node options against the cases before anything launches (UsageError, one
    line). worlds: (plugin, case label, ranks the case needs -- None for a single-process case).
    A case's world size is the total over all nodes: it must equal nnodes x nproc-per-node."""
    if nnodes == 1:
        extra = [
            n
            for n, v in (("--rdzv-endpoint", endpoint), ("--rdzv-id", rdzv_id), ("--nproc-per-node", nproc_per_node))
            if v
        ]
        if extra or all_local:
            raise UsageError(
                f"{(extra or ['--all-nodes-local'])[0]} is for runs over several nodes (--nnodes > 1); "
                "a single node uses a private loopback rendezvous"
            )
        return None
    if not endpoint:
        raise UsageError(
            "--nnodes > 1 needs --rdzv-endpoint HOST:PORT (an address of the first node every node can reach)"
        )
    try:
        host, port = parse_endpoint(endpoint)
    except ValueError as e:
        raise UsageError(f"--rdzv-endpoint: {e}") from None
    try:
        addrs = resolve(host)
    except OSError as e:
        raise UsageError(f"--rdzv-endpoint: cannot resolve {host!r} ({e})") from None
    if any(_unspecified(a) for a in addrs):
        raise UsageError(
            f"--rdzv-endpoint {endpoint}: {host} is the any-address, not a node; give the first node's address "
            "on the cluster network (the store listens on that address only)"
        )
    loop = [a for a in addrs if is_loopback(a)]
    if loop and not all_local:
        raise UsageError(
            f"--rdzv-endpoint {endpoint} resolves to the loopback address {loop[0]}: every other node would "
            f"look for the rendezvous on itself and wait until --rdzv-timeout; give this node's address on "
            f"the cluster network (or --all-nodes-local when every node runs on this host)"
        )
    if all_local and len(loop) < len(addrs):
        raise UsageError(
            f"--all-nodes-local runs every node on this host: give a loopback endpoint ({LOOPBACK}:PORT), not {endpoint}"
        )
    rid = rdzv_id or os.environ.get("SLURM_JOB_ID") or "bench"
    if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", rid):
        raise UsageError(f"--rdzv-id {rid!r}: use 1-64 letters, digits, '.', '_' or '-'")
    per = check_worlds(nnodes, nproc_per_node, worlds)
    return NodeConfig(nnodes, per, host, port, rid, float(timeout_s), all_local)


def check_worlds(nnodes: int, nproc_per_node: int | None, worlds: list[tuple[str, str, int | None]]) -> int:
    """Every case a torchrun case of nnodes x ranks-per-node ranks (UsageError, one line); the ranks per node."""
    per = nproc_per_node
    for plugin, label, world in worlds:
        if world is None:
            raise UsageError(
                f"{plugin} case ({label}) runs in one process: with --nnodes {nnodes} every case must be "
                "a torchrun case (give the plugin's multi-rank form: for fsdp, --simulate false --params 0)"
            )
        if per is None:
            if world % nnodes:
                raise UsageError(f"{plugin} case ({label}) needs {world} ranks: not a multiple of --nnodes {nnodes}")
            per = world // nnodes
        if world != nnodes * per:
            raise UsageError(
                f"{plugin} case ({label}) needs {world} ranks, but --nnodes {nnodes} x --nproc-per-node "
                f"{per} = {nnodes * per}: make the case's world size (e.g. --world-size) match"
            )
    return per or 1


def plan_digest(cfg: NodeConfig, plan: list[tuple[str, list[dict[str, Any]]]], profile: str) -> str:
    """What every node must agree on to run in lock-step: the case plan and the node layout."""
    blob = json.dumps([cfg.nnodes, cfg.nproc_per_node, cfg.rdzv_id, profile, plan], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Nodes:
    """This node's handle on the run (see the module docstring)."""

    cfg: NodeConfig
    store: Any
    index: int
    hosting: bool
    run_id: str
    hosts: dict[int, str] = field(default_factory=dict)
    writer_index: int = 0
    writer_gone: bool = False
    broken: str = ""  # set when the lock-step broke: why the remaining cases are not started
    last_limit_s: float = 0.0
    _seen: dict[int, tuple[int, float]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    # -- joining ---------------------------------------------------------------------------------
    @classmethod
    def join(cls, cfg: NodeConfig, digest: str, run_id: str, say: Any = None) -> Nodes:
        """Host the run's store (on the node owning the endpoint) or connect to it, check in, and
        wait for every node (HarnessError with who joined, after --rdzv-timeout)."""
        store, hosting = _open_store(cfg)
        n = cls(cfg, store, -1, hosting, run_id)
        try:
            n.index = int(store.add(n._k("joined"), 1)) - 1
            if n.index >= cfg.nnodes:
                raise HarnessError(
                    f"rendezvous {cfg.endpoint} (id {cfg.rdzv_id}): more than --nnodes {cfg.nnodes} nodes "
                    "joined (a node started twice, or a stale run with the same id?)"
                )
            me = {"host": socket.gethostname(), "pid": os.getpid(), "hosting": hosting, "plan": digest}
            store.set(n._k(f"node/{n.index}"), json.dumps(me))
            if hosting:
                store.set(n._k("run_id"), run_id)
            n._start_heartbeat()
            if say:
                say(
                    f"rendezvous {cfg.endpoint} (id {cfg.rdzv_id}): node {n.index} on {me['host']}"
                    + (", hosting the run's store; this node writes the result file" if hosting else "")
                    + f"; waiting up to {cfg.timeout_s:g} s for {cfg.nnodes} nodes"
                )
            end = time.monotonic() + cfg.timeout_s
            while int(store.add(n._k("joined"), 0)) < cfg.nnodes or not store.check([n._k("run_id")]):
                if time.monotonic() > end:
                    who = ", ".join(n._host(j) for j in range(cfg.nnodes) if store.check([n._k(f"node/{j}")]))
                    joined = int(store.add(n._k("joined"), 0))
                    raise HarnessError(
                        f"rendezvous {cfg.endpoint} (id {cfg.rdzv_id}): {joined} of {cfg.nnodes} nodes "
                        f"joined within {cfg.timeout_s:g} s (--rdzv-timeout): {who or 'none'}; start the "
                        "same `bench run` on every node"
                    )
                time.sleep(POLL_S)
            for j in range(cfg.nnodes):
                store.wait([n._k(f"node/{j}")], timedelta(seconds=cfg.timeout_s))
                other = json.loads(store.get(n._k(f"node/{j}")))
                n.hosts[j] = other["host"]
                if other["hosting"]:
                    n.writer_index = j
                if other["plan"] != digest:
                    raise HarnessError(
                        f"node {j} ({other['host']}) runs another case plan than this node: give every "
                        "node the same `bench run` arguments (plugins, flags, profile, --nnodes, --rdzv-id)"
                    )
            n.run_id = store.get(n._k("run_id")).decode()
        except (RuntimeError, OSError) as e:  # torch's DistNetworkError / DistStoreError are RuntimeErrors
            n._stop.set()
            raise HarnessError(f"rendezvous {cfg.endpoint}: the store went away while joining ({_short(e)})") from None
        except BaseException:
            n._stop.set()
            raise
        return n

    @property
    def ranks_here(self) -> int:
        """Ranks sharing this machine's cores: every node's when all run here (--all-nodes-local)."""
        return self.cfg.nproc_per_node * (self.cfg.nnodes if self.cfg.all_local else 1)

    @property
    def writes(self) -> bool:
        """Does this node append rows to --out? The writer; any node once the writer is gone."""
        return self.hosting or self.writer_gone

    # -- before a case -----------------------------------------------------------------------------
    def agree(self, case_id: str, why: str | None) -> tuple[str, str] | None:
        """None: every node runs the case now. Else (status, message) for every node's row."""
        if self.broken:
            return "skipped", self.broken
        c = self._k(f"case/{case_id}")
        try:
            self.store.set(f"{c}/plan/{self.index}", json.dumps({"why": why or ""}))
            self.store.add(f"{c}/arrived", 1)
            # the others may still be in the previous case (up to its limit): wait while they live
            end = time.monotonic() + self.cfg.timeout_s + self.last_limit_s
            while int(self.store.add(f"{c}/arrived", 0)) < self.cfg.nnodes:
                gone = [
                    j for j in range(self.cfg.nnodes) if not self.store.check([f"{c}/plan/{j}"]) and not self._alive(j)
                ]
                if gone or time.monotonic() > end:
                    late = gone or [j for j in range(self.cfg.nnodes) if not self.store.check([f"{c}/plan/{j}"])]
                    names = ", ".join(f"node {j} ({self._host(j)})" for j in late)
                    self.broken = f"not started: {names} left the run before case {case_id}"
                    waited = self.cfg.timeout_s + self.last_limit_s
                    what = "is gone (its bench run ended)" if gone else f"did not arrive within {waited:.0f} s"
                    return "skipped", f"not started: {names} {what}; the rest of the run is not started either"
                time.sleep(POLL_S)
            whys = [(j, json.loads(self.store.get(f"{c}/plan/{j}"))["why"]) for j in range(self.cfg.nnodes)]
        except (RuntimeError, OSError) as e:
            return "skipped", self._lost(e)
        why_not = [(j, w) for j, w in whys if w]
        if why_not:
            j, w = why_not[0]
            return "skipped", w + ("" if j == self.index else f" (on node {j}, {self._host(j)})")
        return None

    def case_spec(self, case_id: str, node_info: dict[str, Any]) -> dict[str, Any]:
        """What the ranks of this node need (bench.worker): the store, the writer flag, who we are."""
        return {
            "host": self.cfg.host,
            "port": self.cfg.port,
            "prefix": self._k(f"case/{case_id}/pg"),
            "writer": self.hosting,
            "index": self.index,
            "timeout_s": self.cfg.timeout_s,
            "node_info": node_info,
        }

    def command(self, spec_path: Path, case_id: str, limit_s: float) -> tuple[list[str], dict[str, str]]:
        self.last_limit_s = limit_s
        local, knobs = (
            (LOOPBACK, {}) if self.cfg.all_local else collective_env(self.cfg.host, self.cfg.port, os.environ)
        )
        cmd, env = multinode_command(
            spec_path,
            nnodes=self.cfg.nnodes,
            nproc_per_node=self.cfg.nproc_per_node,
            endpoint=self.cfg.endpoint,
            rdzv_id=f"{self.cfg.rdzv_id}-{case_id}",
            join_timeout_s=min(self.cfg.timeout_s, limit_s),
            local_addr=local,
        )
        if self.cfg.all_local:  # every node on this host: the collectives on loopback too
            env.update({k: v for k, v in loopback_env().items() if k.endswith("IFNAME")})
        env.update(knobs)  # the interface that reaches the endpoint (recorded in the rows' env)
        return cmd, env

    # -- while a case runs ------------------------------------------------------------------------------
    def watch(self, case_id: str) -> str:
        """Why this node must end its part of the running case now, else "": another node's part
        failed (a rank died: its torchrun ended with an error), a node's heartbeat stopped, or the
        run's store is unreachable (the writing node is gone: this node then writes)."""
        c = self._k(f"case/{case_id}")
        try:
            if int(self.store.add(f"{c}/failed", 0)):
                for j in range(self.cfg.nnodes):
                    if j != self.index and self.store.check([f"{c}/failed/{j}"]):
                        why = self.store.get(f"{c}/failed/{j}").decode()
                        return f"node {j} ({self._host(j)}) ended its part of the case: {why[:300]}"
            gone = [j for j in range(self.cfg.nnodes) if not self._alive(j)]
            if gone:
                j = gone[0]
                return f"node {j} ({self._host(j)}) is gone: its bench run's heartbeat stopped for {STALE_S:g} s"
        except (RuntimeError, OSError) as e:
            self._lost(e)
            return self._writer_gone_text(e)
        return ""

    def mark_failed(self, case_id: str, why: str) -> None:
        """This node's part of the case failed: tell the others (they stop theirs: watch)."""
        c = self._k(f"case/{case_id}")
        try:
            self.store.set(f"{c}/failed/{self.index}", why[:1000])
            self.store.add(f"{c}/failed", 1)
        except (RuntimeError, OSError) as e:
            self._lost(e)

    # -- after a case --------------------------------------------------------------------------------
    def local_ranks(self, tdp: Path) -> list[int] | None:
        """The global ranks this node ran (its ranks' roster), None before the process group existed."""
        roster = _read_json(tdp / "roster.json") or {}
        ranks = sorted(e["rank"] for e in roster.get("ranks", []) if e.get("index") == self.index)
        return ranks or None

    def settle(self, case_id: str, local: Any, tdp: Path, started: float, limit_s: float, stopped: str = "") -> Any:
        """Publish this node's view of the case; on the writer, combine every node's into the
        case's result (bench.runner.CaseResult). A non-writer returns its own view, written only
        when the writer is gone. stopped: why this node ended its part early (Nodes.watch)."""
        from bench.runner import CaseResult

        view = local_view(local, tdp, self.index, stopped)
        c = self._k(f"case/{case_id}")
        if self.writer_gone:
            return self._survivor_row(local, view, stopped)
        try:
            self.store.set(f"{c}/report/{self.index}", json.dumps(view))
            if not self.hosting:
                # a round trip: a set to a store whose process died may look sent; add needs an answer
                self.store.add(f"{c}/reported", 1)
                return with_node(local, view)
            reports: dict[int, dict[str, Any] | None] = {self.index: view}
            end = started + limit_s + GRACE_S
            for j in range(self.cfg.nnodes):
                while j not in reports:
                    if self.store.check([f"{c}/report/{j}"]):
                        reports[j] = json.loads(self.store.get(f"{c}/report/{j}"))
                    elif not self._alive(j) or time.time() > end:
                        reports[j] = None
                    else:
                        time.sleep(POLL_S)
        except (RuntimeError, OSError) as e:
            self._lost(e)
            return self._survivor_row(local, view, self._writer_gone_text(e))
        gathered = _read_json(tdp / "gathered.json")
        status, message, labels, records = combine(
            reports, gathered, self.hosts, self.cfg.nnodes * self.cfg.nproc_per_node
        )
        return CaseResult(status, message, records, labels)

    def close(self) -> None:
        """Say this node leaves; the writer keeps the store up until every node has (or is gone)."""
        try:
            self.store.set(self._k(f"left/{self.index}"), "1")
            if self.hosting:
                end = time.monotonic() + min(60.0, self.cfg.timeout_s)
                while time.monotonic() < end:
                    left = [
                        self.store.check([self._k(f"left/{j}")]) or not self._alive(j) for j in range(self.cfg.nnodes)
                    ]
                    if all(left):
                        break
                    time.sleep(POLL_S)
        except (RuntimeError, OSError):
            pass
        self._stop.set()

    # -- helpers -------------------------------------------------------------------------------------
    def _k(self, name: str) -> str:
        return f"bench/{self.cfg.rdzv_id}/{name}"

    def _host(self, j: int) -> str:
        if j in self.hosts:
            return self.hosts[j]
        try:
            if self.store.check([self._k(f"node/{j}")]):
                self.hosts[j] = json.loads(self.store.get(self._k(f"node/{j}")))["host"]
                return self.hosts[j]
        except (RuntimeError, OSError):
            pass
        return "?"

    def _alive(self, j: int) -> bool:
        """Has node j's heartbeat moved within STALE_S (first sight counts as alive)?"""
        if j == self.index:
            return True
        if self.store.check([self._k(f"left/{j}")]):
            return False
        v = int(self.store.add(self._k(f"alive/{j}"), 0))
        now = time.monotonic()
        seen = self._seen.get(j)
        if seen is None or seen[0] != v:
            self._seen[j] = (v, now)
            return True
        return now - seen[1] < STALE_S

    def _writer_gone_text(self, e: BaseException) -> str:
        w = self.writer_index
        return (
            f"node {w} ({self._host(w)}), the writing node, is gone: the run's store at {self.cfg.endpoint} "
            f"is unreachable ({_short(e)}); node {self.index} writes from here on"
        )

    def _survivor_row(self, local: Any, view: dict[str, Any], why: str) -> Any:
        """The case that broke as this node saw it, when the writer is gone: one error row naming
        the writing node (its lowest rank from the ranks' roster) as the failure."""
        writer = [e for e in view.get("roster", []) if e.get("writer")]
        first = min(writer, key=lambda e: e["rank"]) if writer else None
        local.status = "error"
        local.message = why + (f"; here: {local.message[:600]}" if local.message else "")
        local.records = []
        local.labels = {
            **local.labels,
            "failed_rank": first["rank"] if first else None,
            "failed_node": first["node"] if first else None,
            "failed_host": first["host"] if first else self.hosts.get(self.writer_index, "?"),
        }
        return local

    def _lost(self, e: BaseException) -> str:
        self.writer_gone = True
        self.broken = f"not started: the run's store at {self.cfg.endpoint} is unreachable (the writing node's bench run ended: {_short(e)})"
        return self.broken

    def _start_heartbeat(self) -> None:
        hb = self.store.clone()  # its own connection: the main thread may be blocked in a store call
        key = self._k(f"alive/{self.index}")

        def beat() -> None:
            while not self._stop.wait(HEARTBEAT_S):
                try:
                    hb.add(key, 1)
                except (RuntimeError, OSError):
                    return

        threading.Thread(target=beat, name="bench-heartbeat", daemon=True).start()


def _open_store(cfg: NodeConfig) -> tuple[Any, bool]:
    """Host the store on the endpoint's own address when it is one of this machine's, else connect."""
    import torch.distributed as dist

    mine = local_addresses()
    addrs = resolve(cfg.host)
    bind = next((a for a in addrs if a in mine or (cfg.all_local and is_loopback(a))), None)
    t = timedelta(seconds=cfg.timeout_s)
    if bind is not None:
        sock = socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((bind, cfg.port))
            sock.listen(1024)
            store = dist.TCPStore(
                bind, cfg.port, is_master=True, wait_for_workers=False, timeout=t, master_listen_fd=sock.detach()
            )
            return store, True
        except OSError as e:
            sock.close()
            if not (e.errno == errno.EADDRINUSE and cfg.all_local):
                raise HarnessError(
                    f"--rdzv-endpoint {cfg.endpoint}: cannot listen on {bind}:{cfg.port} ({e.strerror})"
                ) from None
    try:
        return dist.TCPStore(cfg.host, cfg.port, is_master=False, timeout=t), False
    except (RuntimeError, OSError) as e:
        raise HarnessError(
            f"rendezvous {cfg.endpoint}: not reachable within {cfg.timeout_s:g} s (--rdzv-timeout); is "
            f"`bench run` started on the node that owns {cfg.host}? ({_short(e)})"
        ) from None


def _unspecified(addr: str) -> bool:
    """0.0.0.0 or :: (listen on every interface; no node can be reached there)."""
    import ipaddress

    try:
        return ipaddress.ip_address(addr.split("%")[0]).is_unspecified
    except ValueError:
        return False


def _short(e: BaseException) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first[:200]}"


# --- `bench run` glue ---------------------------------------------------------------------------------
def check_options(
    nnodes: int,
    nproc_per_node: int | None,
    endpoint: str | None,
    rdzv_id: str | None,
    timeout_s: float,
    all_local: bool,
    plan: list[tuple[Any, list[Any]]],
) -> NodeConfig | None:
    """node_config over a `bench run` plan [(plugin, cases)] (UsageError before anything launches)."""
    return node_config(nnodes, nproc_per_node, endpoint, rdzv_id, timeout_s, all_local, worlds_of(plan))


def worlds_of(plan: list[tuple[Any, list[Any]]]) -> list[tuple[str, str, int | None]]:
    """(plugin, case label, ranks -- None for a single-process case) of every case of a plan."""
    from bench.runner import case_label

    worlds: list[tuple[str, str, int | None]] = []
    for p, cases in plan:
        for c in cases:
            launch = p.launch(c)
            worlds.append((p.name, case_label(c), launch.nproc if launch.kind == "torchrun" else None))
    return worlds


def start(cfg: NodeConfig, plan: list[tuple[Any, list[Any]]], profile: str, run_id: str, say: Any) -> Nodes:
    """Join the run's rendezvous with this node's plan (every node must have the same)."""
    import dataclasses

    digest = plan_digest(cfg, [(p.name, [dataclasses.asdict(c) for c in cases]) for p, cases in plan], profile)
    return Nodes.join(cfg, digest, run_id, say)
