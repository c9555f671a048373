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
    bf16_cast_finding,
    judge_bf16_truncation,
    judge_fp16_scaling,
    judge_ranges,
    judge_train_24x,
    judge_train_24x_range,
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
            verdict, detail = judge_bf16_truncation(str(r.value("layout")), str(r.value("layout_fp32")))
            ev = Evidence(str(r.value("layout")), "sign/exponent/fraction bits", "measured", detail, verdict=verdict)
            out.append(_record("prec.bf16_truncation", ev, {"format": "bf16"}))
            finding = Evidence(
                int(r.value("differ_from_truncation") or 0),
                "values not equal to their truncation",
                "measured",
                bf16_cast_finding(values, stored),
            )
            out.append(_record("prec.bf16_truncation.torch_cast", finding, {"format": "bf16"}))
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
    groups: dict[tuple[str, str, int], list[tuple[Scale, Row]]] = {}
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
        groups.setdefault((r.device, sc.source, sc.seq), []).append((sc, r))
    out = []
    for (device, mode, seq), pts in groups.items():
        pts.sort(key=lambda p: p[0].batch)
        sc, r = pts[0]  # the smallest batch: its breakdown and its formula window stand for the sweep
        lo, hi = r.number("tokens_24_lo"), r.number("tokens_24_hi")
        window = (lo, hi) if lo is not None and hi is not None else None
        verdict, detail = judge_train_24x_range([p[0] for p in pts], window)
        _, one = judge_train_24x(sc, None)
        detail += f"; at the smallest batch: {one.split(' (the notes')[0]} (the notes: 4 + 4 + 8 + 8 = 24)"
        fb, up = r.number("peak_fwd_bwd_bytes_per_param"), r.number("peak_update_bytes_per_param")
        if fb is not None and up is not None:
            detail += (
                f"; phases: forward+backward peak {fb:.2f}, optimizer update peak {up:.2f} bytes/param "
                f"(the larger is the step's: {r.value('peak_phase')})"
            )
        detail += check.get(device, "")
        src = "simulated" if mode == "simulated" else "measured"
        best = min(pts, key=lambda p: abs(p[0].total / 24.0 - 1))[0]  # the point nearest 24: the figure shown
        ev = Evidence(best.total, "bytes/param (the batch nearest 24)", src, detail, verdict=verdict)
        batches = ",".join(str(p[0].batch) for p in pts)
        out.append(_record("mem.train_24x", ev, {"mode": mode, "batch": batches, "seq": seq}))
    return out


def activation_claims(rows: list[Row]) -> list[Record]:
    """mem.act_layer: the largest |measured / the paper's formula as printed - 1| over the configurations,
    per evidence kind; mem.act_layer.torch_model, apart: the same against the project's model of torch."""
    out = []
    for mode in ("measured", "simulated"):
        rs = [r for r in rows if r.labels.get("mode") == mode and r.number("paper_ratio") is not None]
        if not rs:
            continue

        def where(r: Row) -> str:
            return (
                f"{r.labels.get('format')} {r.labels.get('attention')} h={r.labels.get('d_model')} "
                f"a={r.labels.get('heads')} s={r.labels.get('seq')} b={r.labels.get('batch')}"
            )

        for cid, ratio, vs, metric in (
            ("mem.act_layer", "paper_ratio", "paper_bytes", "the paper's formula as printed"),
            ("mem.act_layer.torch_model", "ratio", "formula_bytes", "the project's torch model"),
        ):
            devs = [(abs(float(r.number(ratio) or 0) - 1) * 100, r) for r in rs if r.number(ratio) is not None]
            if not devs:
                continue
            worst = max(d for d, _ in devs)
            n_out = sum(1 for d, _ in devs if d > 5)
            lines = "; ".join(
                f"{where(r)}: {r.value('measured_bytes'):,} vs {r.value(vs):,} (x{r.number(ratio):.4f})"
                for _, r in devs
            )
            detail = f"{len(devs)} configurations, bytes per layer {mode} vs {metric} ({n_out} outside ±5%): {lines}"
            ev = Evidence(worst, f"% (largest |measured / {metric} - 1|)", mode, detail)
            out.append(_record(cid, ev, {"mode": mode}))
    return out
