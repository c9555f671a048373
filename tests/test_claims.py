"""The claims registry and `bench claims`: every registry id gets a verdict, known errors fail,
holds/fails cite their numbers, several devices give several columns, CUDA-only claims say what
would measure them, bad inputs exit 2."""
from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bench import claims
from bench.cli import main
from bench.results import append_rows
from conftest import ROOT, run_bench

CLAIMS_MD = ROOT.parent / "shared" / "claims.md"


# ---------------------------------------------------------------------------------------------
# Synthetic rows (shared with test_report.py)


def fingerprint(label: str, cuda: bool = False) -> dict[str, Any]:
    return {"label": label, "device_type": "cuda" if cuda else "cpu", "devices": ["NVIDIA H100 80GB HBM3"] if cuda else [],
            "cuda": "12.8" if cuda else None, "cpu_model": "test"}  # fmt: skip


def row(plugin: str, params: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None,
        evidence: dict[str, Any] | None = None, *, device: str = "cpu-test", cuda: bool = False,
        samples: dict[str, list[float]] | None = None, labels: dict[str, Any] | None = None,
        kind: str = "case", status: str = "ok", message: str = "", run_id: str = "20260101-000000-abcdef") -> dict[str, Any]:  # fmt: skip
    """A result row as the core writes it; metrics given as name -> value or (value, unit[, source])."""
    ms = {}
    for k, v in (metrics or {}).items():
        if isinstance(v, tuple):
            ms[k] = {"value": v[0], "unit": v[1], "source": v[2] if len(v) > 2 else "measured"}
        else:
            ms[k] = {"value": v, "unit": "", "source": "measured"}
    return {"schema": "bench.row/1", "run_id": run_id, "case_id": f"{plugin}-x", "plugin": plugin, "profile": "quick",
            "kind": kind, "params": params or {}, "labels": labels or {}, "status": status, "message": message,
            "metrics": ms, "samples": samples or {}, "notes": [], "evidence": evidence or {},
            "started_at": "2026-01-01T00:00:00", "duration_s": 1.0, "fingerprint": fingerprint(device, cuda)}  # fmt: skip


def ev(value: Any, unit: str = "", source: str = "measured", detail: str = "", expected: Any = None,
       verdict: str | None = None) -> dict[str, Any]:  # fmt: skip
    return {"value": value, "unit": unit, "source": source, "detail": detail, "expected": expected, "verdict": verdict}


def holding_evidence(claim: dict[str, Any]) -> dict[str, Any] | None:
    """Evidence that satisfies the claim's registry check (built from the registry, so a new
    claim is covered automatically); None for claims computed here."""
    c = claim["check"]
    t = c["type"]
    if t in ("formula", "parts"):
        return None
    if t == "exact":
        return ev(c["value"], claim.get("unit", ""))
    if t == "rel":
        if "value" in c:
            return ev(c["value"] * (1 + c["tol"] / 2), claim.get("unit", ""))
        return ev(1.01e6 if c["tol"] > 0.01 else 1.005e6, "bytes", expected=1.0e6, detail="world size 2, gloo")
    if t == "abs":
        return ev(c["value"] + c["tol"] / 2, claim.get("unit", ""))
    if t == "range":
        return ev((c["lo"] + c["hi"]) / 2, claim.get("unit", ""))
    if t == "max":
        return ev(c["value"] / 2, claim.get("unit", ""))
    if t == "plugin":
        return ev(16.0, claim.get("unit", ""), detail="compared 16 with 16", verdict="holds")
    if t == "report":
        return ev(42.0, claim.get("unit", ""), detail="reported figure")
    raise AssertionError(t)


def all_evidence_rows(device: str = "h100-test", cuda: bool = True) -> list[dict[str, Any]]:
    """One summary row per plugin carrying holding evidence for every measured claim."""
    by_plugin: dict[str, dict[str, Any]] = {}
    for c in claims.load_registry():
        e = holding_evidence(c)
        if e is not None:
            plugin = c.get("plugin") or "misc"
            by_plugin.setdefault(plugin if isinstance(plugin, str) else plugin[0], {})[c["id"]] = e
    return [row(p, evidence=evs, device=device, cuda=cuda, kind="summary") for p, evs in by_plugin.items()]


def _by_id(results: list[claims.ClaimResult]) -> dict[str, claims.ClaimResult]:
    return {r.id: r for r in results}


# ---------------------------------------------------------------------------------------------
# The registry


