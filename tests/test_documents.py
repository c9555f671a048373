"""A document's claims as TOML (bench/documents.py, bench/expr.py): judged by the claims engine like
the built-in claims, on the committed Intel results and on rows built here; every error in a file
exits 2 naming the file and the claim; formulas are a small grammar, never eval."""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, bench_cli

from bench import docjudge, documents, expr
from bench.rows import Metric, Row

INTEL = ROOT / "results" / "cpu-intel-xeon-quick.jsonl"
PLAN = ROOT / "claims" / "capacity-plan-example.toml"
ZERO = ROOT / "claims" / "zero-paper.toml"
FA2 = ROOT / "claims" / "flashattention2.toml"

HEAD = '[document]\ntitle = "Test doc"\nsource = "tests/test_documents.py"\n'


def claim_toml(**kv: Any) -> str:
    """One [[claim]] table; values are TOML literals already (strings quoted by the caller)."""
    base = {
        "id": '"doc.one"',
        "quote": '"Sixteen bytes per parameter."',
        "where": '"p. 1"',
        "plugin": '"fsdp"',
        "metric": '"model_state_bytes"',
        "select": '{ stage = 0, world_size = 2, precision = "fp32", simulate = false }',
        "expected": '"16 * n_params"',
        "tolerance": '"1%"',
    }
    base.update({k: v for k, v in kv.items()})
    return "[[claim]]\n" + "".join(f"{k} = {v}\n" for k, v in base.items() if v is not None)


