"""Nothing lost, nothing waved through (issue 30, second adversarial round): one test per item,
named test_itemNN_*, each the issue's reproduction or its smallest form. Items 4, 10, 19 (several
nodes, slurm scripts) are in test_multinode.py / test_slurm.py; item 5 (the timing noise rule) in
test_regress.py."""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import ROOT, bench_cli, worker_processes

from bench import results
from bench.errors import UsageError
from bench.regress import evaluate
from bench.results import ResultsError, append_rows, check_writable, iter_rows, read_rows
from bench.rows import Row

FP = {"label": "cpu-x", "machine_id": "m1"}


def row(i: int = 0, **kw: Any) -> dict[str, Any]:
    return {
        "schema": "bench.row/1",
        "run_id": "r1",
        "case_id": f"toy-{i:03d}",
        "plugin": "toy",
        "kind": "case",
        "params": {"n": i},
        "labels": {},
        "status": "ok",
        "metrics": {"bytes": {"value": 64 * (i + 1), "unit": "bytes", "source": "measured", "deterministic": True}},
        "fingerprint": FP,
        **kw,
    }


def timed(i: int, ms: float, n: int = 20, **kw: Any) -> dict[str, Any]:
    """A row with a timing: time_ms and its raw samples time_s (seconds), 1% apart."""
    xs = [ms / 1e3 * (1 + 0.01 * (k % 5 - 2)) for k in range(n)]
    r = row(i, **kw)
    r["metrics"] = {**r["metrics"], "time_ms": {"value": ms, "unit": "ms", "source": "measured"}}
    r["samples"] = {"time_s": xs}
    return r


def write_lines(p: Path, rows: list[dict[str, Any]], newline_at_end: bool = True) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    p.write_text(text if newline_at_end else text[:-1])
    return p


# --- data loss -------------------------------------------------------------------------------------
def test_item01_last_row_without_newline_kept(tmp_path, capsys):
    p = write_lines(tmp_path / "f.jsonl", [row(0), row(1)], newline_at_end=False)  # head -c -1 r.jsonl
    assert [r.params["n"] for r in read_rows(p)] == [0, 1]  # show reads it
    append_rows(p, [row(2)])  # what bench run --out / bench summarize do next
    assert [r.params["n"] for r in read_rows(p)] == [0, 1, 2]  # the last row was kept, not cut
    assert "lacked its newline" in capsys.readouterr().err
    r = bench_cli("summarize", str(write_lines(tmp_path / "g.jsonl", [row(0), row(1)], newline_at_end=False)))
    assert r.returncode == 0, r.stderr  # toy is not installed here: nothing summarized, nothing cut
    assert [x.params["n"] for x in read_rows(tmp_path / "g.jsonl")] == [0, 1]


