"""Across cases: the claims' evidence (mem.store_int8, quant.nf4, quant.int8_speed, quant.error) and
the 8-bit Adam ratio.

mem.store_int8 is judged from the int8 layers' bytes per parameter; quant.int8_half is the same
measurement (x_fp16 = bytes_per_param / 2 exactly) and points to it (a `parts` claim: shown, not
counted a second time), so it gets no evidence of its own here.

quant.error's verdict (criterion stated in the claim and in the detail):
  holds when  naive-cast error >= ERROR_FACTOR x per-row error, on the layer's input activations
              (unit-scale LayerNorm outputs, where the cast is not trivially all zeros)
         and  per-row error < SMALL_ERROR on the weights and on the activations
  fails otherwise. The naive cast of the weights (std 0.02: every code 0) and per-tensor absmax are
  shown beside it, not judged.
"""

from __future__ import annotations

from bench.contract import Evidence, Metric, Record, Row, claim_record
from plugins.quantization.claims import CLAIMS

ERROR_FACTOR = 10.0  # "dramatically": an order of magnitude
SMALL_ERROR = 0.02  # "small": 2% relative output error (8-bit absmax on Gaussian rows gives ~1%)


def _claim(claim_id: str, ev: Evidence) -> Record:
    return claim_record(next(c for c in CLAIMS if c.id == claim_id), ev)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}%"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def _of(r: Row | None, name: str) -> str:
    return _num(r.number(name) if r else None)


def quant_error(naive: Row, row: Row, tensor: Row | None, scaled_lib: Row | None) -> Evidence | None:
    an, ar, wr = naive.number("act_rel_error"), row.number("act_rel_error"), row.number("rel_error")
    if an is None or ar is None or wr is None:
        return None
    factor = an / ar if ar > 0 else float("inf")
    ok = factor >= ERROR_FACTOR and ar < SMALL_ERROR and wr < SMALL_ERROR
    lib = f"; {scaled_lib.params['scheme']} (bitsandbytes) weights {_of(scaled_lib, 'rel_error')}" if scaled_lib else ""
    detail = (
        f"criterion: naive-cast error >= {ERROR_FACTOR:g}x the per-row one on real activations, and per-row error < "
        f"{SMALL_ERROR:.0%} on weights and activations. Block 0 mlp.fc output error vs fp32 on real text. "
        f"Activations (RMS {_num(naive.number('act_rms'))}; the naive cast zeroes {_pct(naive.number('act_zero_codes_pct'))} "
        f"of them): naive {an:.4g}, per-tensor absmax {_of(tensor, 'act_rel_error')}, per-token absmax {ar:.4g} "
        f"= {factor:.3g}x. Weights: per-row {wr:.4g}, per-tensor {_of(tensor, 'rel_error')}, naive "
        f"{_num(naive.number('rel_error'))} ({_pct(naive.number('zero_codes_pct'))} of codes 0: std-0.02 weights all "
        f"truncate to 0, certain by construction, not judged){lib}"
    )
    return Evidence(
        factor, "x (naive / per-row error, activations)", "measured", detail, verdict="holds" if ok else "fails"
    )


def summarize(rows: list[Row]) -> list[Record]:
    ok = [r for r in rows if r.is_case and r.ok]

    def first(scheme: str, need: str) -> Row | None:
        return next((r for r in ok if r.params.get("scheme") == scheme and r.number(need) is not None), None)

    out: list[Record] = []
    # mem.store_int8: LLM.int8 (bitsandbytes); else torchao's int8, else the plain per-row int8
    i8 = next(
        (r for r in (first(s, "bytes_per_param") for s in ("llm_int8", "ao_int8_dyn", "int8_rowwise")) if r), None
    )
    if i8:
        v = {
            k: i8.number(k) or 0.0
            for k in (
                "bytes_per_param",
                "weight_bytes_per_param",
                "scale_bytes_per_param",
                "table_bytes_per_param",
                "x_fp16",
            )
        }
        detail = (
            f"{i8.params['scheme']} on the {i8.params['model']} GPT's block Linears ({i8.value('params')} weights): codes "
            f"{v['weight_bytes_per_param']:.4f} + scales {v['scale_bytes_per_param']:.4f} + tables "
            f"{v['table_bytes_per_param']:.4f} = {v['bytes_per_param']:.4f} bytes/param; biases apart "
            f"({i8.value('bias_bytes')} bytes); = {v['x_fp16']:.4f}x the same weights in fp16 (quant.int8_half is this "
            "same measurement, not counted again)"
        )
        out.append(_claim("mem.store_int8", Evidence(v["bytes_per_param"], "bytes/param", "measured", detail)))
    nf4 = first("nf4_dq", "x_fp16")
    if nf4:
        bits = nf4.number("bits_per_param") or 0.0
        nodq = first("nf4", "bits_per_param")
        extra = f"; without double quantization {nodq.number('bits_per_param'):.4f} bits/param" if nodq else ""
        detail = (
            f"nf4 + double quantization on the {nf4.params['model']} GPT's block Linears: {bits:.4f} bits/param "
            f"(codes {8 * (nf4.number('weight_bytes_per_param') or 0):.4f} + scales "
            f"{8 * (nf4.number('scale_bytes_per_param') or 0):.4f} + code tables "
            f"{8 * (nf4.number('table_bytes_per_param') or 0):.4f}) / 16{extra}"
        )
        out.append(_claim("quant.nf4", Evidence(nf4.number("x_fp16"), "x of fp16", "measured", detail)))
    speed = sorted(
        (
            r
            for r in ok
            if r.params.get("scheme") == "llm_int8" and r.number("time_ratio") is not None and r.labels.get("batch")
        ),
        key=lambda r: (str(r.params.get("dtype")), int(r.labels["batch"])),
    )
    if speed:
        sp = speed[0]
        ratios = [
            (int(r.labels["batch"]), r.number("time_ratio") or 0.0)
            for r in speed
            if r.params.get("dtype") == sp.params["dtype"]
        ]
        dev = str(sp.value("device") or "?")
        detail = (
            f"bitsandbytes Linear8bitLt vs nn.Linear in {sp.params['dtype']} (block 0 mlp.fc of {sp.params['model']}), "
            f"same process, on {dev}: time ratio by batch " + ", ".join(f"{b}: {x:.2f}x" for b, x in ratios)
        )
        if not dev.startswith("cuda"):
            detail += "; these are bitsandbytes' CPU kernels, not the CUDA ones behind the BLOOM-176B figures"
        unit = f"x (int8 / 16-bit time, batch {ratios[0][0]})"
        out.append(_claim("quant.int8_speed", Evidence(ratios[0][1], unit, "measured", detail)))
    naive, row = first("int8_naive", "act_rel_error"), first("int8_rowwise", "act_rel_error")
    if naive and row:
        ev = quant_error(naive, row, first("int8_tensor", "act_rel_error"), first("llm_int8", "rel_error"))
        if ev:
            out.append(_claim("quant.error", ev))
    a, a8 = first("adamw", "optim_bytes_per_param"), first("adamw8bit", "optim_bytes_per_param")
    if a and a8:
        b, b8 = a.number("optim_bytes_per_param") or 0.0, a8.number("optim_bytes_per_param") or 0.0
        m = {
            "measured": Metric(b8 / b, "x (AdamW8bit / AdamW optimizer-state bytes)", deterministic=True),
            "adamw_bytes_per_param": Metric(b, "bytes/param"),
            "adamw8bit_bytes_per_param": Metric(b8, "bytes/param"),
        }
        out.append(Record(metrics=m, labels={"analysis": "8-bit Adam"}))
    return out