def write(tmp_path: Path, text: str, name: str = "doc.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def fsdp_row(stage: int, ws: int, rank: int, bytes_: float, n: float, device: str = "cpu-a", **params: Any) -> Row:
    return Row(
        run_id="r1",
        plugin="fsdp",
        params={"stage": stage, "world_size": ws, "precision": "fp32", "simulate": False, **params},
        labels={"rank": rank},
        metrics={"model_state_bytes": Metric(bytes_, "bytes"), "n_params": Metric(n, "params", "formula")},
        fingerprint={"label": device, "device_type": "cpu"},
    )


def judged(tmp_path: Path, text: str, rows: list[Row]) -> dict[str, Any]:
    docs = documents.load([write(tmp_path, text)], rows)
    devices, _, groups = docjudge.judge(docs, rows)
    return {r.id: r for _, res in groups for r in res} | {"_devices": devices}


# ---------------------------------------------------------------------------------------------
# The committed Intel results


def test_on_the_intel_results_a_plan_claim_holds_and_one_fails_with_their_quotes():
    r = bench_cli("claims", str(INTEL), "--claims", str(PLAN))  # the terminal table (cells wrap)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Capacity plan (example)") and "plan.stage3_4" in r.stdout
    md = bench_cli("claims", str(INTEL), "--claims", str(PLAN), "--format", "markdown").stdout
    assert md.startswith("## Capacity plan (example)")
    lines = {ln.split("|")[1].strip(): ln for ln in md.splitlines() if ln.startswith("| plan.")}
    assert '"Plain DDP with fp32 AdamW keeps 16 bytes of model state per parameter."' in lines["plan.ddp_16"]
    assert (
        '"With ZeRO stage 3 on 2 ranks each rank keeps 4 bytes of model state per parameter."' in lines["plan.stage3_4"]
    )
    assert "holds (measured): 2 of 2 hold" in lines["plan.ddp_16"]
    assert "fails (measured): 0 of 2 hold" in lines["plan.stage3_4"]
    # the figures behind them: 52,650,192 bytes at 3,290,624 params is 16.00006 bytes per parameter; stage 3 keeps 8
    assert "52,650,192 bytes (measured)" in lines["plan.ddp_16"] and "+100.00%" in lines["plan.stage3_4"]
    assert "1 holds (1 measured), 1 fails (1 measured)" in md
    rows = list(
        csv.reader(io.StringIO(bench_cli("claims", str(INTEL), "--claims", str(PLAN), "--format", "csv").stdout))
    )
    head = rows[0]
    assert head[:2] == ["document", "id"] and "verdict (cpu-intel-xeon)" in head
    verdict = {line[1]: line[head.index("verdict (cpu-intel-xeon)")] for line in rows[1:] if line}
    assert verdict == {"plan.ddp_16": "holds", "plan.stage3_4": "fails"}


def test_an_unknown_metric_exits_2_naming_the_file_and_the_claim(tmp_path):
    bad = write(tmp_path, PLAN.read_text().replace('"model_state_bytes"', '"model_state_byte"', 1))
    r = bench_cli("claims", str(INTEL), "--claims", str(bad))
    assert r.returncode == 2
    assert str(bad) in r.stderr and "claim plan.ddp_16" in r.stderr and "unknown metric 'model_state_byte'" in r.stderr
    assert "did you mean model_state_bytes" in r.stderr and "Traceback" not in r.stderr
    assert bench_cli("report", str(INTEL), "--claims", str(bad), "-o", str(tmp_path / "rep")).returncode == 2


def test_the_shipped_examples_on_the_intel_results():
    r = bench_cli("claims", str(INTEL), "--claims", str(ZERO), "--claims", str(FA2), "--format", "csv")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    got = {x["id"]: (x["verdict (cpu-intel-xeon)"], x["rests on (cpu-intel-xeon)"]) for x in rows}
    assert got == {
        "zero_paper.figure1_baseline": ("holds", "published"),
        "zero_paper.figure1_pos": ("holds", "published"),
        "zero_paper.figure1_pos_g": ("holds", "published"),
        "zero_paper.figure1_pos_g_p": ("holds", "published"),
        "zero_paper.mixed_adam_16": ("holds", "simulated"),
        "zero_paper.pos_4x": ("holds", "simulated"),
        "zero_paper.pos_g_p_linear": ("holds", "measured"),
        "flashattention2.memory_linear": ("holds", "measured"),
        "flashattention2.standard_quadratic": ("holds", "measured"),
    }
    reason = {x["id"]: x["reason (cpu-intel-xeon)"] for x in rows}
    assert "4 of 4 hold" in reason["zero_paper.pos_g_p_linear"]  # 2 measured ranks, 2 simulated model sizes
    assert (
        "k=1.013" in reason["flashattention2.memory_linear"]
        and "k=1.951" in reason["flashattention2.standard_quadratic"]
    )
    assert "31.4 GB vs 31.41" in reason["zero_paper.figure1_pos"]
    assert {x["document"] for x in rows} == {
        "ZeRO: Memory Optimizations Toward Training Trillion Parameter Models",
        "FlashAttention-2: Faster Attention with Better Parallelism and Work Partitioning",
    }


def test_without_results_published_claims_hold_and_the_others_say_which_run_measures_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no results/runs here
    r = bench_cli("claims", "--claims", str(ZERO), "--format", "csv")
    assert r.returncode == 0, r.stderr
    rows = {x["id"]: x for x in csv.DictReader(io.StringIO(r.stdout))}
    assert rows["zero_paper.figure1_pos_g_p"]["verdict (no results)"] == "holds"
    nm = rows["zero_paper.mixed_adam_16"]
    assert nm["verdict (no results)"] == "not measured here"
    assert "`bench run --plugin fsdp --stage 0 --precision bf16 --simulate true`" in nm["reason (no results)"]
    assert "--stage 1,0" in rows["zero_paper.pos_4x"]["reason (no results)"]


def test_report_shows_each_document_under_its_title(tmp_path):
    # the Intel file's fsdp case rows at 2 ranks (the whole file's plots take ~12 s to draw)
    lines = [ln for ln in INTEL.read_text().splitlines() if '"plugin": "fsdp"' in ln and '"kind": "case"' in ln]
    small = write(tmp_path, "\n".join(ln for ln in lines if '"world_size": 2,' in ln) + "\n", "fsdp.jsonl")
    r = bench_cli("report", str(small), "--claims", str(PLAN), "-o", str(tmp_path / "rep"))
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "rep" / "report.md").read_text()
    assert md.index("## Claims") < md.index("## Capacity plan (example)")
    assert "Plain DDP with fp32 AdamW keeps 16 bytes of model state per parameter." in md
    html = (tmp_path / "rep" / "report.html").read_text()
    assert 'id="claims-capacity-plan-example-1"' in html and 'class="v-fails"' in html


# ---------------------------------------------------------------------------------------------
# Every kind of claim, on rows built here


