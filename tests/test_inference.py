"""The inference plugin: the KV-cache forward equals the GPT's own (MHA and grouped-query), cache bytes
equal the formula, the samplers keep their promises (top-k, top-p, temperature -> 0), every claim's
check fails on a breaking value, the per-step timer, the bandwidth cache, the plan's shares, and
real (tiny) cases in-process and through the CLI."""

from __future__ import annotations

import dataclasses
import json
import types

import pytest
import torch

from bench.claims import check_value
from bench.context import Context
from bench.contract import Evidence, Row, Skip, plugin_problem
from bench.params import make_params
from bench.plan import plan
from plugins.common.gpt import GPT, PRESETS, GPTConfig
from plugins.inference import PRESET_SHAPES, InferencePlugin
from plugins.inference import kvcache as K
from plugins.inference import sampling as S
from plugins.inference import summary as Y
from plugins.inference.claims import CLAIMS
from plugins.inference.names import BUDGET_S
from plugins.inference.steps import time_sequence
from tests.conftest import run_bench

CPU = torch.device("cpu")
PLUGIN = InferencePlugin()
CLAIM = {c.id: c for c in CLAIMS}


def tiny(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(PRESETS["tiny"]).eval()


def cached(m: GPT, idx: torch.Tensor, split: int) -> tuple[torch.Tensor, K.KVCache]:
    """Logits of idx through the cache: a prefill of idx[:, :split], then one decode step per position."""
    cache = K.KVCache.allocate(m.cfg, idx.shape[0], idx.shape[1], m.wte.weight.dtype, CPU)
    parts = [K.forward_cached(m, idx[:, :split], cache)]
    parts += [K.forward_cached(m, idx[:, t : t + 1], cache) for t in range(split, idx.shape[1])]
    return torch.cat(parts, 1), cache


# --- the KV-cache forward -------------------------------------------------------------------------
def test_cached_forward_equals_the_gpts_forward():
    m = tiny()
    idx = torch.randint(0, 256, (3, 40))
    with torch.no_grad():
        ref = m(idx)
    cache = K.KVCache.allocate(m.cfg, 3, 40, torch.float32, CPU)
    parts = [K.forward_cached(m, idx[:, :20], cache), K.forward_cached(m, idx[:, 20:27], cache)]  # prefill, chunk
    parts += [K.forward_cached(m, idx[:, t : t + 1], cache) for t in range(27, 40)]  # decode steps
    assert torch.allclose(torch.cat(parts, 1), ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="cache holds 40"):
        K.forward_cached(m, idx[:, :1], cache)
    a = K.generate(m, idx[:2, :5], 9, lambda z: z.argmax(-1))  # greedy with and without the cache
    assert a.shape == (2, 9) and torch.equal(a, K.generate(m, idx[:2, :5], 9, lambda z: z.argmax(-1), use_cache=False))


def test_cached_forward_with_grouped_query_attention():
    """1 KV head shared by 2 query heads: the cached forward of the GQA model equals the GPT's own forward
    of the MHA model whose K and V weights are that head repeated (what GQA computes)."""
    mha, gqa = tiny(1), tiny(1)
    cfg, hd, d = mha.cfg, mha.cfg.d_model // mha.cfg.n_head, mha.cfg.d_model
    gqa.cfg = types.SimpleNamespace(**{**dataclasses.asdict(cfg), "n_kv_head": 1})  # its modules stay MHA-shaped
    for bm, bg in zip(mha.blocks, gqa.blocks):
        w, b = bm.attn.qkv.weight.data, bm.attn.qkv.bias.data
        kw, vw, kb, vb = w[d : d + hd], w[2 * d : 2 * d + hd], b[d : d + hd], b[2 * d : 2 * d + hd]
        bm.attn.qkv.weight.data = torch.cat([w[:d], kw.repeat(cfg.n_head, 1), vw.repeat(cfg.n_head, 1)])
        bm.attn.qkv.bias.data = torch.cat([b[:d], kb.repeat(cfg.n_head), vb.repeat(cfg.n_head)])
        bg.attn.qkv = torch.nn.Linear(d, d + 2 * hd)
        bg.attn.qkv.weight.data, bg.attn.qkv.bias.data = torch.cat([w[:d], kw, vw]), torch.cat([b[:d], kb, vb])
    idx = torch.randint(0, 256, (2, 24))
    with torch.no_grad():
        ref = mha(idx)
    got, cache = cached(gqa, idx, 16)
    assert cache.k[0].shape == (2, 1, 24, hd) and torch.allclose(got, ref, atol=1e-5, rtol=1e-5)
    assert cache.nbytes() == K.kv_formula_bytes(gqa.cfg, 4, 24, 2) == 2 * 2 * 1 * hd * 4 * 24 * 2


@pytest.mark.parametrize(
    "options",
    [{"n_kv_head": 1}, {"pos": "rope", "norm": "rmsnorm", "mlp": "swiglu", "tie_embeddings": False, "n_kv_head": 1}],
)
def test_cached_forward_equals_the_projects_gpt_with_its_options(options):
    """gpt.py's own grouped-query / RoPE / RMSNorm / SwiGLU / untied GPT: cached logits == its forward."""
    fields = {f.name for f in dataclasses.fields(GPTConfig)}
    if not set(options) <= fields:
        pytest.skip(f"gpt.py has no {sorted(set(options) - fields)}")
    torch.manual_seed(0)
    m = GPT(dataclasses.replace(PRESETS["tiny"], **options)).eval()
    idx = torch.randint(0, 256, (2, 20))
    with torch.no_grad():
        ref = m(idx)
    got, cache = cached(m, idx, 12)
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-5)
    assert cache.k[0].shape[1] == 1 and cache.nbytes() == K.kv_formula_bytes(m.cfg, 4, 20, 2)


