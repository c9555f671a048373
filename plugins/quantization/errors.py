"""Output error of a quantized model against its fp32 reference, on real text.

  rel_error          ||y - y_fp32||_F / ||y_fp32||_F of block 0's mlp.fc on the activations real text
                     produces there (X: [TEXT_BATCH * seq, d], the LayerNorm's output)
  logits_rel_error   the same for the whole model's logits
For the plain-torch int8 quantizers (quant.error) also the same quantizer applied to X instead of the
weights (per token for the row-wise one; weights fp32):
  act_rel_error      the layer's output error with X quantized
  act_zero_codes_pct the share of X's codes that are 0 (the naive cast truncates |x| < 1 to 0)
X has unit scale (a LayerNorm output), so the naive cast is not trivially all zeros there, unlike on
weights of std 0.02 (every code 0: certain by construction, shown but not judged).

A scheme's kernel can be slow on a machine (a CPU without native half, a library's fallback path):
the layer's error is one timed call; the logits' error (a whole forward) is measured only when that
call's time says the forward fits the budget.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from bench.contract import Metric
from plugins.common.numerics import rel_error
from plugins.quantization.schemes import int8_dequantize, int8_quantize
from plugins.quantization.speed import call_cost_s

if TYPE_CHECKING:  # pragma: no cover
    from bench.context import Context

ERROR_BUDGET_S = {"quick": 3.0, "full": 30.0, "gpu": 10.0}
FORWARD_LAYERS = 3  # a model forward ~ 3 mlp.fc-sized matmuls per block (12 d^2 of 4 d^2 each)


def activation_errors(how: str, ref_fc: Any, act: torch.Tensor, ref_out: torch.Tensor) -> dict[str, Metric]:
    """The layer's output error with its input X quantized by int8_quantize(how) (weights fp32)."""
    codes, scale = int8_quantize(act, how)
    y = F.linear(int8_dequantize(codes, scale, torch.float32), ref_fc.weight.float(), ref_fc.bias)
    return {
        "act_rel_error": Metric(rel_error(y, ref_out), "rel. vs fp32 (input activations quantized, weights fp32)"),
        "act_zero_codes_pct": Metric(100.0 * float((codes == 0).float().mean()), "% of activation codes that are 0"),
        "act_rms": Metric(float(act.float().pow(2).mean().sqrt()), "RMS of the layer's input activations"),
    }


def model_errors(
    ctx: Context,
    model: Any,
    qfc: Any,
    act: torch.Tensor,
    ref_out: torch.Tensor,
    tokens: torch.Tensor,
    ref_logits: torch.Tensor,
    dt: torch.dtype,
) -> tuple[dict[str, Metric], list[str]]:
    """rel_error (one call of the layer, timed), and logits_rel_error when a model forward -- about
    FORWARD_LAYERS x n_layer such calls -- fits the budget; else a note naming the measured time."""
    budget_s = ERROR_BUDGET_S.get(ctx.profile, ERROR_BUDGET_S["full"])
    x = act.to(dt)
    with torch.no_grad():
        got: list[torch.Tensor] = []
        one, wall = call_cost_s(lambda: got.append(qfc(x)), x.device)
        y = got[0]
        m = {"rel_error": Metric(rel_error(y.float(), ref_out), "rel. vs fp32")}
        need = one * FORWARD_LAYERS * len(model.blocks)
        if need > budget_s and not ctx.fixed_sizes:  # --fixed-sizes (the CI gate): measured on every host
            note = (
                f"logits_rel_error not measured: one call of block 0 mlp.fc at {x.shape[0]} rows cost {one:.3g} s "
                f"(measured; wall {wall:.3g} s); a forward of the model (~{FORWARD_LAYERS * len(model.blocks)} such calls) would need "
                f"{need:.3g} s, over the {ctx.profile} profile's budget of {budget_s:g} s"
            )
            return m, [note]
        m["logits_rel_error"] = Metric(rel_error(model(tokens).float(), ref_logits), "rel. vs fp32")
    return m, []
