"""Report sections of the inference plugin: decode tokens/s and % of measured bandwidth vs batch per
weight format; step time vs generated length with and without the KV cache; the samplers' cost."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bench.contract import Row, Section, Table
from bench.plots import fmt, ok_cases, pyplot, save


def _case(r: Row) -> str:
    """A series name: the format, and the preset / prompt when several are in the rows."""
    return f"{r.params.get('precision')} ({r.params.get('model')}, prompt {r.params.get('prompt_len')})"


def decode_section(rows: Sequence[Row], out_dir: Path) -> list[Section]:
    dec = [r for r in ok_cases(rows, ("inference",)) if r.params.get("mode") == "decode" and r.number("decode_tok_s")]
    if not dec:
        return []
    series: dict[str, list[Row]] = {}
    for r in sorted(dec, key=lambda r: (r.device, _case(r), r.get("batch"))):
        name = _case(r) + (f" [{r.device}]" if len({x.device for x in dec}) > 1 else "")
        series.setdefault(name, []).append(r)
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    for name, rs in series.items():
        bs = [r.get("batch") for r in rs]
        ax1.plot(bs, [r.number("decode_tok_s") for r in rs], marker="o", label=name, linewidth=1.1)
        pct = [(r.get("batch"), r.number("pct_bandwidth")) for r in rs if r.number("pct_bandwidth") is not None]
        if pct:
            ax2.plot([b for b, _ in pct], [v for _, v in pct], marker="o", label=name, linewidth=1.1)
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch (sequences decoded together)")
        ax.grid(True, which="both", alpha=0.3)
    ax1.set_ylabel("decode tokens/s [measured]")
    ax1.set_title("Decode throughput vs batch, per weight format")
    ax2.set_ylabel("bytes read per step / step time [% of measured copy bandwidth]")
    ax2.axhline(100.0, color="black", linewidth=0.8)
    ax2.set_title("Memory-bandwidth roofline of a decode step")
    ax2.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    png = save(fig, out_dir, "inference_decode.png")
    header = [
        "case",
        "batch",
        "TTFT [ms]",
        "TPOT p50 [ms]",
        "TPOT p99 [ms]",
        "decode tok/s",
        "e2e [ms]",
        "KV bytes (allocator)",
        "KV bytes (formula)",
        "weights [bytes]",
        "GB/s",
        "% of copy BW",
        "FLOP/byte",
        "ridge",
        "bound",
        "J/token",
    ]
    body = [
        [_case(r), fmt(r.get("batch"))]
        + [
            fmt(r.value(m))
            for m in (
                "ttft_ms",
                "tpot_p50_ms",
                "tpot_p99_ms",
                "decode_tok_s",
                "e2e_ms",
                "kv_bytes",
                "kv_formula_bytes",
                "weight_bytes",
                "achieved_gbps",
                "pct_bandwidth",
                "intensity",
                "ridge",
                "bound",
                "energy_j_per_token",
            )
        ]
        for rs in series.values()
        for r in rs
    ]
    tables: list[Table] = [
        ("Prefill and decode, per format and batch (measured; KV formula and FLOP/byte: formula)", header, body)
    ]
    vs = [r for r in rows if r.plugin == "inference" and r.kind == "summary" and r.labels.get("analysis")]
    if vs:
        tables.append(
            (
                "Each format vs bf16 (same preset, prompt, tokens and batch)",
                ["format", "batch", "tokens/s ratio", "memory ratio (weights + KV)", "weight ratio"],
                [
                    [
                        str(r.get("precision")),
                        fmt(r.get("batch")),
                        fmt(r.value("speed_ratio")),
                        fmt(r.value("memory_ratio")),
                        fmt(r.value("weight_ratio")),
                    ]
                    for r in vs
                ],
            )
        )
    return [
        Section(
            "Inference: prefill, decode and the bandwidth roofline",
            "inference-decode",
            png,
            "Decode tokens/s vs batch per weight format (left) and the bytes a decode step must read (weights + "
            "KV cache) over its median time, as % of this device's measured copy bandwidth (right; over 100% "
            "means the weights were served from cache, not memory).",
            tables,
        )
    ]


def cache_section(rows: Sequence[Row], out_dir: Path) -> list[Section]:
    rs = [
        r for r in ok_cases(rows, ("inference",)) if r.params.get("mode") == "cache" and r.samples.get("step_median_s")
    ]
    if not rs:
        return []
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for r in rs:
        ys = r.samples["step_median_s"]
        xs = list(range(1, len(ys) + 1))
        k, x = r.number("total_exponent"), r.number("extra_exponent")
        lab = f"cache {r.get('cache')} ({r.params.get('model')}, batch {r.get('batch')})"
        lab += f": T(n) ~ n^{k:.2f}" if k is not None else ""
        lab += f", T_off - T_on ~ n^{x:.2f}" if x is not None else ""
        ax.plot(xs, [y * 1e3 for y in ys], marker=".", label=lab, linewidth=1.0)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("decode step n (tokens generated so far)")
    ax.set_ylabel("median step time [ms, measured]")
    ax.set_title("Step time vs generated length, with and without the KV cache")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=9)
    png = save(fig, out_dir, "inference_cache.png")
    body = [
        [str(r.get("cache")), fmt(r.get("batch"))]
        + [
            fmt(r.value(m))
            for m in (
                "total_exponent",
                "total_exponent_se",
                "extra_exponent",
                "step_exponent",
                "gen_ms",
                "step_first_ms",
                "step_last_ms",
                "same_tokens_pct",
            )
        ]
        for r in rs
    ]
    header = [
        "cache",
        "batch",
        "T(n) exponent",
        "± se",
        "T_off - T_on exponent",
        "step-time exponent in context",
        "decode ms",
        "first step ms",
        "last step ms",
        "same tokens %",
    ]
    return [
        Section(
            "Inference: KV cache vs recomputing the prefix",
            "inference-cache",
            png,
            "Median time of each decode step of one generation; T(n), the time of the first n steps, fitted as "
            "n^k (bench.fit.fit_power_law): ~1 with the cache; what recomputing the whole prefix adds, "
            "T_off(n) - T_on(n), ~n^2.",
            [("", header, body)],
        )
    ]


def sampling_section(rows: Sequence[Row]) -> list[Section]:
    rs = [r for r in ok_cases(rows, ("inference",)) if r.params.get("mode") == "sampling"]
    if not rs:
        return []
    body = [
        [
            str(r.get("sampler")),
            fmt(r.get("batch")),
            fmt(r.value("sample_us")),
            fmt(r.value("step_ms")),
            fmt(r.value("pct_of_step")),
            fmt(r.value("tv")),
            fmt(r.value("tv_bound")),
            fmt(r.value("outside_pct")),
        ]
        for r in rs
    ]
    header = ["sampler", "batch", "us per token", "decode step ms", "% of step", "TV", "TV bound", "% outside kept set"]
    return [
        Section(
            "Inference: samplers, their promises and their cost",
            "inference-sampling",
            None,
            "Each sampler on real next-token logits: time per call (one token per sequence) next to a decode "
            "step at the same batch; the TV distance of 20,000 draws to the sampler's own distribution.",
            [("", header, body)],
        )
    ]


def sections(rows: Sequence[Row], out_dir: Path) -> list[Section]:
    return decode_section(rows, out_dir) + cache_section(rows, out_dir) + sampling_section(rows)
