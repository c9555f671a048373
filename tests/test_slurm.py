"""`bench slurm`: the batch script for 2 nodes x 8 GPUs, run under stand-ins for scontrol, srun and
hostname -- the srun line, the rendezvous endpoint taken from the allocation's first host, the
options passed through (sbatch's and the collectives' environment) -- and its submission."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.cli import main

RUN = ["--", "--plugin", "fsdp", "--stage", "3", "--world-size", "16"]


def _stub(d: Path, name: str, body: str) -> None:
    p = d / name
    p.write_text("#!/bin/bash\n" + body)
    p.chmod(p.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def slurm_stubs(tmp_path: Path) -> tuple[Path, Path]:
    """scontrol (two hosts), srun (logs itself; runs `-w` steps, records the bench command), hostname, ip."""
    bin_, log = tmp_path / "bin", tmp_path / "srun.log"
    bin_.mkdir()
    _stub(bin_, "scontrol", '[ "$1 $2" = "show hostnames" ] && printf "gpu-017\\ngpu-018\\n"\n')
    _stub(bin_, "hostname", 'echo "10.1.2.3 fd00::3"\n')
    _stub(bin_, "ip", 'echo "5: ib0    inet 10.9.8.7/16 brd 10.9.255.255 scope global ib0"\n')
    _stub(
        bin_,
        "srun",
        f'echo "srun $*" >> {log}\n'
        'while [[ $# -gt 0 && "$1" == -* ]]; do if [[ "$1" == "-w" ]]; then shift 2; else shift; fi; done\n'
        f'if [[ "$1" == *python* ]]; then echo "CMD $*" >> {log}; exit 0; fi\nexec "$@"\n',
    )
    return bin_, log


def _write(tmp_path: Path, *extra: str) -> tuple[str, Path]:
    script = tmp_path / "job.sbatch"
    args = [
        "slurm",
        "--nodes",
        "2",
        "--gpus-per-node",
        "8",
        "--time",
        "01:00:00",
        "--partition",
        "gpu",
        "--account",
        "proj7",
        "--out",
        "results/x.jsonl",
        "--script",
        str(script),
        *extra,
        *RUN,
    ]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    return script.read_text(), script


def _run(script: Path, stubs: tuple[Path, Path]) -> list[str]:
    bin_, log = stubs
    env = {
        **os.environ,
        "PATH": f"{bin_}:{os.environ['PATH']}",
        "SLURM_JOB_NODELIST": "gpu-[017-018]",
        "SLURM_JOB_ID": "4242",
    }
    r = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return log.read_text().splitlines()


def test_the_script_for_2_nodes_x_8_gpus(tmp_path, slurm_stubs):
    text, script = _write(tmp_path, "--env", "NCCL_DEBUG=WARN")
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --time=01:00:00",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=proj7",
        "export NCCL_DEBUG=WARN",
        'head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)',
    ):
        assert line in text.splitlines(), line
    log = _run(script, slurm_stubs)
    assert any("-w gpu-017 hostname --ip-address" in x for x in log), log  # the first host of the allocation
    (main_step,) = [x for x in log if x.startswith("srun --nodes=2")]
    assert "--ntasks-per-node=1" in main_step
    (cmd,) = [x for x in log if x.startswith("CMD ")]
    argv = shlex.split(cmd)[1:]
    assert argv[1:4] == ["-m", "bench.cli", "run"]
    want = {
        "--nnodes": "2",
        "--nproc-per-node": "8",
        "--rdzv-endpoint": "10.1.2.3:29500",
        "--rdzv-id": "4242",
        "--out": "results/x.jsonl",
    }
    for k, v in want.items():
        assert argv[argv.index(k) + 1] == v, (k, argv)
    assert argv[-6:] == RUN[1:]


def test_the_interface_names_the_address_and_the_collectives_socket(tmp_path, slurm_stubs):
    text, script = _write(tmp_path, "--interface", "ib0", "--port", "29600", "--sbatch-opt=--qos=high")
    assert (
        "export GLOO_SOCKET_IFNAME=ib0" in text
        and "export NCCL_SOCKET_IFNAME=ib0" in text
        and "#SBATCH --qos=high" in text
    )
    (cmd,) = [x for x in _run(script, slurm_stubs) if x.startswith("CMD ")]
    assert "--rdzv-endpoint 10.9.8.7:29600" in cmd


@pytest.mark.parametrize(
    "args, says",
    [
        (["--time", "1h", "--out", "x.jsonl", *RUN], "--time '1h'"),
        (
            ["--time", "1:00:00", "--out", "x.jsonl", "--", "--plugin", "fsdp", "--nnodes", "4"],
            "--nnodes is set by `bench slurm`",
        ),
        (["--time", "1:00:00", "--out", "x.jsonl"], "give the `bench run` arguments after --"),
        (["--time", "1:00:00", "--out", "x.jsonl", "--env", "HF_TOKEN=abc", *RUN], "--env 'HF_TOKEN=abc'"),
        (["--time", "1:00:00", "--out", "x.jsonl", "--partition", "a;rm -rf /", *RUN], "--partition"),
    ],
)
def test_bad_slurm_options_are_one_line(tmp_path, args, says):
    with CliRunner().isolated_filesystem(temp_dir=tmp_path):
        r = CliRunner().invoke(main, ["slurm", "--nodes", "2", *args])
    assert r.exit_code == 2 and says in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_submit_calls_sbatch_or_says_where_to(tmp_path, monkeypatch):
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    monkeypatch.setenv("PATH", str(bin_))
    args = ["slurm", "--nodes", "2", "--time", "01:00:00", "--out", str(tmp_path / "x.jsonl"), "--submit", *RUN]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and "sbatch is not on PATH" in r.output, r.output
    _stub(bin_, "sbatch", f'echo "$*" > {tmp_path}/sbatch.args; echo "4242;cluster"\n')
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0 and "submitted job 4242" in r.output, r.output
    assert (tmp_path / "sbatch.args").read_text().split() == ["--parsable", str(tmp_path / "x.sbatch")]
