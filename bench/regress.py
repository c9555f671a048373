"""`bench regress`: a regression gate for CI that does not cry wolf.

Rows of the baseline and current results match on plugin + params + labels + kind
(Row.key). Each metric gets a direction and a kind:

  deterministic  (metric "deterministic": true -- bytes, FLOP counts, fixed-seed losses):
                 equal or not, exactly for integers and within rel 1e-6 for floats
                 (--rtol, --int-rtol, --tol NAME=REL). A change in the worse direction, or in a
                 metric without a direction, fails; an improvement passes with a note.
  timing         (a metric with raw samples: time_ms <-> samples["time_s"]): a slowdown needs
                 both (asv's rule) a significant Mann-Whitney U test on the raw samples
                 (p < --alpha) AND a relative change of the median of at least
                      max(--min-effect, --ci-k x hypot(CI_a, CI_b), --iqr-k x min(IQR_a, IQR_b))
                 where CI is the 95% CI half-width of each median / median and IQR the
                 interquartile range / median (the noise floor, as nvbench's SAME/FAST/SLOW uses
                 the measured relative noise). Then the gate reruns the slowed cases
                 (`bench run --plugin P --<param> <value> ...`, --confirm times) and only a
                 slowdown seen again is a regression; one the rerun does not reproduce passes as
                 noise, one the rerun contradicts is "unstable".
  other metrics  (throughput derived from a timing, noise figures, ...) are not gated.

Verdicts: same / faster / slower / ambiguous / unstable / changed (deterministic) /
not comparable (timings across machines) / failed (the case now errors) / fixed / missing / new.
Timings of rows from different machines (fingerprint machine_id) are never called a
regression: they are a comparison across machines; deterministic metrics still gate.

Exit codes: 0 pass, 1 confirmed regression, 2 ambiguous / unstable / unconfirmed / missing
rows / nothing comparable, 3 harness error (unreadable input, bad usage, a rerun that fails).
"""
from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import click

from bench.errors import HarnessError
from bench.rows import Metric, Row
from bench.stats import iqr_rel, mann_whitney_p, median, median_ci

EXIT_PASS, EXIT_REGRESSION, EXIT_AMBIGUOUS, EXIT_HARNESS = 0, 1, 2, 3
FAIL_STATUSES = ("error", "timeout", "oom")
# Reported but never gated: noise figures and bookkeeping written by timing_metrics().
META_SUFFIXES = ("_ci95_pct", "_noise_pct", "_samples", "_stop")
META_NAMES = ("threads",)


class GateError(HarnessError):
    """The gate cannot compare (no rows, nothing matches, a rerun that fails): exit 3."""


@dataclass
class GateConfig:
    alpha: float = 0.05  # Mann-Whitney two-sided significance level
    min_effect: float = 0.05  # floor on the relative change of the median (0.05 = 5%)
    ci_k: float = 2.0  # x hypot of the two medians' 95% CI half-widths (relative)
    iqr_k: float = 1.0  # x the smaller IQR/median of the two runs
    max_threshold: float = 0.5  # a noise-driven threshold above this: too noisy to decide ("ambiguous")
    min_samples: int = 3  # fewer raw samples on a side: no significance test
    rtol: float = 1e-6  # deterministic floats
    int_rtol: float = 0.0  # deterministic integers (0: exact)
    tolerances: dict[str, float] = field(default_factory=dict)  # per metric rel tolerance
    confirm: int = 1  # confirming reruns a slowdown must survive (0: fail on first detection)
    only: str = "all"  # all | deterministic | timing
    metrics: tuple[str, ...] | None = None
    allow_missing: bool = False


# --- per metric: direction and kind ---------------------------------------------------------
_HIGHER = re.compile(r"(per_s$|per_sec|tflops|gflops|throughput|mfu|speedup|bandwidth|gbps)")
_LOWER = re.compile(r"(noise|ci95|error|err$|loss|latency|perplexity|_ms$|_us$|_ns$|_s$|seconds|time|bytes|_mib$|_gib$|_kib$|_mb$|_gb$|memory|peak)")
_PCT = re.compile(r"(pct|percent|util)")