@pytest.mark.parametrize(
    "dtype, batch, tokens", [(torch.float32, 1, 48), (torch.bfloat16, 4, 33), (torch.float16, 16, 7)]
)
def test_kv_bytes_allocated_equal_the_formula(dtype, batch, tokens):
    cfg = PRESETS["small"]
    held = []
    alloc, how = Context(device=CPU).peak_above(lambda: held.append(K.KVCache.allocate(cfg, batch, tokens, dtype, CPU)))
    es = torch.tensor([], dtype=dtype).element_size()
    formula = 2 * cfg.n_layer * cfg.n_head * (cfg.d_model // cfg.n_head) * es * tokens * batch
    assert alloc == held[0].nbytes() == K.kv_formula_bytes(cfg, es, tokens, batch) == formula, how


def test_decode_step_flop_formula_matches_the_counted_forward():
    from bench.flops import count_flops
    from plugins.inference.decode import step_flops

    m = tiny()
    cache = K.KVCache.allocate(m.cfg, 3, 20, torch.float32, CPU)
    K.forward_cached(m, torch.zeros(3, 11, dtype=torch.long), cache)
    counted = count_flops(lambda: K.decode_step(m, torch.zeros(3, 1, dtype=torch.long), cache))
    # FlopCounterMode counts the Linears here but not CPU SDPA's fused kernel: the attention term (QK^T and
    # AV of one query over the 12 positions) is counted on the same shapes written as matmuls
    q, kv = torch.zeros(3, 2, 1, 32), torch.zeros(3, 2, 12, 32)
    attn = count_flops(lambda: (q @ kv.transpose(-1, -2)) @ kv) * m.cfg.n_layer
    assert counted + attn == step_flops(m, 3, 12)  # context: 11 cached + the new position


# --- samplers ---------------------------------------------------------------------------------------
def test_top_k_never_picks_outside_the_k_most_likely():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 50, generator=g) * 3
    smp = S.Sampler(1.0, top_k=5)
    topk = logits.topk(5, -1).indices
    for _ in range(50):
        tok = smp(logits, g)
        assert (tok.unsqueeze(-1) == topk).any(-1).all()
    assert ((smp.probs(logits) > 0).sum(-1) == 5).all()


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    assert S.nucleus_mask(probs, 0.8).tolist() == [[True, True, False, False]]
    assert S.nucleus_mask(probs, 0.85).tolist() == [[True, True, True, False]]
    assert S.nucleus_mask(probs, 0.3).tolist() == [[True, False, False, False]]
    g = torch.Generator().manual_seed(1)
    p = torch.softmax(torch.randn(200, 30, generator=g) * 2, -1)
    for q in (0.5, 0.9, 0.99):
        keep = S.nucleus_mask(p, q)
        mass = (p * keep).sum(-1)
        least = torch.where(keep, p, torch.ones_like(p)).amin(-1)
        assert (mass >= q - 1e-6).all() and (mass - least < q).all()
        draws = S.Sampler(1.0, top_p=q)(torch.log(p), g)
        assert keep.gather(-1, draws.view(-1, 1)).all()
    # the notes' literal '<= p' set drops the token that crosses p, and is empty when the top token exceeds p
    assert S.notes_top_p_mask(probs, 0.85).tolist() == [[True, True, False, False]]
    assert S.notes_top_p_mask(probs, 0.4).sum() == 0


