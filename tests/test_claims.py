"""The claims engine and `bench claims`: every declared claim gets a verdict on every device, each
verdict says what it rests on (measured / simulated / published), every check type can fail,
aggregates of parts are shown but not counted, known errors fail, bad inputs exit 2. The claims
themselves are the plugins' (their own tests check their figures); this file is plugin-agnostic
except for the snapshot of shared/claims.md's ids, which the installed plugins must cover."""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import ROOT, bench_cli, run_bench

from bench import claims
from bench.checks import KINDS
from bench.cli import main
from bench.contract import Check, Claim, Evidence, Figure, Judged
from bench.discovery import all_claims
from bench.results import append_rows
from bench.rows import Row

CLAIMS_MD = ROOT.parent / "shared" / "claims.md"
CLAIMS_IDS = Path(__file__).parent / "fixtures" / "claims_md_ids.txt"  # snapshot of CLAIMS_MD's ids


def fingerprint(label: str, cuda: bool = False) -> dict[str, Any]:
    return {
        "label": label,
        "device_type": "cuda" if cuda else "cpu",
        "devices": ["NVIDIA H100 80GB HBM3"] if cuda else [],
        "cuda": "12.8" if cuda else None,
        "cpu_model": "test",
        "machine_id": label,
    }


def row(
    plugin: str,
    params: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    evidence: dict[str, Evidence] | None = None,
    *,
    device: str = "cpu-test",
    cuda: bool = False,
    labels: dict[str, Any] | None = None,
    kind: str = "case",
    status: str = "ok",
    message: str = "",
    samples: dict[str, list[float]] | None = None,
) -> Row:
    """A result row as the core writes it; metrics given as name -> value or (value, unit[, source])."""
    ms = {}
    for k, v in (metrics or {}).items():
        v = v if isinstance(v, tuple) else (v, "")
        ms[k] = {"value": v[0], "unit": v[1], "source": v[2] if len(v) > 2 else "measured"}
    return Row.from_json(
        {
            "schema": "bench.row/1",
            "run_id": "20260101-000000-abcdef",
            "case_id": f"{plugin}-x",
            "plugin": plugin,
            "profile": "quick",
            "kind": kind,
            "params": params or {},
            "labels": labels or {},
            "status": status,
            "message": message,
            "metrics": ms,
            "samples": samples or {},
            "notes": [],
            "evidence": {k: e.to_json() for k, e in (evidence or {}).items()},
            "started_at": "2026-01-01T00:00:00",
            "duration_s": 1.0,
            "fingerprint": fingerprint(device, cuda),
        }
    )


def ev(
    value: Any,
    unit: str = "",
    source: str = "measured",
    detail: str = "",
    expected: Any = None,
    verdict: str | None = None,
) -> Evidence:
    return Evidence(value, unit, source, detail, expected, verdict)


def holding_evidence(c: Claim) -> Evidence | None:
    """Evidence that satisfies the claim's check (built from the check itself, so every claim a
    plugin declares is covered); None for claims judged from published figures or parts."""
    k = c.check
    if k.type in ("formula", "parts"):
        return None
    if k.type == "exact":
        return ev(k.value, c.unit)
    if k.type == "rel":
        if k.value is not None:
            return ev(k.value * (1 + (k.tol or 0) / 2), c.unit)
        return ev(1.0e6 * (1 + (k.tol or 0) / 2), "bytes", expected=1.0e6, detail="world size 2")
    if k.type == "abs":
        return ev(k.value + (k.tol or 0) / 2, c.unit)
    if k.type == "range":
        return ev((k.lo + k.hi) / 2, c.unit)
    if k.type == "max":
        return ev(k.value / 2, c.unit)
    if k.type == "plugin":
        return ev(16.0, c.unit, detail="compared 16 with 16", verdict="holds")
    return ev(42.0, c.unit, detail="reported figure")


