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

RUN = ["--", "--plugin", "fsdp", "--stage", "3", "--world-size", "16", "--simulate", "false", "--params", "0"]


def _stub(d: Path, name: str, body: str) -> None:
    p = d / name
    p.write_text("#!/bin/bash\n" + body)
    p.chmod(p.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def slurm_stubs(tmp_path: Path) -> tuple[Path, Path]:
    """scontrol (two hosts; the first one's NodeAddr), srun (logs itself; runs `-w` steps, records the
    bench command), ip."""
    bin_, log = tmp_path / "bin", tmp_path / "srun.log"
    bin_.mkdir()
    _stub(
        bin_,
        "scontrol",
        '[ "$1 $2" = "show hostnames" ] && printf "gpu-017\\ngpu-018\\n"\n'
        '[ "$1 $2 $3" = "show node gpu-017" ] && echo "NodeName=gpu-017 Arch=x86_64 CoresPerSocket=8"'
        ' && echo "   NodeAddr=${STUB_NODEADDR:-10.1.2.3} NodeHostName=gpu-017 Version=22.05.8"\nexit 0\n',
    )
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


def _run(script: Path, stubs: tuple[Path, Path], rc: int = 0, **extra: str) -> list[str]:
    bin_, log = stubs
    log.unlink(missing_ok=True)
    env = {
        **extra,
        **os.environ,
        "PATH": f"{bin_}:{os.environ['PATH']}",
        "SLURM_JOB_NODELIST": "gpu-[017-018]",
        "SLURM_JOB_ID": "4242",
    }
    r = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == rc, r.stderr
    return (log.read_text().splitlines() if log.exists() else []) + r.stderr.splitlines()


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
    assert "#SBATCH --cpus-per-task=8" in text.splitlines()  # one core per rank unless --cpus-per-task
    log = _run(script, slurm_stubs)
    (main_step,) = [x for x in log if x.startswith("srun --nodes=2")]
    assert "--ntasks-per-node=1" in main_step and "--cpus-per-task=8" in main_step  # srun does not inherit it
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
    assert argv[-len(RUN) + 1 :] == RUN[1:]


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
        (
            ["--time", "1:00:00", "--out", "x.jsonl", *RUN, "--all-nodes-local"],
            "--all-nodes-local runs every node on one host",
        ),
        # issue 30 item 19: what `bench run` would refuse on the nodes, refused before a script exists
        (
            ["--time", "1:00:00", "--out", "x.jsonl", "--nproc-per-node", "8", *RUN[:6], "8", *RUN[7:]],
            "needs 8 ranks, but --nnodes 2 x --nproc-per-node 8 = 16",
        ),
        (["--time", "1:00:00", "--out", "x.jsonl", "--", "--plugin", "nosuch"], "nosuch"),
        (["--time", "1:00:00", "--out", "x.jsonl", "--nproc-per-node", "1024", *RUN], "= 2048"),
        (["--time", "1:00:00", "--out", "x.jsonl", "--", "--plugin", "fsdp", "--stage", "3"], "runs in one process"),
        (["--time", "1:00:00", "--out", "x.jsonl", "--", "--plugin", "fsdp", "--bogus", "1"], "--bogus"),
        (["--time", "1:00:00", "--out", "", *RUN], "--out: an empty path"),
        (["--time", "1:00:00", "--out", "x.jsonl"], "give the `bench run` arguments after --"),
        (["--time", "1:00:00", "--out", "x.jsonl", "--env", "HF_TOKEN=abc", *RUN], "--env 'HF_TOKEN=abc'"),
        (["--time", "1:00:00", "--out", "x.jsonl", "--partition", "a;rm -rf /", *RUN], "--partition"),
    ],
)
def test_bad_slurm_options_are_one_line(tmp_path, args, says):
    with CliRunner().isolated_filesystem(temp_dir=tmp_path) as d:
        r = CliRunner().invoke(main, ["slurm", "--nodes", "2", *args])
        assert not list(Path(d).rglob("*.sbatch")), "no script for a job that can only fail"
    assert r.exit_code == 2 and says in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_65536_nodes_of_1024_ranks_are_refused_before_the_script(tmp_path):
    r = CliRunner().invoke(
        main, ["slurm", "--nodes", "65536", "--nproc-per-node", "1024", "--time", "1:00:00", "--out", "x.jsonl", *RUN]
    )
    assert r.exit_code == 2 and "needs 16 ranks, but --nnodes 65536 x --nproc-per-node 1024" in r.output, r.output


def test_one_node_is_the_single_node_form(tmp_path, slurm_stubs):
    """--nodes 1: a plain `bench run` (its private loopback rendezvous), no --nnodes/--rdzv-endpoint,
    which `bench run` refuses with one node; the cores are the case's world size (issue 25)."""
    script = tmp_path / "one.sbatch"
    args = ["slurm", "--nodes", "1", "--gpus-per-node", "0", "--time", "10:00", "--out", "r.jsonl"]
    r = CliRunner().invoke(main, [*args, "--script", str(script), "--", *RUN[1:6], "2", *RUN[7:]])
    assert r.exit_code == 0, r.output
    text = script.read_text()
    assert "#SBATCH --cpus-per-task=2" in text and "CPU only" in text and "#SBATCH --gpus-per-node" not in text
    log = _run(script, slurm_stubs)
    (cmd,) = [x for x in log if x.startswith("CMD ")]
    argv = shlex.split(cmd)[1:]
    assert argv[1:4] == ["-m", "bench.cli", "run"] and "--nnodes" not in argv and "--rdzv-endpoint" not in argv
    assert [x for x in log if x.startswith("srun --nodes=1 ")], log


def test_the_head_address_comes_from_slurm_not_the_host_name(tmp_path, slurm_stubs):
    """No --interface: the first node's NodeAddr from `scontrol show node`, resolved; a NodeAddr that
    resolves only to loopback (Debian's 127.0.1.1 host line) stops the job with one line, before
    any bench run (issue 25: `hostname --ip-address` gave 127.0.0.1)."""
    _, script = _write(tmp_path)
    (cmd,) = [x for x in _run(script, slurm_stubs) if x.startswith("CMD ")]
    assert "--rdzv-endpoint 10.1.2.3:29500" in cmd
    log = _run(script, slurm_stubs, rc=1, STUB_NODEADDR="localhost")
    assert not [x for x in log if x.startswith("CMD ")]
    assert any("no non-loopback address found for gpu-017" in x for x in log), log


def test_an_out_with_a_space_is_quoted_on_the_sbatch_line(tmp_path):
    script = tmp_path / "s.sbatch"
    out = tmp_path / "my results" / "x.jsonl"
    args = ["slurm", "--nodes", "2", "--time", "10:00", "--out", str(out), "--script", str(script), *RUN]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    line = next(x for x in script.read_text().splitlines() if x.startswith("#SBATCH --output="))
    assert line == f'#SBATCH --output="{tmp_path}/my results/x.slurm-%j.log"', line
    r = CliRunner().invoke(main, [*args[:6], str(tmp_path / 'a"b.jsonl'), *args[7:]])
    assert r.exit_code == 2 and "double quote" in r.output, r.output


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