def test_temperature_to_zero_equals_greedy_and_raises_entropy():
    g = torch.Generator().manual_seed(2)
    logits = torch.arange(40, dtype=torch.float32).repeat(8, 1) * 0.05 + torch.randn(8, 40, generator=g) * 0.01
    for t in (1e-3, 1e-4):
        assert torch.equal(S.Sampler(t)(logits, g), logits.argmax(-1))
    assert torch.equal(S.Sampler(0.0)(logits), logits.argmax(-1))
    h = [float(S.entropy_bits(S.Sampler(t).probs(logits)).mean()) for t in (0.5, 1.0, 2.0)]
    assert h[0] < h[1] < h[2]
    with pytest.raises(ValueError):
        S.Sampler(-1.0)
    with pytest.raises(ValueError):
        S.Sampler(1.0, top_p=0.0)


def test_tv_bound_passes_honest_draws_and_catches_wrong_ones():
    g = torch.Generator().manual_seed(3)
    p = torch.softmax(torch.randn(256, generator=g), -1)
    honest = torch.bincount(torch.multinomial(p, 20000, replacement=True, generator=g), minlength=256)
    assert S.total_variation(honest, p) <= S.tv_noise_bound(p, 20000)
    wrong = torch.softmax(torch.log(p) * 1.5, -1)  # draws from a sharper distribution than claimed
    bad = torch.bincount(torch.multinomial(wrong, 20000, replacement=True, generator=g), minlength=256)
    assert S.total_variation(bad, p) > S.tv_noise_bound(p, 20000)


# --- verdicts: every check fails on a breaking value --------------------------------------------------
def test_plugin_verdicts_fail_on_breaking_values():
    assert Y.verdict_tv(0.01, 0.02, "x")[0] == "holds" and Y.verdict_tv(0.03, 0.02, "x")[0] == "fails"
    assert Y.verdict_temperature([(0.5, 5.0), (1.0, 6.0), (2.0, 7.0)], 100.0)[0] == "holds"
    assert Y.verdict_temperature([(0.5, 5.0), (1.0, 6.0), (2.0, 6.0)], 100.0)[0] == "fails"
    assert Y.verdict_temperature([(0.5, 5.0), (1.0, 6.0)], 99.0)[0] == "fails"
    assert Y.verdict_top_k(0.0, 0.01, 0.02)[0] == "holds"
    assert Y.verdict_top_k(0.1, 0.01, 0.02)[0] == "fails" and Y.verdict_top_k(0.0, 0.05, 0.02)[0] == "fails"
    assert Y.verdict_top_p(0.0, 0.0, 0.9, 0.85, 0.9, 0.0)[0] == "holds"
    assert Y.verdict_top_p(3.0, 0.0, 0.9, 0.85, 0.9, 0.0)[0] == "fails"
    assert Y.verdict_bandwidth(0.5, 10.0)[0] == "holds" and Y.verdict_bandwidth(12.0, 10.0)[0] == "fails"
    assert Y.verdict_bandwidth(0.5, None)[0] is None