def test_a_row_claim_judges_every_matching_row_and_says_how_many_hold(tmp_path):
    rows = [fsdp_row(0, 2, 0, 1600.0, 100), fsdp_row(0, 2, 1, 1700.0, 100), fsdp_row(3, 2, 0, 800.0, 100)]
    res = judged(tmp_path, HEAD + claim_toml(), rows)["doc.one"]
    o = res.outcomes["cpu-a"]
    assert (o.verdict, o.kind) == ("fails", "measured")
    assert o.reason.startswith("1 of 2 hold: ") and "rank 1" in o.reason and "+6.25%" in o.reason
    rows[1] = fsdp_row(0, 2, 1, 1600.0, 100)
    assert judged(tmp_path, HEAD + claim_toml(), rows)["doc.one"].outcomes["cpu-a"].verdict == "holds"


def test_repeats_are_each_judged(tmp_path):
    rows = [fsdp_row(0, 2, 0, 1600.0, 100), dataclasses.replace(fsdp_row(0, 2, 0, 1600.0, 100), run_id="r2")]
    o = judged(tmp_path, HEAD + claim_toml(), rows)["doc.one"].outcomes["cpu-a"]
    assert o.verdict == "holds" and o.reason.startswith("2 of 2 hold: ") and "run r2, rank 0" in o.reason


def test_the_readme_example_is_judged_as_shown(tmp_path):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Your own document's claims") :]
    block = section[section.index("```toml\n") + 8 : section.index("```\n", section.index("```toml\n") + 8)]
    r = bench_cli("claims", str(INTEL), "--claims", str(write(tmp_path, block)), "--format", "csv")
    assert r.returncode == 0, r.stderr
    (line,) = [x for x in csv.DictReader(io.StringIO(r.stdout)) if x["id"]]
    assert (line["id"], line["verdict (cpu-intel-xeon)"]) == ("plan.ddp_16", "holds")


def test_one_column_per_device(tmp_path):
    b = dataclasses.replace(fsdp_row(0, 2, 0, 1000.0, 100, "cpu-b"), run_id="r2")
    got = judged(tmp_path, HEAD + claim_toml(), [fsdp_row(0, 2, 0, 1600.0, 100, "cpu-a"), b])
    assert got["_devices"] == ["cpu-a", "cpu-b"]
    assert [got["doc.one"].outcomes[d].verdict for d in ("cpu-a", "cpu-b")] == ["holds", "fails"]
    assert "run r" not in got["doc.one"].outcomes["cpu-b"].reason  # one run per device: no repeat to tell apart


def test_a_selection_that_matches_no_row_is_not_measured_with_the_run_that_would(tmp_path):
    rows = [fsdp_row(0, 4, 0, 1600.0, 100)]
    o = judged(tmp_path, HEAD + claim_toml(), rows)["doc.one"].outcomes["cpu-a"]
    assert o.verdict == "not measured here"
    assert "`bench run --plugin fsdp --stage 0 --world-size 2 --precision fp32 --simulate false`" in o.reason


def test_a_ratio_between_two_selections_pairs_rows_on_everything_else(tmp_path):
    rows = [
        fsdp_row(0, 2, 0, 1600.0, 100),
        fsdp_row(3, 2, 0, 800.0, 100),
        fsdp_row(0, 4, 0, 1600.0, 100),
        fsdp_row(3, 4, 0, 600.0, 100),  # 0.375, not 1/4
    ]
    text = HEAD + claim_toml(
        select=None, ratio="{ of = { stage = 3 }, to = { stage = 0 } }", expected='"1 / world_size"'
    )
    o = judged(tmp_path, text, rows)["doc.one"].outcomes["cpu-a"]
    assert o.verdict == "fails" and o.reason.startswith("1 of 2 hold: ")
    assert "0.5 x vs 0.5" in o.reason and "0.375 x vs 0.25" in o.reason


def test_a_fitted_exponent_per_group(tmp_path):
    def att(impl: str, seq: int, mib: float) -> Row:
        return Row(
            run_id="r1",
            plugin="attention",
            params={"impl": impl, "seq": seq, "heads": 12, "dtype": "fp32"},
            metrics={"extra_mib": Metric(mib, "MiB (test)")},
            fingerprint={"label": "cpu-a"},
        )

    rows = [att("naive", s, 3.0 * (s / 256) ** 2) for s in (256, 512, 1024)]
    rows += [att("sdpa_flash", s, 1.0 * (s / 256) ** 1.5) for s in (256, 512, 1024)]
    text = HEAD + claim_toml(
        plugin='"attention"', metric='"extra_mib"', select=None, fit='"seq"', expected="2", tolerance='"0.05"'
    )
    o = judged(tmp_path, text, rows)["doc.one"].outcomes["cpu-a"]
    assert o.verdict == "fails" and o.reason.startswith("1 of 2 hold: ")
    assert "k=2.000" in o.reason and "k=1.500" in o.reason and "impl=naive" in o.reason
    text = text.replace('tolerance = "0.05"', 'tolerance = "0.7..1.01"')  # a range bounds measured / expected
    o = judged(tmp_path, text, rows)["doc.one"].outcomes["cpu-a"]
    assert o.verdict == "holds" and "0.75 x expected" in o.reason


