"""The CLI: discovery of installed plugins, every bad input (exit 2 + message), show, env."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from bench.cli import main
from conftest import FIXTURES, pip_target, run_bench


def test_installed_third_party_plugin_is_listed(thirdparty):
    r = run_bench("list", pythonpath=[thirdparty])
    assert r.returncode == 0, r.stderr
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
    ],
)
def test_bad_input_exits_2_with_a_message(thirdparty, tmp_path, args, needle):
    if args[0] == "run":
        args = ["run", "--out", str(tmp_path / "o.jsonl"), *args[1:]]
    r = run_bench(*args, pythonpath=[thirdparty])
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "o.jsonl").exists()  # nothing launched, nothing written


def test_list_values_expand_the_grid_and_reach_the_plugin(thirdparty, tmp_path):
    out = tmp_path / "r.jsonl"
    r = run_bench("run", "--plugin", "toy", "--n", "16,32", "--max-time", "0.2", "--out", str(out), pythonpath=[thirdparty])
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
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
    for fmt, mark in (("terminal", "[ms, measured]"), ("markdown", "| n "), ("csv", "flops [FLOP, formula]")):
        s = run_bench("show", str(out), "--format", fmt, pythonpath=[thirdparty])
        assert s.returncode == 0 and mark in s.stdout, s.stdout


def test_show_names_file_and_line_of_a_corrupt_or_foreign_file(tmp_path):
    good = {"schema": "bench.row/1", "run_id": "x", "plugin": "p", "params": {}, "status": "ok", "metrics": {}}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(good) + "\n{not json\n")
    r = run_bench("show", str(bad))
    assert r.returncode == 2 and f"{bad}:2: not valid JSON" in r.stderr
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"hello": 1}\n')
    r = run_bench("show", str(foreign))
    assert r.returncode == 2 and f"{foreign}:1: not a bench result row" in r.stderr
    future = tmp_path / "future.jsonl"
    future.write_text(json.dumps({**good, "schema": "bench.row/9"}) + "\n")
    r = run_bench("show", str(future))
    assert r.returncode == 2 and "bench.row/9" in r.stderr and "Traceback" not in r.stderr


def test_every_command_has_help():
    runner = CliRunner()
    for cmd in (["--help"], ["list", "--help"], ["run", "--help"], ["show", "--help"], ["env", "--help"],
                ["compare", "--help"], ["regress", "--help"], ["claims", "--help"], ["report", "--help"]):
        res = runner.invoke(main, cmd)
        assert res.exit_code == 0, (cmd, res.output)
        assert "Usage:" in res.output


def test_env_prints_the_fingerprint():
    res = CliRunner().invoke(main, ["env", "--json"])
    assert res.exit_code == 0
    fp = json.loads(res.output)
    assert fp["device_type"] in ("cpu", "cuda") and fp["packages"]["torch"]
    assert fp["git"]["sha"] is None or len(fp["git"]["sha"]) == 40
