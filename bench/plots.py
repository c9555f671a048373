"""Helpers for plugins' report sections (Plugin.report): picking rows, naming series, drawing with
matplotlib (Agg) and saving PNGs. Nothing here knows a plugin, a metric or a paper: the plugins
own their plots, the core (bench/report.py) lays the sections out.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.rows import Row
from bench.tables import fmt_value, num

fmt = fmt_value  # one number format for every table (bench/tables.py)
__all__ = ["fmt", "num"]  # plugins take both from here


def first_number(row: Row, *names: str) -> float | None:
    """The first finite metric value among names."""
    for n in names:
        v = row.number(n)
        if v is not None:
            return v
    return None


def field_of(row: Row, *names: str) -> Any:
    """First present value among labels, params (row.get), then metrics."""
    for n in names:
        v = row.get(n)
        if v is not None:
            return v
        if row.value(n) is not None:
            return row.value(n)
    return None


def ok_cases(rows: Sequence[Row], plugins: Sequence[str]) -> list[Row]:
    """The plugins' case rows that ended ok."""
    return [r for r in rows if r.plugin in plugins and r.is_case and r.ok]


def varying(rows: Sequence[Row], exclude: Sequence[str] = ()) -> list[str]:
    """Params and labels (and the device, with several) whose values differ across rows."""
    keys: list[str] = []
    for r in rows:
        for k in list(r.params) + list(r.labels):
            if k not in keys and k not in exclude:
                keys.append(k)
    out = [k for k in keys if len({json.dumps(field_of(r, k), sort_keys=True, default=str) for r in rows}) > 1]
    if len({r.device for r in rows}) > 1:
        out.insert(0, "device")
    return out


def label(row: Row, keys: Sequence[str], label_only: Sequence[str] = ()) -> str:
    """k=v for keys; keys in label_only are read from the row's labels alone (a case param of the
    same name, e.g. scaler=both, does not describe a row labelled otherwise or not at all)."""
    bits = []
    for k in keys:
        if k in label_only:
            v = row.labels.get(k)
        else:
            v = row.device if k == "device" else field_of(row, k)
        if v is not None:
            bits.append(f"{k}={fmt(v)}")
    return ", ".join(bits) or "all"


def series_keys(rows: Sequence[Row], keys: Sequence[str], x: Callable[[Row], Any]) -> list[str]:
    """The keys that split rows into lines of a plot against x: a key whose every value comes
    with a single x (a preset name that fixes N, say) names points, not lines."""
    out = []
    for k in keys:
        xs_by_value: dict[str, set[str]] = {}
        for r in rows:
            v = r.device if k == "device" else field_of(r, k)
            xs_by_value.setdefault(json.dumps(v, default=str), set()).add(json.dumps(x(r), default=str))
        if any(len(xs) > 1 for xs in xs_by_value.values()):
            out.append(k)
    return out


def sort_key(v: Any) -> tuple[int, float, str]:
    f = num(v)
    return (0, f, "") if f is not None else (1, 0.0, str(v))


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def readable_log_y(ax: Any) -> None:
    """On a log y axis spanning under two decades, label ticks as plain numbers (3.2, not 3.2x10^0)."""
    from matplotlib.ticker import FuncFormatter

    lo, hi = ax.get_ylim()
    if lo > 0 and hi / lo < 100:
        f = FuncFormatter(lambda v, _: f"{v:.3g}")
        ax.yaxis.set_major_formatter(f)
        ax.yaxis.set_minor_formatter(f)
        ax.tick_params(axis="y", which="minor", labelsize=7)


def save(fig: Any, out_dir: Path, name: str) -> str:
    """Write fig as out_dir/name (PNG, 110 dpi), close it, return the file name."""
    fig.tight_layout()
    fig.savefig(out_dir / name, dpi=110)
    pyplot().close(fig)
    return name