def breaking_evidence(c: Claim) -> Evidence | None:
    """Evidence that must make the claim's check fail."""
    k = c.check
    if k.type == "exact":
        return ev("not-" + str(k.value) if isinstance(k.value, str) else (k.value or 0) + 1, c.unit)
    if k.type == "rel":
        if k.value is not None:
            return ev(k.value * (1 + 3 * (k.tol or 0.01) + 0.01), c.unit)
        return ev(1.0e6 * (1 + 3 * (k.tol or 0.01) + 0.01), "bytes", expected=1.0e6)
    if k.type == "abs":
        return ev(k.value + 2 * (k.tol or 0) + 1, c.unit)
    if k.type == "range":
        return ev(k.hi + abs(k.hi - k.lo) + 1, c.unit)
    if k.type == "max":
        return ev(2 * k.value + 1, c.unit)
    if k.type == "plugin":
        return ev(16.0, c.unit, detail="compared 16 with 24", verdict="fails")
    return None


def all_evidence_rows(evidence_of=holding_evidence, device: str = "h100-test", cuda: bool = True) -> list[Row]:
    """One summary row per plugin carrying evidence for every claim judged from rows."""
    by_plugin: dict[str, dict[str, Evidence]] = {}
    for owner, c in all_claims():
        e = evidence_of(c)
        if e is not None:
            by_plugin.setdefault(owner, {})[c.id] = e
    return [row(p, evidence=evs, device=device, cuda=cuda, kind="summary") for p, evs in by_plugin.items()]


def _by_id(results: list[claims.ClaimResult]) -> dict[str, claims.ClaimResult]:
    return {r.id: r for r in results}


# ---------------------------------------------------------------------------------------------
# The registry: what the installed plugins declare


def test_declared_claims_are_complete_and_unique():
    reg = all_claims()
    ids = [c.id for _, c in reg]
    assert len(ids) == len(set(ids)), "duplicate ids"
    assert len(ids) >= 30
    for _, c in reg:
        if c.parent:
            assert c.parent in ids, c.id


def test_every_claims_md_id_is_declared_by_a_plugin():
    """Against the snapshot everywhere (CI has no ../shared); against claims.md itself where it is."""
    snap = {ln.strip() for ln in CLAIMS_IDS.read_text().splitlines() if ln.strip() and not ln.startswith("#")}
    assert len(snap) >= 30
    registry = {c.id for _, c in all_claims()}
    assert snap <= registry, snap - registry
    if CLAIMS_MD.exists():
        md_ids = set(re.findall(r"^\|\s*([a-z0-9_]+\.[a-z0-9_.]+)\s*\|", CLAIMS_MD.read_text(), flags=re.M))
        assert md_ids == snap, f"claims.md changed: refresh {CLAIMS_IDS.name}: {md_ids ^ snap}"


# ---------------------------------------------------------------------------------------------
# Evaluation


def test_every_claim_gets_a_verdict_that_cites_its_number_and_what_it_rests_on():
    devices, results = claims.evaluate(all_evidence_rows())
    assert devices == ["h100-test"]
    got = _by_id(results)
    assert set(got) >= {c.id for _, c in all_claims()}
    for cid, r in got.items():
        o = r.outcomes["h100-test"]
        assert o.verdict in claims.VERDICTS, cid
        assert o.verdict != "not measured here" or r.claim.check.type == "parts", f"{cid}: {o.reason}"
        if o.verdict in ("holds", "fails"):
            assert re.search(r"\d", o.reason), f"{cid} cites no number: {o.reason}"
            assert o.figures, cid
            assert o.kind in KINDS, cid
            assert (o.kind == "by construction") == bool(r.claim.construction), cid


def test_every_check_of_every_declared_claim_can_fail():
    """Feed each claim judged from rows a value that breaks its check: the verdict must be fails."""
    _, results = claims.evaluate(all_evidence_rows(breaking_evidence))
    for r in results:
        c = r.claim
        if breaking_evidence(c) is None or c.check.type in ("formula", "parts"):
            continue
        assert r.outcomes["h100-test"].verdict == "fails", (c.id, r.outcomes["h100-test"].reason)


def test_published_claims_need_no_rows_and_measured_ones_say_what_would_measure_them():
    devices, results = claims.evaluate([])
    assert devices == [claims.NO_RESULTS]
    for r in results:
        o = r.outcomes[claims.NO_RESULTS]
        if r.claim.check.type == "formula":
            assert o.verdict in ("holds", "fails", "reported"), r.id
            assert o.kind == ("published" if o.verdict != "reported" else None), r.id
        elif r.claim.check.type != "parts":
            assert o.verdict == "not measured here" and r.claim.needs in o.reason, (r.id, o.reason)