BREAKING = [  # (claim, evidence that holds, evidence that must fail)
    ("infer.max_new_tokens", Evidence(0), Evidence(1)),
    ("infer.greedy", Evidence(100.0), Evidence(99.6)),
    ("infer.kv_cache_bytes", Evidence(393216, expected=393216), Evidence(393728, expected=393216)),
    ("infer.cache_linear", Evidence(1.02), Evidence(1.5)),
    ("infer.nocache_quadratic", Evidence(1.9), Evidence(1.3)),
    ("infer.int8_memory", Evidence(0.505), Evidence(0.5276)),  # claims.md: 0.50x +-2% on the weights
    ("infer.int8_speed", Evidence(0.4), Evidence(1.3)),
]


@pytest.mark.parametrize("cid, good, bad", BREAKING)
def test_registry_checks_hold_and_fail(cid, good, bad):
    assert check_value(CLAIM[cid].check, good)[0] == "holds"
    assert check_value(CLAIM[cid].check, bad)[0] == "fails"


# --- summarize over synthetic rows ------------------------------------------------------------------------
PARAMS = {"precision": "fp32", "model": "small", "prompt_len": 32, "max_new_tokens": 16, "max_batch": 16}
DECODE = {"tpot_p50_ms": 1.0, "new_tokens": 16, "new_tokens_excess": 0, "kv_bytes": 1000, "kv_formula_bytes": 1000}
DECODE |= {"intensity": 0.5, "ridge": 10.0, "bound": "bandwidth", "achieved_gbps": 1.0, "pct_bandwidth": 10.0}


def row(mode: str, metrics: dict, labels: dict | None = None, **params) -> Row:
    from bench.contract import Metric

    ms = {k: Metric(v) for k, v in metrics.items()}
    fp = {"label": "cpu-test", "device_type": "cpu"}
    return Row("r", "inference", {"mode": mode, **PARAMS, **params}, metrics=ms, labels=labels or {}, fingerprint=fp)


def decode_row(precision: str, batch: int, tok_s: float, mem: int, **extra) -> Row:
    m = {**DECODE, "decode_tok_s": tok_s, "memory_bytes": mem, "weight_bytes": mem - 1000, "read_bytes": mem, **extra}
    return row("decode", m, {"batch": batch}, precision=precision)


def test_summarize_judges_int8_memory_speed_kv_and_bandwidth():
    rows = [
        decode_row("bf16", 1, 100.0, 2000),
        decode_row("bf16", 4, 380.0, 5000),
        decode_row("llm_int8", 1, 40.0, 1505),  # weights 505 vs bf16's 1000; the KV cache (1000) as bf16's
        decode_row("llm_int8", 4, 150.0, 3600),
        decode_row("fp32", 1, 90.0, 4000),
    ]
    recs = {r.labels.get("claim"): r for r in Y.summarize(rows)}
    mem = recs["infer.int8_memory"].evidence["infer.int8_memory"]
    assert mem.value == pytest.approx(0.505) and check_value(CLAIM["infer.int8_memory"].check, mem)[0] == "holds"
    assert "batch 1: 0.752x, batch 4: 0.72x" in mem.detail  # with the KV cache: shown, not judged
    sp = recs["infer.int8_speed"].evidence["infer.int8_speed"]
    assert sp.value == pytest.approx(0.4) and check_value(CLAIM["infer.int8_speed"].check, sp)[0] == "holds"
    assert recs["infer.kv_cache_bytes"].metrics["verdict"].value == "holds"
    assert recs["infer.bandwidth_bound"].evidence["infer.bandwidth_bound"].verdict == "holds"
    assert recs["infer.max_new_tokens"].metrics["verdict"].value == "holds"
    vs = [r for r in Y.summarize(rows) if r.labels.get("analysis")]
    assert {(r.labels["precision"], r.labels["batch"]) for r in vs} == {("llm_int8", 1), ("llm_int8", 4), ("fp32", 1)}
    # breaking values: a cache off the formula, a compute-bound batch-1 step, an extra token
    bad = [decode_row("fp32", 1, 90.0, 4000, kv_bytes=1512, intensity=20.0, new_tokens_excess=1)]
    recs = {r.labels.get("claim"): r for r in Y.summarize(bad)}
    assert recs["infer.kv_cache_bytes"].metrics["verdict"].value == "fails"
    assert recs["infer.bandwidth_bound"].evidence["infer.bandwidth_bound"].verdict == "fails"
    assert recs["infer.max_new_tokens"].metrics["verdict"].value == "fails"


