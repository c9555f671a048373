"""`bench regress`: a regression gate for CI that holds on any machine and does not cry wolf.

Rows of the baseline and current results match on plugin + params + labels + kind (Row.key).
Each metric gets a direction and a kind (rules in bench/regress_rules.py):

  deterministic  (metric "deterministic": true -- bytes, FLOP counts, fixed-seed losses): equal or
                 not, exactly for integers and within rel 1e-6 for floats (--rtol, --int-rtol,
                 --tol NAME=REL). A change in the worse direction, or in a metric without a
                 direction, fails; an improvement passes with a note. Two parts, reported apart:
      portable       exact on every machine (integers, bytes/FLOP/param counts, formulas): gated
                     against the baseline wherever it was recorded.
      machine-bound  flagged `portable: false` (losses after many steps, overflow counts), and
                     measured floats without a count unit that lack the flag (conservatively):
                     gated only against a baseline of the same machine (fingerprint machine_id):
                     the baseline itself when it is from this machine, else this machine class's
                     file under --machine-baselines (recorded by the first gate run of the class,
                     and said so; bench/regress_machine.py), else not gated, and said so.
  timing         (a metric with raw samples: time_ms <-> samples["time_s"]): a slowdown needs
                 both (asv's rule) a significant Mann-Whitney U test on the raw samples
                 (p < --alpha) AND a relative change of the median of at least
                      max(--min-effect, --ci-k x hypot(CI_a, CI_b), --iqr-k x min(IQR_a, IQR_b))
                 (CI: the 95% CI half-width of each median over the median, as the timing engine
                 reports it, widened for dependent samples; IQR: interquartile range over the median)
                 and then a confirming rerun of the case (bench/regress_rerun.py). A timing whose
                 noise-driven threshold exceeds 50% is "noisy": a significant slowdown of at least
                 2 x its min effect (its detectable effect) still fails; a smaller change is listed
                 "not gated: could detect only a slowdown >= Y% at this noise" with a warning, and makes the gate
                 inconclusive only with --fail-on-noisy. Samples <= 0 are invalid (a duration is
                 positive). Timings of different machines are a comparison, never a regression.
  other metrics  (throughput derived from a timing, noise figures, ...) are not gated.

A null, NaN or infinite value (or timing sample) on either side, or a metric the current row
lacks, fails that metric with the reason; never a pass.

Verdicts: same / faster / slower / ambiguous / unstable / noisy / changed / invalid / missing /
not gated (machine-bound, no baseline of this machine) / not comparable (timings across machines)
/ skipped here (a row skipped on another machine than the baseline's: a kernel it cannot afford in
the case's budget; listed with a warning, not gated; on the baseline's own machine it is missing)
/ failed (the case now errors) / fixed / new.
Exit codes: 0 pass, 1 regression (a confirmed slowdown, a changed or invalid deterministic figure,
a failed case), 2 ambiguous / unstable / unconfirmed / missing rows / nothing gated, 3 harness error.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bench.regress_rerun import GateError, Rerun, confirm
from bench.regress_rules import (
    GateConfig,
    bad_samples,
    bad_timing_value,
    bad_value,
    compare_deterministic,
    compare_samples,
    direction,
    is_meta,
    is_timing_name,
    portability,
    samples_key,
)
from bench.rows import Metric, Row
from bench.stats import median

EXIT_PASS, EXIT_REGRESSION, EXIT_AMBIGUOUS, EXIT_HARNESS = 0, 1, 2, 3
FAIL_STATUSES = ("error", "timeout", "oom")
NOT_GATED = ("not comparable", "not gated", "noisy")


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

    @property
    def numerics(self) -> str | None:
        """bench.fingerprint.numerics_id: None for rows recorded before it (fingerprint schema 1)."""
        v = self.row.fingerprint.get("numerics_id")
        return str(v) if v else None


def same_numerics(a: Side, b: Side) -> bool:
    """Kernel-dependent figures of a and b are comparable: one numerics_id, or (both recorded before
    numerics_id existed) one machine_id."""
    if a.numerics is not None or b.numerics is not None:
        return a.numerics == b.numerics
    return a.machine is not None and a.machine == b.machine


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
    part: str = ""  # deterministic metrics: portable | machine-bound
    why_part: str = ""  # why machine-bound: flagged, or an unflagged measured float
    against: str = ""  # machine-bound: what it was compared against, or why it was not


@dataclass
class GateReport:
    items: list[Item]
    messages: list[str]
    exit_code: int = 0
    compared_rows: int = 0
    machine_baseline: str = ""  # what machine-bound metrics were gated against, in words

    def by_outcome(self, outcome: str) -> list[Item]:
        return [i for i in self.items if i.outcome == outcome]


def _want(name: str, kind: str, cfg: GateConfig) -> bool:
    if cfg.metrics is not None and name not in cfg.metrics:
        return False
    return cfg.only == "all" or cfg.only == kind


def evaluate(
    base_rows: list[Row],
    cur_rows: list[Row],
    cfg: GateConfig | None = None,
    rerun: Rerun | None = None,
    rerun_why: str = "",
    machine_rows: list[Row] | None = None,
) -> GateReport:
    """Compare two result sets; rerun (when given) confirms slowdowns; machine_rows: a baseline of the
    current machine class for machine-bound metrics. Returns every verdict and the exit code."""
    cfg = cfg or GateConfig()
    B, C = group(base_rows), group(cur_rows)
    M = group(machine_rows or [])
    items: list[Item] = []
    msgs: list[str] = []
    if not B:
        raise GateError("the baseline has no rows")
    if not C:
        raise GateError("the current results have no rows")
    common = [k for k in B if k in C]
    if not common:
        raise GateError(
            "no row of the current results matches a baseline row (plugin + params + labels): "
            "are these results of the same suite?"
        )
    for side, G in (("baseline", B), ("current", C)):
        dmsgs, ditems = duplicates(side, G)
        msgs += dmsgs
        items += ditems
    cross = sorted({(B[k].machine, C[k].machine) for k in common if B[k].machine != C[k].machine}, key=str)
    if cross:
        ma, mc = cross[0]
        msgs.append(
            f"NOT COMPARABLE timings: baseline and current ran on different machines (machine_id {ma} vs {mc}): "
            "timings are a comparison "
            "there, not a regression (use `bench compare`); portable deterministic metrics gate; machine-bound "
            "ones gate where the numerics id (library versions + kernel set) matches, else against a baseline "
            "of the current machine class."
        )
    for k in B:
        b = B[k].row
        if k not in C:
            items.append(
                Item(
                    b.plugin,
                    case_text(b),
                    "-",
                    "presence",
                    "missing",
                    "pass" if cfg.allow_missing else "ambiguous",
                    key=k,
                    note="in the baseline, not in the current results",
                )
            )
            continue
        items.extend(_compare_row(k, B[k], C[k], cfg, M.get(k)))
    for k in C:
        if k not in B:
            c = C[k].row
            items.append(
                Item(c.plugin, case_text(c), "-", "presence", "new", "info", key=k, note="not in the baseline")
            )
    if rerun_why == "" and rerun is None and cfg.confirm > 0:
        rerun_why = "no rerun available"
    confirm(items, B, cfg, rerun, rerun_why, msgs)
    return finish(items, msgs, len(common), cfg)


def finish(items: list[Item], msgs: list[str], compared: int, cfg: GateConfig) -> GateReport:
    """Warnings (noisy timings, skipped rows) and the exit code of a list of verdicts."""
    noisy = [i for i in items if i.verdict == "noisy"]
    if noisy:
        msgs.append(
            f"WARNING: {len(noisy)} timing(s) not gated, too noisy to decide"
            + (
                " (--fail-on-noisy: inconclusive)"
                if cfg.fail_on_noisy
                else " (--fail-on-noisy makes this inconclusive)"
            )
            + ": "
            + "; ".join(f"{i.plugin} {i.case} {i.metric}: {i.note.split(' (')[0]}" for i in noisy[:5])
            + (f"; and {len(noisy) - 5} more" if len(noisy) > 5 else "")
        )
    skipped = [i for i in items if i.verdict == "skipped here"]
    if skipped:
        msgs.append(
            f"WARNING: {len(skipped)} row(s) ok in the baseline were skipped on this machine (over their case's "
            "budget here); their metrics are not gated: "
            + "; ".join(f"{i.plugin} {i.case}" for i in skipped[:3])
            + (f"; and {len(skipped) - 3} more" if len(skipped) > 3 else "")
        )
    rep = GateReport(items, msgs, compared_rows=compared)
    gated = [i for i in items if i.kind in ("deterministic", "timing", "status") and i.verdict not in NOT_GATED]
    if rep.by_outcome("regression"):
        rep.exit_code = EXIT_REGRESSION
    elif rep.by_outcome("ambiguous"):
        rep.exit_code = EXIT_AMBIGUOUS
    elif not gated:
        rep.exit_code = EXIT_AMBIGUOUS
        msgs.append(
            "nothing was gated: no deterministic metric, and no timing comparable on one machine"
            + (f" (--only {cfg.only})" if cfg.only != "all" else "")
        )
    return rep


def duplicates(side: str, groups: dict[str, Side]) -> tuple[list[str], list[Item]]:
    """Cases that appear more than once on one side, said (never a silent last-wins): their timing
    samples are pooled and their other values taken from the last copy; copies that disagree on a
    deterministic value or on the status make that case inconclusive (which copy is meant?)."""
    dup = {k: s for k, s in groups.items() if len(s.rows) > 1}
    if not dup:
        return [], []
    items = []
    for k, s in dup.items():
        differ = sorted(
            {
                m
                for r in s.rows
                for m, met in r.metrics.items()
                if met.deterministic and len({json.dumps(x.value(m), default=str) for x in s.rows}) > 1
            }
        )
        statuses = sorted({r.status for r in s.rows})
        if differ or len(statuses) > 1:
            what = ", ".join(differ[:3]) + (" ..." if len(differ) > 3 else "") if differ else "status"
            items.append(
                Item(
                    s.row.plugin,
                    case_text(s.row),
                    ", ".join(differ[:3]) or "-",
                    "presence",
                    "conflicting",
                    "ambiguous",
                    key=k,
                    note=f"{side}: {len(s.rows)} rows of this case disagree on {what} "
                    f"(statuses {'/'.join(statuses)}; runs {', '.join(sorted({r.run_id for r in s.rows})[:3])})",
                )
            )
    s0 = next(iter(dup.values()))
    msg = (
        f"{side}: {len(dup)} case(s) appear more than once (e.g. {s0.row.plugin} {case_text(s0.row)}: "
        f"{len(s0.rows)} rows): their timing samples are pooled, other values are the last copy's"
        + (f"; {len(items)} disagree on a deterministic value or status: inconclusive" if items else "")
    )
    return [msg], items


def _invalid(it: Item, why: str) -> Item:
    it.verdict, it.outcome, it.note = "invalid", "regression", f"{why}: a non-finite or missing figure never passes"
    return it


def _compare_row(k: str, sb: Side, sc: Side, cfg: GateConfig, sm: Side | None) -> list[Item]:
    b, c = sb.row, sc.row
    base: dict[str, Any] = dict(
        plugin=b.plugin,
        case=case_text(b),
        key=k,
        params=b.params,
        row_kind=b.kind,
        profile=c.profile or b.profile or "",
    )
    if b.status != "ok":
        if c.status == "ok":
            return [
                Item(
                    metric="-",
                    kind="status",
                    verdict="fixed",
                    outcome="info",
                    note=f"the baseline was {b.status}; now ok",
                    **base,
                )
            ]
        return []
    if c.status in FAIL_STATUSES:
        return [
            Item(
                metric="-",
                kind="status",
                verdict="failed",
                outcome="regression",
                base="ok",
                cur=c.status,
                note=f"the case now ends {c.status}: {c.message[:160]}",
                **base,
            )
        ]
    if c.status != "ok":
        if c.status == "skipped" and sb.machine != sc.machine:
            # a kernel this machine cannot afford in the case's budget (ctx.afford): not a code change
            note = f"not gated: skipped on this machine ({sc.machine}), ok on the baseline's: {c.message[:160]}"
            return [Item(metric="-", kind="presence", verdict="skipped here", outcome="info", note=note, **base)]
        note = f"current row is {c.status}: {c.message[:160]}"
        outcome = "pass" if cfg.allow_missing else "ambiguous"
        return [Item(metric="-", kind="presence", verdict="missing", outcome=outcome, note=note, **base)]
    out = []
    for name, m_b in b.metrics.items():
        if is_meta(name):
            continue
        m_c = c.metrics.get(name)
        det = bool(m_b.deterministic or (m_c is not None and m_c.deterministic))
        kind = "deterministic" if det else ("timing" if is_timing_name(name) else "info")
        if kind == "info" or not _want(name, kind, cfg):
            continue
        it = Item(
            metric=name,
            kind=kind,
            verdict="same",
            outcome="pass",
            unit=m_b.unit,
            better=direction(name, m_b),
            base=m_b.value,
            **base,
        )
        out.append(it)
        if kind == "deterministic":
            portable, it.why_part = portability(m_b, m_c)
            it.part = "portable" if portable else "machine-bound"
        if m_c is None:
            it.verdict, it.outcome = "missing", ("pass" if cfg.allow_missing else "regression")
            it.note = "metric absent in the current row" + (" (--allow-missing)" if cfg.allow_missing else "")
            continue
        it.cur = m_c.value
        if kind == "deterministic":
            _deterministic(it, name, sb, sc, sm, m_b, m_c, cfg)
        else:
            _timing(it, name, sb, sc, m_b, m_c, cfg)
    return out


def _deterministic(
    it: Item, name: str, sb: Side, sc: Side, sm: Side | None, m_b: Metric, m_c: Metric, cfg: GateConfig
) -> None:
    why = bad_value(m_b.value) and f"baseline value is {bad_value(m_b.value)}"
    why = why or (bad_value(m_c.value) and f"current value is {bad_value(m_c.value)}")
    if why:
        _invalid(it, why)
        return
    foreign = it.part == "machine-bound" and not same_numerics(sb, sc)
    if foreign:
        ref = sm.row.metrics.get(name) if sm is not None and same_numerics(sm, sc) else None
        if ref is None:
            it.verdict, it.outcome = "not gated", "info"
            if sb.numerics is None and sc.numerics is not None:
                why = (
                    f"the baseline row's fingerprint predates numerics identity (machine {sb.machine}, model "
                    "string only): its kernels cannot be recomputed, so only portable metrics gate against it"
                )
            else:
                why = (
                    f"no baseline for this machine: the baseline ran with numerics {sb.numerics or sb.machine}, "
                    f"this run with {sc.numerics or sc.machine}, and no machine-class baseline of it has this row"
                )
            it.note = f"not compared ({it.why_part}): {why}"
            it.against = (
                "NOT COMPARED: the baseline's identity was not recorded (old result file)"
                if sb.numerics is None and sc.numerics is not None
                else "NOT COMPARED: no baseline for this machine"
            )
            return
        if bad_value(ref.value):
            _invalid(it, f"machine-class baseline value is {bad_value(ref.value)}")
            return
        it.base = ref.value
    if (
        isinstance(it.base, (int, float))
        and isinstance(it.cur, (int, float))
        and not isinstance(it.base, bool)
        and it.base
    ):
        it.ratio = it.cur / it.base
    ok, tol = compare_deterministic(name, it.base, it.cur, cfg)
    where = ""
    if it.part == "machine-bound":
        it.against = (
            f"compared against this machine class's baseline (numerics {sc.numerics or sc.machine})"
            if foreign
            else f"compared against the baseline (same numerics {sc.numerics or sc.machine})"
        )
        where = f" ({it.against})"
    if ok:
        it.note = f"equal ({tol}){where}"
        return
    it.verdict = "changed"
    worse = _worse(it.better, it.base, it.cur)
    it.change = (it.ratio - 1 if it.better != "higher" else 1 - it.ratio) if it.ratio is not None else None
    if worse is False:
        it.outcome, it.note = "pass", f"improved beyond tolerance ({tol}){where}: update the baseline"
    else:
        it.outcome = "regression"
        it.note = f"deterministic, tolerance {tol}{where}" + ("" if worse else "; no direction, so any change fails")


def _timing(it: Item, name: str, sb: Side, sc: Side, m_b: Metric, m_c: Metric, cfg: GateConfig) -> None:
    xa, xb = sb.samples(name), sc.samples(name)
    why = bad_samples(xa) and f"baseline: {bad_samples(xa)}"
    why = why or (bad_samples(xb) and f"current: {bad_samples(xb)}")
    # the metric itself too, raw samples or not: a NaN/null timing is never replaced by its samples' median
    why = why or (bad_timing_value(m_b.value) and f"baseline value is {bad_timing_value(m_b.value)}")
    why = why or (bad_timing_value(m_c.value) and f"current value is {bad_timing_value(m_c.value)}")
    if why:
        _invalid(it, why)
        return
    if sb.machine != sc.machine:
        it.verdict, it.outcome = "not comparable", "info"
        it.note = f"different machines ({sb.machine} vs {sc.machine}): a comparison, not a regression"
        return
    if not xa or not xb:
        it.ratio = it.cur / it.base if isinstance(it.base, (int, float)) and it.base else None
        it.change = (it.ratio - 1) if it.ratio is not None else None
        big = it.change is None or abs(it.change) >= cfg.min_effect
        it.verdict, it.outcome = ("ambiguous", "ambiguous") if big else ("same", "pass")
        side = "either side" if not xa and not xb else ("the baseline" if not xa else "the current side")
        it.note = f"no raw samples on {side}: " + (
            "cannot test significance" if big else f"change within the {100 * cfg.min_effect:g}% floor"
        )
        return
    r = compare_samples(xa, xb, it.better or "lower", cfg)
    it.verdict, it.ratio, it.change, it.p, it.threshold, it.note = r.verdict, r.ratio, r.change, r.p, r.threshold, r.why
    it.base, it.cur = _scaled_median(xa, name, sb.row), _scaled_median(xb, name, sc.row)
    if r.noisy:
        it.verdict, it.outcome = "noisy", ("ambiguous" if cfg.fail_on_noisy else "pass")
        return
    it.outcome = {"same": "pass", "faster": "pass", "slower": "regression", "ambiguous": "ambiguous"}[r.verdict]


def _worse(better: str | None, a: Any, b: Any) -> bool | None:
    if better is None or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return None
    return b > a if better == "lower" else b < a


def _scaled_median(xs: list[float], name: str, row: Row) -> float:
    """Median of the raw samples in the metric's unit (samples time_s -> metric time_ms: x 1e3)."""
    k = samples_key(row, name)
    scale = 1e3 if (k and k != name and name.endswith("_ms")) else 1.0
    return median(xs) * scale


def __getattr__(name: str) -> Any:
    # `bench.regress.command` (the click command, registered by bench.cli) lives in bench/regress_cli.py,
    # which imports this module: loaded on first use.
    if name == "command":
        from bench.regress_cli import command

        return command
    raise AttributeError(name)