def direction(name: str, m: Metric | None = None) -> str | None:
    """'lower' or 'higher' is better, or None: the metric's own "better", else from its name/unit."""
    b = m.better if m is not None else None
    if b in ("lower", "higher"):
        return b
    n = name.lower()
    if _HIGHER.search(n):
        return "higher"
    if _LOWER.search(n):
        return "lower"
    if _PCT.search(n):  # pct_matmul, % of peak
        return "higher"
    unit = (m.unit if m is not None else "").lower()
    if "/s" in unit:
        return "higher"
    if unit.startswith(("ms", "s ", "us", "ns", "mib", "gib", "bytes", "byte")) or unit in ("s",):
        return "lower"
    return None


def samples_key(row: Row, name: str) -> str | None:
    """The raw-sample series behind a metric: time_ms <- samples["time_s"] (timing_metrics()), or same name."""
    s = row.samples
    cands = [name] + ([name[:-3] + "_s"] if name.endswith("_ms") else [])
    for c in cands:
        if s.get(c):
            return c
    return None


def is_meta(name: str) -> bool:
    return name in META_NAMES or name.endswith(META_SUFFIXES)


def is_timing_name(name: str) -> bool:
    """time_ms, step_ms, train_s, latency_us ...: a duration (its samples, if any, are raw timings)."""
    if _HIGHER.search(name):
        return False
    return bool(re.search(r"(_ms|_us|_ns|_s|_sec|seconds)$", name)) or name in ("time", "latency", "wall_time")


# --- the statistics ------------------------------------------------------------------------
@dataclass
class TimingResult:
    verdict: str  # same | faster | slower | ambiguous
    ratio: float  # median(current) / median(baseline)
    change: float  # relative change in the WORSE direction (+0.2 = 20% worse)
    p: float | None
    threshold: float  # the minimum effect that applied
    why: str


def compare_samples(base: Sequence[float], cur: Sequence[float], better: str = "lower",
                    cfg: GateConfig | None = None) -> TimingResult:  # fmt: skip
    """The timing decision on raw samples: significance AND a noise-adapted minimum effect."""
    cfg = cfg or GateConfig()
    ma, mb = median(base), median(cur)
    ratio = mb / ma if ma else math.inf
    change = (ratio - 1.0) if better != "higher" else ((1.0 / ratio - 1.0) if ratio else math.inf)
    ci = math.hypot(median_ci(base).rel_halfwidth, median_ci(cur).rel_halfwidth)
    iqrs = [x for x in (iqr_rel(base), iqr_rel(cur)) if x == x]
    noise = min(iqrs) if iqrs else 0.0
    thr = max(cfg.min_effect, cfg.ci_k * ci, cfg.iqr_k * noise)
    parts = f"min effect {100 * thr:.1f}% = max(floor {100 * cfg.min_effect:g}%, {cfg.ci_k:g} x CI {100 * ci:.1f}%, {cfg.iqr_k:g} x IQR {100 * noise:.1f}%)"
    big = abs(change) >= thr
    if len(base) < cfg.min_samples or len(cur) < cfg.min_samples:
        if big:
            return TimingResult("ambiguous", ratio, change, None, thr, f"{len(base)} vs {len(cur)} samples: too few to test a change of {100 * change:+.1f}%")
        return TimingResult("same", ratio, change, None, thr, f"too few samples to test; change within {parts}")
    p = mann_whitney_p(base, cur)
    if thr > cfg.max_threshold:
        return TimingResult("ambiguous", ratio, change, p, thr, f"too noisy to decide: {parts} exceeds {100 * cfg.max_threshold:g}%")
    sig = p < cfg.alpha
    if big and sig:
        return TimingResult("slower" if change > 0 else "faster", ratio, change, p, thr, f"p={p:.2g} < {cfg.alpha:g} and |change| >= {parts}")
    if not big:
        return TimingResult("same", ratio, change, p, thr, ("significant (p={:.2g}) but " if sig else "").format(p) + f"below {parts}")
    return TimingResult("ambiguous", ratio, change, p, thr, f"change {100 * change:+.1f}% beyond the min effect but not significant (p={p:.2g} >= {cfg.alpha:g})")


