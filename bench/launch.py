"""How a case's processes are started: the command line and environment of one case.

  process   python -m bench.worker SPEC              (one fresh interpreter)
  reuse     python -m bench.worker --serve           (a warm interpreter shared by cheap cases)
  torchrun  python -m torch.distributed.run ... -m bench.worker SPEC

Single node: torchrun's static rendezvous on 127.0.0.1 with a free port, gloo bound to the loopback
interface. (torch's TCPStore listens on every interface whatever host it is given -- see the README's
security note; the static rendezvous at least never unpickles what the store holds.)
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from bench.contract import Launch

LOOPBACK = "127.0.0.1"


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


def torchrun_command(launch: Launch, spec_path: Path) -> tuple[list[str], dict[str, str]]:
    """The torchrun command line and extra environment of one single-node case."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes=1", f"--nproc-per-node={launch.nproc}", "--max-restarts=0",
        "--rdzv-backend=static", f"--master-addr={LOOPBACK}", f"--master-port={port}", f"--local-addr={LOOPBACK}",
        "-m", "bench.worker", str(spec_path),
    ]  # fmt: skip
    env = {"MASTER_ADDR": LOOPBACK, "MASTER_PORT": str(port)}
    lo = loopback_ifname()
    if lo:
        env["GLOO_SOCKET_IFNAME"] = lo
    return cmd, env