def test_known_errors_judged_from_published_figures_fail_with_the_reason():
    _, results = claims.evaluate([])
    known = [r for r in results if r.claim.known_error and r.claim.check.type == "formula"]
    assert known, "the notes' known errors (shared/claims.md) must be declared"
    for r in known:
        o = r.outcomes[claims.NO_RESULTS]
        assert o.verdict == "fails" and re.search(r"\d", o.reason), (r.id, o.reason)


@pytest.mark.parametrize(
    "check,evidence,verdict",
    [
        (Check("exact", value="3.140625"), ev("3.140625"), "holds"),
        (Check("exact", value="3.140625"), ev("3.14"), "fails"),
        # a float compares by its exact binary value, not its short repr
        (Check("exact", value="3.1415920257568359375"), ev(3.1415920257568359375), "holds"),
        (Check("exact", value="3.1415920257568359375"), ev(3.141592), "fails"),
        (Check("exact", value="3"), ev(3), "holds"),
        (Check("exact", value=4), ev(4.0), "holds"),
        (Check("exact", value=4), ev(4.0001), "fails"),
        (Check("exact", value=4), ev(float("nan")), "fails"),
        (Check("rel", value=0.5, tol=0.02), ev(0.509), "holds"),
        (Check("rel", value=0.5, tol=0.02), ev(0.52), "fails"),
        (Check("rel", value=0.5, tol=0.02), ev(float("inf")), "fails"),
        (Check("rel", tol=0.03), ev(1.1e6, expected=1.0e6), "fails"),  # the evidence's formula wins
        (Check("rel", tol=0.03), ev(1.02e6, expected=1.0e6), "holds"),
        (Check("abs", value=2.0, tol=0.2), ev(1.85), "holds"),
        (Check("abs", value=2.0, tol=0.2), ev(1.75), "fails"),
        (Check("range", lo=1.0, hi=1.1), ev(0.97), "fails"),
        (Check("range", lo=1.0, hi=1.1), ev(1.05), "holds"),
        (Check("max", value=2), ev(-1.5), "holds"),
        (Check("max", value=2), ev(2.5), "fails"),
        (Check("plugin"), ev(30.0, verdict="fails", detail="22.1 at batch 4"), "fails"),
        (Check("plugin"), ev(30.0, verdict="holds", detail="30 >= 24"), "holds"),
        (Check("plugin"), ev(30.0), "reported"),
        (Check("report"), ev(1.3), "reported"),
        (Check("rel", value=0.5, tol=0.02), ev("lots"), "fails"),
    ],
)
def test_checks(check, evidence, verdict):
    v, reason = claims.check_value(check, evidence)
    assert v == verdict, reason
    assert reason


def _claim(cid: str, check: Check, **kw: Any) -> Claim:
    return Claim(
        cid,
        f"claim {cid}",
        "a source",
        "expected",
        "tol",
        check,
        needs=kw.pop("needs", f"run {cid}"),
        metric=kw.pop("metric", "m"),
        **kw,
    )


def test_kinds_counts_and_aggregates_are_not_counted_twice():
    ok = Judged("holds", "1 + 1 = 2", (Figure(2, "", "published"),))
    bad = Judged("fails", "2 + 2 = 5 printed, 4 computed", (Figure(4, "", "published"),))
    reg = [
        ("x", _claim("t.meas", Check("rel", value=1.0, tol=0.1))),
        ("x", _claim("t.sim", Check("rel", value=1.0, tol=0.1))),
        ("x", _claim("t.pub", Check("formula", formula=lambda: ok), metric="")),
        ("x", _claim("t.err", Check("formula", formula=lambda: bad), metric="", known_error="the notes say 5")),
        ("x", _claim("t.agg", Check("parts", parts=("t.pub", "t.err")), metric="")),
    ]
    rows = [row("x", kind="summary", evidence={"t.meas": ev(1.02), "t.sim": ev(0.98, source="simulated")})]
    devices, results = claims.evaluate(rows, reg)
    got = {r.id: r.outcomes["cpu-test"] for r in results}
    assert (got["t.meas"].verdict, got["t.meas"].kind) == ("holds", "measured")
    assert (got["t.sim"].verdict, got["t.sim"].kind) == ("holds", "simulated")
    assert (got["t.pub"].verdict, got["t.pub"].kind) == ("holds", "published")
    assert got["t.agg"].verdict == "fails" and "t.err fails" in got["t.agg"].reason
    text = claims.summary(devices, results)
    # t.agg is shown but not counted: one error, one fails
    assert "cpu-test: 4 claims: 3 holds (1 measured, 1 simulated, 1 published), 1 fails (1 published)" in text
    assert "holds (measured)" in got["t.meas"].cell()