def compare_deterministic(name: str, a: Any, b: Any, cfg: GateConfig) -> tuple[bool, str]:
    """(equal within tolerance, the tolerance in words)."""
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return a == b, "exact"
    if name in cfg.tolerances:
        rtol = cfg.tolerances[name]
    elif isinstance(a, int) and isinstance(b, int):
        rtol = cfg.int_rtol
    else:
        rtol = cfg.rtol
    if math.isnan(a) or math.isnan(b):
        return (math.isnan(a) and math.isnan(b)), "exact"
    ok = a == b if rtol == 0 else abs(b - a) <= rtol * max(abs(a), abs(b))
    return ok, ("exact" if rtol == 0 else f"rel {rtol:g}")


# --- matching -------------------------------------------------------------------------------
@dataclass
class Side:
    """All rows of one key in one input: the last row's values, every row's samples pooled."""

    row: Row
    rows: list[Row]

    def samples(self, name: str) -> list[float]:
        out: list[float] = []
        for r in self.rows:
            k = samples_key(r, name)
            if k:
                out.extend(float(x) for x in r.samples[k])
        return out

    @property
    def machine(self) -> str | None:
        return self.row.machine_id


def group(rows: Iterable[Row]) -> dict[str, Side]:
    out: dict[str, Side] = {}
    for r in rows:
        k = r.key
        if k in out:
            out[k].rows.append(r)
            out[k].row = r
        else:
            out[k] = Side(r, [r])
    return out


def case_text(row: Row) -> str:
    bits = [f"{k}={v}" for k, v in row.params.items()]
    bits += [f"{k}={v}" for k, v in row.labels.items()]
    return (" ".join(bits) or "-") + (" (summary)" if row.kind == "summary" else "")


@dataclass
class Item:
    """One verdict: one metric of one matched row (or a row-level fact: failed, missing, new)."""

    plugin: str
    case: str
    metric: str
    kind: str  # deterministic | timing | status | presence
    verdict: str
    outcome: str  # pass | regression | ambiguous | info
    unit: str = ""
    better: str | None = None
    base: Any = None
    cur: Any = None
    ratio: float | None = None
    change: float | None = None  # + = worse
    p: float | None = None
    threshold: float | None = None
    note: str = ""
    reruns: list[float] = field(default_factory=list)  # change seen by each confirming rerun
    key: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    row_kind: str = "case"
    profile: str = ""


@dataclass
class GateReport:
    items: list[Item]
    messages: list[str]
    exit_code: int = 0
    compared_rows: int = 0

    def by_outcome(self, outcome: str) -> list[Item]:
        return [i for i in self.items if i.outcome == outcome]


Rerun = Callable[[Row], list[Row]]  # a baseline/current row -> fresh rows of its case


def _want(name: str, kind: str, cfg: GateConfig) -> bool:
    if cfg.metrics is not None and name not in cfg.metrics:
        return False
    return cfg.only == "all" or cfg.only == kind


def evaluate(base_rows: list[Row], cur_rows: list[Row], cfg: GateConfig | None = None,
             rerun: Rerun | None = None, rerun_why: str = "") -> GateReport:  # fmt: skip
    """Compare two result sets; rerun (when given) confirms slowdowns. Returns every verdict and the exit code."""
    cfg = cfg or GateConfig()
    B, C = group(base_rows), group(cur_rows)
    items: list[Item] = []
    msgs: list[str] = []
    if not B:
        raise GateError("the baseline has no rows")
    if not C:
        raise GateError("the current results have no rows")
    common = [k for k in B if k in C]
    if not common:
        raise GateError("no row of the current results matches a baseline row (plugin + params + labels): "
                        "are these results of the same suite?")  # fmt: skip
    machines = {(B[k].machine, C[k].machine) for k in common}
    cross = {m for m in machines if m[0] != m[1]}
    if cross:
        a, b = sorted(cross, key=str)[0]
        msgs.append(f"NOT COMPARABLE: baseline and current ran on different machines (machine_id {a} vs {b}): "
                    "timing differences across machines are a comparison, not a regression; they are not gated "
                    "(use `bench compare`). Deterministic metrics still gate.")  # fmt: skip
    for k in B:
        b = B[k].row
        if k not in C:
            items.append(Item(b.plugin, case_text(b), "-", "presence", "missing",
                              "pass" if cfg.allow_missing else "ambiguous", key=k,
                              note="in the baseline, not in the current results"))  # fmt: skip
            continue
        items.extend(_compare_row(k, B[k], C[k], cfg))
    for k in C:
        if k not in B:
            c = C[k].row
            items.append(Item(c.plugin, case_text(c), "-", "presence", "new", "info", key=k, note="not in the baseline"))
    if rerun_why == "" and rerun is None and cfg.confirm > 0:
        rerun_why = "no rerun available"
    _confirm(items, B, cfg, rerun, rerun_why, msgs)
    rep = GateReport(items, msgs, compared_rows=len(common))
    gated = [i for i in items if i.kind in ("deterministic", "timing", "status") and i.verdict != "not comparable"]
    if rep.by_outcome("regression"):
        rep.exit_code = EXIT_REGRESSION
    elif rep.by_outcome("ambiguous"):
        rep.exit_code = EXIT_AMBIGUOUS
    elif not gated:
        rep.exit_code = EXIT_AMBIGUOUS
        msgs.append("nothing was gated: no deterministic metric, and no timing comparable on one machine"
                    + (f" (--only {cfg.only})" if cfg.only != "all" else ""))  # fmt: skip
    return rep


