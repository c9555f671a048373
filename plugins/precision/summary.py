"""summarize(): claim evidence from the precision plugin's case rows (list[Row]); `bench summarize FILE`
rebuilds the same from a result file."""

from __future__ import annotations

import dataclasses
from typing import Any

from bench.contract import Evidence, Metric, Record, Row, claim_record
from plugins.precision.cast import parse_joined
from plugins.precision.claims import CLAIMS
from plugins.precision.params import META_PRESETS, params_of, resolve
from plugins.precision.verdicts import (
    STATED_MAX,
    Scale,
    judge_bf16_truncation,
    judge_fp16_scaling,
    judge_ranges,
    judge_train_24x,
)


def _record(claim_id: str, ev: Evidence, labels: dict[str, Any] | None = None) -> Record:
    return claim_record(next(c for c in CLAIMS if c.id == claim_id), ev, labels)


def summarize(rows: list[Row]) -> list[Record]:
    ok = [r for r in rows if r.is_case and r.ok and r.plugin == "precision"]

    def pick(what: str) -> list[Row]:
        return [r for r in ok if r.params.get("what") == what]

    cast = pick("cast")
    return (
        storage_claims(pick("storage"))
        + cast_claims([r for r in cast if not r.labels.get("probe")])
        + probe_claims([r for r in cast if r.labels.get("probe")])
        + training_claims(pick("train"))
        + scale_claims(
            [r for r in pick("trainmem") if r.labels.get("batch") is not None],
            [r for r in pick("trainmem") if r.number("simulated_vs_measured") is not None],
        )
        + activation_claims(pick("activations"))
    )


def storage_claims(rows: list[Row]) -> list[Record]:
    by: dict[str, list[Row]] = {}
    for r in rows:
        by.setdefault(str(r.labels.get("format")), []).append(r)
    for lst in by.values():  # a materialized model first: its bytes are real tensors, not meta shapes
        lst.sort(key=lambda r: r.labels.get("preset") in META_PRESETS)

    def line(fmt: str) -> str:
        return "; ".join(
            f"GPT {r.labels.get('preset')}: {r.value('bytes')} bytes / {r.value('params')} params "
            f"= {r.value('bytes_per_param'):g} bytes/param"
            for r in by.get(fmt, [])
        )

    out = []
    for claim_id, fmt in (("mem.store_fp32", "fp32"), ("mem.store_16bit", "bf16"), ("mem.store_16bit", "fp16")):
        if fmt in by:
            ev = Evidence(
                by[fmt][0].value("bytes_per_param"),
                "bytes/param",
                "measured",
                f"{fmt}: {line(fmt)} (numel x element_size)",
            )
            out.append(_record(claim_id, ev, {"format": fmt}))
    return out


def cast_claims(rows: list[Row]) -> list[Record]:
    by = {r.labels.get("format"): r for r in rows}
    out = []
    for claim_id, fmt in (
        ("prec.pi_fp32", "fp32"),
        ("prec.pi_fp16", "fp16"),
        ("prec.pi_bf16", "bf16"),
        ("prec.pi_int8", "int8"),
    ):
        r = by.get(fmt)
        if r is not None:
            val = r.value("value")
            ev = Evidence(
                val,
                "",
                "measured",
                f"3.141592 cast to {fmt}: stored {val}, bits {r.value('bits')} "
                f"({r.value('fields')}), layout {r.value('layout')}; max {r.value('max'):g}",
            )
            out.append(_record(claim_id, ev, {"format": fmt}))
    if all(f in by and by[f].number("max") is not None for f in STATED_MAX):
        got = {f: float(by[f].value("max")) for f in STATED_MAX}
        verdict, detail = judge_ranges(got)
        value = " / ".join(f"{got[f]:.5g}" for f in STATED_MAX)
        out.append(
            _record("prec.ranges", Evidence(value, "max (fp32 / fp16 / bf16)", "measured", detail, verdict=verdict))
        )
    return out


def probe_claims(rows: list[Row]) -> list[Record]:
    out = []
    for r in rows:
        values, stored = parse_joined(r.value("values")), parse_joined(r.value("stored"))
        if r.labels.get("probe") == "scale":
            verdict, detail = judge_fp16_scaling(values, stored)
            ev = Evidence(
                int(r.value("mismatches") or 0),
                "values not equal to their unscaled rounding",
                "measured",
                detail,
                verdict=verdict,
            )
            out.append(_record("prec.fp16_scaling", ev, {"format": "fp16"}))
        elif r.labels.get("probe") == "rounding":
            verdict, detail = judge_bf16_truncation(values, stored, str(r.value("layout")), str(r.value("layout_fp32")))
            ev = Evidence(
                int(r.value("differ_from_truncation") or 0),
                "values not equal to their truncation",
                "measured",
                detail,
                verdict=verdict,
            )
            out.append(_record("prec.bf16_truncation", ev, {"format": "bf16"}))
    return out


