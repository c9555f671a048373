"""--what storage: exact bytes of a real model's parameters in each format (claims mem.store_fp32,
mem.store_16bit). bytes = sum of numel x element_size (ctx.state_bytes); presets in META_PRESETS are
built on the meta device (exact shapes and dtypes, no memory)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from bench.contract import Metric, Record
from plugins.common.numerics import torch_dtype
from plugins.precision.params import META_PRESETS, PrecisionParams, formats_of

if TYPE_CHECKING:  # pragma: no cover
    from bench.context import Context

AUTO_PRESETS = ("small", "1b")  # model auto: one materialized model and the notes' 1B scale


def run_storage(p: PrecisionParams, ctx: Context) -> list[Record]:
    out: list[Record] = []
    for preset in AUTO_PRESETS if p.model == "auto" else (p.model,):
        out += _storage_of(preset, p, ctx)
    return out


def _storage_of(preset: str, p: PrecisionParams, ctx: Context) -> list[Record]:
    import torch

    from plugins.common.gpt import GPT, config_from

    meta = preset in META_PRESETS
    torch.manual_seed(ctx.seed)
    with torch.device("meta") if meta else contextlib.nullcontext():
        model = GPT(config_from(preset))
    n = model.num_params()
    where = "meta device (exact shapes and dtypes, no memory)" if meta else "cpu (materialized)"
    out = []
    for fmt in formats_of(p):
        model = model.to(torch_dtype(fmt))  # tf32 is stored as fp32
        b = ctx.state_bytes(model)["parameters"]
        m = {
            "params": Metric(n, "parameters (tied embedding counted once)", deterministic=True),
            "bytes": Metric(b, "bytes (numel x element_size)", deterministic=True),
            "gb": Metric(b / 1e9, "GB (1e9 bytes)", deterministic=True),
            "bytes_per_param": Metric(b / n, "bytes/param", deterministic=True),
        }
        notes = [f"storage: GPT {preset} built on the {where}; bytes = sum of numel x element_size (ctx.state_bytes)"]
        if fmt == "tf32":
            notes.append(
                "tf32 is not a storage type: tensors stay fp32; only tensor-core matmul inputs keep 10 fraction bits"
            )
        out.append(Record(metrics=m, labels={"format": fmt, "preset": preset}, notes=notes))
    return out