def _compare_row(k: str, sb: Side, sc: Side, cfg: GateConfig) -> list[Item]:
    b, c = sb.row, sc.row
    base = dict(plugin=b.plugin, case=case_text(b), key=k, params=b.params, row_kind=b.kind,
                profile=c.profile or b.profile or "")  # fmt: skip
    if b.status != "ok":
        if c.status == "ok":
            return [Item(metric="-", kind="status", verdict="fixed", outcome="info", note=f"the baseline was {b.status}; now ok", **base)]
        return []
    if c.status in FAIL_STATUSES:
        return [Item(metric="-", kind="status", verdict="failed", outcome="regression", base="ok", cur=c.status,
                     note=f"the case now ends {c.status}: {c.message[:160]}", **base)]  # fmt: skip
    if c.status != "ok":
        return [Item(metric="-", kind="presence", verdict="missing", outcome="pass" if cfg.allow_missing else "ambiguous",
                     note=f"current row is {c.status}: {c.message[:160]}", **base)]  # fmt: skip
    out = []
    same_machine = sb.machine == sc.machine
    mb, mc = b.metrics, c.metrics
    for name in mb:
        if is_meta(name):
            continue
        m_b, m_c = mb[name], mc.get(name)
        det = bool(m_b.deterministic or (m_c is not None and m_c.deterministic))
        kind = "deterministic" if det else ("timing" if is_timing_name(name) else "info")
        if kind == "info" or not _want(name, kind, cfg):
            continue
        better = direction(name, m_b)
        it = Item(metric=name, kind=kind, verdict="same", outcome="pass", unit=m_b.unit, better=better,
                  base=m_b.value, **base)  # fmt: skip
        if m_c is None:
            it.verdict, it.outcome, it.note = "missing", ("pass" if cfg.allow_missing else "ambiguous"), "metric absent in the current row"
            out.append(it)
            continue
        it.cur = m_c.value
        if isinstance(it.base, (int, float)) and isinstance(it.cur, (int, float)) and not isinstance(it.base, bool) and it.base:
            it.ratio = it.cur / it.base
        if kind == "deterministic":
            ok, tol = compare_deterministic(name, it.base, it.cur, cfg)
            if not ok:
                it.verdict = "changed"
                worse = _worse(better, it.base, it.cur)
                it.change = (it.ratio - 1 if better != "higher" else 1 - it.ratio) if it.ratio is not None else None
                if worse is False:
                    it.outcome, it.note = "pass", f"improved beyond tolerance ({tol}): update the baseline"
                else:
                    it.outcome = "regression"
                    it.note = f"deterministic, tolerance {tol}" + ("" if worse else "; no direction, so any change fails")
            else:
                it.note = f"equal ({tol})"
            out.append(it)
            continue
        # timing
        if not same_machine:
            it.verdict, it.outcome = "not comparable", "info"
            it.note = f"different machines ({sb.machine} vs {sc.machine}): a comparison, not a regression"
            out.append(it)
            continue
        xa, xb = sb.samples(name), sc.samples(name)
        if not xa or not xb:
            it.change = (it.ratio - 1) if it.ratio is not None else None
            big = it.change is None or abs(it.change) >= cfg.min_effect
            it.verdict, it.outcome = ("ambiguous", "ambiguous") if big else ("same", "pass")
            it.note = "no raw samples on " + ("either side" if not xa and not xb else ("the baseline" if not xa else "the current side")) + \
                ": " + ("cannot test significance" if big else f"change within the {100 * cfg.min_effect:g}% floor")
            out.append(it)
            continue
        r = compare_samples(xa, xb, better or "lower", cfg)
        it.verdict, it.ratio, it.change, it.p, it.threshold, it.note = r.verdict, r.ratio, r.change, r.p, r.threshold, r.why
        it.base, it.cur = _scaled_median(xa, name, b, m_b), _scaled_median(xb, name, c, m_c)
        it.outcome = {"same": "pass", "faster": "pass", "slower": "regression", "ambiguous": "ambiguous"}[r.verdict]
        out.append(it)
    return out