def test_summarize_cache_exponents():
    on = {"total_exponent": 1.05, "total_exponent_se": 0.01, "step_exponent": 0.1, "same_tokens_pct": 100.0}
    off = {**on, "total_exponent": 1.3, "extra_exponent": 1.9, "extra_exponent_se": 0.02, "step_exponent": 0.4}
    rows = [row("cache", on, {"cache": "on", "batch": 1}), row("cache", off, {"cache": "off", "batch": 1})]
    recs = {r.labels.get("claim"): r for r in Y.summarize(rows)}
    assert recs["infer.cache_linear"].metrics["verdict"].value == "holds"
    assert recs["infer.nocache_quadratic"].metrics["verdict"].value == "holds"
    assert "n^1.3" in recs["infer.nocache_quadratic"].evidence["infer.nocache_quadratic"].detail
    rows[1].metrics["extra_exponent"].value = 1.2  # breaking: recomputation grows only linearly
    recs = {r.labels.get("claim"): r for r in Y.summarize(rows)}
    assert recs["infer.nocache_quadratic"].metrics["verdict"].value == "fails"


# --- the per-step timer and the bandwidth cache -------------------------------------------------------
def test_time_sequence_times_every_step_and_keeps_the_last_state():
    calls = []

    def start() -> list[int]:
        return []

    def step(st: list[int], i: int) -> None:
        st.append(i)
        calls.append(i)

    t = time_sequence(start, step, 5, CPU, max_time_s=0.0, min_repeats=3)
    assert len(t.steps_s) == 3 and all(len(s) == 5 for s in t.steps_s) and len(t.start_s) == 3
    assert t.last_state == [0, 1, 2, 3, 4] and len(calls) == 5 * 4  # one untimed warm-up sequence
    assert t.percentile(0) == min(t.step_samples) and t.percentile(100) == max(t.step_samples)
    assert len(t.step_median()) == 5 and t.energy_j is None and "cpu" in t.energy_why


def test_bandwidth_is_measured_once_per_machine(tmp_path, monkeypatch):
    from bench import bandwidth as B

    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("BENCH_NO_CACHE", raising=False)
    n = []
    v, where = B.machine_cached("fig", "k", lambda: n.append(1) or 3.5)
    assert v == 3.5 and where.startswith("measured on this machine") and "cached" not in where
    v, where = B.machine_cached("fig", "k", lambda: n.append(1) or 9.9)
    assert v == 3.5 and "cached" in where and n == [1]
    assert json.loads((tmp_path / "fig.json").read_text())
    assert B.copy_gbps("cpu", 2**20, max_time_s=0.05) > 0