def test_registry_is_complete_data():
    reg = claims.load_registry()
    ids = [c["id"] for c in reg]
    assert len(ids) == len(set(ids)), "duplicate ids"
    types = {"exact", "rel", "abs", "range", "max", "plugin", "report", "formula", "parts"}
    for c in reg:
        for k in ("id", "claim", "source", "expected", "tolerance", "check", "needs"):
            assert c.get(k) not in (None, ""), f"{c['id']} lacks {k}"
        assert c["check"]["type"] in types
        if c["check"]["type"] == "formula":
            assert c["check"]["formula"] in claims.FORMULAS, c["id"]
        elif c["check"]["type"] == "parts":
            assert set(c["check"]["parts"]) <= set(ids)
        else:
            assert c.get("plugin") and c.get("metric"), f"{c['id']}: which plugin/metric measures it?"
        if "parent" in c:
            assert c["parent"] in ids and c["id"].startswith(c["parent"] + ".")


CLAIMS_IDS = Path(__file__).parent / "fixtures" / "claims_md_ids.txt"  # snapshot of CLAIMS_MD's ids


def test_every_claims_md_id_is_in_the_registry():
    """Against the snapshot everywhere (CI has no ../shared); against claims.md itself where it is."""
    snap = {ln.strip() for ln in CLAIMS_IDS.read_text().splitlines() if ln.strip() and not ln.startswith("#")}
    assert len(snap) >= 30
    registry = {c["id"] for c in claims.load_registry()}
    assert snap <= registry, snap - registry
    if CLAIMS_MD.exists():
        md_ids = set(re.findall(r"^\|\s*([a-z0-9_]+\.[a-z0-9_.]+)\s*\|", CLAIMS_MD.read_text(), flags=re.M))
        assert md_ids == snap, f"claims.md changed: refresh {CLAIMS_IDS.name}: {md_ids ^ snap}"


# ---------------------------------------------------------------------------------------------
# Evaluation


def test_every_id_gets_a_verdict_that_cites_its_number():
    devices, results = claims.evaluate(all_evidence_rows())
    assert devices == ["h100-test"]
    got = _by_id(results)
    assert set(got) >= {c["id"] for c in claims.load_registry()}
    for cid, r in got.items():
        o = r.outcomes["h100-test"]
        assert o.verdict in claims.VERDICTS, cid
        assert o.verdict != "not measured here", f"{cid}: {o.reason}"
        if o.verdict in ("holds", "fails"):
            assert re.search(r"\d", o.reason), f"{cid} cites no number: {o.reason}"
            assert o.measured, cid
    # measured claims hold with holding evidence; report-only ones are reported
    assert got["mem.store_fp32"].outcomes["h100-test"].verdict == "holds"
    assert got["zero.stage1"].outcomes["h100-test"].verdict == "holds"
    assert got["attn.fa_speed"].outcomes["h100-test"].verdict == "reported"
    assert got["compute.pf_day.v100"].outcomes["h100-test"].verdict == "holds"


def test_formula_claims_need_no_rows():
    devices, results = claims.evaluate([])
    assert devices == [claims.NO_RESULTS]
    for r in results:
        o = r.outcomes[claims.NO_RESULTS]
        if r.claim["check"]["type"] in ("formula", "parts"):
            assert o.verdict in ("holds", "fails", "reported"), r.id
        else:
            assert o.verdict == "not measured here" and "bench run" in o.reason, (r.id, o.reason)


def test_known_errors_fail_with_the_reason():
    _, results = claims.evaluate([])
    got = _by_id(results)
    known = [c["id"] for c in claims.load_registry() if c.get("known_error")]
    assert set(known) >= {"compute.pf_day.a100", "fsdp.near_linear.v100_80gb", "scale.kaplan.fig1_constant"}
    for cid in known:
        assert got[cid].outcomes[claims.NO_RESULTS].verdict == "fails", cid
    assert "3.21" in got["compute.pf_day.a100"].outcomes[claims.NO_RESULTS].reason  # 8.64e19 / (312e12 * 86400)
    assert "sparsity" in got["compute.pf_day.a100"].outcomes[claims.NO_RESULTS].reason
    assert "16/32 GB" in got["fsdp.near_linear.v100_80gb"].outcomes[claims.NO_RESULTS].reason
    assert "2.3e+08" in got["scale.kaplan.fig1_constant"].outcomes[claims.NO_RESULTS].reason
    # the parent id is present and fails because of its a100 part; the other arithmetic holds
    assert got["compute.pf_day"].outcomes[claims.NO_RESULTS].verdict == "fails"
    assert "compute.pf_day.a100" in got["compute.pf_day"].outcomes[claims.NO_RESULTS].reason
    for cid in ("compute.pf_day.v100", "scale.bloomberg", "scale.chinchilla.table3", "zero.limits", "quant.nf4.bits",
                "zero.ddp.figure1", "zero.stage1.figure1", "zero.stage2.figure1", "zero.stage3.figure1"):  # fmt: skip
        assert got[cid].outcomes[claims.NO_RESULTS].verdict == "holds", (cid, got[cid].outcomes[claims.NO_RESULTS].reason)
    assert "11.25" in got["scale.bloomberg"].outcomes[claims.NO_RESULTS].reason


