"""How a case's processes are started: the command line and environment of one case.

  process   python -m bench.worker SPEC              (one fresh interpreter)
  reuse     python -m bench.worker --serve           (a warm interpreter shared by cheap cases)
  torchrun  python -m bench.launch TORCHRUN-ARGS -m bench.worker SPEC      (one node)
            python -m torch.distributed.run --rdzv-backend=c10d ... -m bench.worker SPEC   (several nodes)

One node: `python -m bench.launch` is torchrun (torch.distributed.run.main) with one more
rendezvous backend registered through torch's own registry, `bench-static`: torch's static
rendezvous whose TCPStore listens on the master address only. torch's TCPStore binds every
interface whatever host it is given (`*:PORT` in `ss -ltnp`); TCPStore's master_listen_fd takes a
socket we bound to 127.0.0.1 instead. The ranks are clients of that store (torchrun's agent store)
and gloo / NCCL sockets are bound to the loopback interface, so a single-node case listens on
loopback only (README, "Security"). The static rendezvous never unpickles what the store holds.

Several nodes (`bench run --nnodes N --rdzv-endpoint HOST:PORT`): torchrun's elastic agent with the
c10d rendezvous on every node, against the run's store that `bench run` on the node owning HOST
hosts for the whole run (bench/rendezvous.py); the ranks use that store for their process group.
Their gloo / NCCL sockets go on the interface that reaches the endpoint (collective_env), unless
the user named one.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from bench.contract import Launch

LOOPBACK = "127.0.0.1"
BACKEND = "bench-static"  # the single-node rendezvous registered by main() below
# Knobs of the collectives and the rendezvous that pass from `bench run`'s environment to the
# ranks unchanged (the environment is inherited) and are recorded in each row's fingerprint.
PASS_PREFIXES = ("NCCL_", "TORCH_NCCL_", "GLOO_", "FI_", "UCX_")
PASS_NAMES = ("MASTER_ADDR", "MASTER_PORT", "TP_SOCKET_IFNAME", "TORCH_DISTRIBUTED_DEBUG", "TORCH_CPP_LOG_LEVEL")
# Never recorded: a name that says token/password/secret/key, or a value shaped like one
# (32+ characters of a base64/hex alphabet: an API key, a bearer token) or a URL with a password.
SECRET_NAME = re.compile(r"(^|_)(TOKEN|PASS|PASSWD|PASSWORD|SECRET|KEY|APIKEY|CREDENTIALS?|AUTH|COOKIE)(_|$)", re.I)
SECRET_VALUE = re.compile(r"[A-Za-z0-9+/=_\-]{32,}|[a-z][a-z0-9+.\-]*://[^/\s:@]+:[^/\s@]+@", re.I)


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port free on host right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def loopback_ifname() -> str | None:
    """The loopback interface's name (lo on Linux, lo0 on macOS), or None."""
    try:
        names = [n for _, n in socket.if_nameindex()]
    except (OSError, AttributeError):
        return None
    return next((n for n in names if n in ("lo", "lo0")), None)


def worker_command(spec_path: Path | None) -> list[str]:
    """A plain or warm worker (spec_path None: --serve)."""
    return [sys.executable, "-m", "bench.worker", str(spec_path) if spec_path else "--serve"]


def loopback_env(port: int | None = None) -> dict[str, str]:
    """gloo's and NCCL's sockets on the loopback interface (a single node needs no network)."""
    env = {"MASTER_ADDR": LOOPBACK}
    if port is not None:
        env["MASTER_PORT"] = str(port)
    lo = loopback_ifname()
    if lo:
        env["GLOO_SOCKET_IFNAME"] = lo
        env["NCCL_SOCKET_IFNAME"] = lo
    return env


def torchrun_command(launch: Launch, spec_path: Path) -> tuple[list[str], dict[str, str]]:
    """The torchrun command line and extra environment of one single-node case."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "bench.launch",
        "--nnodes=1",
        f"--nproc-per-node={launch.nproc}",
        "--max-restarts=0",
        f"--rdzv-backend={BACKEND}",
        f"--rdzv-endpoint={LOOPBACK}:{port}",
        "--rdzv-conf=rank=0",
        f"--local-addr={LOOPBACK}",
        "-m",
        "bench.worker",
        str(spec_path),
    ]
    return cmd, loopback_env(port)


def multinode_command(
    spec_path: Path,
    *,
    nnodes: int,
    nproc_per_node: int,
    endpoint: str,
    rdzv_id: str,
    join_timeout_s: float,
    local_addr: str | None,
) -> tuple[list[str], dict[str, str]]:
    """torchrun on one node of a multi-node case: the c10d rendezvous against the run's store at
    `endpoint` (hosted by `bench run`, so no agent hosts one: is_host=false), one rendezvous id per
    case. TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1: the rank-0 agent opens no second store (torch's
    shared store listens on every interface); the ranks use the run's store (bench.worker)."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={nnodes}",
        f"--nproc-per-node={nproc_per_node}",
        "--max-restarts=0",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={endpoint}",
        f"--rdzv-id={rdzv_id}",
        f"--rdzv-conf=is_host=false,join_timeout={max(1, int(join_timeout_s))}",
    ]
    if local_addr:
        cmd.append(f"--local-addr={local_addr}")
    return [*cmd, "-m", "bench.worker", str(spec_path)], {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


# --- the environment a case runs with -------------------------------------------------------------
def passthrough_env(env: Mapping[str, str]) -> dict[str, str]:
    """The collective / rendezvous knobs in `env` (names and values), credentials dropped."""
    out = {}
    for k, v in env.items():
        if not (k.startswith(PASS_PREFIXES) or k in PASS_NAMES):
            continue
        if SECRET_NAME.search(k) or SECRET_VALUE.search(v):
            continue
        out[k] = v
    return dict(sorted(out.items()))


# --- endpoints and addresses ----------------------------------------------------------------------
def parse_endpoint(text: str) -> tuple[str, int]:
    """'HOST:PORT' or '[IPv6]:PORT' -> (host, port); ValueError with the reason."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\s\[\]]+):(\d+)", text.strip())
    if not m:
        raise ValueError(f"{text!r} is not HOST:PORT")
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"port {port} is not in 1-65535")
    return host, int(port)


def resolve(host: str) -> list[str]:
    """Every address `host` resolves to (IPv4 and IPv6), in the resolver's order; OSError if none."""
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(i[4][0]) for i in infos))


