"""The simulator's predicted reserved memory against published measurements (plugins/distributed/published.py:
each figure with its source and exact configuration). Rows the simulator models must come within 5%; a row
that uses what it does not model (torch.compile, Float8) carries that reason and is checked more loosely.
Each simulation is rank 0 of the world size at full size under fake tensors: ~20 s of CPU each."""

from __future__ import annotations

import functools

import pytest
import torch

from bench.context import Context
from plugins.distributed.params import FSDPParams
from plugins.distributed.published import PUBLISHED, Published
from plugins.distributed.sim import run_simulated

pytestmark = pytest.mark.long  # 8B-scale simulations: `make test-long` (CI), not make test


@functools.cache
def _predict(key: str) -> tuple[float, float]:
    row = next(r for r in PUBLISHED if r.key == key)
    p = FSDPParams(simulate=True, **row.case)
    m = run_simulated(p, Context(device=torch.device("cpu")))[0].metrics
    return m["reserved_peak_gib"].value, m["allocated_peak_gib"].value


def _row(key: str) -> Published:
    return next(r for r in PUBLISHED if r.key == key)


@pytest.mark.parametrize("key", ["titan_t1", "titan_t3"])
def test_torchtitan_eager_rows_within_5_percent(key):
    """torchtitan Table 1 FSDP (82.4 GiB) and Table 3 FSDP (67.0 GiB): eager bf16, selective op AC, fp32
    reduce-scatter, the exact shape. The reserved prediction within 5%; reserved above allocated."""
    row = _row(key)
    reserved, allocated = _predict(key)
    assert reserved == pytest.approx(row.gib, rel=0.05), (key, reserved, row.gib)
    assert allocated < reserved


def test_torchtitan_scaling_8_to_128_ranks():
    """From 8 to 128 ranks torchtitan drops 15.4 GiB (82.4 -> 67.0); the prediction's drop within 1 GiB of it."""
    drop = _predict("titan_t1")[0] - _predict("titan_t3")[0]
    assert drop == pytest.approx(82.4 - 67.0, abs=1.0)


def test_table2_with_compile_and_float8_is_not_reproduced_but_near():
    """Table 2's first row (83.9 GiB) runs torch.compile and Float8, which the simulator does not model: the
    row is reported with that reason (published.py). Its eager prediction stays within 10% of it."""
    row = _row("titan_t2")
    assert not row.reproducible and "Float8" in row.why
    reserved, _ = _predict("titan_t2")
    assert reserved == pytest.approx(row.gib, rel=0.10)