@pytest.mark.parametrize(
    "printed, tol, verdict",
    [
        ('"1.9 GB"', '"0.05 GB"', "holds"),
        ('"1.9 GB"', '"10 MB"', "fails"),
        ("1.9", '"2%"', "holds"),
        ("2.0", '"2%"', "fails"),
    ],
)
def test_published_arithmetic_needs_no_run(tmp_path, printed, tol, verdict):
    text = HEAD + claim_toml(
        plugin=None,
        metric=None,
        select=None,
        values="{ psi = 7.5e9, nd = 64, K = 12 }",
        expected='"(2 + 2 + K) * psi / nd / 1e9"',
        printed=printed,
        tolerance=tol,
    )
    if tol == '"2%"':
        text = text.replace('"1.9"', "1.9")
    o = judged(tmp_path, text, [])["doc.one"].outcomes["no results"]
    assert (o.verdict, o.kind) == (verdict, "published")
    assert "1.875" in o.reason  # (2+2+12) * 7.5e9 / 64 bytes = 1.875 GB


def test_units_convert_within_a_family(tmp_path):
    rows = [fsdp_row(0, 2, 0, 16e6 + 500_000, 1e6)]
    # 16 MB expected; measured 16.5 MB: outside 1%, inside an absolute 1 MiB (1,048,576 bytes)
    text = HEAD + claim_toml(expected='"16 * n_params / 1e6"', unit='"MB"', tolerance='"1 MiB"')
    o = judged(tmp_path, text, rows)["doc.one"].outcomes["cpu-a"]
    assert o.verdict == "holds" and "within ±1.04858e+06" in o.reason
    o = judged(tmp_path, text.replace('"1 MiB"', '"400 KB"'), rows)["doc.one"].outcomes["cpu-a"]
    assert o.verdict == "fails"


# ---------------------------------------------------------------------------------------------
# Every error in a file: exit 2, the file and the claim named, no traceback


@pytest.mark.parametrize(
    "text, says",
    [
        ("[document\n", "not valid TOML"),
        (HEAD, "no [[claim]] tables"),
        ('[document]\ntitle = "x"\n' + claim_toml(), "[document] needs source"),
        (HEAD + claim_toml(plugin='"fsdq"'), "claim doc.one: unknown plugin 'fsdq'; did you mean fsdp"),
        (HEAD + claim_toml(metric='"bytes_per_rank"'), "claim doc.one: unknown metric 'bytes_per_rank'"),
        (HEAD + claim_toml(select="{ stag = 0 }"), "claim doc.one: select names 'stag', which is no parameter of fsdp"),
        (HEAD + claim_toml(select="{ stage = 5 }"), "stage = 5 is not one of 0, 1, 2, 3"),
        (HEAD + claim_toml(expected='"16 * n_params +"'), "claim doc.one: '16 * n_params +' is not a formula"),
        (HEAD + claim_toml(expected="\"__import__('os').getcwd()\""), "only min, max, log"),
        (HEAD + claim_toml(expected='"16 * n_parms"'), "names n_parms, which are not parameters and metrics"),
        (HEAD + claim_toml() + claim_toml(), "claim doc.one: the id is already taken by"),
        (HEAD + claim_toml(id='"zero.ddp"'), "the id is already taken by the built-in claims (fsdp)"),
        (HEAD + claim_toml(id='"Doc One"'), "is not dotted lower-case words"),
        (HEAD + claim_toml(quote=None), 'claim doc.one: needs quote = "..."'),
        (HEAD + claim_toml(tolerance='"a lot"'), "tolerance 'a lot' is not a number"),
        (HEAD + claim_toml(tolerance='"2 parsecs"'), "unknown unit 'parsecs'"),
        (HEAD + claim_toml(tolerance="inf"), "tolerance must be a finite number, not inf"),
        (HEAD + claim_toml(values="{ K = nan }"), "values.K must be a finite number"),
        (HEAD + claim_toml(tolerance='"1.1..0.9"'), "low end is above its high end"),
        (HEAD + claim_toml(colour='"red"'), "unknown key(s) colour"),
        (HEAD + claim_toml(fit='"colour"'), "fit = 'colour' must name a parameter of fsdp"),
        (HEAD + claim_toml(printed="120"), "a published claim (printed = ...) is arithmetic, with no plugin"),
        (HEAD + claim_toml(values="{ n_params = 3 }"), "values n_params would hide the row's own"),
        (
            HEAD + claim_toml(tolerance='"1 ms"'),
            "claim doc.one: tolerance '1 ms' does not convert to model_state_bytes's unit 'bytes'",
        ),
    ],
)
def test_errors_in_a_file_exit_2_naming_file_and_claim(tmp_path, text, says):
    p = write(tmp_path, text)
    r = bench_cli("claims", str(INTEL), "--claims", str(p))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.startswith(f"error: {p}: ") and says in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1


