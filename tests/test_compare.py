"""`bench compare`: rows matched across inputs with ratios, one-sided rows listed, normalised
columns, the cross-machine notice; pytest-benchmark interop both ways (the real
`pytest-benchmark compare` reads our export; real pytest-benchmark files are read as input)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from test_regress import det, row, samples

from bench.cli import main
from bench.pytest_benchmark_io import load_any, pb_stats, to_pytest_benchmark
from bench.results import append_rows


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def csv_tables(text: str) -> dict[str, list[dict[str, str]]]:
    """`bench compare --format csv` output -> {caption: rows}."""
    out: dict[str, list[dict[str, str]]] = {}
    for block in text.strip().split("\n# "):
        cap, _, body = block.lstrip("# ").partition("\n")
        out[cap] = list(csv.DictReader(io.StringIO(body)))
    return out


@pytest.fixture
def two_runs(tmp_path):
    """A: n=16,32 on machine m1; B: n=32 (2x slower), 64 on machine m2, with normalised metrics."""

    def norm(v):
        return {
            "mfu": {"value": v, "unit": "% of peak", "source": "measured"},
            "pct_matmul": {"value": 2 * v, "unit": "%", "source": "measured"},
            "bytes_per_param": {"value": 2.0, "unit": "bytes/param", "source": "formula", "deterministic": True},
        }

    a = [row({"n": n}, norm(40.0), samples(n / 10, seed=n), machine="m1", run="runA") for n in (16, 32)]
    b = [row({"n": n}, norm(20.0), samples(2 * n / 10, seed=n + 1), machine="m2", run="runB") for n in (32, 64)]
    pa, pb = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    append_rows(pa, a)
    append_rows(pb, b)
    return pa, pb


def test_compare_ratios_one_sided_rows_and_normalised_columns(two_runs):
    pa, pb = two_runs
    r = cli("compare", str(pa), str(pb), "--format", "csv")
    assert r.exit_code == 0, r.output
    ((cap, rows),) = csv_tables(r.output).items()
    assert cap.startswith("toy") and "2 of 3 rows not in every input" in cap
    by = {(x["n"], x["metric [unit]"].split(" ")[0]): x for x in rows}
    acol = next(k for k in rows[0] if k.startswith("A: cpu-m1 runA"))
    bcol = next(k for k in rows[0] if k.startswith("B: cpu-m2 runB"))
    # matched row: B's time is 2x A's; raw samples on both sides give a significance mark
    t = by[("32", "time_ms")]
    assert float(t["B/A"].split()[0]) == pytest.approx(2.0, rel=0.03) and t["B/A"].endswith("+")
    assert float(by[("32", "mfu")]["B/A"]) == pytest.approx(0.5) and by[("32", "pct_matmul")][bcol] == "40"
    assert ("32", "bytes_per_param") not in by  # not a core column: toy does not declare it normalised here
    assert t["only in"] == ""
    # rows on one side only are listed, not dropped
    assert by[("16", "time_ms")]["only in"] == "A" and by[("16", "time_ms")][bcol] == "-"
    assert by[("64", "time_ms")]["only in"] == "B" and by[("64", "time_ms")][acol] == "-"
    # --metrics selects lines
    r = cli("compare", str(pa), str(pb), "--format", "csv", "--metrics", "mfu")
    ((_, rows),) = csv_tables(r.output).items()
    assert {x["metric [unit]"] for x in rows} == {"mfu [% of peak]"}


def test_compare_says_cross_machine_is_not_a_regression(two_runs, tmp_path):
    pa, pb = two_runs
    r = cli("compare", str(pa), str(pb))
    assert r.exit_code == 0, r.output
    assert "DIFFERENT MACHINES" in r.output and "not a regression" in r.output and "mfu, pct_matmul" in r.output
    r = cli("compare", str(pa), str(pa), "--format", "markdown")
    assert "all inputs ran on one machine (machine_id m1)" in r.output and "| n " in r.output


def test_compare_one_folder_of_runs_and_bad_inputs(two_runs, tmp_path):
    pa, pb = two_runs
    d = tmp_path / "runs"
    d.mkdir()
    (d / "a.jsonl").write_text(pa.read_text())
    (d / "b.jsonl").write_text(pb.read_text())
    r = cli("compare", str(d))  # one folder of two runs: one column group per run
    assert r.exit_code == 0 and "B/A" in r.output, r.output
    r = cli("compare", str(pa))
    assert r.exit_code == 2 and "two or more inputs" in r.output
    r = cli("compare", str(pa), str(tmp_path / "missing.jsonl"))
    assert r.exit_code == 2 and "no such file" in r.output
    r = cli("compare", "--help")
    assert r.exit_code == 0 and "--export-pytest-benchmark" in r.output


def test_pb_stats_match_pytest_benchmark():
    from pytest_benchmark.stats import Stats

    for n in (1, 2, 5, 8, 13, 30):
        data = samples(1.0, n, 0.2, seed=n)
        ref = Stats()
        for x in data:
            ref.update(x)
        ours = pb_stats(data)
        for f in Stats.fields:
            assert (
                ours[f] == pytest.approx(getattr(ref, f))
                if not isinstance(ours[f], str)
                else ours[f] == getattr(ref, f)
            ), (n, f)


def test_pytest_benchmark_round_trip(two_runs, tmp_path):
    pa, _ = two_runs
    out = tmp_path / "pb" / "0001_a.json"
    r = cli("compare", str(pa), "--export-pytest-benchmark", str(out))
    assert r.exit_code == 0 and out.exists(), r.output
    doc = json.loads(out.read_text())
    assert {"machine_info", "commit_info", "benchmarks", "datetime", "version"} <= set(doc)
    b0 = doc["benchmarks"][0]
    assert b0["name"] == "toy[n=16]" and b0["stats"]["data"] == samples(1.6, seed=16)
    # back: the same rows (params, labels, metrics, samples, machine)
    orig = load_any([pa])
    back = load_any([out])
    strip = lambda r: {k: v for k, v in r.to_json().items()}  # noqa: E731
    assert [strip(x) for x in back] == [strip(x) for x in orig]
    # regress and compare read it as input
    r = cli("regress", "--baseline", str(pa), "--current", str(out))
    assert r.exit_code == 0, r.output
    # the real pytest-benchmark CLI reads the export; its median is our samples' median
    csv_out = tmp_path / "pbc"
    p = subprocess.run(
        [sys.executable, "-m", "pytest_benchmark", "compare", str(out), "--csv", str(csv_out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert "toy[n=16]" in p.stdout and "toy[n=32]" in p.stdout
    got = {x["name"]: x for x in csv.DictReader(open(next(tmp_path.glob("pbc*.csv"))))}
    med = sorted(samples(3.2, seed=32))[15]  # n=30: the mean of the middle two, as statistics.median
    med = (sorted(samples(3.2, seed=32))[14] + med) / 2
    assert float(got["bench::toy::toy[n=32]"]["median"]) == pytest.approx(med)


def test_rows_without_timings_are_left_out_of_the_export():
    doc, skipped = to_pytest_benchmark([row({"n": 1}, {"b": det(1)}), row({"n": 2}, {}, samples(1.0))])
    assert skipped == 1 and [b["name"] for b in doc["benchmarks"]] == ["toy[n=2]"]


BENCH_TEST = """\
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

