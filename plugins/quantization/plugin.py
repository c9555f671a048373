"""Quantized Linear layers and 8-bit optimizer state: bytes, error and speed per scheme (claims
mem.store_int8, quant.int8_half, quant.nf4, quant.int8_speed, quant.error). Schemes: params.py.

Per case: the fp32 GPT is built on the device it runs on and real text runs through it (reference.py:
once per warm worker); the scheme is applied to a copy (schemes.py); then bytes of the quantized layers (bytes.py: exact), output error vs fp32
(errors.py, within a probed budget), and the speed of that layer per batch size vs the unquantized
layer in --dtype, timed in the same process (speed.py, batch sizes that fit a probed budget). A scheme
whose library is missing or has no kernel on this device is a `skipped` row with the library's message.
Modules: params, reference, schemes, bytes, errors, speed, optimizer, budget, summary, claims, report.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.contract import Launch, Metric, Plugin, Record, Row, Section, Skip
from plugins.quantization import budget as B
from plugins.quantization.claims import CLAIMS
from plugins.quantization.params import (
    BNB,
    LIBRARY,
    OPTIMIZERS,
    OWN,
    REFERENCE,
    SCHEMES,
    TORCHAO,
    QuantParams,
    timed,
)

if TYPE_CHECKING:  # pragma: no cover
    from bench.context import Context

RANDOM_NOTE = (
    "weights are the GPT's random init (std 0.02), not a trained checkpoint: LLM.int8()'s outlier features "
    "appear in trained models at scale, so the outlier decomposition rarely triggers here"
)
OWN_NOTE = (
    "int8_naive / int8_tensor / int8_rowwise are reference implementations in plain torch (dequantize, then a "
    "matmul in --dtype): their bytes and error are the scheme's; their time is not an int8 kernel's and is not measured"
)


class QuantizationPlugin(Plugin):
    name = "quantization"
    description = "LLM.int8, NF4/FP4 (+double quant), torchao int8/int4, 8-bit Adam: bytes with scales, error, speed"
    version = "1"
    Params = QuantParams
    claims = CLAIMS
    metrics = {
        "bytes_per_param": "bytes per parameter of the quantized Linears: codes + scales + tables",
        "x_fp16": "quantized bytes / the same weights' fp16 bytes",
        "time_ratio": "time of the quantized layer / the unquantized layer, same batch",
        "rel_error": "output relative error vs the fp32 reference",
        "error_ratio": "naive-cast / per-row int8 output error, activations quantized (x)",
    }
    normalised = ("bytes_per_param", "x_fp16", "time_ratio")
    table_metrics = (
        "bytes_per_param",
        "scale_bytes_per_param",
        "bits_per_param",
        "x_fp16",
        "rel_error",
        "logits_rel_error",
        "act_rel_error",
        "time_ms",
        "ref_time_ms",
        "time_ratio",
        "optim_bytes_per_param",
    )

    def case_keys(self, kind: str, params: Mapping[str, Any], labels: Mapping[str, Any]) -> Sequence[str] | None:
        """A timed row carries its batch as a label: --max-batch only bounds which batches a run timed."""
        if kind != "case" or "batch" not in labels:
            return None
        return [*(k for k in params if k != "max_batch"), *labels]

    def grid(self, profile: str) -> list[dict[str, Any]]:
        return B.GRIDS[profile]() if profile in B.GRIDS else [{}]

    def validate(self, p: QuantParams) -> str | None:
        if p.max_batch < 1:
            return f"--max-batch must be >= 1, got {p.max_batch}"
        if p.group_size < 1:
            return f"--group-size must be >= 1, got {p.group_size}"
        if p.threshold < 0:
            return f"--threshold must be >= 0, got {p.threshold}"
        return None

    def available(self, p: QuantParams) -> str | None:
        lib = LIBRARY.get(p.scheme)
        if lib and importlib.util.find_spec(lib) is None:
            return f"{lib} is not installed (pip install {lib}, or `pip install -e .[quant]`)"
        return None

    def launch(self, p: QuantParams) -> Launch:
        return B.launch(p)

    def estimate_s(self, p: QuantParams, device_type: str) -> float:
        return B.estimate_s(p, device_type)

    def describe(self) -> str:
        return (
            "schemes: " + ", ".join(SCHEMES) + ". bytes_per_param = (codes + scales + code tables) / weights of the "
            "quantized Linears (biases apart); x_fp16 = those bytes / the same weights in fp16. Claims: "
            "mem.store_int8, quant.int8_half, quant.nf4, quant.int8_speed, quant.error"
        )

    def run(self, p: QuantParams, ctx: Context) -> list[Record]:
        import copy
        import warnings

        import torch

        from plugins.common.numerics import linear_bytes, torch_dtype
        from plugins.quantization import errors as E
        from plugins.quantization import schemes as S
        from plugins.quantization.bytes import COLUMNS_NOTE, byte_metrics
        from plugins.quantization.optimizer import optimizer_case
        from plugins.quantization.reference import build_gpt, reference
        from plugins.quantization.speed import layer_speed

        # bitsandbytes warns on every int8 call that it casts bf16 inputs to fp16; said once in the notes
        warnings.filterwarnings("ignore", message=r".*inputs will be cast from")
        dev = ctx.device
        if p.scheme in OPTIMIZERS:  # trains: a model of its own
            return [optimizer_case(p, ctx, build_gpt(p.model, ctx.seed, dev))]
        torch.manual_seed(ctx.seed)
        r = reference(p.model, ctx.seed, dev)
        ref, ref_fc, act, ref_out = r.model, r.model.blocks[0].mlp.fc, r.act, r.out
        try:
            model, how = S.build(p.scheme, ref, p, dev)
        except S.SchemeUnavailable as e:
            raise Skip(str(e)[:1500]) from e
        model.eval()
        dt = torch_dtype(p.scheme if p.scheme in REFERENCE else p.dtype)
        lb = linear_bytes(S.block_linears(model))
        m = byte_metrics(lb)
        notes = [
            f"{p.scheme}: {how}; layers: every Linear of the {p.model} GPT's blocks ({lb.layers} layers, "
            f"{lb.params} weights); stored as {lb.kinds}",
            RANDOM_NOTE,
            COLUMNS_NOTE.format(dtype=p.dtype),
        ]
        if p.scheme in OWN:
            zeros = lb.params - sum(int(torch.count_nonzero(lin.qweight)) for lin in S.block_linears(model))
            m["zero_codes_pct"] = Metric(
                100.0 * zeros / lb.params, "% of int8 weight codes that are 0", deterministic=True
            )
            with torch.no_grad():
                m.update(E.activation_errors(S.OWN_HOW[p.scheme], ref_fc, act, ref_out))
            notes.append(OWN_NOTE)
        errs, more = E.model_errors(ctx, model, model.blocks[0].mlp.fc, act, ref_out, r.tokens, r.logits, dt)
        m.update(errs)
        notes += more
        m["device"] = Metric(dev.type if dev.type != "cuda" else f"cuda: {torch.cuda.get_device_name(dev)}", "")
        if p.scheme == "llm_int8" and p.dtype != "fp16":
            notes.append(
                f"llm_int8: Linear8bitLt casts {p.dtype} inputs to fp16 to quantize them (bitsandbytes' own warning)"
            )
        if dev.type == "cpu" and p.scheme in BNB + TORCHAO:
            notes.append(f"{p.scheme} times are this CPU's kernels, not the CUDA ones the papers time")
        if not timed(p):
            return [Record(metrics=m, notes=notes)]
        ref_layer = copy.deepcopy(ref_fc).to(torch_dtype(p.dtype))
        speed, more = layer_speed(
            ctx,
            model.blocks[0].mlp.fc,
            ref_layer,
            act,
            dt,
            torch_dtype(p.dtype),
            p.max_batch,
            what=f"{p.scheme} block 0 mlp.fc on {dev.type}",
        )
        notes += more
        if not speed:
            return [Record(metrics=m, notes=notes)]
        return [Record(metrics={**m, **tm}, samples=s, labels={"batch": b}, notes=notes) for b, tm, s in speed]

    def summarize(self, rows: list[Row]) -> list[Record]:
        from plugins.quantization.summary import summarize

        return summarize(rows)

    def report(self, rows: list[Row], out_dir: Path) -> list[Section]:
        from plugins.quantization.report import plot_quantization

        return plot_quantization(rows, out_dir)