def test_item02_out_refuses_a_file_that_is_not_a_result_file(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("a\nb")  # printf 'a\nb' > notes.txt
    good = write_lines(tmp_path / "r.jsonl", [row(0)])
    for args in (
        ["run", "--plugin", "precision", "--what", "cast", "--out", str(notes)],
        ["summarize", str(good), "--out", str(notes)],
    ):
        r = bench_cli(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert "is not a bench result file" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert notes.read_text() == "a\nb"  # "b" is still there
    pb = tmp_path / "pb.json"
    pb.write_text(json.dumps({"machine_info": {}, "benchmarks": []}, indent=2))
    with pytest.raises(UsageError, match="not a bench result file"):
        check_writable(pb)
    check_writable(good)  # a result file, and an empty file, take rows
    (tmp_path / "empty.jsonl").write_text("")
    check_writable(tmp_path / "empty.jsonl")


def test_item03_torn_line_over_one_mib_is_cut_before_the_next_append(tmp_path, capsys):
    p = write_lines(tmp_path / "t.jsonl", [row(i) for i in range(16)])
    with open(p, "a") as f:
        f.write(json.dumps(row(99, pad="x" * (3 << 20)))[: (2 << 20)])  # a killed writer's 2 MiB half row
    assert len(read_rows(p)) == 16  # skipped with a warning
    append_rows(p, [row(16)])
    assert [r.params["n"] for r in read_rows(p)] == list(range(17))  # not glued onto the torn half
    assert "cut a torn last line (2097152 bytes" in capsys.readouterr().err


# --- wrong results from the gate -------------------------------------------------------------------
@pytest.mark.parametrize(
    "opt",
    [
        ["--min-effect", "nan"],
        ["--min-effect", "-1"],
        ["--rtol", "nan"],
        ["--rtol", "inf"],
        ["--int-rtol", "-0.5"],
        ["--alpha", "nan"],
        ["--alpha", "0"],
        ["--ci-k", "nan"],
        ["--iqr-k", "inf"],
        ["--tol", "bytes=nan"],
        ["--tol", "bytes=-1"],
        ["--tol", "bytes=inf"],
    ],
)
def test_item06_non_finite_or_negative_gate_options_refused(tmp_path, opt):
    f = write_lines(tmp_path / "r.jsonl", [timed(0, 1.0)])
    r = bench_cli("regress", "--baseline", str(f), "--current", str(f), *opt)
    assert r.returncode == 3, (opt, r.stdout, r.stderr)  # regress keeps 2 for "ambiguous"
    assert "finite number" in r.stderr and opt[0] in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("bad", [None, "nan"])
def test_item07_nan_or_null_timing_metric_fails_even_with_raw_samples(bad):
    base = Row.from_json(timed(0, 1.0))
    cur = Row.from_json(timed(0, 1.0))
    cur.metrics["time_ms"].value = math.nan if bad == "nan" else None  # its samples are fine
    rep = evaluate([base], [cur])
    it = next(i for i in rep.items if i.metric == "time_ms")
    assert (it.verdict, it.outcome) == ("invalid", "regression") and rep.exit_code == 1, it.note
    assert "current value is" in it.note


def test_item07_pytest_benchmark_file_with_median_nan_fails(tmp_path):
    def doc(median: float) -> str:
        stats = {"median": median, "rounds": 5, "data": [0.001, 0.00101, 0.00099, 0.001, 0.001]}
        b = {"name": "test_x", "fullname": "t.py::test_x", "params": None, "group": None, "stats": stats}
        return json.dumps({"machine_info": {"node": "h"}, "commit_info": {}, "benchmarks": [b], "datetime": "d"})

    (tmp_path / "a.json").write_text(doc(0.001))
    (tmp_path / "b.json").write_text(doc(math.nan))  # json.dumps writes NaN, as Python's json does
    r = bench_cli("regress", "--baseline", str(tmp_path / "a.json"), "--current", str(tmp_path / "b.json"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "INVALID" in r.stdout and "current value is NaN" in r.stdout


def test_item08_current_holding_the_same_case_twice_is_said(tmp_path):
    base = write_lines(tmp_path / "b.jsonl", [row(0), row(1)])
    same = write_lines(tmp_path / "c.jsonl", [row(0), row(1), row(1)])
    r = bench_cli("regress", "--baseline", str(base), "--current", str(same))
    assert r.returncode == 0, r.stdout  # two equal copies: pooled, and said
    assert "current: 1 case(s) appear more than once" in r.stdout
    other = row(1)
    other["metrics"]["bytes"]["value"] = 999  # the copies disagree: which one is meant?
    two = write_lines(tmp_path / "d.jsonl", [row(0), other, row(1)])
    r = bench_cli("regress", "--baseline", str(base), "--current", str(two))
    assert r.returncode == 2, r.stdout  # the last copy equals the baseline: a silent last-wins passed this
    assert "CONFLICTING toy n=1" in r.stdout and "disagree on bytes" in r.stdout


@pytest.mark.parametrize("poison", ["1e-300", "Infinity", "-5", '"fast"', "null"])
def test_item09_poisoned_machine_cache_is_measured_again(tmp_path, monkeypatch, capsys, poison):
    from bench.cache import machine_cached
    from bench.fingerprint import fingerprint

    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("BENCH_NO_CACHE", raising=False)
    key = f"{fingerprint()['machine_id']}|cpu|fp32|1 threads"
    (tmp_path / "matmul_peak.json").write_text(f'{{"{key}": {{"value": {poison}, "at": "x"}}}}')
    measured = []

    def measure() -> float:
        measured.append(1)
        return 0.05  # TFLOP/s

    v, where = machine_cached("matmul_peak", "cpu|fp32|1 threads", measure, (1e-6, 1e6))
    assert v == 0.05 and measured and "cached" not in where
    assert "measuring again" in capsys.readouterr().err
    assert json.loads((tmp_path / "matmul_peak.json").read_text())[key]["value"] == 0.05  # replaced
    v, where = machine_cached("matmul_peak", "cpu|fp32|1 threads", measure, (1e-6, 1e6))
    assert v == 0.05 and "(cached)" in where and len(measured) == 1


# --- hangs and crashes -----------------------------------------------------------------------------
def test_item11_fifo_and_dev_zero_link_in_a_results_folder_are_skipped(tmp_path, capsys):
    from bench.pytest_benchmark_io import load_any

    d = tmp_path / "res"
    d.mkdir()
    write_lines(d / "good.jsonl", [row(0)])
    os.mkfifo(d / "fifo.json")
    os.mkfifo(d / "fifo.jsonl")
    (d / "zero.json").symlink_to("/dev/zero")
    (d / "zero.jsonl").symlink_to("/dev/zero")
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(load_any([d])), daemon=True)
    t.start()
    t.join(timeout=30)
    assert not t.is_alive(), "reading a results folder hung on a FIFO or /dev/zero"
    assert [r.params["n"] for r in got[0]] == [0]
    err = capsys.readouterr().err
    for name in ("fifo.json", "fifo.jsonl", "zero.json", "zero.jsonl"):
        assert f"skipped {d / name}: not a regular file" in err


@pytest.mark.parametrize("field", ["metrics", "params", "run_id", "plugin"])
@pytest.mark.parametrize("cmd", ["show", "claims", "summarize", "report", "compare", "regress"])
def test_item12_null_fields_are_refused_naming_file_and_line(tmp_path, field, cmd):
    good = write_lines(tmp_path / "good.jsonl", [row(0), row(1)])
    bad = write_lines(tmp_path / "bad.jsonl", [row(0), {**row(1), field: None}])
    args = {
        "show": ["show", str(bad)],
        "claims": ["claims", str(bad)],
        "summarize": ["summarize", str(bad)],
        "report": ["report", str(bad), "-o", str(tmp_path / "rep")],
        "compare": ["compare", str(good), str(bad)],
        "regress": ["regress", "--baseline", str(good), "--current", str(bad)],
    }[cmd]
    r = bench_cli(*args)
    assert r.returncode == (3 if cmd == "regress" else 2), r.stdout + r.stderr
    kind = "an object" if field in ("metrics", "params") else "a string"
    assert f"{bad}:2: field '{field}' must be {kind}, got null" in r.stderr


def test_item13_huge_params_with_plan_is_a_usage_error():
    r = bench_cli(
        "run", "--plugin", "fsdp", "--stage", "3", "--simulate", "--params", "1e200", "--world-size", "64", "--plan"
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--params 1e+200: give a parameter count in [1e5, 1e15]" in r.stderr
    r = bench_cli("run", "--plugin", "fsdp", "--world-size", "1e200", "--plan")  # an integer flag
    assert r.returncode == 2 and "not a valid int (a whole number, |n| <= 2^53" in r.stderr, r.stderr


@pytest.mark.parametrize(
    "line, needle",
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        (json.dumps({**row(1), "message": "x"}).replace('"x"', '"\\ud800"'), "lone UTF-16 surrogate"),
        (json.dumps(row(1)).replace('"n": 1', '"n": ' + "7" * 5000), "not usable JSON"),
    ],
    ids=["deep-nesting", "lone-surrogate", "5000-digit-int"],
)
def test_item14_hostile_result_files_are_refused_naming_file_and_line(tmp_path, line, needle):
    p = tmp_path / "h.jsonl"
    p.write_text(json.dumps(row(0)) + "\n" + line + "\n")
    with pytest.raises(ResultsError, match=needle) as e:
        read_rows(p)
    assert str(e.value).startswith(f"{p}:2: ")
    for args in (["show", str(p)], ["compare", str(p), str(p)]):
        r = bench_cli(*args)
        assert r.returncode == 2 and needle in r.stderr, (args, r.stderr)


@pytest.mark.parametrize(
    "bench, mi, needle",
    [
        (7, {}, "benchmark 1 must be an object"),
        ({"name": "b", "stats": [1, 2]}, {}, "stats must be an object"),
        ({"name": "b", "stats": {"median": 1.0, "data": ["slow"]}}, {}, "stats.data must be a list of numbers"),
        ({"name": "b", "stats": {"median": 1.0, "data": [None]}}, {}, "stats.data must be a list of numbers"),
        ({"name": "b", "stats": {"median": "fast"}}, {}, "stats.median must be a number"),
        ({"name": "b", "stats": {"median": 1.0}}, [1], "machine_info must be an object"),
        ({"name": "b", "stats": {"median": 1.0}, "params": [1]}, {}, "params must be an object"),
    ],
    ids=[
        "benchmark-int",
        "stats-list",
        "data-string",
        "data-null",
        "median-string",
        "machine_info-list",
        "params-list",
    ],
)
def test_item14_malformed_pytest_benchmark_files_are_refused(tmp_path, bench, mi, needle):
    p = tmp_path / "pb.json"
    p.write_text(json.dumps({"machine_info": mi, "benchmarks": [bench]}))
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"machine_info": {}, "benchmarks": [{"name": "b", "stats": {"median": 1.0}}]}))
    r = bench_cli("compare", str(good), str(p))
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"{p}: not a pytest-benchmark file pytest-benchmark wrote: " in r.stderr and needle in r.stderr
    r = bench_cli("regress", "--baseline", str(good), "--current", str(p))
    assert r.returncode == 3 and needle in r.stderr, r.stderr