def _worse(better: str | None, a: Any, b: Any) -> bool | None:
    if better is None or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return None
    return b > a if better == "lower" else b < a


def _scaled_median(xs: list[float], name: str, row: Row, m: Metric) -> float:
    """Median of the raw samples in the metric's unit (samples time_s -> metric time_ms: x 1e3)."""
    k = samples_key(row, name)
    scale = 1e3 if (k and k != name and name.endswith("_ms")) else 1.0
    return median(xs) * scale


# --- confirmation by rerun -----------------------------------------------------------------
def _confirm(items: list[Item], B: dict[str, Side], cfg: GateConfig, rerun: Rerun | None, why_not: str,
             msgs: list[str]) -> None:  # fmt: skip
    slow = [i for i in items if i.kind == "timing" and i.verdict == "slower"]
    if not slow:
        return
    if cfg.confirm <= 0:
        for i in slow:
            i.note += "; not confirmed by a rerun (--confirm 0)"
        return
    if rerun is None:
        for i in slow:
            i.outcome = "ambiguous"
            i.note += f"; UNCONFIRMED: could not rerun ({why_not})"
        msgs.append(f"slowdowns could not be confirmed by a rerun ({why_not}); they count as ambiguous. "
                    "Use --confirm 0 to fail on the first detection.")  # fmt: skip
        return
    by_case: dict[str, list[Item]] = {}
    for i in slow:
        by_case.setdefault(json.dumps([i.plugin, i.params, i.row_kind], sort_keys=True, default=str), []).append(i)
    for case_items in by_case.values():
        pending = list(case_items)
        if pending[0].row_kind != "case" or pending[0].plugin == "pytest-benchmark":
            for i in pending:
                i.outcome = "ambiguous"
                i.note += "; UNCONFIRMED: " + ("summary rows cannot be rerun alone" if i.row_kind != "case" else "pytest-benchmark rows cannot be rerun by bench")
            continue
        for attempt in range(cfg.confirm):
            fresh = rerun(B[pending[0].key].row)
            got = group(fresh)
            still = []
            for i in pending:
                side = got.get(i.key)
                if side is None or side.row.status != "ok":
                    i.verdict, i.outcome = "unstable", "ambiguous"
                    i.note += f"; the rerun gave no usable row ({side.row.status if side else 'no matching row'})"
                    continue
                if side.machine != B[i.key].machine:
                    i.outcome = "ambiguous"
                    i.note += f"; UNCONFIRMED: the rerun ran on machine {side.machine}, the baseline on {B[i.key].machine}"
                    continue
                better = i.better or "lower"
                r = compare_samples(B[i.key].samples(i.metric), side.samples(i.metric), better, cfg)
                i.reruns.append(r.change)
                if r.verdict == "slower":
                    still.append(i)
                elif r.verdict == "same":
                    i.verdict, i.outcome = "same", "pass"
                    i.note = f"slower at first ({100 * i.change:+.1f}%), not reproduced by rerun {attempt + 1} ({100 * r.change:+.1f}%, {r.why}): noise"
                else:
                    i.verdict, i.outcome = "unstable", "ambiguous"
                    i.note = f"slower at first ({100 * i.change:+.1f}%), rerun {attempt + 1}: {r.verdict} ({100 * r.change:+.1f}%, {r.why})"
            pending = still
            if not pending:
                break
        for i in pending:
            i.outcome = "regression"
            i.note += "; confirmed by " + ", ".join(f"rerun {n + 1} ({100 * c:+.1f}%)" for n, c in enumerate(i.reruns))