def is_loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr.split("%")[0]).is_loopback
    except ValueError:
        return False


def local_addresses() -> set[str]:
    """The IP addresses of this machine's interfaces (psutil)."""
    import psutil

    return {
        a.address.split("%")[0]
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family in (socket.AF_INET, socket.AF_INET6)
    }


def interface_address(ifname: str) -> str | None:
    """The first IPv4 address of interface `ifname` (else IPv6), or None."""
    import psutil

    addrs = psutil.net_if_addrs().get(ifname, [])
    for fam in (socket.AF_INET, socket.AF_INET6):
        for a in addrs:
            if a.family == fam:
                return str(a.address.split("%")[0])
    return None


def route_address(host: str, port: int) -> str | None:
    """The local address this machine uses to reach host:port (the kernel's route choice: a UDP
    socket's connect() sends nothing, it only picks the source address), or None without a route."""
    try:
        fam = socket.AF_INET6 if ":" in resolve(host)[0] else socket.AF_INET
        with socket.socket(fam, socket.SOCK_DGRAM) as s:
            s.connect((host, port))
            return str(s.getsockname()[0]).split("%")[0]
    except OSError:
        return None


def address_interface(addr: str) -> str | None:
    """The name of the interface holding `addr` (psutil), or None."""
    import psutil

    for name, addrs in psutil.net_if_addrs().items():
        if any(a.address.split("%")[0] == addr for a in addrs if a.family in (socket.AF_INET, socket.AF_INET6)):
            return str(name)
    return None


def collective_env(host: str, port: int, env: Mapping[str, str]) -> tuple[str | None, dict[str, str]]:
    """(the local address, the socket knobs) for the collectives of a multi-node case: the address
    and interface this node uses to reach the rendezvous endpoint host:port. The user's own
    GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME win (the address is then that interface's); otherwise both
    are set to the route's interface (gloo binds the address the host name resolves to, often
    127.0.0.1, and the other node cannot connect to it)."""
    named = named_interface(env)
    if named:
        addr = interface_address(named)
    else:
        addr = route_address(host, port)
    ifname = address_interface(addr) if addr and not named else None
    knobs = {k: ifname for k in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME") if ifname and not env.get(k)}
    return addr, knobs


def named_interface(env: Mapping[str, str]) -> str | None:
    """The one interface the user named for the collectives (GLOO_SOCKET_IFNAME, else
    NCCL_SOCKET_IFNAME), when it names exactly one (not a list or an exclusion: '^docker0,lo')."""
    for k in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):
        v = env.get(k, "").strip()
        if v and re.fullmatch(r"=?[\w.\-]+", v):
            return v.lstrip("=")
    return None


# --- `python -m bench.launch`: torchrun with the bench-static rendezvous --------------------------
def _bench_static_handler(params: Any) -> Any:
    """torch's static rendezvous (create_rdzv_handler's arguments) with the store on the endpoint's
    address only: the rank-0 agent hands TCPStore a socket bound there (master_listen_fd)."""
    from datetime import timedelta

    from torch.distributed import TCPStore
    from torch.distributed.elastic.rendezvous import static_tcp_rendezvous as st

    class LoopbackStaticRendezvous(st.StaticTCPRendezvous):
        def get_backend(self) -> str:
            return BACKEND

        def next_rendezvous(self) -> Any:
            if self._store is None and self.rank == 0:
                sock = socket.socket(socket.AF_INET6 if ":" in self.master_addr else socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((self.master_addr, self.master_port))
                sock.listen(512)
                self._store = TCPStore(
                    self.master_addr,
                    self.master_port,
                    world_size=self.world_size,
                    is_master=True,
                    timeout=timedelta(seconds=self.timeout.total_seconds()),
                    multi_tenant=True,
                    master_listen_fd=sock.detach(),  # the store owns the socket from here
                )
            return super().next_rendezvous()

    base = cast(st.StaticTCPRendezvous, st.create_rdzv_handler(params))
    rank = int(base.rank)  # --rdzv-conf rank=0 arrives as a string
    return LoopbackStaticRendezvous(
        base.master_addr, base.master_port, rank, base.world_size, base.run_id, int(base.timeout.total_seconds())
    )


def register_backend() -> None:
    from torch.distributed.elastic.rendezvous import rendezvous_handler_registry

    rendezvous_handler_registry.register(BACKEND, _bench_static_handler)


def main(argv: list[str]) -> None:
    register_backend()
    from torch.distributed.run import main as torchrun_main

    torchrun_main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
