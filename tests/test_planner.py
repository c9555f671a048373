"""gpuplan (plugins/planner) and the published shapes (plugins/common/shapes.py): the shapes' parameter
counts, the search's fit logic (a fake simulator), the layer extrapolation against a whole simulation, the
other tools' formulas, and one small end-to-end plan. CPU: about 15 s on 2 cores."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from plugins.common.gpt import GPT, GPTConfig
from plugins.common.shapes import SHAPES, largest_module_params, param_count, shape_config
from plugins.planner import estimators as est
from plugins.planner.search import Sim, extrapolate, ladder, lower_bound, plan_stage, shard_numel, zero1_partition


# --- shapes ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SHAPES))
def test_shape_counts_match_the_built_model_and_the_published_total(name):
    cfg = shape_config(name)
    with torch.device("meta"):
        built = GPT(dataclasses.replace(cfg, n_layer=2)).num_params()  # same layers: 2 are enough to check
    assert built == param_count(dataclasses.replace(cfg, n_layer=2))
    s = SHAPES[name]
    assert abs(param_count(cfg) / s.published - 1) <= s.tol, (param_count(cfg), s.published)
    named = {w for k in s.sources for w in k.split(", ")}
    assert named >= {"layers", "d_model", "heads", "kv heads", "FFN", "vocab", "context", "arch"}, named


def test_llama3_8b_is_8_03b_and_a_wrong_dimension_is_caught():
    cfg = shape_config("llama3-8b")
    assert param_count(cfg) == 8_030_261_248  # 8.03B (model card)
    wrong = dataclasses.replace(cfg, ffn_hidden=4 * 4096)  # GPT's 4d instead of 14,336
    assert abs(param_count(wrong) / SHAPES["llama3-8b"].published - 1) > SHAPES["llama3-8b"].tol


def test_default_gpt_is_unchanged_by_the_options():
    """Defaults leave today's GPT as it was: 12 L d^2 + 13 L d + (V + T) d + 2d, tied head."""
    from plugins.distributed.sim import gpt_param_count

    cfg = GPTConfig(n_layer=3, n_head=4, d_model=128, block_size=64)
    assert param_count(cfg) == gpt_param_count(3, 128, 64) == GPT(cfg).num_params()
    names = [n for n, _ in GPT(cfg).named_parameters()]
    assert "wpe.weight" in names and "lm_head.weight" not in names  # tied: listed once, as wte


# --- the search ------------------------------------------------------------------------------------
def _fake(fixed: float, sharded: float):
    """A simulator whose peak is fixed + sharded / N (bytes), counting its calls."""
    calls: list[int] = []

    def sim(n: int) -> Sim:
        calls.append(n)
        return Sim(n, int(fixed + sharded / n), {"activations": int(fixed)}, "fake")

    return sim, calls


@pytest.mark.parametrize("fixed,sharded,budget", [(10, 1000, 80), (30, 5000, 80), (1, 100, 200), (70, 640, 80)])
def test_search_finds_the_smallest_fitting_world_size(fixed, sharded, budget):
    worlds = ladder(1024, False)
    sim, calls = _fake(fixed, sharded)
    ans = plan_stage(3, False, worlds, budget, lambda n: int(sharded / n), sim)
    want = next(n for n in worlds if fixed + sharded / n <= budget)
    assert ans.smallest == want
    pts = {p.world: p for p in ans.points}
    assert pts[want].fits and pts[want].sim.peak <= budget
    below = [n for n in worlds if n < want]
    if below:  # the one below fails: simulated, or refused by the lower bound
        n = below[-1]
        assert (n in pts and not pts[n].fits) or int(sharded / n) > budget
    assert len(calls) <= 4  # a prediction, not a sweep


