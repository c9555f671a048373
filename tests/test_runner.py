"""The runner's budgets: cheap cases share a warm worker (a hang or a crash there costs one row and
a new worker), a deadline cuts or skips cases instead of overrunning, an interrupted plugin still
summarizes what finished, `bench summarize` rebuilds summaries after the fact, `--plan` estimates."""

from __future__ import annotations

import json

import pytest
from conftest import bench_cli, run_bench, worker_processes


def _rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def _cases(rows):
    return [r for r in rows if r["kind"] == "case"]


@pytest.mark.slow
def test_reuse_cases_share_a_warm_worker_and_a_hang_costs_one_row(thirdparty, tmp_path):
    out = tmp_path / "w.jsonl"
    r = run_bench(
        "run",
        "--plugin",
        "faulty",
        "--reuse",
        "true",
        "--mode",
        "ok,hang,crash,skip",
        "--limit",
        "8",
        "--out",
        str(out),
        "--format",
        "none",
        pythonpath=[thirdparty],
    )
    assert r.returncode == 0, r.stderr
    rows = _cases(_rows(out))
    assert [x["params"]["mode"] for x in rows] == ["ok", "hang", "crash", "skip"]  # --mode replaces the grid's
    by_mode = {x["params"]["mode"]: x for x in rows}
    assert by_mode["ok"]["status"] == "ok"
    assert by_mode["hang"]["status"] == "timeout" and "time limit of 8 s" in by_mode["hang"]["message"]
    assert by_mode["crash"]["status"] == "error" and "SIGSEGV" in by_mode["crash"]["message"]
    assert by_mode["skip"]["status"] == "skipped" and "probe call took 99 s" in by_mode["skip"]["message"]
    assert not worker_processes()


@pytest.mark.slow
def test_warm_worker_is_reused_between_cheap_cases(thirdparty, tmp_path):
    out = tmp_path / "w2.jsonl"
    r = run_bench(
        "run",
        "--plugin",
        "faulty",
        "--reuse",
        "true",
        "--mode",
        "ok",
        "--limit",
        "20,21,22",
        "--out",
        str(out),
        "--format",
        "none",
        pythonpath=[thirdparty],
    )
    assert r.returncode == 0, r.stderr
    pids = {x["metrics"]["pid"]["value"] for x in _cases(_rows(out))}
    assert len(pids) == 1  # three cases, one interpreter
    out2 = tmp_path / "w3.jsonl"
    run_bench(
        "run",
        "--plugin",
        "faulty",
        "--mode",
        "ok",
        "--limit",
        "20,21",
        "--out",
        str(out2),
        "--format",
        "none",
        pythonpath=[thirdparty],
    )
    assert len({x["metrics"]["pid"]["value"] for x in _cases(_rows(out2))}) == 2  # reuse off: a process each


@pytest.mark.slow
def test_a_deadline_cuts_the_case_in_flight_and_skips_the_rest(thirdparty, tmp_path):
    out = tmp_path / "d.jsonl"
    r = run_bench(
        "run",
        "--plugin",
        "faulty",
        "--mode",
        "hang,ok",
        "--limit",
        "120",
        "--deadline",
        "12",
        "--out",
        str(out),
        "--format",
        "none",
        pythonpath=[thirdparty],
        timeout=90,
    )
    assert r.returncode == 0, r.stderr
    rows = _cases(_rows(out))
    assert rows[0]["status"] == "timeout" and "deadline" in rows[0]["message"]
    assert rows[1]["status"] == "skipped" and "deadline" in rows[1]["message"]
    assert not worker_processes()


def test_plan_prints_every_case_with_an_estimate_and_runs_nothing(thirdparty, tmp_path):
    r = run_bench(
        "run",
        "--plugin",
        "faulty",
        "--plan",
        "--deadline",
        "12",
        "--out",
        str(tmp_path / "p.jsonl"),
        pythonpath=[thirdparty],
    )
    assert r.returncode == 0, r.stderr
    # 4 cases (ok, oom, crash, hang): 3 x (1.3 s start-up + 0.1 s) + the hang capped at its 10 s limit
    assert "faulty: 4 cases, 14 s" in r.stdout and "total:" in r.stdout and "assumptions:" in r.stdout
    assert "does NOT fit the budget of 12 s" in r.stdout
    assert not (tmp_path / "p.jsonl").exists()


def test_bench_summarize_rebuilds_summary_rows_from_case_rows(thirdparty, tmp_path):
    out = tmp_path / "s.jsonl"
    r = run_bench(
        "run",
        "--plugin",
        "toy",
        "--n",
        "16",
        "--max-time",
        "0.2",
        "--out",
        str(out),
        "--format",
        "none",
        pythonpath=[thirdparty],
    )
    assert r.returncode == 0, r.stderr
    cases = [json.dumps(x) for x in _rows(out) if x["kind"] == "case"]
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(cases) + "\n")  # a run cut short before its summary
    r = bench_cli("summarize", str(cut), pythonpath=[thirdparty])
    assert r.returncode == 0, r.stderr
    summ = [x for x in _rows(cut) if x["kind"] == "summary"]
    assert summ and "toy.matmul_flops" in summ[0]["evidence"]
    r = bench_cli("claims", str(cut), pythonpath=[thirdparty])
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("toy.matmul_flops"))
    assert "holds meas" in line, r.stdout  # one line per claim: the verdict and what it rests on
    r = bench_cli("summarize", str(cut), pythonpath=[thirdparty])  # again: refused unless --force
    assert "already has summary rows" in r.stderr and len([x for x in _rows(cut) if x["kind"] == "summary"]) == len(
        summ
    )
