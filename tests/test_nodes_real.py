"""Several nodes on real engines: two hosts made of two network namespaces joined by a veth pair
(scripts/nodes_env.sh: b25a 10.125.0.1 <-> b25b 10.125.0.2, addresses that exist only inside them),
and a real SLURM cluster over them (Debian's slurm-wlm and munge: slurmctld and slurmd n1 in b25a,
slurmd n2 in b25b). Issue 25.

Each host runs the README's command with no extra option (`bench run ... --nnodes 2 --nproc-per-node 1
--rdzv-endpoint 10.125.0.1:PORT`): the collectives find the interface that reaches the endpoint, every
listener is on the host's own address, and the faults of the README's table hold row by row: a
killed rank, a killed non-writing node, a killed writing node. Then `bench slurm --submit` for one
and two nodes, the job's rows checked.

Root only (CI runs as root): `make test-nodes` (.ci/run). Skipped with the reason where namespaces
cannot be made or SLURM is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import ROOT

from bench import stacks

pytestmark = pytest.mark.nodes

NS_A, NS_B = os.environ.get("BENCH_NS_A", "b25a"), os.environ.get("BENCH_NS_B", "b25b")
ADDR_A, ADDR_B = os.environ.get("BENCH_ADDR_A", "10.125.0.1"), os.environ.get("BENCH_ADDR_B", "10.125.0.2")
SLURM_DIR = Path(os.environ.get("BENCH_SLURM_DIR", "/tmp/b25-slurm"))
SCRIPT = ROOT / "scripts" / "nodes_env.sh"
CASE = [
    "--plugin",
    "fsdp",
    "--stage",
    "3",
    "--model",
    "tiny",
    "--world-size",
    "2",
    "--simulate",
    "false",
    "--params",
    "0",
    "--precision",
    "fp32",
    "--steps",
    "2",
    "--format",
    "none",
]


def _env_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def hosts():
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("nsenter"):
        pytest.skip("two hosts need root, ip (iproute2) and nsenter to make network namespaces")
    r = _env_script("up")
    if r.returncode != 0:
        pytest.skip(f"cannot create network namespaces here: {(r.stderr or r.stdout).strip()[-300:]}")
    yield
    _env_script("down")


def _in(ns: str, *cmd: str) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{ns}", *cmd]


def _bench(ns: str, args: list[str], out: Path) -> subprocess.Popen:
    """`bench run ARGS --out OUT` on host ns (nsenter execs it: the pid is bench run's)."""
    log = open(out.with_suffix(".log"), "w")
    cmd = _in(ns, sys.executable, "-m", "bench.cli", "run", *args, "--out", str(out))
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


def _nodes(port: int) -> list[str]:
    return ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-endpoint", f"{ADDR_A}:{port}", "--rdzv-timeout", "60"]


def _port() -> int:
    return 20000 + (os.getpid() * 7 + int(time.time())) % 20000  # the namespaces are ours: any port is free


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _case_rows(path: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in _rows(path):
        if r["kind"] == "case":
            out.setdefault(r["case_id"], []).append(r)
    return out


def _case_dir(proc: subprocess.Popen, case_id: str, timeout: float = 180) -> Path:
    """The folder of case `case_id` of bench run `proc` once every rank joined (its roster.json)."""
    end = time.time() + timeout
    while True:
        for d in Path("/tmp").glob(f"bench-case-{proc.pid}-*"):
            try:
                if json.loads((d / "spec.json").read_text())["case_id"] == case_id and (d / "roster.json").exists():
                    return d
            except (OSError, ValueError):
                pass
        assert proc.poll() is None and time.time() < end, f"bench run {proc.pid}: case {case_id} never had every rank"
        time.sleep(0.05)


def _ranks(proc: subprocess.Popen) -> list[psutil.Process]:
    out = []
    for p in psutil.Process(proc.pid).children(recursive=True):
        try:
            if stacks._module(p.cmdline()) == "bench.worker":  # a rank, not torchrun's agent
                out.append(p)
        except psutil.Error:
            pass
    return out


def _listeners(ns: str) -> list[str]:
    """Local addresses of the TCP listeners of bench's processes (python) in namespace ns."""
    r = subprocess.run(_in(ns, "ss", "-ltnpH"), capture_output=True, text=True, timeout=10)
    return [line.split()[3] for line in r.stdout.splitlines() if "slurm" not in line and line.strip()]


def _log(path: Path) -> str:
    return path.with_suffix(".log").read_text()[-3000:] if path.with_suffix(".log").exists() else ""


def _wait_row(path: Path, case_id: str, proc: subprocess.Popen, timeout: float) -> float:
    """Seconds until `path` holds a row of case_id."""
    t0 = time.time()
    while case_id not in _case_rows(path):
        assert time.time() - t0 < timeout, f"no row for {case_id} within {timeout} s:\n{_log(path)}"
        assert proc.poll() is None or case_id in _case_rows(path), f"ended without {case_id}:\n{_log(path)}"
        time.sleep(0.1)
    return time.time() - t0


def test_two_hosts_the_readme_command_a_killed_rank_and_a_killed_node(hosts, tmp_path):
    """Four cases (seq 64/96/128/160) on two hosts, with the README's command and no other option:
    1. ok: one file (A's) with both hosts' rows; each host's gloo/NCCL interface is its veth (recorded
       in the row); every listener in each namespace is on that host's address;
    2. B's rank SIGKILLed: A's case ends within seconds, its row names rank 1 on node 1;
    3. B's bench run SIGKILLed: A's row names node 1 as gone, within seconds;
    4. not started: a `skipped` row saying node 1 is gone."""
    a_out, b_out = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    args = [*CASE, "--seq", "64,96,128,160", *_nodes(_port())]
    a = _bench(NS_A, args, a_out)
    b = _bench(NS_B, args, b_out)
    try:
        # 1. while every rank is in the process group: who listens, and where
        _case_dir(b, "fsdp-001")
        seen_a, seen_b = set(_listeners(NS_A)), set(_listeners(NS_B))
        assert seen_a and all(x.startswith(f"{ADDR_A}:") for x in seen_a), seen_a
        assert all(x.startswith(f"{ADDR_B}:") for x in seen_b), seen_b
        # 2. B's rank killed once case 2 has every rank
        _case_dir(b, "fsdp-002")
        (rank,) = _ranks(b)
        rank.kill()
        took_rank = _wait_row(a_out, "fsdp-002", a, timeout=60)
        # 3. B's bench run killed in case 3
        _case_dir(b, "fsdp-003")
        b.kill()
        b.wait()
        took_node = _wait_row(a_out, "fsdp-003", a, timeout=60)
        assert a.wait(timeout=120) == 0, _log(a_out)
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
    print(f"\ntwo hosts: row after a killed rank in {took_rank:.1f} s, after a killed node in {took_node:.1f} s")
    assert not b_out.exists() or not _rows(b_out), "only the writing node writes"
    rows = _case_rows(a_out)
    ok = rows["fsdp-001"]
    assert sorted((r["labels"]["node"], r["labels"]["rank"], r["status"]) for r in ok) == [(0, 0, "ok"), (1, 1, "ok")]
    for r in ok:  # each host's collectives on its own veth, set by bench run and recorded
        ifname = f"{NS_A}v" if r["labels"]["node"] == 0 else f"{NS_B}v"
        env = r["fingerprint"]["env"]
        assert env["GLOO_SOCKET_IFNAME"] == ifname and env["NCCL_SOCKET_IFNAME"] == ifname, env
    (killed,) = rows["fsdp-002"]
    assert killed["status"] == "error", killed["message"]
    assert killed["labels"]["failed_rank"] == 1 and killed["labels"]["failed_node"] == 1, killed["labels"]
    assert "rank 1 on node 1" in killed["message"] and "died" in killed["message"], killed["message"]
    assert took_rank < 30, f"the case outlived the dead rank by {took_rank:.0f} s"
    (gone,) = rows["fsdp-003"]
    assert gone["status"] == "error" and gone["labels"]["failed_node"] == 1, gone
    assert gone["labels"]["failed_rank"] == 1 and "node 1" in gone["message"], gone["message"]
    assert took_node < 30, f"the writer waited {took_node:.0f} s for a gone node"
    (rest,) = rows["fsdp-004"]
    assert rest["status"] == "skipped" and "node 1" in rest["message"] and "gone" in rest["message"], rest


def test_two_hosts_a_killed_writing_node(hosts, tmp_path):
    """A (the writer, hosting the store) SIGKILLed mid-case: B writes the case that broke (an error
    row naming node 0, rank 0) and a `skipped` row for each case not started, saying why."""
    a_out, b_out = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    args = [*CASE, "--seq", "64,96,128", *_nodes(_port())]
    a = _bench(NS_A, args, a_out)
    b = _bench(NS_B, args, b_out)
    try:
        _case_dir(a, "fsdp-001")
        t0 = time.time()
        a.kill()
        a.wait()
        b.wait(timeout=120)
        took = time.time() - t0
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
    print(f"\ntwo hosts: the survivor ended {took:.1f} s after the writer was killed")
    assert not [r for r in _rows(a_out) if r["kind"] == "case"], "the writer died before its first row"
    rows = _case_rows(b_out)
    assert sorted(rows) == ["fsdp-001", "fsdp-002", "fsdp-003"], (rows, _log(b_out))
    (broke,) = rows["fsdp-001"]
    assert broke["status"] == "error" and broke["labels"]["failed_node"] == 0, broke
    assert broke["labels"]["failed_rank"] == 0 and "writing node" in broke["message"], broke["message"]
    for c in ("fsdp-002", "fsdp-003"):
        (r,) = rows[c]
        assert r["status"] == "skipped" and "unreachable" in r["message"], r
    assert took < 60, took


# --- a real SLURM cluster --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def slurm(hosts):
    if not shutil.which("slurmctld") or not shutil.which("munged"):
        pytest.skip("SLURM is not installed (.ci/run installs Debian's slurm-wlm and munge)")
    r = _env_script("slurm-up")
    assert r.returncode == 0, r.stdout + r.stderr
    yield {**os.environ, "SLURM_CONF": str(SLURM_DIR / "slurm.conf")}
    _env_script("down")
    _env_script("up")  # the hosts fixture's namespaces stay for its own teardown


def _job(env: dict[str, str], tmp: Path, name: str, nodes: int, run: list[str], *opts: str) -> tuple[Path, str, float]:
    """bench slurm --submit from host A; wait for the job; (its result file, its state, seconds)."""
    out = tmp / "with space" / f"{name}.jsonl"  # --out with a space: the #SBATCH line quotes it
    cmd = _in(NS_A, sys.executable, "-m", "bench.cli", "slurm", "--nodes", str(nodes), "--gpus-per-node", "0")
    cmd += ["--time", "00:10:00", "--out", str(out), *opts, "--submit", "--", *run]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    job = r.stdout.split("submitted job ")[1].split(";")[0]
    state = ""
    while time.time() - t0 < 300:
        s = subprocess.run(_in(NS_A, "scontrol", "show", "job", job), capture_output=True, text=True, env=env)
        state = next((w.split("=", 1)[1] for w in s.stdout.split() if w.startswith("JobState=")), "")
        if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            break
        time.sleep(0.5)
    return out, state, time.time() - t0


def test_bench_slurm_submit_on_one_and_two_nodes(slurm, tmp_path):
    """`bench slurm --submit` on a real cluster: one node (the single-node form) and two nodes (the
    head's address from SLURM's NodeAddr, no --interface): COMPLETED, each rank's row from its node,
    and each node's bench run given the cores its ranks need (--cpus-per-task)."""
    out1, state1, t1 = _job(slurm, tmp_path, "one", 1, [*CASE, "--seq", "64"])
    log1 = out1.with_suffix("").as_posix() + ".slurm-*.log"
    assert state1 == "COMPLETED", (state1, [p.read_text()[-2000:] for p in Path("/").glob(log1.lstrip("/"))])
    assert list(out1.parent.glob("one.slurm-*.log")), "the job's log where #SBATCH --output (quoted: a space) says"
    one = _case_rows(out1)["fsdp-001"]
    assert sorted(r["labels"]["rank"] for r in one) == [0, 1] and all(r["status"] == "ok" for r in one), one
    assert all(r["fingerprint"]["cpus_usable"] == min(2, os.cpu_count() or 1) for r in one), "one core per rank"
    cpus = min(2, os.cpu_count() or 1)
    out2, state2, t2 = _job(slurm, tmp_path, "two", 2, [*CASE, "--seq", "64"], "--cpus-per-task", str(cpus))
    log2 = out2.with_suffix("").as_posix() + ".slurm-*.log"
    assert state2 == "COMPLETED", (state2, [p.read_text()[-2000:] for p in Path("/").glob(log2.lstrip("/"))])
    two = _case_rows(out2)["fsdp-001"]
    assert sorted((r["labels"]["node"], r["labels"]["rank"]) for r in two) == [(0, 0), (1, 1)], two
    assert all(r["status"] == "ok" for r in two), [r["message"] for r in two]
    assert [r["fingerprint"]["cpus_usable"] for r in two] == [cpus, cpus], "each node's cores: --cpus-per-task"
    ifs = {r["labels"]["node"]: r["fingerprint"]["env"].get("GLOO_SOCKET_IFNAME") for r in two}
    assert ifs == {0: f"{NS_A}v", 1: f"{NS_B}v"}, ifs
    print(f"\nslurm: 1-node job {t1:.1f} s, 2-node job {t2:.1f} s (submit to COMPLETED)")