def test_search_refuses_by_the_bound_and_says_none_when_nothing_fits():
    worlds = ladder(64, False)
    sim, calls = _fake(0, 10_000)
    ans = plan_stage(3, False, worlds, 80, lambda n: 10_000 // n, sim)  # bound > 80 up to 64 ranks
    assert ans.smallest is None and calls == [] and "lower bound" in ans.reason
    sim, calls = _fake(100, 1000)  # the unshardable part alone exceeds the GPU
    ans = plan_stage(3, False, worlds, 80, lambda n: 1000 // n, sim)
    assert ans.smallest is None and calls[-1] == 64 and not any(p.fits for p in ans.points)
    sim, calls = _fake(100, 0)  # DDP: one simulation answers for every world size
    ans = plan_stage(0, False, worlds, 80, lambda n: 0, sim)
    assert ans.smallest is None and calls == [1]


def test_fit_is_peak_at_most_the_budget():
    sim, _ = _fake(80, 0)
    assert plan_stage(3, False, [1, 2], 80, lambda n: 0, sim).smallest == 1
    assert plan_stage(3, False, [1, 2], 79.9, lambda n: 0, sim).smallest is None


def test_lower_bound_is_the_zero_formula_with_torch_shards():
    shapes = [(10, 4), (3,), (7, 2)]
    psi = 40 + 3 + 14
    assert lower_bound(0, "bf16", shapes, 8, False) == 16 * psi
    assert lower_bound(1, "bf16", shapes, 8, False) == 4 * psi + 12 * 40  # the largest partition: (10, 4)
    assert lower_bound(1, "bf16", shapes, 1, False) == 16 * psi
    assert shard_numel(shapes, 4) == 3 * 4 + 1 + 2 * 2  # ceil(rows / 4) rows each
    assert lower_bound(3, "bf16", shapes, 4, False) == 16 * shard_numel(shapes, 4)
    assert lower_bound(2, "fp32", shapes, 8, True) == 4 * psi + 12 * shard_numel(shapes, 4)  # HSDP: N/2 shards


def test_zero1_partition_is_torchs():
    """The greedy partition computed from sizes equals ZeroRedundancyOptimizer's (fake process group)."""
    import torch.distributed as dist
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.testing._internal.distributed.fake_pg import FakeStore

    numels = [7, 30, 30, 5, 12, 1, 30, 9, 2, 12]
    params = [torch.nn.Parameter(torch.zeros(n)) for n in numels]
    dist.init_process_group("fake", rank=0, world_size=4, store=FakeStore())
    try:
        opt = ZeroRedundancyOptimizer(params, optimizer_class=torch.optim.SGD, lr=0.1)
        torch_sizes = [sum(p.numel() for g in part for p in g["params"]) for part in opt._partition_parameters()]
    finally:
        dist.destroy_process_group()
    assert zero1_partition(numels, 4) == torch_sizes


def test_extrapolation_is_exact_on_a_line_and_flags_a_point_off_it():
    sims = [Sim(8, 100 + 7 * d, {"activations": 5 * d, "x": 100 + 2 * d}) for d in (4, 5, 6)]
    s, ok = extrapolate((4, 5, 6), sims, 80)
    assert ok and s.peak == 100 + 7 * 80 and s.parts == {"activations": 400, "x": 260}
    sims[2] = Sim(8, 100 + 7 * 6 + 1, sims[2].parts)
    assert not extrapolate((4, 5, 6), sims, 80)[1]


# --- the estimators ----------------------------------------------------------------------------------
def test_other_tools_formulas():
    psi, big = 13_000_000_000, 325_000_000
    assert est.deepspeed_zero3_bytes(psi, big, 8) == 4 * big + int(18 * psi / 8)
    assert est.deepspeed_zero2_bytes(psi, 8) == 2 * psi + int(18 * psi / 8)
    assert est.accelerate_training_bytes(psi, "bf16") == 8 * psi
    assert est.accelerate_training_bytes(psi, "fp32") == 16 * psi
    assert est.smallest_gpus(lambda n: 100 / n, 30, [1, 2, 4, 8]) == 4
    assert est.smallest_gpus(lambda n: 100, 30, [1, 2]) is None
    cfg = shape_config("llama3-70b")
    assert largest_module_params(cfg) == 128256 * 8192  # the token table (and the untied head)


# --- simulated ------------------------------------------------------------------------------------------
def test_extrapolated_peak_equals_the_whole_simulation():
    """Layers 4, 5, 6 extrapolated to 9 give the 9-layer simulation's peak and parts byte for byte."""
    from bench.context import Context
    from plugins.distributed.params import FSDPParams
    from plugins.distributed.sim import run_simulated
    from plugins.planner.planning import sim_of

    cfg = GPTConfig(n_layer=9, n_head=2, d_model=64, block_size=32, mlp="swiglu", ffn_hidden=96, n_kv_head=1)
    p = FSDPParams(stage=3, simulate=True, world_size=8, precision="bf16", batch=2, seq=32)
    ctx = Context(device=torch.device("cpu"))

    def at(layers: int) -> Sim:
        return sim_of(run_simulated(p, ctx, cfg=dataclasses.replace(cfg, n_layer=layers))[0], 8, 3, "")

    s, ok = extrapolate((4, 5, 6), [at(4), at(5), at(6)], 9)
    whole = at(9)
    assert ok and s.peak == whole.peak and s.parts == whole.parts


def test_a_small_plan_end_to_end():
    """A 7-layer GPT on a GPU of 0.05 GB beyond the fixed overhead (CUDA context + one NCCL communicator): per
    stage the smallest world size, the one below failing; fits = the need (reserved + overhead) within the GPU."""
    from bench.context import Context
    from plugins.planner.answer import answer_records
    from plugins.planner.planning import overhead_bytes, plan
    from plugins.planner.plugin import PlanParams

    gpu = 0.05 + overhead_bytes(3, False, 2) / 1e9
    p = PlanParams(model="2.5e7", seq=64, gpu_gb=gpu, max_world=64, hybrid=False)
    recs = plan(p, Context(device=torch.device("cpu")))
    by_stage: dict[str, list] = {}
    for r in recs:
        by_stage.setdefault(r.labels["stage"], []).append(r)
        assert r.metrics["fits"].source in ("simulated", "formula")
        if "peak_gb" in r.metrics:
            assert r.metrics["peak_gb"].source == "simulated"
            need = r.metrics["need_gb"].value
            assert (
                need >= r.metrics["reserved_gb"].value + 0.5
                and r.metrics["reserved_gb"].value >= r.metrics["peak_gb"].value * 0.99
            )
            assert (r.metrics["fits"].value == "yes") == (need <= gpu)
    three = sorted(by_stage["3 (FSDP2)"], key=lambda r: r.labels["world_size"])
    answer = [r for r in three if r.metrics["answer"].value == "yes"]
    assert len(answer) == 1
    assert all(
        r.metrics["fits"].value == "no" for r in three if r.labels["world_size"] < answer[0].labels["world_size"]
    )
    n = answer[0].labels["world_size"]
    assert math.log2(n).is_integer()
    # the summary's answer table, built from rows written and read back
    from bench.rows import Row

    rows = [
        Row(
            run_id="t",
            plugin="gpuplan",
            params=dataclasses.asdict(p),
            metrics=r.metrics,
            labels=r.labels,
            notes=r.notes,
            case_id="c",
        )
        for r in recs
    ]
    table = {r.labels["stage"]: r for r in answer_records(rows)}
    assert table["3 (FSDP2)"].metrics["smallest_world"].value == n
    assert table["3 (FSDP2)"].metrics["deepspeed_world"].source == "formula"
    assert table["0 (DDP)"].metrics["accelerate_gb"].value == pytest.approx(8 * recs[0].metrics["n_params"].value / 1e9)


def test_fit_is_decided_on_reserved_plus_overhead():
    """A world size fits on its need: the reserved peak (never below the allocated one) + CUDA context + NCCL;
    beyond the simulated depths the reserved peak is the extrapolated allocated peak x the ratio at depth 5."""
    from plugins.planner.search import Sim, extrapolate, plan_stage

    assert Sim(8, 10, reserved=15, overhead=2).need == 17
    assert Sim(8, 10, reserved=0, overhead=2).need == 12
    assert Sim(8, 10, reserved=9).need == 10
    s, _ = extrapolate((4, 5), [Sim(8, 100, ratio=1.5), Sim(8, 110, ratio=1.2, overhead=3)], 10)
    assert s.peak == 160 and s.reserved == 192 and s.need == 192 + s.overhead
    sims = {n: Sim(n, 1000 // n, reserved=1000 // n + 30, overhead=20) for n in (1, 2, 4, 8, 16)}
    ans = plan_stage(3, False, [1, 2, 4, 8, 16], 200, lambda n: 0, lambda n: sims[n])
    assert ans.smallest == 8  # 125 + 30 + 20 = 175 fits 200; 250 + 50 at 4 ranks does not
