"""The CLI: discovery of installed plugins, every bad input (exit 2 + message), show, env."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner
from conftest import FIXTURES, bench_cli, pip_target, run_bench

from bench.cli import main


def test_installed_third_party_plugin_is_listed(thirdparty):
    r = run_bench("list", pythonpath=[thirdparty])
    assert r.returncode == 0, r.stderr
    assert [ln for ln in r.stdout.splitlines() if ln.split()[:2] == ["toy", "yes"]]  # one line per plugin
    r = run_bench("list", "--plugin", "toy", pythonpath=[thirdparty])
    assert "toy  [bench-testplugins: bench_testplugins:ToyPlugin]" in r.stdout
    assert "--n" in r.stdout and "16, 32, 64, 128" in r.stdout  # parameters with allowed values
    # and without the package on the path it is gone: discovery is by installation, not by edit
    r2 = run_bench("list")
    assert "bench-testplugins" not in r2.stdout


def test_two_plugins_with_one_name_is_an_error_naming_both(thirdparty, tmp_path):
    dup = pip_target(FIXTURES / "thirdparty_dup", tmp_path / "dup")
    r = run_bench("list", pythonpath=[thirdparty, dup])
    assert r.returncode == 2
    assert "bench_testplugins:ToyPlugin" in r.stderr and "bench_dupplugin:Other" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "args, needle",
    [
        (["run", "--plugin", "toyy"], "did you mean toy"),
        (["run", "--plugin", "toy", "--n", "5"], "allowed values: 16, 32, 64, 128"),
        (["run", "--plugin", "toy", "--n", "abc"], "'abc' is not a valid int"),
        (["run", "--plugin", "toy", "--bogus", "1"], "unknown flag --bogus"),
        (["run", "--plugin", "toy", "--n"], "--n needs a value"),
        (["run", "--plugin", "toy", "stray"], "unexpected argument 'stray'"),
        (["run"], "name a plugin with --plugin"),
        (["run", "--plugin", "faulty", "--mode", "kill_rank"], "needs --ranks 2"),  # validate(): before launch
        (["run", "--plugin", "toy", "--profile", "huge"], "Invalid value for '--profile'"),
        (["show", "/nonexistent/x.jsonl"], "no such file"),
        (["list", "--plugin", "nope"], "unknown plugin 'nope'"),
        # issue 20: every option validated before anything launches
        (["run", "--all", "--plugin", "toy"], "give --all or --plugin NAME, not both"),
        (["run", "--plugin", "toy", "--timeout", "nan"], "must be a finite number"),
        (["run", "--plugin", "toy", "--timeout", "inf"], "must be a finite number"),
        (["run", "--plugin", "toy", "--max-time", "-1"], "must be a finite number"),
        (["run", "--plugin", "toy", "--extra-ms", "nan"], "not a valid finite number"),
        (["run", "--plugin", "toy", "--n", "16", "--n", "32"], "--n given twice"),
        (["run", "--plugin", "toy", "--seed", "1", "--seed", "2"], "--seed given twice"),
        (["run", "--plugin", "shadow"], "would be taken by `bench run --seed`"),
    ],
)
def test_bad_input_exits_2_with_a_message(thirdparty, tmp_path, monkeypatch, args, needle):
    """In-process (CliRunner, the fixture package on sys.path): every case is refused before anything
    launches, so no subprocess is needed to show it; test_real_cli_bad_input runs one for real."""
    monkeypatch.syspath_prepend(str(thirdparty))
    if args[0] == "run":
        args = ["run", "--out", str(tmp_path / "o.jsonl"), *args[1:]]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, (r.exit_code, r.stdout, r.stderr)
    assert needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr  # one line, not click's three
    assert not (tmp_path / "o.jsonl").exists()  # nothing launched, nothing written


def test_real_cli_bad_input(thirdparty, tmp_path):
    r = run_bench("run", "--plugin", "toy", "--n", "5", "--out", str(tmp_path / "o.jsonl"), pythonpath=[thirdparty])
    assert r.returncode == 2 and r.stderr.strip() == (
        "error: --n: '5' is not allowed; allowed values: 16, 32, 64, 128"
    ), r.stderr


@pytest.mark.parametrize("out", ["/proc/x.jsonl", "/dev/full", "", "{ro}/r.jsonl", "{tmp}"])
def test_out_is_checked_before_the_first_case(thirdparty, tmp_path, monkeypatch, out):
    monkeypatch.syspath_prepend(str(thirdparty))
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    out = out.format(ro=ro, tmp=tmp_path)
    if os.geteuid() == 0 and out.startswith(str(ro)):
        ro.chmod(0o700)
        pytest.skip("root writes into a read-only folder")
    r = CliRunner().invoke(main, ["run", "--plugin", "toy", "--out", out])
    ro.chmod(0o700)
    assert r.exit_code == 2, (r.exit_code, r.stderr)
    assert "--out" in r.stderr and "[1/" not in r.stderr, r.stderr  # refused before any case ran


def test_list_shows_a_broken_plugin_as_one_line_and_the_others(thirdparty):
    r = run_bench("list", pythonpath=[thirdparty])
    assert r.returncode == 0, r.stderr
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("shadow")]
    assert len(line) == 1 and "cannot be used [" in line[0]  # one line; the reason in full below the table
    notes = r.stdout.split("\nnotes:\n", 1)[1]
    assert "shadow [bench-testplugins" in notes and "breaks the plugin contract" in notes
    assert [ln for ln in r.stdout.splitlines() if ln.split()[:2] == ["bare", "yes"]]  # no Params: fine
    assert "toy.matmul_flops" in run_bench("list", "--plugin", "toy", pythonpath=[thirdparty]).stdout  # its own claim


def test_list_values_expand_the_grid_and_reach_the_plugin(thirdparty, tmp_path):
    out = tmp_path / "r.jsonl"
    r = run_bench(
        "run", "--plugin", "toy", "--n", "16,32", "--max-time", "0.2", "--out", str(out), pythonpath=[thirdparty]
    )
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines() if json.loads(x)["kind"] == "case"]
    assert sorted(row["params"]["n"] for row in rows) == [16, 32]
    for row in rows:
        assert row["schema"] == "bench.row/1" and row["status"] == "ok"
        assert row["metrics"]["flops"]["value"] == 2 * row["params"]["n"] ** 3
        assert row["metrics"]["time_ms"]["unit"] == "ms" and row["samples"]["time_s"]
        fp = row["fingerprint"]
        for k in ("cpu_model", "torch_threads", "devices", "packages", "git", "machine_id"):
            assert k in fp
    # progress: which case, how many left, elapsed
    assert "[1/2] toy" in r.stderr and "1 left" in r.stderr and "elapsed" in r.stderr
    # show renders the same rows with units in the headers, in three formats
    for fmt, mark in (("terminal", "ms meas"), ("markdown", "| n "), ("csv", "flops [FLOP, formula]")):
        s = bench_cli("show", str(out), "--format", fmt, pythonpath=[thirdparty])
        assert s.returncode == 0 and mark in s.stdout, s.stdout


def test_show_names_file_and_line_of_a_corrupt_or_foreign_file(tmp_path):
    good = {"schema": "bench.row/1", "run_id": "x", "plugin": "p", "params": {}, "status": "ok", "metrics": {}}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(good) + "\n{not json\n")
    r = run_bench("show", str(bad))
    assert r.returncode == 2 and f"{bad}:2: not valid JSON" in r.stderr
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"hello": 1}\n')
    r = bench_cli("show", str(foreign))
    assert r.returncode == 2 and f"{foreign}:1: not a bench result row" in r.stderr
    future = tmp_path / "future.jsonl"
    future.write_text(json.dumps({**good, "schema": "bench.row/9"}) + "\n")
    r = bench_cli("show", str(future))
    assert r.returncode == 2 and "bench.row/9" in r.stderr and "Traceback" not in r.stderr


def test_every_command_has_help():
    runner = CliRunner()
    for cmd in (
        ["--help"],
        ["list", "--help"],
        ["run", "--help"],
        ["show", "--help"],
        ["env", "--help"],
        ["compare", "--help"],
        ["regress", "--help"],
        ["claims", "--help"],
        ["report", "--help"],
        ["summarize", "--help"],
    ):
        res = runner.invoke(main, cmd)
        assert res.exit_code == 0, (cmd, res.output)
        assert "Usage:" in res.output


def test_env_prints_the_fingerprint():
    res = CliRunner().invoke(main, ["env", "--json"])
    assert res.exit_code == 0
    fp = json.loads(res.output)
    assert fp["device_type"] in ("cpu", "cuda") and fp["packages"]["torch"]
    assert fp["git"]["sha"] is None or len(fp["git"]["sha"]) == 40