def param_flags(params: dict[str, Any]) -> list[str]:
    """Case params -> `bench run` flags (--name value); None values keep the plugin's default."""
    out = []
    for k, v in params.items():
        if v is None:
            continue
        out += ["--" + k.replace("_", "-"), ("true" if v else "false") if isinstance(v, bool) else str(v)]
    return out


def bench_rerun(template: str | None = None, workdir: Path | None = None,
                env: dict[str, str] | None = None, timeout: float = 1800) -> Rerun:  # fmt: skip
    """A rerun through the real CLI: `python -m bench.cli run --plugin P <params as flags> --out TMP`.

    The case runs with the torch thread count its row recorded (metric "threads" -> --threads).
    template (--rerun-cmd): a shell command with {python} {plugin} {flags} {profile} {run_opts} {out}
    ({run_opts}: "--threads N" or nothing); it must append the case's rows to {out}.
    """

    def run(row: Row) -> list[Row]:
        own = workdir is None
        wd = Path(tempfile.mkdtemp(prefix="bench-regress-")) if own else Path(workdir)  # type: ignore[arg-type]
        wd.mkdir(parents=True, exist_ok=True)
        out = wd / f"rerun-{os.getpid()}-{len(list(wd.iterdir()))}.jsonl"
        try:
            return _run(row, out)
        finally:
            if own:
                shutil.rmtree(wd, ignore_errors=True)

    def _run(row: Row, out: Path) -> list[Row]:
        from bench.results import ResultsError, load_rows

        flags = param_flags(row.params)
        profile = row.profile or "quick"
        th = row.value("threads")
        run_opts = ["--threads", str(th)] if isinstance(th, int) and not isinstance(th, bool) and th > 0 else []
        if template:
            cmd: Any = template.format(python=shlex.quote(sys.executable), plugin=shlex.quote(row.plugin),
                                       flags=" ".join(shlex.quote(f) for f in flags), profile=shlex.quote(profile),
                                       run_opts=" ".join(run_opts), out=shlex.quote(str(out)))  # fmt: skip
            shell = True
        else:
            cmd = [sys.executable, "-m", "bench.cli", "run", "--plugin", row.plugin, *flags, "--profile", profile,
                   *run_opts, "--out", str(out), "--format", "none"]  # fmt: skip
            shell = False
        shown = cmd if isinstance(cmd, str) else " ".join(shlex.quote(c) for c in cmd)
        click.echo(f"regress: confirming rerun: {shown}", err=True)
        try:
            p = subprocess.Popen(cmd, shell=shell, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env={**os.environ, **(env or {})}, start_new_session=True)  # fmt: skip
        except OSError as e:
            raise GateError(f"the confirming rerun failed to start: {e}") from None
        try:
            stdout, stderr = p.communicate(timeout=timeout)
        except BaseException as e:  # time limit or Ctrl-C: leave no case process behind
            from bench.supervise import kill_tree

            kill_tree(p.pid)
            if isinstance(e, subprocess.TimeoutExpired):
                raise GateError(f"the confirming rerun passed its time limit of {timeout:g} s: {shown}") from None
            raise
        if p.returncode != 0:
            tail = "\n".join((stderr or stdout).strip().splitlines()[-5:])
            raise GateError(f"the confirming rerun exited {p.returncode}: {shown}\n{tail}")
        try:
            return load_rows([out])
        except ResultsError as e:
            raise GateError(f"the confirming rerun wrote no readable results: {e}") from None

    return run


# --- output ---------------------------------------------------------------------------------
def _num(v: Any) -> str:
    from bench.tables import fmt_value

    return fmt_value(v)


def _pct(x: float | None) -> str:
    if x is None or x != x:
        return ""
    return f"{100 * x:+.2g}%" if 0 < abs(100 * x) < 0.1 else f"{100 * x:+.1f}%"