# --- the plugin --------------------------------------------------------------------------------------------
def test_contract_grid_and_plan_shares():
    assert plugin_problem(PLUGIN) is None
    assert {k: (c.n_layer, c.d_model, c.block_size) for k, c in PRESETS.items()} == PRESET_SHAPES
    for profile in ("quick", "full", "gpu"):
        for c in PLUGIN.grid(profile):
            assert PLUGIN.validate(make_params(PLUGIN, c)) is None, c
    for profile, dev, share in (("quick", "cpu", 30.0), ("gpu", "cuda", 45.0)):
        total = sum(c.total_s for c in plan(PLUGIN, [make_params(PLUGIN, c) for c in PLUGIN.grid(profile)], dev))
        assert 0 < total <= share, (profile, total)
    assert "exceed" in PLUGIN.validate(make_params(PLUGIN, {"model": "tiny", "prompt_len": 120, "max_new_tokens": 16}))
    nf4_cache = make_params(PLUGIN, {"mode": "cache", "precision": "nf4", "max_new_tokens": 32})
    with pytest.raises(Skip, match="plain formats"):  # --mode cache over the grid's formats: skipped rows
        PLUGIN.run(nf4_cache, Context(device=CPU))


def test_missing_library_is_a_skipped_reason(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "bitsandbytes" else real(n, *a))
    assert "bitsandbytes is not installed" in PLUGIN.available(make_params(PLUGIN, {"precision": "nf4"}))


@pytest.fixture
def quick_peaks(monkeypatch, tmp_path):
    """Small copy size and a fixed matmul figure, so a test case does not measure the machine's peaks."""
    import bench.bandwidth as B
    import bench.flops as FL

    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(B, "DEFAULT_BYTES", {"cpu": 2**22})
    B.measured_bandwidth.cache_clear()
    monkeypatch.setattr(FL, "measured_matmul", lambda dev, dt: (0.05, "test figure"))
    yield
    B.measured_bandwidth.cache_clear()


def test_decode_case_rows(quick_peaks, monkeypatch):
    p = make_params(PLUGIN, {"model": "tiny", "prompt_len": 8, "max_new_tokens": 6, "max_batch": 4})
    monkeypatch.setitem(BUDGET_S, "quick", 60.0)  # a loaded test machine must not cap the batch
    recs = PLUGIN.run(p, Context(device=CPU, profile="quick", max_time_s=0.05))
    assert [r.labels["batch"] for r in recs] == [1, 4] and all(r.status == "ok" for r in recs)
    for r in recs:
        m = {k: v.value for k, v in r.metrics.items()}
        assert m["kv_exact"] is True and m["kv_bytes"] == 2 * 2 * 64 * 4 * 14 * r.labels["batch"]
        assert m["new_tokens"] == 6 and m["new_tokens_excess"] == 0
        assert 0 < m["tpot_p50_ms"] <= m["tpot_p99_ms"] and m["ttft_ms"] > 0 and m["decode_tok_s"] > 0
        assert m["energy_j_per_token"] is None and "not available" in r.metrics["energy_j_per_token"].unit
        assert m["bound"] in ("bandwidth", "compute") and len(r.samples["tpot_s"]) >= 2 * 5
    monkeypatch.setitem(BUDGET_S, "quick", 1e-6)  # the afford probe: even batch 1 is over this budget
    with pytest.raises(Skip, match="over the budget"):
        PLUGIN.run(p, Context(device=CPU, profile="quick", max_time_s=0.05))


def test_cache_and_sampling_cases(quick_peaks):
    ctx = Context(device=CPU, profile="quick", max_time_s=0.05)
    tiny_case = {"model": "tiny", "prompt_len": 1, "max_new_tokens": 16, "max_batch": 1}
    on, off = PLUGIN.run(make_params(PLUGIN, {"mode": "cache", **tiny_case}), ctx)
    assert (on.labels["cache"], off.labels["cache"]) == ("on", "off")
    assert on.metrics["same_tokens_pct"].value == 100.0 and len(on.samples["step_median_s"]) == 15
    assert all(isinstance(r.metrics["total_exponent"].value, float) for r in (on, off))
    assert "extra_exponent" not in on.metrics  # the no-cache row carries it (where recomputing cost more)
    recs = PLUGIN.run(make_params(PLUGIN, {"mode": "sampling", **tiny_case, "prompt_len": 8, "max_new_tokens": 8}), ctx)
    by = {r.labels["sampler"]: {k: v.value for k, v in r.metrics.items()} for r in recs}
    assert set(by) == {"greedy", "random", "temperature", "top_k", "top_p"}
    assert by["greedy"]["greedy_argmax_pct"] == 100.0 and by["greedy"]["t0_match_pct"] == 100.0
    assert by["top_k"]["outside_pct"] == 0.0 and by["top_p"]["outside_pct"] == 0.0
    assert by["top_p"]["min_kept_mass"] >= 0.9 - 1e-6 and by["top_p"]["max_mass_without_last"] < 0.9
    assert by["random"]["tv"] <= by["random"]["tv_bound"]
    summary = {r.labels.get("claim"): r for r in PLUGIN.summarize([_as_row(r, "sampling") for r in recs])}
    assert summary["infer.greedy"].metrics["verdict"].value == "holds"
    assert summary["infer.top_k"].evidence["infer.top_k"].verdict == "holds"


