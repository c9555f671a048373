"""A foreign host in the tests (issue 24): gate cases recorded with the native kernels of this machine,
then run again as another CPU would run them (ATen, oneDNN and MKL each limited to less than this CPU
has: ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2), and gated.

Under the portable kernel set (bench.kernels, `make gate`) a bf16 training loss and byte counts come out
the same on the emulated host, so the gate passes, and still fails on a real change: a learning rate
changed by 1e-3, one byte more. Without the pin the same emulation changes the loss (so the emulation
is real), and the gate reports the loss as not compared rather than failing or passing it silently.
Kept cheap: one small training case (30 steps of the tiny GPT) and one byte-count case per run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, bench_cli

from bench.kernels import KERNEL_VARS

pytestmark = pytest.mark.long  # five real bench runs on the pinned path: `make test-long` (CI), not make test

FOREIGN = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
CASES = ("--plugin", "precision", "--what", "storage,train", "--dtype", "bf16", "--model", "tiny", "--steps", "30")


def _run(out: Path, *, pinned: bool, host: dict[str, str] | None = None, lr: str = "0.003") -> list[dict]:
    """The two cases as `make gate` runs them (pinned) or with native kernels, on this host or an emulated one."""
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_VARS and k != "BENCH_KERNELS"}
    env.update(host or {})
    kernels = ["--kernels", "portable", "--fixed-sizes"] if pinned else ["--kernels", "native"]
    cmd = [sys.executable, "-m", "bench.cli", "run", *CASES, "--lr", lr, "--threads", "1", "--max-time", "0.1"]
    r = subprocess.run(
        [*cmd, *kernels, "--format", "none", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return [json.loads(line) for line in out.read_text().splitlines()]


def _case(rows: list[dict], what: str) -> dict:
    return next(r for r in rows if r["kind"] == "case" and r["params"]["what"] == what and r["status"] == "ok")


def _loss(rows: list[dict]) -> float:
    return float(_case(rows, "train")["metrics"]["final_loss"]["value"])


def _gate(base: Path, cur: Path):
    return bench_cli("regress", "--baseline", str(base), "--current", str(cur), "--only", "deterministic", "-v")


@pytest.fixture(scope="module")
def native_baseline(tmp_path_factory) -> tuple[Path, list[dict]]:
    """The baseline as `make baseline` records it: pinned kernels, on this (native) host."""
    out = tmp_path_factory.mktemp("foreign") / "base.jsonl"
    return out, _run(out, pinned=True)


def test_pinned_gate_passes_on_an_emulated_foreign_host_and_fails_on_one_byte(native_baseline, tmp_path):
    base, brows = native_baseline
    cur = tmp_path / "foreign.jsonl"
    crows = _run(cur, pinned=True, host=FOREIGN)
    # another host: another machine identity (its own kernel switches), the same numerics under the pin
    bfp, cfp = _case(brows, "train")["fingerprint"], _case(crows, "train")["fingerprint"]
    assert bfp["kernels"]["set"] == cfp["kernels"]["set"] == "portable"
    assert cfp["kernels"]["aten_capability"] == "DEFAULT" and cfp["kernels"]["env"]["MKL_ENABLE_INSTRUCTIONS"] == "AVX2"
    assert bfp["machine_id"] != cfp["machine_id"] and bfp["numerics_id"] == cfp["numerics_id"]
    assert _loss(crows) == _loss(brows)  # bit for bit
    r = _gate(base, cur)
    assert r.returncode == 0, r.stdout
    assert "compared against the baseline (same numerics" in r.stdout and "final_loss" in r.stdout
    assert "NOT COMPARED" not in r.stdout
    assert "kernels portable (ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE" in r.stdout
    # the injected change: one byte more in a byte count
    lines = cur.read_text().splitlines()
    for i, line in enumerate(lines):
        row = json.loads(line)
        if row["kind"] == "case" and row["params"]["what"] == "storage":
            row["metrics"]["bytes"]["value"] += 1
            lines[i] = json.dumps(row)
    cur.write_text("\n".join(lines) + "\n")
    r = _gate(base, cur)
    assert r.returncode == 1 and "CHANGED precision" in r.stdout and "bytes 249344 -> 249345" in r.stdout, r.stdout


def test_pinned_gate_fails_on_a_learning_rate_changed_by_1e_3_on_the_foreign_host(native_baseline, tmp_path):
    base, brows = native_baseline
    cur = tmp_path / "lr.jsonl"
    crows = _run(cur, pinned=True, host=FOREIGN, lr="0.004")
    assert _loss(crows) != _loss(brows)
    # a code change that trains with lr + 1e-3: the case (its parameters, the row's key) is the same
    for r in crows:
        if r["params"].get("lr") == 0.004:
            r["params"]["lr"] = 0.003
    cur.write_text("".join(json.dumps(r) + "\n" for r in crows))
    r = _gate(base, cur)
    assert r.returncode == 1, r.stdout
    assert "CHANGED precision" in r.stdout and "final_loss" in r.stdout, r.stdout


def test_without_the_pin_the_emulated_host_differs_and_the_gate_says_not_compared(tmp_path):
    import torch

    if torch.backends.cpu.get_cpu_capability() == "DEFAULT":
        pytest.skip("this CPU's ATen kernels are already `default`: nothing lower to emulate")
    base, cur = tmp_path / "native.jsonl", tmp_path / "foreign-native.jsonl"
    brows, crows = _run(base, pinned=False), _run(cur, pinned=False, host=FOREIGN)
    assert _loss(brows) != _loss(crows)  # the emulation changes the kernels, so the loss
    assert _case(brows, "train")["fingerprint"]["numerics_id"] != _case(crows, "train")["fingerprint"]["numerics_id"]
    r = _gate(base, cur)
    # the byte counts gate; the loss is listed as not compared, not failed and not silently passed
    assert r.returncode == 0, r.stdout
    assert "NOT COMPARED: no baseline for this machine" in r.stdout and "final_loss" in r.stdout
    assert "portable (exact on every machine; against the baseline)" in r.stdout