def render(rep: GateReport, fmt: str = "terminal", verbose: bool = False) -> str:
    from bench.tables import render as render_table

    header = ["plugin", "case", "metric", "kind", "baseline", "current", "unit", "change", "p", "min effect", "verdict", "note"]
    shown = [i for i in rep.items if verbose or fmt == "csv" or not (i.verdict == "same" and not i.reruns)]
    body = [[i.plugin, i.case, i.metric, i.kind, _num(i.base), _num(i.cur), i.unit[:24], _pct(i.change),
             "" if i.p is None else f"{i.p:.2g}", "" if i.threshold is None else f"{100 * i.threshold:.1f}%",
             i.verdict + ("" if i.outcome != "regression" else " [REGRESSION]"), i.note[:160 if fmt != "csv" else 2000]]
            for i in shown]  # fmt: skip
    if not body:
        return ""
    return render_table(header, body, fmt)


def summary(rep: GateReport, base_desc: str, cur_desc: str) -> str:
    lines = [f"regress: baseline {base_desc}", f"         current  {cur_desc}"]
    lines += [f"  {m}" for m in rep.messages]
    counts: dict[str, int] = {}
    for i in rep.items:
        counts[i.verdict] = counts.get(i.verdict, 0) + 1
    nd = sum(1 for i in rep.items if i.kind == "deterministic")
    nt = sum(1 for i in rep.items if i.kind == "timing")
    lines.append(f"  compared {rep.compared_rows} matched rows: {nd} deterministic and {nt} timing metrics; "
                 + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))  # fmt: skip
    for i in rep.by_outcome("regression"):
        what = {"timing": "SLOWER", "deterministic": "CHANGED", "status": "FAILED"}.get(i.kind, "REGRESSED")
        if i.kind == "status":
            lines.append(f"  {what} {i.plugin} {i.case}: {i.note}")
            continue
        unit = f" {i.unit}" if i.unit and len(i.unit) < 12 else ""
        lines.append(f"  {what} {i.plugin} {i.case}: {i.metric} {_num(i.base)} -> {_num(i.cur)}{unit}"
                     + (f" ({_pct(i.change)} worse)" if i.change is not None else "") + f"; {i.note}")  # fmt: skip
    for i in rep.by_outcome("ambiguous"):
        lines.append(f"  {i.verdict.upper()} {i.plugin} {i.case}: {i.metric}"
                     + (f" {_pct(i.change)}" if i.change is not None else "") + f"; {i.note}")  # fmt: skip
    word = {0: "PASS", 1: "FAIL: regression", 2: "INCONCLUSIVE: ambiguous or unstable", 3: "HARNESS ERROR"}
    lines.append(f"result: {word[rep.exit_code]} (exit {rep.exit_code})")
    return "\n".join(lines)


def describe(rows: list[Row], paths: Sequence[Path]) -> str:
    fps = {r.device: r.machine_id for r in rows}
    runs = sorted({r.run_id for r in rows})
    return (", ".join(map(str, paths)) + f" ({len(rows)} rows; run {', '.join(runs[:3])}{' ...' if len(runs) > 3 else ''}; "
            + ", ".join(f"{k} [machine {v}]" for k, v in fps.items()) + ")")  # fmt: skip


