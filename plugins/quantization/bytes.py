"""Bytes of the quantized Linears as metrics: exact, from the layers' tensors (numel x element size,
plugins/common/numerics.py linear_bytes: weights = the codes; scales = row/block scales, zero points,
nested absmax, offsets; tables = code books), each storage counted once."""

from __future__ import annotations

from bench.contract import Metric
from plugins.common.numerics import LayerBytes

FP16_BYTES = 2  # bytes per weight of the fp16 reference (formula: exact)

COLUMNS_NOTE = (
    "bytes_per_param = (codes + scales + code tables) / weights of the quantized Linears (biases apart); "
    "scale_bytes_per_param = the scales, zero points and nested absmax in it; x_fp16 = those bytes / the same "
    "weights in fp16 (2 bytes each) = bytes_per_param / 2; rel_error = ||y - y_fp32||_F / ||y_fp32||_F of block 0's "
    "mlp.fc on real activations, logits_rel_error the same for the model's logits on real text; time_ms = that "
    "layer at `batch` rows, ref_time_ms = the unquantized layer in {dtype} in the same process, "
    "time_ratio = time_ms / ref_time_ms"
)


def byte_metrics(lb: LayerBytes) -> dict[str, Metric]:
    fp16 = FP16_BYTES * lb.params

    def exact(v: float, unit: str, source: str = "measured") -> Metric:
        return Metric(v, unit, source, deterministic=True)

    return {
        "params": exact(lb.params, "weights of the quantized Linears (out x in)"),
        "bytes_per_param": exact(lb.per_param(), "bytes/param"),
        "weight_bytes_per_param": exact(lb.per_param("weights"), "bytes/param (codes)"),
        "scale_bytes_per_param": exact(lb.per_param("scales"), "bytes/param"),
        "table_bytes_per_param": exact(lb.per_param("tables"), "bytes/param (code books)"),
        "bits_per_param": exact(8 * lb.per_param(), "bits/param"),
        "quant_bytes": exact(lb.quantized, "bytes (codes + scales + tables)"),
        "fp16_bytes": exact(fp16, "bytes (the same weights in fp16: 2 per weight)", "formula"),
        "x_fp16": exact(lb.quantized / fp16, "x fp16"),
        "bias_bytes": exact(lb.bytes["bias"], "bytes (biases, not quantized)"),
    }