def _as_row(rec, mode: str) -> Row:
    p, fp = {"mode": mode, "precision": "fp32"}, {"label": "cpu-test"}
    return Row("r", "inference", p, metrics=rec.metrics, labels=rec.labels, samples=rec.samples, fingerprint=fp)


def test_quantized_formats_bytes_and_cached_forward():
    pytest.importorskip("bitsandbytes")
    from plugins.inference import formats as F

    cfg = PRESETS["tiny"]
    ref, _ = F.build("bf16", cfg, CPU, 0)
    q, how = F.build("llm_int8", cfg, CPU, 0)
    assert "Linear8bitLt" in how
    lins = [lin for _, _, lin in F.block_linears(ref)]
    weights, rows = sum(x.in_features * x.out_features for x in lins), sum(x.out_features for x in lins)
    # int8 codes (1 byte) + an fp32 scale per row replace 2 bytes per block weight; the rest stays bf16
    assert F.weight_bytes(ref) - F.weight_bytes(q) == 2 * weights - weights - 4 * rows
    idx = torch.randint(0, 256, (2, 12))
    with torch.no_grad():
        full = q(idx).float()
    got = cached(q, idx, 8)[0].float()
    assert (got - full).abs().max() <= 0.05 * full.abs().max()


def test_report_sections(tmp_path):
    rows = [decode_row(f, b, 100.0 * b, 2000 * b, ttft_ms=2.0) for f in ("fp32", "bf16") for b in (1, 4, 16)]
    for c, k in (("on", 1.02), ("off", 1.8)):
        r = row("cache", {"total_exponent": k, "step_exponent": k - 1}, {"cache": c, "batch": 1})
        r.samples["step_median_s"] = [1e-3 * (n + 1) ** (k - 1) for n in range(31)]
        rows.append(r)
    rows.append(row("sampling", {"sample_us": 20.0, "step_ms": 1.0}, {"sampler": "top_k", "batch": 1}))
    secs = PLUGIN.report(rows, tmp_path)
    assert [s.anchor for s in secs] == ["inference-decode", "inference-cache", "inference-sampling"]
    assert all((tmp_path / s.png).stat().st_size > 1000 for s in secs if s.png)
    assert len(secs[0].tables[0][2]) == 6


def test_cli_run_writes_rows_and_summary(tmp_path):
    out = tmp_path / "r.jsonl"
    spec = {
        "model": "tiny",
        "prompt-len": 8,
        "max-new-tokens": 4,
        "max-batch": 1,
        "precision": "fp32",
        "mode": "decode",
    }
    flags = [x for k, v in spec.items() for x in (f"--{k}", str(v))]
    r = run_bench("run", "--plugin", "inference", *flags, "--out", str(out), "--format", "none", timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    (case,) = [x for x in rows if x["kind"] == "case"]
    assert case["status"] in ("ok", "skipped"), case  # skipped: a machine too slow for the case's budget
    claims = {x["labels"].get("claim") for x in rows if x["kind"] == "summary"}
    assert case["status"] != "ok" or claims >= {"infer.kv_cache_bytes", "infer.max_new_tokens"}