def test_item14_unwritable_outputs_are_one_line_before_anything_is_written(tmp_path):
    f = write_lines(tmp_path / "r.jsonl", [timed(0, 1.0)])
    notes = tmp_path / "notes.json"
    notes.write_text("my notes")
    cases = [
        (["compare", str(f), "--export-pytest-benchmark", "/proc/x.json"], 2, "proc is not a place"),
        (["compare", str(f), "--export-pytest-benchmark", str(notes)], 2, "refusing to overwrite"),
        (["compare", str(f), str(f), "--export-pytest-benchmark", str(notes)], 2, "exists and is not a folder"),
        (["report", str(f), "-o", "/proc/rep"], 2, "proc is not a place"),
        (["slurm", "--nodes", "2", "--gpus-per-node", "8", "--time", "01:00:00", "--out", ""], 2, "--out: an empty"),
        (
            [
                "slurm",
                "--nodes",
                "1",
                "--gpus-per-node",
                "2",
                "--time",
                "1:00",
                "--out",
                str(tmp_path / "o.jsonl"),
                "--script",
                "/proc/x.sbatch",
                "--",
                "--plugin",
                "ddp",
                "--world-size",
                "2",
            ],
            2,
            "--script /proc/x.sbatch: proc is not a place",
        ),
        (["regress", "--baseline", str(f), "--current", str(f), "--rerun-cmd", "{nonsense}"], 3, "'nonsense'"),
        (["regress", "--baseline", str(f), "--current", str(f), "--json", "/proc/v.json"], 3, "--json /proc/v.json"),
    ]
    for args, rc, needle in cases:
        r = bench_cli(*args)
        assert r.returncode == rc, (args, r.stdout, r.stderr)
        assert needle in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
    assert notes.read_text() == "my notes"
    out = tmp_path / "x.json"  # a pytest-benchmark file may be exported again over itself
    assert bench_cli("compare", str(f), "--export-pytest-benchmark", str(out)).returncode == 0
    assert bench_cli("compare", str(f), "--export-pytest-benchmark", str(out)).returncode == 0