@pytest.mark.parametrize(
    "check,evidence,verdict",
    [
        ({"type": "exact", "value": "3.140625"}, ev("3.140625"), "holds"),
        ({"type": "exact", "value": "3.140625"}, ev("3.14"), "fails"),
        # a float compares by its exact binary value, not its short repr
        ({"type": "exact", "value": "3.1415920257568359375"}, ev(3.1415920257568359375), "holds"),
        ({"type": "exact", "value": "3.1415920257568359375"}, ev(3.141592), "fails"),
        ({"type": "exact", "value": "3"}, ev(3), "holds"),
        ({"type": "exact", "value": 4}, ev(4.0), "holds"),
        ({"type": "exact", "value": 4}, ev(4.0001), "fails"),
        ({"type": "rel", "value": 0.5, "tol": 0.02}, ev(0.509), "holds"),
        ({"type": "rel", "value": 0.5, "tol": 0.02}, ev(0.52), "fails"),
        ({"type": "rel", "tol": 0.03}, ev(1.1e6, expected=1.0e6), "fails"),  # the evidence's formula wins
        ({"type": "rel", "tol": 0.03}, ev(1.02e6, expected=1.0e6), "holds"),
        ({"type": "abs", "value": 2.0, "tol": 0.2}, ev(1.85), "holds"),
        ({"type": "abs", "value": 2.0, "tol": 0.2}, ev(1.75), "fails"),
        ({"type": "range", "lo": 1.0, "hi": 1.1}, ev(0.97), "fails"),
        ({"type": "max", "value": 2}, ev(-1.5), "holds"),
        ({"type": "max", "value": 2}, ev(2.5), "fails"),
        ({"type": "plugin"}, ev(30.0, verdict="fails", detail="22.1 at batch 4"), "fails"),
        ({"type": "plugin"}, ev(30.0), "reported"),
        ({"type": "report"}, ev(1.3), "reported"),
        ({"type": "rel", "value": 0.5, "tol": 0.02}, ev("lots"), "reported"),
    ],
)
def test_checks(check, evidence, verdict):
    v, reason = claims.check_value(check, evidence)
    assert v == verdict, reason
    assert reason


def test_failing_evidence_and_several_measurements_are_all_shown():
    rows = [
        row("quantization", evidence={"quant.int8_half": ev(0.61, "x of fp16")}),
        row("fsdp", {"stage": 3, "world_size": 2}, evidence={"zero.stage3": ev(2.0e6, "bytes", expected=2.0e6, detail="ws 2")}),
        row("fsdp", {"stage": 3, "simulate": True}, evidence={"zero.stage3": ev(2.1, "GB", "simulated", expected=1.875)}),
        # the same figure on every rank is one piece of evidence
        row("fsdp", {"stage": 3, "world_size": 2}, labels={"rank": 1}, evidence={"zero.stage3": ev(2.0e6, "bytes", expected=2.0e6, detail="ws 2")}),
    ]
    _, results = claims.evaluate(rows)
    got = _by_id(results)
    q = got["quant.int8_half"].outcomes["cpu-test"]
    assert q.verdict == "fails" and "0.61" in q.reason and "+22" in q.reason
    z = got["zero.stage3"].outcomes["cpu-test"]
    assert z.verdict == "fails"  # the simulated one is 12% over its formula
    assert len(z.measured) == 2 and {m.source for m in z.measured} == {"measured", "simulated"}
    assert "[holds]" in z.reason and "[fails]" in z.reason and "+12.00%" in z.reason


def test_not_measured_says_why():
    rows = [
        row("attention", {"seq": 128}, status="skipped", message="FLASH backend needs CUDA"),
        row("precision", {"dtype": "fp32"}, metrics={"final_loss": 2.0}),
        # CPU evidence for a CUDA-only claim does not count
        row("attention", kind="summary", evidence={"attn.fa_speed": ev(12.0, "% of peak")}),
    ]
    _, results = claims.evaluate(rows)
    got = _by_id(results)
    assert "skipped here: FLASH backend needs CUDA" in got["attn.quadratic"].outcomes["cpu-test"].reason
    assert "precision ran but attached no evidence" in got["prec.pi_fp32"].outcomes["cpu-test"].reason
    fa = got["attn.fa_speed"].outcomes["cpu-test"]
    assert fa.verdict == "not measured here"
    assert "needs CUDA: run `bench run --plugin attention --profile gpu` on a GPU" in fa.reason
    assert "CPU rows does not count" in fa.reason
    assert "needs 8 to 512 GPUs" in got["fsdp.near_linear"].outcomes["cpu-test"].reason