def test_a_broken_formula_is_reported_not_a_crash():
    def boom() -> Judged:
        raise ZeroDivisionError("printed 0")

    _, results = claims.evaluate([], [("x", _claim("t.boom", Check("formula", formula=boom), metric=""))])
    o = results[0].outcomes[claims.NO_RESULTS]
    assert o.verdict == "reported" and "ZeroDivisionError" in o.reason


def test_failing_evidence_and_several_measurements_are_all_shown():
    reg = [("fsdp", _claim("t.bytes", Check("rel", tol=0.03)))]
    rows = [
        row(
            "fsdp",
            {"stage": 3, "world_size": 2},
            evidence={"t.bytes": ev(2.0e6, "bytes", expected=2.0e6, detail="ws 2")},
        ),
        row("fsdp", {"stage": 3, "simulate": True}, evidence={"t.bytes": ev(2.1, "GB", "simulated", expected=1.875)}),
        # the same figure on every rank is one piece of evidence
        row(
            "fsdp",
            {"stage": 3, "world_size": 2},
            labels={"rank": 1},
            evidence={"t.bytes": ev(2.0e6, "bytes", expected=2.0e6, detail="ws 2")},
        ),
    ]
    _, results = claims.evaluate(rows, reg)
    z = results[0].outcomes["cpu-test"]
    assert z.verdict == "fails" and z.kind == "simulated"  # the simulated one is 12% over its formula
    assert len(z.figures) == 2 and {f.source for f in z.figures} == {"measured", "simulated"}
    assert "[holds]" in z.reason and "[fails]" in z.reason and "+12.00%" in z.reason


def test_not_measured_says_why():
    reg = [
        ("attention", _claim("t.quad", Check("abs", value=2.0, tol=0.2), needs="run `bench run --plugin attention`")),
        ("precision", _claim("t.pi", Check("exact", value="3"))),
        ("attention", _claim("t.gpu", Check("report"), requires="cuda", needs="needs CUDA: run it on a GPU")),
    ]
    rows = [
        row("attention", {"seq": 128}, status="skipped", message="FLASH backend needs CUDA"),
        row("precision", {"dtype": "fp32"}, metrics={"final_loss": 2.0}),
        # CPU evidence for a CUDA-only claim does not count
        row("attention", kind="summary", evidence={"t.gpu": ev(12.0, "% of peak")}),
    ]
    _, results = claims.evaluate(rows, reg)
    got = {r.id: r.outcomes["cpu-test"] for r in results}
    assert "skipped here: FLASH backend needs CUDA" in got["t.quad"].reason
    assert "precision ran but attached no evidence" in got["t.pi"].reason
    assert got["t.gpu"].verdict == "not measured here"
    assert "needs CUDA: run it on a GPU" in got["t.gpu"].reason and "CPU rows does not count" in got["t.gpu"].reason


def test_evidence_no_plugin_declares_is_shown_not_dropped():
    _, results = claims.evaluate([row("toy", evidence={"toy.made_up": ev(1.0, "x")})], [])
    assert _by_id(results)["toy.made_up"].outcomes["cpu-test"].verdict == "reported"