def test_item15_rows_are_read_one_line_at_a_time(tmp_path, monkeypatch):
    """The streaming reader holds one line, not the file: the first rows come out before a bad line
    further on is even read, and a line past the bound is refused, not read whole. (Peak memory on a
    large file: benchmarks/read_memory.py.)"""
    p = tmp_path / "big.jsonl"
    write_lines(p, [row(i) for i in range(3)])
    with open(p, "a") as f:
        f.write("{oops\n")
    it = iter_rows(p)
    assert [next(it).params["n"] for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ResultsError, match=r"big\.jsonl:4: not valid JSON"):
        next(it)
    monkeypatch.setattr(results, "MAX_LINE_BYTES", 1000)
    q = write_lines(tmp_path / "long.jsonl", [row(0), row(1, pad="y" * 5000)])
    with pytest.raises(ResultsError, match=r"long\.jsonl:2: a line over"):
        read_rows(q)


# --- leftovers -------------------------------------------------------------------------------------
def test_item16_stale_temporary_folders_of_dead_pids_are_removed(tmp_path):
    from bench.supervise import clean_stale_tmp

    dead = subprocess.Popen(["true"])
    dead.wait()
    mine = [tmp_path / f"bench-case-{dead.pid}-abc", tmp_path / f"bench-regress-{dead.pid}-x"]
    alive = [tmp_path / f"bench-case-{os.getpid()}-abc", tmp_path / f"bench-warm-{os.getpid()}-q"]
    other = [tmp_path / "bench-case-notapid-x", tmp_path / f"other-{dead.pid}-x"]
    for d in mine + alive + other:
        d.mkdir()
        (d / "spec.json").write_text("{}")
    removed = clean_stale_tmp(str(tmp_path))
    assert sorted(removed) == sorted(map(str, mine))
    assert all(d.exists() for d in alive + other) and not any(d.exists() for d in mine)


