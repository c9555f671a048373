"""The ddp / fsdp plugins: per-rank model-state bytes of every ZeRO stage on a real 2-rank gloo
run through the CLI, simulated vs measured agreement, a killed rank, bad inputs (exit 2), and
the formulas, the shape picker and the collective counter on their own."""
from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from bench.cli import main
from conftest import run_bench

TINY = ["--model", "tiny", "--world-size", "2", "--precision", "fp32", "--steps", "2"]
REAL = ["--simulate", "false", "--params", "0"]  # override the quick grid's simulated cases


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _v(row: dict, name: str):
    m = row["metrics"].get(name)
    return None if m is None else m["value"]


def _by_stage(rows: list[dict], kind: str = "case") -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for r in rows:
        where = r["params"] if kind == "case" else r["labels"]  # summary rows carry the case in their labels
        if r["kind"] == kind and r["status"] == "ok" and r["plugin"] == "fsdp" and "stage" in where:
            out.setdefault(int(where["stage"]), []).append(r)
    return out


def _marked_processes(marker: str) -> list[str]:
    """Processes that inherited our marker (the CLI's case processes): none may outlive the run."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            env = Path(f"/proc/{d}/environ").read_bytes()
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if f"BENCH_TEST_MARK={marker}".encode() in env and "bench.worker" in cmd:
            found.append(cmd)
    return found


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> list[dict]:
    """fsdp stages 0-3, tiny GPT, fp32, world size 2 on gloo: one CLI run (4 torchrun cases)."""
    out = tmp_path_factory.mktemp("dist") / "real.jsonl"
    r = run_bench("run", "--plugin", "fsdp", "--stage", "0,1,2,3", *TINY, *REAL, "--format", "none", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    return _rows(out)


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory) -> list[dict]:
    """The same four configurations simulated in one process each (fake process group + fake tensors)."""
    out = tmp_path_factory.mktemp("dist") / "sim.jsonl"
    r = run_bench("run", "--plugin", "fsdp", "--stage", "0,1,2,3", *TINY, "--simulate", "true", "--params", "0",
                  "--format", "none", "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return _rows(out)


# --- real runs ------------------------------------------------------------------------------
@pytest.mark.slow
def test_model_state_bytes_per_rank_for_each_stage(real_run):
    st = _by_stage(real_run)
    assert sorted(st) == [0, 1, 2, 3]
    for s, rs in st.items():
        assert sorted(r["labels"]["rank"] for r in rs) == [0, 1], f"stage {s}: one row per rank"
        for r in rs:
            assert _v(r, "model_state_bytes") == _v(r, "params_bytes") + _v(r, "grads_bytes") + _v(r, "optim_bytes")
    psi = _v(st[0][0], "n_params")
    d0 = st[0][0]
    # DDP: everything replicated, fp32: 4 + 4 + 8 bytes/param (+ AdamW's 4-byte step scalars)
    assert _v(d0, "params_bytes") == 4 * psi and _v(d0, "grads_bytes") == 4 * psi
    n_tensors = len(list(torch.nn.Module.parameters(_tiny_model())))
    assert _v(d0, "optim_bytes") == 8 * psi + 4 * n_tensors
    # stage 1: parameters and gradients replicated; the optimizer state partitioned: the ranks'
    # shares add up to DDP's exactly, and each is within the largest tensor of half
    s1 = st[1]
    assert all(_v(r, "params_bytes") == 4 * psi and _v(r, "grads_bytes") == 4 * psi for r in s1)
    assert sum(_v(r, "optim_bytes") for r in s1) == _v(d0, "optim_bytes")
    largest = max(math.prod(p.shape) for p in _tiny_model().parameters())
    assert all(abs(_v(r, "optim_bytes") - _v(d0, "optim_bytes") / 2) <= 8 * largest + 4 * n_tensors for r in s1)
    # stages 2/3: every state sharded: shards add up to DDP's (step scalars on each rank)
    for s in (2, 3):
        rs = st[s]
        assert sum(_v(r, "params_bytes") for r in rs) == _v(d0, "params_bytes")
        assert sum(_v(r, "grads_bytes") for r in rs) == _v(d0, "grads_bytes")
        assert sum(_v(r, "optim_bytes") for r in rs) == 8 * psi + 2 * 4 * n_tensors
        for r in rs:  # per rank: half of DDP within the padding bound
            assert abs(_v(r, "model_state_bytes") - _v(d0, "model_state_bytes") / 2) <= _v(r, "formula_bound_bytes")
    # stage 2 holds the all-gathered fp32 parameters from forward to backward; stage 3 does not
    assert all(_v(r, "model_state_step_bytes") - _v(r, "model_state_bytes") == 4 * psi for r in st[2])
    assert all(_v(r, "model_state_step_bytes") == _v(r, "model_state_bytes") for r in st[3])
    # every rank's figure sits on the ZeRO formula within the stated bound
    for rs in st.values():
        for r in rs:
            assert abs(_v(r, "model_state_step_bytes" if r["params"]["stage"] == 2 else "model_state_bytes")
                       - _v(r, "formula_bytes")) <= _v(r, "formula_bound_bytes")  # fmt: skip


@pytest.mark.slow
def test_summary_verdicts_evidence_comm_and_loss(real_run):
    summ = _by_stage(real_run, kind="summary")
    cases = _by_stage(real_run)
    for s, claim in enumerate(("zero.ddp", "zero.stage1", "zero.stage2", "zero.stage3")):
        (row,) = summ[s]
        assert _v(row, "verdict") == "holds", row
        ev = row["evidence"][claim]
        assert ev["source"] == "measured" and ev["unit"] == "bytes"
        assert abs(ev["value"] / ev["expected"] - 1) < 0.01
        what = "model_state_step_bytes" if s == 2 else "model_state_bytes"
        assert ev["value"] == max(_v(r, what) for r in cases[s])  # the largest rank
        # slowest rank and spread
        steps = [_v(r, "step_ms") for r in cases[s]]
        assert _v(row, "step_ms_slowest") == pytest.approx(max(steps))
        assert _v(row, "step_spread_pct") == pytest.approx(100 * (max(steps) / min(steps) - 1))
    # expected ratios to DDP at world size 2 (fp32): 1, 3/4, 3/4 during the step (1/2 at rest), 1/2
    assert _v(summ[1][0], "vs_ddp") == pytest.approx(0.75, abs=0.02)
    assert _v(summ[2][0], "vs_ddp") == pytest.approx(0.75, abs=0.01)
    assert _v(summ[2][0], "rest_vs_ddp") == pytest.approx(0.5, abs=0.01)
    assert _v(summ[3][0], "vs_ddp") == pytest.approx(0.5, abs=0.01)
    comm = [r for r in real_run if r["kind"] == "summary" and "zero.comm" in r["evidence"]]
    assert len(comm) == 1
    ev = comm[0]["evidence"]["zero.comm"]
    assert ev["expected"] == 1.5 and abs(ev["value"] - 1.5) < 0.01  # 3*Psi / 2*Psi, counted
    # stage 2 moves what DDP moves (all-gather + reduce-scatter = 2*Psi)
    assert _v(summ[2][0], "comm_vs_ddp") == pytest.approx(1.0, abs=0.01)
    # the same seed and data: every strategy trains the same model to (almost) the same loss
    for s in (1, 2, 3):
        for r0, r in zip(sorted(cases[0], key=lambda r: r["labels"]["rank"]), sorted(cases[s], key=lambda r: r["labels"]["rank"])):
            assert math.isfinite(_v(r, "loss")) and _v(r, "loss") == pytest.approx(_v(r0, "loss"), rel=1e-3)


# --- simulation -----------------------------------------------------------------------------
@pytest.mark.slow
def test_simulated_and_measured_agree_on_a_small_config(real_run, sim_run):
    real, sim = _by_stage(real_run), _by_stage(sim_run)
    assert sorted(sim) == [0, 1, 2, 3]
    for s in range(4):
        (srow,) = sim[s]
        assert srow["metrics"]["model_state_bytes"]["source"] == "simulated"
        big = max(real[s], key=lambda r: _v(r, "model_state_bytes"))
        for k in ("params_bytes", "grads_bytes", "model_state_step_bytes", "formula_bytes"):
            if s != 1 or k != "model_state_step_bytes":
                assert _v(srow, k) == _v(big, k), (s, k)
        simulated = _v(srow, "model_state_bytes_max_rank") or _v(srow, "model_state_bytes")
        assert simulated == max(_v(r, "model_state_bytes") for r in real[s]), s
        # collective bytes: counted under the fake process group for FSDP2, DDP's from the formula
        assert _v(srow, "comm_bytes_per_step") == max(_v(r, "comm_bytes_per_step") for r in real[s]), s
    summ = _by_stage(sim_run, kind="summary")
    assert all(summ[s][0]["evidence"][c]["source"] == "simulated"
               for s, c in enumerate(("zero.ddp", "zero.stage1", "zero.stage2", "zero.stage3")))  # fmt: skip


@pytest.mark.slow
def test_fsdp_stage3_runs_at_world_size_2_and_simulates_figure1(tmp_path):
    """The quick grid's `bench run --plugin fsdp --stage 3`: a real 2-rank run (small GPT) and
    the 7.5B / 64-rank simulation of ZeRO Figure 1."""
    out = tmp_path / "s3.jsonl"
    r = run_bench("run", "--plugin", "fsdp", "--stage", "3", "--steps", "2", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    rows = _rows(out)
    real = [x for x in rows if x["kind"] == "case" and not x["params"]["simulate"]]
    assert sorted(x["labels"]["rank"] for x in real) == [0, 1] and all(x["status"] == "ok" for x in real)
    assert "reshard_after_forward=True" in r.stderr  # the stage -> torch mapping is printed
    (sim,) = [x for x in rows if x["kind"] == "case" and x["params"]["simulate"] and x["params"]["world_size"] == 64]
    assert sim["status"] == "ok" and sim["duration_s"] < 120
    (fig,) = [x for x in rows if x["kind"] == "summary" and "zero.stage3" in x["evidence"]
              and x["labels"]["source"] == "simulated" and x["labels"]["world_size"] == 64]  # fmt: skip
    # the same run also answers fsdp.ddp_oom (DDP vs stage 3 at 1.3B / 6.7B on 8 simulated ranks) -- with
    # --stage 3 only the stage-3 half runs, so there is no DDP row to compare with and no evidence
    assert not [x for x in rows if "fsdp.ddp_oom" in (x.get("evidence") or {})]
    ev = fig["evidence"]["zero.stage3"]
    assert ev["unit"] == "GB" and ev["value"] == pytest.approx(1.875, rel=0.01)  # 16 * 7.5e9 / 64
    assert "Figure 1: 1.9 GB" in ev["detail"]
    assert abs(ev["value"] / ev["expected"] - 1) < 0.001
    # the per-rank table is printed
    assert "rank" in r.stdout and "model_state_bytes" in r.stdout


def test_oom_frontier_verdict_from_simulated_peaks():
    """fsdp.ddp_oom: the largest size whose per-rank peak fits 80 GB, DDP vs stage 3."""
    from plugins.distributed import OOM_BUDGET_BYTES, _oom_evidence

    def agg(stage: int, n: float, peak_gb: float) -> dict:
        return {"simulated": True, "stage": stage, "key": {"hybrid": False}, "peak_mib": peak_gb * 1e9 / 2**20,
                "params": {"params": n, "world_size": 8, "precision": "bf16"}}

    assert OOM_BUDGET_BYTES == 80e9
    small, big = 1.3e9, 6.7e9
    (rec,) = _oom_evidence([agg(0, small, 25.0), agg(3, small, 8.0), agg(0, big, 110.0), agg(3, big, 20.0)])
    ev = rec.evidence["fsdp.ddp_oom"]
    assert ev.verdict == "holds" and ev.source == "simulated"
    assert rec.metrics["largest_fit_stage0_params"].value == small and rec.metrics["largest_fit_stage3_params"].value == big
    assert "DDP 110.0 GB" in ev.detail
    # both fit at every size: nothing shows DDP running out first -> fails
    (rec,) = _oom_evidence([agg(0, small, 25.0), agg(3, small, 8.0), agg(0, big, 70.0), agg(3, big, 20.0)])
    assert rec.evidence["fsdp.ddp_oom"].verdict == "fails"
    # one size only: no evidence
    assert _oom_evidence([agg(0, small, 25.0), agg(3, small, 8.0)]) == []


# --- faults and bad input -------------------------------------------------------------------
@pytest.mark.slow
def test_a_killed_rank_is_a_failed_row_and_the_run_goes_on_with_no_orphans(tmp_path):
    out, mark = tmp_path / "k.jsonl", uuid.uuid4().hex
    r = run_bench("run", "--plugin", "ddp", "--fault", "kill_rank1,none", *TINY, "--format", "none",
                  "--out", str(out), env={"BENCH_TEST_MARK": mark})  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    rows = _rows(out)
    killed = [x for x in rows if x["kind"] == "case" and x["params"]["fault"] == "kill_rank1"]
    assert len(killed) == 1 and killed[0]["status"] == "error"
    assert killed[0]["labels"]["failed_rank"] == 1 and "SIGKILL" in killed[0]["message"]
    ok = [x for x in rows if x["kind"] == "case" and x["params"]["fault"] == "none"]
    assert sorted(x["labels"]["rank"] for x in ok) == [0, 1] and all(x["status"] == "ok" for x in ok)
    (summ,) = [x for x in rows if x["kind"] == "summary"]  # the failed case is left out of the summary
    assert summ["evidence"]["zero.ddp"]["value"] == max(_v(x, "model_state_bytes") for x in ok)
    assert not _marked_processes(mark)


@pytest.mark.parametrize("args, needle", [
    (["--plugin", "fsdp", "--stage", "1", "--hybrid", "--world-size", "4"], "stage 1 has no hybrid form"),
    (["--plugin", "fsdp", "--stage", "3", "--hybrid", "--world-size", "2", *REAL], "--hybrid needs an even --world-size >= 4"),
    (["--plugin", "fsdp", "--stage", "3", "--world-size", "64", *REAL], "more than this machine can hold"),
    (["--plugin", "ddp", "--world-size", "9"], "more than this machine can hold"),
    (["--plugin", "ddp", "--params", "7.5e9"], "--params picks a shape for --simulate only"),
    (["--plugin", "ddp", "--stage", "3"], "unknown flag --stage"),
    (["--plugin", "fsdp", "--stage", "4"], "allowed values: 0, 1, 2, 3"),
    (["--plugin", "fsdp", "--stage", "3", "--fault", "kill_rank1"], "--fault needs a real run"),
])  # fmt: skip
def test_bad_input_exits_2_before_anything_launches(tmp_path, args, needle):
    if torch.cuda.is_available():
        pytest.skip("world-size limits differ on GPU machines")
    out = tmp_path / "x.jsonl"
    res = CliRunner().invoke(main, ["run", *args, "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert needle in res.output
    assert not out.exists()


# --- the pieces on their own ----------------------------------------------------------------
def test_formulas_reproduce_zero_figure1_and_torch_dtypes():
    from plugins.distributed import FIGURE1_GB, paper_formula, zero_formula

    for s, gb in FIGURE1_GB.items():  # the paper's own figures, rounded as printed
        assert round(paper_formula(s, 7.5e9, 64) / 1e9, 1) == gb
    psi = 1000
    assert zero_formula(0, psi, 4, "fp32")[0] == 16 * psi
    assert zero_formula(1, psi, 4, "fp32")[0] == 8 * psi + 8 * psi / 4
    assert zero_formula(1, psi, 4, "bf16")[0] == 4 * psi + 12 * psi / 4  # = the paper's stage 1
    assert zero_formula(2, psi, 4, "bf16")[0] == 2 * psi + 16 * psi / 4  # fp32 gradient shards in torch
    assert zero_formula(3, psi, 4, "bf16")[0] == 16 * psi / 4  # = the paper's stage 3


def test_gpt_shape_for_a_parameter_count():
    from plugins.common.gpt import GPT, GPTConfig
    from plugins.distributed.sim import gpt_param_count, gpt_shape_for

    n_layer, d = gpt_shape_for(7.5e9, 128)
    assert abs(gpt_param_count(n_layer, d, 128) / 7.5e9 - 1) < 0.001 and 64 <= d / n_layer <= 160
    cfg = GPTConfig(n_layer=2, n_head=2, d_model=128, block_size=32)
    assert gpt_param_count(2, 128, 32) == sum(p.numel() for p in GPT(cfg).parameters())


@pytest.mark.filterwarnings("ignore:.*is deprecated:FutureWarning")
def test_comm_counter_convention_under_a_fake_process_group():
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore

    from plugins.distributed.comm import CommCounter

    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    dist.init_process_group("fake", rank=0, world_size=4, store=FakeStore())
    try:
        x = torch.zeros(1000)  # 4000 bytes
        with CommCounter() as cc:
            dist.all_reduce(x)  # 2x
            dist.all_gather_into_tensor(torch.zeros(4000), x)  # 1x the 16000-byte output, counted once
            dist.reduce_scatter_tensor(torch.zeros(250), x)  # 1x the 4000-byte input
            dist.broadcast(x, src=0)  # 1x
        assert cc.by_op["all_reduce"] == 8000 and cc.by_op["all_gather_into_tensor"] == 16000
        assert cc.by_op["reduce_scatter_tensor"] == 4000 and cc.by_op["broadcast"] == 4000
        assert cc.bytes == 32000 and sum(cc.calls.values()) == 4
        assert dist.all_reduce.__name__ == "all_reduce"  # restored on exit
    finally:
        dist.destroy_process_group()


def test_master_adamw_matches_adamw_on_fp32_parameters():
    from plugins.distributed import MasterAdamW

    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(8, 4))
    b = torch.nn.Parameter(a.detach().clone())
    oa = torch.optim.AdamW([a], lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    ob = MasterAdamW([b], lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    for _ in range(3):
        g = torch.randn(8, 4)
        a.grad, b.grad = g.clone(), g.clone()
        oa.step()
        ob.step()
    assert torch.allclose(a, b, atol=1e-6)
    st = ob.state[b]  # K = 12 bytes/param: fp32 master, exp_avg, exp_avg_sq
    assert sum(t.numel() * t.element_size() for t in st.values() if torch.is_tensor(t)) == 12 * b.numel()


def _tiny_model() -> torch.nn.Module:
    from plugins.common.gpt import GPT, PRESETS

    return GPT(PRESETS["tiny"])
