"""CUDA paths: tests marked `gpu` are skipped without CUDA (conftest.py); scripts/gpu_suite.sh runs
them first on a lent GPU. The unmarked tests check the GPU bookkeeping that needs no GPU."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_bench


def test_dense_peak_table_maps_device_names():
    from bench.flops import PEAK_TFLOPS, peak_key

    assert peak_key("NVIDIA H100 80GB HBM3") == "H100 SXM"
    assert peak_key("NVIDIA H100 PCIe") == "H100 PCIe"
    assert peak_key("NVIDIA H200") == "H200"
    assert peak_key("NVIDIA A100-SXM4-80GB") == "A100"
    assert peak_key("AMD EPYC") is None
    # dense, not the datasheet's 2:4-sparse figure (1979 bf16 on H100 SXM)
    assert PEAK_TFLOPS["H100 SXM"]["bf16"] == 989.4 and PEAK_TFLOPS["H100 SXM"]["fp8"] == 1978.9


def test_nvml_absent_is_none_not_an_error():
    from bench.memory import nvml_used_bytes

    v = nvml_used_bytes()
    assert v is None or (torch.cuda.is_available() and v > 0)


# --- on a GPU ------------------------------------------------------------------------------------
def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.gpu
def test_cuda_timing_uses_events_and_allocator_peaks_are_exact():
    from bench.memory import peak_above
    from bench.timing import measure

    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    t = measure(lambda: a @ a, "cuda")
    assert t.method == "cuda_events" and t.median_s > 0 and t.samples_s
    n = 64 * 2**20  # bytes
    got, method = peak_above(lambda: torch.empty(n, dtype=torch.uint8, device="cuda"), "cuda")
    assert method.startswith("cuda") and n <= got <= n + 2**20


@pytest.mark.gpu
def test_attention_fused_backends_run_and_report_peak_fraction(tmp_path):
    out = tmp_path / "a.jsonl"
    r = run_bench(
        "run",
        "--plugin",
        "attention",
        "--impl",
        "sdpa_flash,sdpa_efficient",
        "--seq",
        "2048",
        "--heads",
        "16",
        "--head-dim",
        "128",
        "--dtype",
        "bf16",
        "--profile",
        "quick",
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    cases = [x for x in _rows(out) if x["kind"] == "case"]
    assert cases and all(x["status"] == "ok" for x in cases), [x.get("message") for x in cases]
    for x in cases:
        assert x["metrics"]["tflops"]["value"] > 1.0
        if "H100" in torch.cuda.get_device_name() or "H200" in torch.cuda.get_device_name():
            assert "mfu" in x["metrics"]  # % of the dense peak of this GPU


@pytest.mark.gpu
def test_fsdp_stages_at_world_size_1_on_nccl_record_cuda_memory(tmp_path):
    out = tmp_path / "f.jsonl"
    r = run_bench(
        "run",
        "--plugin",
        "fsdp",
        "--stage",
        "0,3",
        "--world-size",
        "1",
        "--model",
        "tiny",
        "--steps",
        "2",
        "--profile",
        "gpu",
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    cases = [x for x in _rows(out) if x["kind"] == "case" and not x["params"]["simulate"]]
    assert {x["params"]["stage"] for x in cases} == {0, 3} and all(x["status"] == "ok" for x in cases)
    for x in cases:
        assert x["metrics"]["cuda_max_allocated_mib"]["value"] > 0


@pytest.mark.gpu
def test_llm_int8_on_cuda_is_one_byte_per_parameter_plus_scales(tmp_path):
    pytest.importorskip("bitsandbytes")
    out = tmp_path / "q.jsonl"
    r = run_bench(
        "run",
        "--plugin",
        "quantization",
        "--scheme",
        "llm_int8",
        "--model",
        "small",
        "--max-batch",
        "1",
        "--profile",
        "quick",
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (case,) = [x for x in _rows(out) if x["kind"] == "case"]
    assert case["status"] == "ok", case.get("message")
    assert abs(case["metrics"]["bytes_per_param"]["value"] - 1.0) < 0.02