def _bench_tmp(tmp: Path, pid: int) -> list[Path]:
    return sorted(tmp.glob(f"bench-*-{pid}-*"))


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP])
def test_item16_killing_bench_run_in_a_warm_worker_case_leaves_no_folder(thirdparty, tmp_path, sig):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, PYTHONPATH=str(thirdparty), TMPDIR=str(tmp))
    args = ["run", "--plugin", "faulty", "--mode", "hang", "--reuse", "true", "--limit", "120"]
    p = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", *args, "--out", str(tmp_path / "k.jsonl")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 90
    while time.time() < deadline and not list(tmp.glob("bench-faulty-*.pid")):  # the case runs in the warm worker
        time.sleep(0.2)
    assert list(tmp.glob("bench-faulty-*.pid")), "the hang case never started"
    assert [d.name.split("-")[1] for d in _bench_tmp(tmp, p.pid)] == ["case", "warm"]
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == (-9 if sig == signal.SIGKILL else 130), err
    deadline = time.time() + 15
    while time.time() < deadline and _bench_tmp(tmp, p.pid):
        time.sleep(0.2)
    assert _bench_tmp(tmp, p.pid) == []
    assert not worker_processes()


def test_item16_sigterm_of_regress_during_a_rerun_kills_it_and_removes_its_folder(tmp_path):
    base = write_lines(tmp_path / "b.jsonl", [timed(0, 1.0)])
    slow = write_lines(tmp_path / "c.jsonl", [timed(0, 1000.0)])  # 1000x slower: a confirming rerun follows
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    marker = f"i30-rerun-{os.getpid()}"
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.cli",
            "regress",
            "--baseline",
            str(base),
            "--current",
            str(slow),
            "--rerun-cmd",
            f"sleep 300 # {marker} {{out}}",
        ],
        cwd=ROOT,
        env=dict(os.environ, TMPDIR=str(tmp)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def reruns() -> list[psutil.Process]:
        out = []
        for c in psutil.Process().children(recursive=True):
            try:
                if c.pid != p.pid and marker in " ".join(c.cmdline()) and c.status() != psutil.STATUS_ZOMBIE:
                    out.append(c)
            except psutil.Error:
                pass
        return out

    deadline = time.time() + 60
    while time.time() < deadline and not reruns():
        time.sleep(0.2)
    assert reruns() and len(list(tmp.glob(f"bench-regress-{p.pid}-*"))) == 1, "no confirming rerun started"
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    deadline = time.time() + 10
    while time.time() < deadline and reruns():
        time.sleep(0.2)
    assert not reruns(), "the rerun was orphaned"
    assert list(tmp.glob("bench-regress-*")) == []


# --- markup and messages ---------------------------------------------------------------------------
def test_item17_markdown_escapes_notes_device_label_and_compare_header(tmp_path):
    evil = "<script>alert(1)</script>\nline two"
    r0 = {**row(0), "notes": [evil], "run_id": "<b>run</b>", "fingerprint": {**FP, "label": evil}}
    p = write_lines(tmp_path / "e.jsonl", [r0])
    good = write_lines(tmp_path / "g.jsonl", [row(0)])
    for args in (["show", str(p)], ["claims", str(p)], ["compare", str(good), str(p)]):
        r = bench_cli(*args, "--format", "markdown")
        assert r.returncode == 0, (args, r.stderr)
        assert "<script>" not in r.stdout and "<b>" not in r.stdout, (args, r.stdout)
        assert "&lt;script&gt;" in r.stdout, args
        assert "\nline two" not in r.stdout, args  # a label's newline never starts a markdown line


def test_item18_a_plugin_flag_runs_the_cases_it_fits_and_says_which_were_dropped():
    r = bench_cli("run", "--plugin", "fsdp", "--fault", "hang_rank1", "--plan")
    assert r.returncode == 0, r.stderr
    assert "fsdp: dropped 6 of 10 cases of the quick grid the flags do not fit: --fault needs a real run" in r.stderr
    assert r.stdout.count("fault=hang_rank1") == 4 and "simulate=True" not in r.stdout
    r = bench_cli("run", "--plugin", "inference", "--model", "tiny", "--plan")
    assert r.returncode == 0 and "dropped 1 of 10 cases" in r.stderr and "tiny preset's 128 positions" in r.stderr
    r = bench_cli("run", "--plugin", "fsdp", "--simulate", "--fault", "hang_rank1", "--plan")  # nothing left
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "no case of the quick grid fits these flags: --fault needs a real run (no --simulate) (10 cases)" in r.stderr


def test_item20_scaling_budget_beyond_the_case_limit_refused_up_front():
    r = bench_cli("run", "--plugin", "scaling", "--budget", "D=1e30", "--plan")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--budget D=1e30: training" in r.stderr and "over the case limit" in r.stderr
    assert bench_cli("run", "--plugin", "scaling", "--budget", "D=2e5", "--plan").returncode == 0


def test_item21_summarize_empty_out_empty_and_no_zero_byte_file(tmp_path, monkeypatch):
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    r = bench_cli("summarize", str(empty))
    assert r.returncode == 2 and "no result rows" in r.stderr, r.stderr
    for cmd in (["summarize", str(write_lines(tmp_path / "r.jsonl", [row(0)]))], ["run", "--plugin", "precision"]):
        r = bench_cli(*cmd, "--out", "")
        assert r.returncode == 2 and "an empty path" in r.stderr and "not a regular file" not in r.stderr, r.stderr
    new = tmp_path / "new.jsonl"

    def enospc(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(results.os, "write", enospc)
    with pytest.raises(ResultsError, match="No space left"):
        append_rows(new, [row(0)])
    assert not new.exists()  # not left as a 0-byte file
