"""Isolation: an OOM, a crash, a timeout, a killed rank each become a row and the run goes on;
Ctrl-C keeps finished rows; no process is left behind; concurrent writers lose nothing."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, run_bench, worker_processes

from bench.results import append_rows, read_rows


def _rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_oom_crash_timeout_become_rows_and_the_run_goes_on(thirdparty, tmp_path):
    out = tmp_path / "f.jsonl"
    # the faulty plugin's grid: ok, oom, crash, hang (10 s limit: a busy machine may need seconds to start it), ok
    r = run_bench(
        "run", "--plugin", "faulty", "--out", str(out), pythonpath=[thirdparty], env={"TMPDIR": str(tmp_path)}
    )
    assert r.returncode == 0, r.stderr
    rows = [x for x in _rows(out) if x["kind"] == "case"]
    assert [(x["params"]["mode"], x["status"]) for x in rows] == [
        ("ok", "ok"),
        ("oom", "oom"),
        ("crash", "error"),
        ("hang", "timeout"),
    ]
    assert "can't allocate memory" in rows[1]["message"]
    assert "SIGSEGV" in rows[2]["message"]
    assert "time limit of 10 s" in rows[3]["message"]
    # the hung child wrote its pid: it must be gone
    pids = [int(p.read_text()) for p in tmp_path.rglob("bench-faulty-*.pid")]
    assert pids, "the hang case did not start"
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split()[2]
    # strict mode turns failed rows into exit 1
    r = run_bench(
        "run",
        "--plugin",
        "faulty",
        "--mode",
        "raise",
        "--strict",
        "--out",
        str(tmp_path / "s.jsonl"),
        pythonpath=[thirdparty],
    )
    assert r.returncode == 1 and "ValueError: injected failure" in _rows(tmp_path / "s.jsonl")[0]["message"]


@pytest.mark.slow
def test_a_killed_rank_is_a_failed_row_naming_it_with_no_orphans(thirdparty, tmp_path):
    out = tmp_path / "k.jsonl"
    r = run_bench(
        "run",
        "--plugin",
        "faulty",
        "--mode",
        "kill_rank,ok",
        "--ranks",
        "2",
        "--limit",
        "90",
        "--out",
        str(out),
        pythonpath=[thirdparty],
    )
    assert r.returncode == 0, r.stderr
    rows = [x for x in _rows(out) if x["kind"] == "case"]
    killed = [x for x in rows if x["params"]["mode"] == "kill_rank"]
    assert len(killed) == 1 and killed[0]["status"] == "error"
    assert killed[0]["labels"]["failed_rank"] == 1
    assert "rank 1 died" in killed[0]["message"] and "SIGKILL" in killed[0]["message"]
    ok = [x for x in rows if x["params"]["mode"] == "ok"]  # the run went on: one row per rank
    assert sorted(x["labels"]["rank"] for x in ok) == [0, 1] and all(x["status"] == "ok" for x in ok)
    assert not worker_processes()


def test_ctrl_c_keeps_finished_rows_and_leaves_no_child(thirdparty, tmp_path):
    out = tmp_path / "i.jsonl"
    env = dict(os.environ, PYTHONPATH=str(thirdparty))
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.cli",
            "run",
            "--plugin",
            "faulty",
            "--mode",
            "ok,hang",
            "--timeout",
            "120",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not (out.exists() and out.read_text().strip()):
        time.sleep(0.2)
    assert out.exists(), "first case never finished"
    time.sleep(1.5)  # the hang case is running now
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 130, err
    assert "finished rows (and their summary) are kept" in err and "Traceback" not in err
    assert "2 rows written" in err  # the finished row and its summary are shown, not only kept on disk
    rows = _rows(out)
    assert [(x["params"]["mode"], x["status"]) for x in rows if x["kind"] == "case"] == [("ok", "ok")]
    # the plugin in flight still summarized what finished (claim evidence lives in summary rows)
    summary = [x for x in rows if x["kind"] == "summary"]
    assert len(summary) == 1 and summary[0]["metrics"]["ok_cases"]["value"] == 1
    assert not worker_processes()


def _writer(path: str, tag: int, n: int) -> None:
    for i in range(n):
        # rows larger than PIPE_BUF (4 KiB) so a torn write would show
        append_rows(
            path,
            [
                {
                    "schema": "bench.row/1",
                    "run_id": f"w{tag}",
                    "plugin": "p",
                    "params": {"i": i},
                    "status": "ok",
                    "metrics": {},
                    "pad": "x" * 9000,
                }
            ],
        )


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "c.jsonl"
    procs = [mp.get_context("fork").Process(target=_writer, args=(str(path), t, 150)) for t in range(4)]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join(60)
    rows = read_rows(path)  # every line parses
    assert len(rows) == 600
    for t in range(4):
        assert sorted(r.params["i"] for r in rows if r.run_id == f"w{t}") == list(range(150))


def test_two_runs_into_one_file_at_once(thirdparty, tmp_path):
    out = tmp_path / "both.jsonl"
    env = dict(os.environ, PYTHONPATH=str(thirdparty))
    cmd = [
        sys.executable,
        "-m",
        "bench.cli",
        "run",
        "--plugin",
        "toy",
        "--max-time",
        "0.3",
        "--format",
        "none",
        "--out",
        str(out),
    ]
    ps = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    for pr in ps:
        assert pr.wait(120) == 0
    rows = [r for r in read_rows(out) if r.is_case]
    assert len(rows) == 4 and len({r.run_id for r in rows}) == 2