# ---------------------------------------------------------------------------------------------
# The command


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_cli_multi_device_columns_and_no_id_missing(tmp_path):
    cpu = tmp_path / "cpu.jsonl"
    gpu = tmp_path / "gpu.jsonl"
    rel = next(c for _, c in all_claims() if c.check.type == "rel" and c.check.value is not None)
    owner = next(o for o, c in all_claims() if c.id == rel.id)
    append_rows(cpu, [row(owner, kind="summary", evidence={rel.id: breaking_evidence(rel)}, device="cpu-a")])
    append_rows(gpu, all_evidence_rows(device="h100-b", cuda=True))
    res = CliRunner().invoke(main, ["claims", str(cpu), str(gpu), "--format", "csv"])
    assert res.exit_code == 0, res.output  # failing claims are findings, not errors
    lines = _csv(res.output)
    header = list(lines[0].keys())
    assert {"verdict (cpu-a)", "verdict (h100-b)", "measured (cpu-a)", "rests on (h100-b)", "reason (cpu-a)"} <= set(
        header
    )
    ids = {ln["id"] for ln in lines}
    assert ids >= {c.id for _, c in all_claims()}
    by = {ln["id"]: ln for ln in lines}
    assert by[rel.id]["verdict (cpu-a)"] == "fails" and by[rel.id]["rests on (cpu-a)"] == "measured"
    assert by[rel.id]["verdict (h100-b)"] == "holds"
    for ln in lines:
        for d in ("cpu-a", "h100-b"):
            assert ln[f"verdict ({d})"] in claims.VERDICTS
            if ln[f"verdict ({d})"] in ("holds", "fails"):
                assert re.search(r"\d", ln[f"reason ({d})"]) and ln[f"measured ({d})"] != "-"
    for fmt in ("terminal", "markdown"):  # terminal and markdown show the same ids
        out = CliRunner().invoke(main, ["claims", str(cpu), str(gpu), "--format", fmt]).output
        for i in ids:
            assert i[:20] in out, (fmt, i)
    md = CliRunner().invoke(main, ["claims", str(gpu), "--format", "markdown"]).output
    assert md.splitlines()[1].startswith("|--")


def test_cli_bad_inputs_exit_2(tmp_path):
    r = CliRunner().invoke(main, ["claims", str(tmp_path / "nope.jsonl")])
    assert r.exit_code == 2 and "nope.jsonl" in r.output
    bad = tmp_path / "bad.jsonl"
    append_rows(bad, [row("toy")])
    with bad.open("a") as f:
        f.write("{not json\n")
        f.write("{}\n")
    r = CliRunner().invoke(main, ["claims", str(bad)])
    assert r.exit_code == 2 and f"{bad}:2" in r.output
    r = CliRunner().invoke(main, ["claims", "--format", "xml"])
    assert r.exit_code == 2


def test_cli_default_is_the_latest_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["claims", "--format", "csv"])  # no results at all: published ones still judged
    assert r.exit_code == 0
    lines = _csv(r.stdout)
    assert any(ln[f"verdict ({claims.NO_RESULTS})"] == "fails" for ln in lines)  # the notes' known errors
    rel = next(c for _, c in all_claims() if c.check.type == "rel" and c.check.value is not None)
    owner = next(o for o, c in all_claims() if c.id == rel.id)
    runs = tmp_path / "results" / "runs"
    append_rows(runs / "old.jsonl", [row(owner, evidence={rel.id: breaking_evidence(rel)}, device="old-dev")])
    append_rows(runs / "new.jsonl", [row(owner, evidence={rel.id: holding_evidence(rel)}, device="new-dev")])
    os.utime(runs / "old.jsonl", (1, 1))
    r = CliRunner().invoke(main, ["claims", "--format", "csv"])
    assert r.exit_code == 0
    by = {ln["id"]: ln for ln in _csv(r.stdout)}
    assert by[rel.id]["verdict (new-dev)"] == "holds" and "verdict (old-dev)" not in by[rel.id]


def test_real_cli_subprocess(tmp_path):
    exact = [c for _, c in all_claims() if c.check.type == "exact" and isinstance(c.check.value, str)][:2]
    owner = next(o for o, c in all_claims() if c.id == exact[0].id)
    f = tmp_path / "r.jsonl"
    append_rows(
        f,
        [
            row(
                owner,
                kind="summary",
                evidence={exact[0].id: holding_evidence(exact[0]), exact[1].id: breaking_evidence(exact[1])},
            )
        ],
    )
    p = run_bench("claims", str(f), "--format", "markdown", timeout=120)  # markdown: cells are not wrapped
    assert p.returncode == 0, p.stderr
    assert exact[0].id in p.stdout and f"holds (measured): {exact[0].check.value} == {exact[0].check.value}" in p.stdout
    assert "fails (measured): not-" in p.stdout
    assert re.search(r"cpu-test: \d+ claims: \d+ holds \(", p.stdout)
    assert bench_cli("claims", "--help").returncode == 0