# --- the command ----------------------------------------------------------------------------
class _HarnessCommand(click.Command):
    """Usage errors exit 3 (a harness error), not click's 2, which here means 'ambiguous'."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:
            e.exit_code = EXIT_HARNESS
            raise


def _parse_tols(tols: tuple[str, ...]) -> dict[str, float]:
    out = {}
    for t in tols:
        name, eq, val = t.partition("=")
        try:
            if not eq or not name:
                raise ValueError
            out[name.strip()] = float(val)
        except ValueError:
            err = click.BadParameter(f"{t!r}: expected NAME=REL (e.g. final_loss=1e-4)", param_hint="--tol")
            err.exit_code = EXIT_HARNESS
            raise err from None
    return out


@click.command("regress", cls=_HarnessCommand)
@click.option("--baseline", "baseline", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Baseline results: bench JSON lines, a folder of them, or a pytest-benchmark JSON file (repeatable).")
@click.option("--current", "current", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Current results (same forms as --baseline; repeatable).")
@click.option("--only", type=click.Choice(["all", "deterministic", "timing"]), default="all", show_default=True,
              help="Gate only deterministic metrics (CI against a committed baseline) or only timings.")
@click.option("--metrics", default=None, help="Comma-separated metric names to gate (default: every gateable one).")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True), default=0.05, show_default=True,
              help="Mann-Whitney significance level for timings.")
@click.option("--min-effect", type=click.FloatRange(min=0), default=0.05, show_default=True,
              help="Floor on the relative change of a timing's median (0.05 = 5%).")
@click.option("--ci-k", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Min effect >= this x hypot of the two medians' 95% CI half-widths.")
@click.option("--iqr-k", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Min effect >= this x the smaller IQR/median (measured noise).")
@click.option("--rtol", type=click.FloatRange(min=0), default=1e-6, show_default=True,
              help="Relative tolerance of deterministic float metrics.")
@click.option("--int-rtol", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Relative tolerance of deterministic integer metrics (0: exact).")
@click.option("--tol", "tols", multiple=True, metavar="NAME=REL", help="Per-metric relative tolerance (repeatable).")
@click.option("--confirm", type=click.IntRange(min=0), default=1, show_default=True,
              help="Confirming reruns a timing slowdown must survive before it fails (0: fail on first detection).")
@click.option("--rerun-cmd", default=None, metavar="TEMPLATE",
              help="Shell command that reruns one case and appends its rows to {out}; placeholders {python} {plugin} "
                   "{flags} {profile} {run_opts} {out}. Default: {python} -m bench.cli run --plugin {plugin} {flags} "
                   "--profile {profile} {run_opts} --out {out}  ({run_opts}: --threads as recorded).")
@click.option("--allow-missing", is_flag=True, help="Baseline rows absent from the current results pass (default: exit 2).")
@click.option("--format", "fmt", type=click.Choice(["terminal", "markdown", "csv"]), default="terminal", show_default=True)
@click.option("-v", "--verbose", is_flag=True, help="List every verdict, not only the changes.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write every verdict and the exit code as JSON here.")
def command(baseline: tuple[Path, ...], current: tuple[Path, ...], only: str, metrics: str | None, alpha: float,
            min_effect: float, ci_k: float, iqr_k: float, rtol: float, int_rtol: float, tols: tuple[str, ...],
            confirm: int, rerun_cmd: str | None, allow_missing: bool, fmt: str, verbose: bool,
            json_out: Path | None) -> None:  # fmt: skip
    """Gate CURRENT against BASELINE: exit 0 pass, 1 confirmed regression, 2 ambiguous/unstable, 3 harness error.

    \b
    Deterministic metrics (bytes, FLOPs, fixed-seed losses) must be equal (integers exactly, floats
    within --rtol). A timing regresses only when the raw samples differ significantly (Mann-Whitney
    p < --alpha) AND the median moved by at least max(--min-effect, --ci-k x CI, --iqr-k x IQR), and a
    rerun of the case (--confirm) shows it again; a slowdown the rerun does not reproduce passes as
    noise, one it contradicts is 'unstable'. Timings of different machines (fingerprint machine_id)
    are never called regressions. CI against a committed baseline: --only deterministic.
    Inputs may be pytest-benchmark JSON files.
    """
    from bench.pytest_benchmark_io import load_any
    from bench.results import ResultsError

    cfg = GateConfig(alpha=alpha, min_effect=min_effect, ci_k=ci_k, iqr_k=iqr_k, rtol=rtol, int_rtol=int_rtol,
                     tolerances=_parse_tols(tols), confirm=confirm, only=only, allow_missing=allow_missing,
                     metrics=tuple(m.strip() for m in metrics.split(",") if m.strip()) if metrics else None)  # fmt: skip
    try:
        brows, crows = load_any(baseline), load_any(current)
        rep = evaluate(brows, crows, cfg, rerun=bench_rerun(rerun_cmd) if confirm > 0 else None)
    except (ResultsError, GateError) as e:
        click.echo(f"error: {e}", err=True)
        click.echo("result: HARNESS ERROR (exit 3)", err=True)
        sys.exit(EXIT_HARNESS)
    table = render(rep, fmt, verbose)
    if table:
        click.echo(table)
    hidden = sum(1 for i in rep.items if i.verdict == "same" and not i.reruns) if not verbose and fmt != "csv" else 0
    if hidden:
        click.echo(f"({hidden} same verdicts not listed; -v lists them)")
    click.echo(summary(rep, describe(brows, baseline), describe(crows, current)))
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({"exit_code": rep.exit_code, "messages": rep.messages,
                                        "items": [asdict(i) for i in rep.items]}, indent=1, default=str))  # fmt: skip
    sys.exit(rep.exit_code)