def test_unregistered_evidence_is_shown_not_dropped():
    _, results = claims.evaluate([row("toy", evidence={"toy.made_up": ev(1.0, "x")})])
    assert _by_id(results)["toy.made_up"].outcomes["cpu-test"].verdict == "reported"


# ---------------------------------------------------------------------------------------------
# The command


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_cli_multi_device_columns_and_no_id_missing(tmp_path):
    cpu = tmp_path / "cpu.jsonl"
    gpu = tmp_path / "gpu.jsonl"
    append_rows(cpu, [row("quantization", kind="summary", evidence={"quant.int8_half": ev(0.55, "x")}, device="cpu-a")])
    append_rows(gpu, all_evidence_rows("h100-b", cuda=True))
    res = CliRunner().invoke(main, ["claims", str(cpu), str(gpu), "--format", "csv"])
    assert res.exit_code == 0, res.output  # failing claims are findings, not errors
    lines = _csv(res.output)
    header = list(lines[0].keys())
    assert {"verdict (cpu-a)", "verdict (h100-b)", "measured (cpu-a)", "measured (h100-b)"} <= set(header)
    ids = [ln["id"] for ln in lines]
    assert set(ids) >= {c["id"] for c in claims.load_registry()}
    by = {ln["id"]: ln for ln in lines}
    assert by["quant.int8_half"]["verdict (cpu-a)"] == "fails" and "0.55" in by["quant.int8_half"]["reason (cpu-a)"]
    assert by["quant.int8_half"]["verdict (h100-b)"] == "holds"
    assert by["attn.fa_speed"]["verdict (cpu-a)"] == "not measured here"
    assert "--profile gpu" in by["attn.fa_speed"]["reason (cpu-a)"]
    assert by["compute.pf_day.a100"]["verdict (cpu-a)"] == by["compute.pf_day.a100"]["verdict (h100-b)"] == "fails"
    for ln in lines:
        for d in ("cpu-a", "h100-b"):
            assert ln[f"verdict ({d})"] in claims.VERDICTS
            if ln[f"verdict ({d})"] in ("holds", "fails"):
                assert re.search(r"\d", ln[f"reason ({d})"]) and ln[f"measured ({d})"] != "-"
    # terminal and markdown show the same ids
    for fmt in ("terminal", "markdown"):
        out = CliRunner().invoke(main, ["claims", str(cpu), str(gpu), "--format", fmt]).output
        for i in {c["id"] for c in claims.load_registry()}:
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
    r = CliRunner().invoke(main, ["claims", str(bad)])
    assert r.exit_code == 2 and f"{bad}:2" in r.output
    r = CliRunner().invoke(main, ["claims", "--format", "xml"])
    assert r.exit_code == 2


def test_cli_default_is_the_latest_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["claims", "--format", "csv"])  # no results at all: formulas still judged
    assert r.exit_code == 0
    by = {ln["id"]: ln for ln in _csv(r.stdout)}
    assert by["compute.pf_day.a100"][f"verdict ({claims.NO_RESULTS})"] == "fails"
    runs = tmp_path / "results" / "runs"
    append_rows(runs / "old.jsonl", [row("quantization", evidence={"quant.nf4": ev(0.30, "x")}, device="old-dev")])
    append_rows(runs / "new.jsonl", [row("quantization", evidence={"quant.nf4": ev(0.258, "x")}, device="new-dev")])
    os.utime(runs / "old.jsonl", (1, 1))
    r = CliRunner().invoke(main, ["claims", "--format", "csv"])
    assert r.exit_code == 0
    by = {ln["id"]: ln for ln in _csv(r.stdout)}
    assert by["quant.nf4"]["verdict (new-dev)"] == "holds" and "verdict (old-dev)" not in by["quant.nf4"]


def test_real_cli_subprocess(tmp_path):
    f = tmp_path / "r.jsonl"
    append_rows(f, [row("precision", kind="summary", evidence={"prec.pi_bf16": ev("3.140625"), "prec.pi_fp16": ev("3.15625")})])
    p = run_bench("claims", str(f), timeout=120)
    assert p.returncode == 0, p.stderr
    assert "prec.pi_bf16" in p.stdout and "holds: 3.140625 == 3.140625" in p.stdout
    assert "fails: 3.15625 != 3.140625" in p.stdout
    assert re.search(r"cpu-test: \d+ claims: \d+ holds, \d+ fails", p.stdout)
    assert run_bench("claims", "--help").returncode == 0