def test_a_duplicate_id_across_two_files_names_both(tmp_path):
    a, b = write(tmp_path, HEAD + claim_toml(), "a.toml"), write(tmp_path, HEAD + claim_toml(), "b.toml")
    r = bench_cli("claims", str(INTEL), "--claims", str(a), "--claims", str(b))
    assert r.returncode == 2 and f"{b}: claim doc.one: the id is already taken by {a}" in r.stderr


def test_a_missing_file_exits_2(tmp_path):
    r = bench_cli("claims", str(INTEL), "--claims", str(tmp_path / "nope.toml"))
    assert r.returncode == 2 and "nope.toml: cannot read the claims file" in r.stderr


def test_a_fifo_named_toml_exits_2_without_blocking(tmp_path):
    fifo = tmp_path / "doc.toml"
    os.mkfifo(fifo)  # nothing ever writes: reading it would block forever
    r = bench_cli("claims", str(INTEL), "--claims", str(fifo))
    assert r.returncode == 2 and "doc.toml: not a regular file" in r.stderr


# ---------------------------------------------------------------------------------------------
# Formulas: a small grammar, never eval


def test_formula_grammar_evaluates_what_it_allows():
    f = expr.parse("(2 + 2 + K) * psi / nd / 1e9")
    assert f.names == {"K", "psi", "nd"} and f({"K": 12, "psi": 7.5e9, "nd": 64}) == pytest.approx(1.875)
    assert expr.parse("-x ** 2 + max(1, 2, 3) - min(a, 4)")({"x": 3, "a": 1}) == -9 + 3 - 1
    assert expr.parse("log(e8, 10)")({"e8": 1e8}) == pytest.approx(8)
    assert expr.parse("log(x)")({"x": math.e}) == pytest.approx(1)


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os')",
        "x.real",
        "x[0]",
        "x < 2",
        "'16'",
        "True",
        "lambda: 1",
        "min(a=1, b=2)",
        "max(1)",
        "log(1, 2, 3)",
        "open('f')",
        "[1, 2]",
        "x if y else z",
        "(x := 3)",
        "a; b",
        "",
        "1" * 600,
        "not x",
        "x // 2",
        "x % 2",
    ],
)
def test_formula_grammar_refuses_everything_else(text):
    with pytest.raises(expr.FormulaError):
        expr.parse(text)


@pytest.mark.parametrize(
    "text, env",
    [("1 / x", {"x": 0}), ("10.0 ** x", {"x": 1e6}), ("log(x)", {"x": -1}), ("x ** 0.5", {"x": -4}), ("y", {})],
)
def test_formula_arithmetic_errors_are_formula_errors(text, env):
    with pytest.raises(expr.FormulaError):
        expr.parse(text)(env)


def test_a_formula_failing_on_a_row_is_reported_with_why(tmp_path):
    rows = [fsdp_row(0, 2, 0, 1600.0, 0)]
    o = judged(tmp_path, HEAD + claim_toml(expected='"1600 / n_params"'), rows)["doc.one"].outcomes["cpu-a"]
    assert o.verdict == "reported" and "float division by zero" in o.reason