def test_fib(benchmark):
    benchmark(fib, 12)
"""


def test_real_pytest_benchmark_file_as_input(tmp_path):
    """A file written by pytest-benchmark itself (--benchmark-json) is an input to compare and regress."""
    (tmp_path / "test_fib_bench.py").write_text(BENCH_TEST)
    outs = []
    for i in (1, 2):
        j = tmp_path / f"run{i}.json"
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "--benchmark-enable",
                f"--benchmark-json={j}",
                "--benchmark-max-time=0.05",
                "--benchmark-min-rounds=20",
                "test_fib_bench.py",
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
            # not as an xdist worker: pytest-benchmark disables itself when it sees one
            env={k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")},
        )
        assert p.returncode == 0, p.stdout + p.stderr
        outs.append(j)
    rows = load_any([outs[0]])
    assert len(rows) == 1 and rows[0].plugin == "pytest-benchmark"
    assert rows[0].labels["name"].endswith("test_fib") and len(rows[0].samples["time_s"]) >= 20
    r = cli("compare", str(outs[0]), str(outs[1]), "--format", "csv")
    assert r.exit_code == 0 and "time_ms [ms]" in r.output, r.output
    # the same file against itself: a pass (the rows cannot be rerun by bench, and need not be)
    r = cli("regress", "--baseline", str(outs[0]), "--current", str(outs[0]))
    assert r.exit_code == 0 and "1 timing metrics" in r.output, r.output