def training_claims(rows: list[Row]) -> list[Record]:
    """prec.bf16_training from fp32 and bf16 runs of the same model/steps/batch/seq/lr/seed and device."""
    groups: dict[tuple[Any, ...], dict[str, Row]] = {}
    for r in rows:
        pr = dataclasses.asdict(resolve(params_of(r.params)))
        key = (r.device, pr["model"], pr["steps"], pr["batch"], pr["seq"], pr["lr"])
        name = str(r.labels.get("format")) + ("+scaler" if r.labels.get("scaler") == "on" else "")
        groups.setdefault(key, {})[name] = r
    out = []
    for (_, model, steps, batch, seq, lr), g in groups.items():
        if "fp32" not in g or "bf16" not in g:
            continue
        f32, b16 = g["fp32"].number("final_loss"), g["bf16"].number("final_loss")
        if f32 is None or b16 is None:
            continue
        pct = 100.0 * abs(b16 / f32 - 1.0)

        def desc(name: str, g: dict[str, Row] = g) -> str:
            r = g[name]
            return (
                f"{name} {r.value('final_loss'):.4f} (overflow steps {r.value('overflow_steps')}, "
                f"skipped {r.value('skipped_steps')}, diverged {r.value('diverged')})"
            )

        others = [desc(k) for k in ("fp16+scaler", "fp16", "tf32") if k in g]
        detail = (
            f"GPT {model}, {steps} steps x {batch} x {seq} tokens, lr {lr:g}, same seed and batches; final loss "
            f"(fp32 eval, fixed val batches): fp32 {f32:.4f}, bf16 {b16:.4f}: |bf16/fp32 - 1| = {pct:.3f}%"
            + (f"; {'; '.join(others)}" if others else "")
        )
        rec = _record("prec.bf16_training", Evidence(pct, "%", "measured", detail))
        for name, r in sorted(g.items()):
            rec.metrics[f"final_loss_{name.replace('+', '_')}"] = Metric(
                r.value("final_loss"), "nats/token", deterministic=True, portable=False
            )
        out.append(rec)
    return out


def scale_claims(rows: list[Row], checks: list[Row] | None = None) -> list[Record]:
    """mem.train_24x from the 1B rows (simulated; on CUDA also measured). checks: the small preset's
    measured rows that ran the same step simulated too (the simulation's own check)."""
    check: dict[str, str] = {}  # device -> the check's words
    for c in checks or []:
        check[c.device] = (
            f"; the simulation's check on this machine: GPT {c.labels.get('preset')} ({c.value('params'):,} params, "
            f"batch {c.value('batch')} x seq {c.value('seq')}) measured {c.number('total_bytes_per_param'):.4f} vs "
            f"simulated {c.number('simulated_total_bytes_per_param'):.4f} bytes/param at the peak "
            f"(x{c.number('simulated_vs_measured'):.4f})"
        )
    out = []
    for r in rows:
        need = ("params", "batch", "seq", "total_bytes_per_param", "state_bytes_per_param_excl_counters")
        if any(r.number(k) is None for k in need):
            continue
        sc = Scale(
            params=int(r.number("params") or 0),
            batch=int(r.number("batch") or 0),
            seq=int(r.number("seq") or 0),
            total=float(r.number("total_bytes_per_param") or 0),
            weights=r.number("peak_weights_bytes_per_param") or 0.0,
            gradients=r.number("peak_grads_bytes_per_param") or 0.0,
            optimizer=r.number("peak_optim_bytes_per_param") or 0.0,
            activations=r.number("peak_act_bytes_per_param") or 0.0,
            at_rest=float(r.number("state_bytes_per_param_excl_counters") or 0),
            source=str(r.labels.get("mode")),
        )
        lo, hi = r.number("tokens_24_lo"), r.number("tokens_24_hi")
        verdict, detail = judge_train_24x(sc, (lo, hi) if lo is not None and hi is not None else None)
        fb, up = r.number("peak_fwd_bwd_bytes_per_param"), r.number("peak_update_bytes_per_param")
        if fb is not None and up is not None:
            detail += (
                f"; phases: forward+backward peak {fb:.2f}, optimizer update peak {up:.2f} bytes/param "
                f"(the larger is the step's: {r.value('peak_phase')})"
            )
        detail += check.get(r.device, "")
        src = "simulated" if sc.source == "simulated" else "measured"
        ev = Evidence(sc.total, "bytes/param", src, detail, verdict=verdict)
        out.append(_record("mem.train_24x", ev, {"mode": sc.source, "batch": sc.batch, "seq": sc.seq}))
    return out


def activation_claims(rows: list[Row]) -> list[Record]:
    """mem.act_layer: the largest |measured / formula - 1| over the configurations, per evidence kind."""
    out = []
    for mode in ("measured", "simulated"):
        rs = [r for r in rows if r.labels.get("mode") == mode and r.number("ratio") is not None]
        if not rs:
            continue
        devs = [(abs(float(r.number("ratio") or 0) - 1) * 100, r) for r in rs]
        worst = max(d for d, _ in devs)
        lines = "; ".join(
            f"{r.labels.get('format')} {r.labels.get('attention')} h={r.labels.get('d_model')} a={r.labels.get('heads')} "
            f"s={r.labels.get('seq')} b={r.labels.get('batch')}: {r.value('measured_bytes'):,} vs {r.value('formula_bytes'):,} "
            f"(x{r.number('ratio'):.4f}; the paper as printed x{r.number('paper_ratio'):.3f})"
            for _, r in devs
        )
        detail = f"{len(rs)} configurations, bytes per layer {mode} vs formula: {lines}"
        out.append(
            _record(
                "mem.act_layer", Evidence(worst, "% (largest |measured/formula - 1|)", mode, detail), {"mode": mode}
            )
        )
    return out
