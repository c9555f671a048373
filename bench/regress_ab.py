"""`bench regress --ab REV`: this working tree (B, current) against another revision (A, baseline) on
this machine, their cases interleaved in time, the timings gated on A/B pairs.

Why one comparison of two live revisions: on a shared machine a case drifts between runs by tens of
percent (results/*-gate-power.txt), more than the slowdowns worth catching; drift that is slower
than one A/B pair cancels inside the pair (asv continuous, TorchBench do the same).

  environment   REV is checked out (git worktree, detached) at .bench-ab/<sha> (ignored), reused on
                the next run. Where its pyproject.toml equals this one's (same dependencies and plugin
                entry points) it runs with this interpreter and PYTHONPATH=<worktree>: the same torch
                and libraries, REV's own source. Otherwise a venv is made for it over this one's
                site-packages (a .pth file) and REV installed there (pip -e: only what differs is
                fetched); the source still comes first on PYTHONPATH.
  schedule      every chosen case, `pairs` blocks; in a block each case runs once per revision, the
                two back to back (A B or B A, balanced over the blocks and shuffled), the cases in
                a shuffled order; each run is its own `bench run` process (its cases in their own
                processes, as always).
  timings       one value per run (the median of its raw samples); pairs -> compare_paired
                (bench/regress_rules.py: Wilcoxon signed-rank on the log ratios, geometric-mean ratio
                with a bootstrap 95% CI, detectable effect at this noise). A slowdown is confirmed by
                a fresh set of `pairs` blocks of its case (the confirming round; rerun_decision).
  deterministic every run's deterministic metrics, A against B, portable and machine-bound alike
                (both ran here); a case that fails on B but not A is a regression.
  bounded       --deadline for everything (the plan's estimate first; blocks that would not fit are
                dropped, and fewer than cfg.min_pairs is refused up front).
"""

from __future__ import annotations

import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.regress import Item, Side, _compare_row, case_text, finish, group
from bench.regress_rerun import GateError, confirmed_note, param_flags, rerun_decision, run_bench_process
from bench.regress_rules import GateConfig, compare_paired, direction, is_meta, is_timing_name
from bench.rows import Row
from bench.stats import median

CLI_START_S = 1.3  # a fresh `bench run` interpreter on CPU (bench/plan.py STARTUP_S, measured)


@dataclass
class Revision:
    label: str  # "A (REV, sha)" / "B (working tree)"
    root: Path
    python: str
    env: dict[str, str] = field(default_factory=dict)
    how: str = ""  # the environment in words


def _git(repo: Path, *args: str) -> str:
    p = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if p.returncode != 0:
        raise GateError(f"git {' '.join(args)}: {(p.stderr or p.stdout).strip().splitlines()[-1:]}")
    return p.stdout.strip()


def _project_table(path: Path) -> Any:
    """What decides whether REV can share this environment: dependencies and plugin entry points."""
    import tomllib

    if not path.exists():
        return None
    d = tomllib.loads(path.read_text())
    proj = d.get("project", {})
    return [proj.get("dependencies"), proj.get("optional-dependencies"), proj.get("entry-points")]


def prepare(rev: str, repo: Path, say: Callable[[str], None]) -> tuple[Revision, Revision]:
    """(A = REV checked out with its environment, B = this working tree)."""
    top = Path(_git(repo, "rev-parse", "--show-toplevel"))
    try:
        sha = _git(top, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except GateError:
        raise GateError(f"--ab {rev}: not a commit of {top}") from None
    wt = top / ".bench-ab" / sha[:12]  # ignored (.gitignore); reused by the next comparison
    if wt.exists() and _git(wt, "rev-parse", "HEAD") == sha:
        say(f"ab: reusing the worktree of {rev} ({sha[:12]}) at {wt}")
    else:
        if wt.exists():
            subprocess.run(["git", "-C", str(top), "worktree", "remove", "--force", str(wt)], capture_output=True)
            shutil.rmtree(wt, ignore_errors=True)
        subprocess.run(["git", "-C", str(top), "worktree", "prune"], capture_output=True)
        say(f"ab: checking out {rev} ({sha[:12]}) at {wt}")
        _git(top, "worktree", "add", "--detach", "--force", str(wt), sha)
    b = Revision("B (this working tree)", top, sys.executable, {}, f"this interpreter ({sys.executable})")
    path = os.pathsep.join([str(wt), *filter(None, [os.environ.get("PYTHONPATH")])])
    a = Revision(f"A ({rev}, {sha[:12]})", wt, sys.executable, {"PYTHONPATH": path})
    same = _project_table(top / "pyproject.toml") == _project_table(wt / "pyproject.toml")
    if same:
        a.how = f"this interpreter with PYTHONPATH={wt} (its pyproject.toml has the same dependencies and plugins)"
    else:
        a.python, a.how = _layered_venv(wt, say), f"a venv over this one's site-packages, with {rev} installed in it"
    return a, b


def _layered_venv(wt: Path, say: Callable[[str], None]) -> str:
    """A venv for REV that sees this environment's packages (.pth) and installs only what differs."""
    import site
    import sysconfig

    venv = wt / ".venv-ab"
    py = venv / "bin" / "python"
    stamp = venv / ".installed"
    if stamp.exists():
        return str(py)
    say(f"ab: REV's pyproject.toml differs from this one's: making {venv} over this environment")
    base = getattr(sys, "_base_executable", sys.executable)
    for cmd in ([base, "-m", "venv", str(venv)],):
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise GateError(f"could not make {venv}: {p.stderr.strip()[-300:]}")
    out = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True
    )
    mine = [sysconfig.get_paths()["purelib"], *site.getsitepackages()]
    (Path(out.stdout.strip()) / "zz-bench-ab-base.pth").write_text("\n".join(dict.fromkeys(mine)) + "\n")
    p = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-build-isolation", "-e", str(wt)], capture_output=True, text=True
    )
    if p.returncode != 0:
        raise GateError(f"could not install REV in {venv}: {(p.stderr or p.stdout).strip()[-400:]}")
    stamp.touch()
    return str(py)


# --- running one case of one revision ------------------------------------------------------------
@dataclass
class Case:
    plugin: str
    params: dict[str, Any]
    estimate_s: float  # the plan's estimate of the case itself (bench/plan.py)

    @property
    def flags(self) -> list[str]:
        return param_flags(self.params)


def run_once(rev: Revision, case: Case, profile: str, opts: list[str], out: Path, time_left: float | None) -> list[Row]:
    """One `bench run` of one case of one revision (its own process; the case in its own process too)."""
    cmd = [rev.python, "-m", "bench.cli", "run", "--plugin", case.plugin, *case.flags, "--profile", profile]
    cmd += [*opts, "--out", str(out), "--format", "none"]
    if time_left is not None:
        cmd += ["--deadline", f"{max(1.0, time_left):.0f}"]
    timeout = None if time_left is None else time_left + 60
    rows = run_bench_process(cmd, out, f"{rev.label}: bench run", timeout, cwd=rev.root, env=rev.env)
    return [r for r in rows if r.kind == "case"]


def schedule(n_cases: int, pairs: int, rng: random.Random) -> list[list[tuple[int, bool]]]:
    """Blocks of (case index, A first?): each case once per block, the cases shuffled; for each case
    A-first in half the blocks (balanced, shuffled), so an order effect cancels too."""
    firsts = []
    for _ in range(n_cases):
        f = [True] * ((pairs + 1) // 2) + [False] * (pairs // 2)
        rng.shuffle(f)
        firsts.append(f)
    blocks = []
    for j in range(pairs):
        order = list(range(n_cases))
        rng.shuffle(order)
        blocks.append([(c, firsts[c][j]) for c in order])
    return blocks


Block = tuple[list[Row], list[Row]]  # (A rows, B rows) of one case in one block


class Runner:
    """Runs blocks of A/B pairs within a deadline; remembers what a pair cost."""

    def __init__(
        self,
        a: Revision,
        b: Revision,
        profile: str,
        opts: list[str],
        deadline: float | None,
        say: Callable[[str], None],
        seed: int = 0,
    ):
        self.a, self.b, self.profile, self.opts, self.deadline, self.say = a, b, profile, opts, deadline, say
        self.rng = random.Random(seed)
        self.dir = Path(tempfile.mkdtemp(prefix=f"bench-ab-{os.getpid()}-"))
        self.n = 0
        self.pair_s: list[float] = []

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.time()

    def fits(self, est_s: float) -> bool:
        left = self.left()
        return left is None or left >= est_s

    def pair(self, case: Case, a_first: bool) -> Block:
        got: dict[str, list[Row]] = {}
        t0 = time.time()
        for rev in (self.a, self.b) if a_first else (self.b, self.a):
            self.n += 1
            got[rev.label] = run_once(rev, case, self.profile, self.opts, self.dir / f"run-{self.n}.jsonl", self.left())
        self.pair_s.append(time.time() - t0)
        return got[self.a.label], got[self.b.label]

    def blocks(self, cases: list[Case], pairs: int, what: str) -> dict[int, list[Block]]:
        """Up to `pairs` blocks of every case; stops (and says so) when the next pair would pass the deadline."""
        out: dict[int, list[Block]] = {i: [] for i in range(len(cases))}
        sched = schedule(len(cases), pairs, self.rng)
        for j, block in enumerate(sched):
            for c, a_first in block:
                est = max(self.pair_s) if self.pair_s else 2 * (CLI_START_S + cases[c].estimate_s)
                if not self.fits(est):
                    self.say(f"ab: {what}: the deadline leaves no time for block {j + 1} of {pairs}; stopped there")
                    return out
                out[c].append(self.pair(cases[c], a_first))
            self.say(f"ab: {what}: block {j + 1}/{pairs} done ({self.n} runs, {sum(self.pair_s):.0f} s)")
        return out


# --- the gate on pairs ---------------------------------------------------------------------------
def run_value(rows: list[Row], key: str, name: str) -> float | None:
    """One run's figure of a timing metric: the median of its raw samples, else its value."""
    side = group(rows).get(key)
    if side is None or side.row.status != "ok":
        return None
    xs = side.samples(name)
    if xs:
        return median(xs)
    v = side.row.value(name)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def timing_names(row: Row) -> list[str]:
    return [n for n, m in row.metrics.items() if not is_meta(n) and not m.deterministic and is_timing_name(n)]


def paired_values(blocks: list[Block], key: str, name: str) -> tuple[list[float], list[float]]:
    a, b = [], []
    for ra, rb in blocks:
        va, vb = run_value(ra, key, name), run_value(rb, key, name)
        if va is not None and vb is not None:
            a.append(va)
            b.append(vb)
    return a, b


def timing_item(key: str, name: str, side: Side, blocks: list[Block], cfg: GateConfig) -> Item:
    row = side.row
    m = row.metrics[name]
    a, b = paired_values(blocks, key, name)
    it = Item(row.plugin, case_text(row), name, "timing", "same", "pass", unit=m.unit, key=key)
    it.params, it.profile, it.better = row.params, row.profile or "", direction(name, m)
    r = compare_paired(a, b, it.better or "lower", cfg)
    scale = 1e3 if name.endswith("_ms") and side.samples(name) else 1.0  # samples time_s -> time_ms
    it.base = math.exp(sum(math.log(x) for x in a) / len(a)) * scale if a and r.ratio == r.ratio else None
    it.cur = it.base * r.ratio if it.base is not None else None
    it.verdict, it.ratio, it.change, it.p, it.threshold, it.note = (
        r.verdict,
        r.ratio,
        r.change,
        r.p,
        r.threshold,
        r.why,
    )
    if r.invalid:
        it.verdict, it.outcome = "invalid", "regression"
        it.note += ": a non-finite or non-positive timing never passes"
    elif r.noisy:
        it.verdict, it.outcome = "noisy", ("ambiguous" if cfg.fail_on_noisy else "pass")
    else:
        it.outcome = {"same": "pass", "faster": "pass", "slower": "regression", "ambiguous": "ambiguous"}[r.verdict]
    return it


def gate(
    cases: list[Case],
    blocks: dict[int, list[Block]],
    cfg: GateConfig,
    confirm_blocks: Callable[[Case], list[Block]] | None,
) -> tuple[list[Item], list[str], int]:
    """Every verdict of an A/B comparison: deterministic (A's rows against B's), status, paired timings,
    and the confirming round of each slower timing. Returns (items, messages, compared rows)."""
    items: list[Item] = []
    msgs: list[str] = []
    compared = 0
    det_cfg = GateConfig(**{**cfg.__dict__, "only": "deterministic"})
    of_case: dict[int, int] = {}  # id(timing item) -> its case's index
    for c, case_blocks in blocks.items():
        if not case_blocks:
            continue
        A = group(r for ra, _ in case_blocks for r in ra)
        B = group(r for _, rb in case_blocks for r in rb)
        for k in A:
            if k not in B:
                row = A[k].row
                items.append(Item(row.plugin, case_text(row), "-", "presence", "missing", "ambiguous", key=k))
                continue
            compared += 1
            items.extend(
                i
                for i in _compare_row(k, A[k], B[k], det_cfg, None)
                if cfg.only != "timing" or i.kind != "deterministic"
            )
            if A[k].row.status != "ok" or B[k].row.status != "ok":
                continue
            for name in timing_names(A[k].row):
                if cfg.metrics is not None and name not in cfg.metrics:
                    continue
                if cfg.only in ("all", "timing"):
                    items.append(timing_item(k, name, A[k], case_blocks, cfg))
                    of_case[id(items[-1])] = c
    slow = [i for i in items if i.kind == "timing" and i.verdict == "slower"]
    for c, case in enumerate(cases):
        pending = [i for i in slow if of_case.get(id(i)) == c]
        if not pending:
            continue
        if cfg.confirm <= 0:
            for i in pending:
                i.note += "; not confirmed (--confirm 0)"
            continue
        for attempt in range(cfg.confirm):
            fresh = confirm_blocks(case) if confirm_blocks is not None else []
            if len(fresh) < cfg.min_pairs:
                for i in pending:
                    i.outcome = "ambiguous"
                    i.note += f"; UNCONFIRMED: the confirming round got {len(fresh)} pairs (deadline)"
                pending = []
                break
            still = []
            for i in pending:
                a, b = paired_values(fresh, i.key, i.metric)
                r = compare_paired(a, b, i.better or "lower", cfg)
                if rerun_decision(i, r, attempt, i.change or 0.0, cfg.ab_min_effect):
                    still.append(i)
            pending = still
            if not pending:
                break
        for i in pending:
            confirmed_note(i)
    return items, msgs, compared


def plan_text(cases: list[Case], pairs: int, deadline_s: float | None) -> tuple[str, float]:
    """The plan's estimate of the comparison (before anything runs) and its total in seconds."""
    per_block = sum(2 * (CLI_START_S + c.estimate_s) for c in cases)
    total = per_block * pairs
    lines = [
        f"ab plan: {len(cases)} case(s) x 2 revisions x {pairs} pairs = {2 * len(cases) * pairs} runs; "
        f"estimate {total:.0f} s (per run: {CLI_START_S:g} s bench run start-up, measured, + the case's "
        f"`bench run --plan` estimate); a confirming round adds {2 * pairs} runs of each slower case"
    ]
    for c in cases:
        lines.append(f"  {c.plugin} {' '.join(c.flags) or '-'}: {c.estimate_s:.1f} s per run (plan estimate)")
    if deadline_s:
        lines.append(
            f"  deadline {deadline_s:.0f} s: "
            + ("fits" if total <= deadline_s else "does NOT fit all pairs; blocks past it are dropped")
        )
    return "\n".join(lines), per_block


# --- the command (bench regress --ab) ------------------------------------------------------------
def select_cases(plugins: tuple[str, ...], flags: list[str], profile: str, timeout_s: float | None) -> list[Case]:
    """The cases `bench run --plugin P <flags> --profile X` would run (this tree's plugins), with their
    plan estimates."""
    from bench import plan as planner
    from bench.discovery import discover, get_plugin
    from bench.params import expand_grid, parse_flags

    if not plugins:
        raise GateError("--ab needs the cases to compare: --plugin NAME [its flags], as in bench run")
    if len(plugins) > 1 and flags:
        raise GateError("plugin flags need a single --plugin")
    found = discover()
    out: list[Case] = []
    for name in dict.fromkeys(plugins):
        p = get_plugin(name, found)
        cases = expand_grid(p, profile, parse_flags(p, flags))
        for c in cases:
            why = p.validate(c)
            if why:
                raise GateError(f"{name}: {why}")
        for pl in planner.plan(p, cases, "cpu", timeout_s):
            if pl.kind == "skipped":
                continue
            out.append(Case(name, asdict(pl.params), pl.total_s))
    if not out:
        raise GateError("no case to compare: every chosen case is unavailable here")
    return out


def run_ab(
    rev: str,
    plugins: tuple[str, ...],
    flags: list[str],
    profile: str,
    pairs: int,
    deadline_s: float | None,
    threads: int | None,
    max_time: float | None,
    cfg: GateConfig,
) -> tuple[Any, str, str]:
    """Plan, check out, run interleaved, gate: (GateReport, baseline words, current words). Exits 3 on
    an error that stops the comparison (GateError / a usage error, in one line)."""
    import click

    from bench.errors import BenchError
    from bench.regress import EXIT_HARNESS

    t0 = time.time()
    deadline = t0 + deadline_s if deadline_s else None

    def say(m: str) -> None:
        click.echo(m, err=True)

    runner: Runner | None = None
    try:
        cases = select_cases(plugins, flags, profile, None)
        text, per_block = plan_text(cases, pairs, deadline_s)
        click.echo(text)
        if deadline_s and per_block * cfg.min_pairs > deadline_s:
            raise GateError(
                f"the deadline of {deadline_s:.0f} s leaves room for {int(deadline_s // per_block)} pairs (estimate "
                f"{per_block:.0f} s each), fewer than the {cfg.min_pairs} a paired test needs"
            )
        a, b = prepare(rev, Path.cwd(), say)
        say(f"ab: A = {a.label}: {a.how}")
        say(f"ab: B = {b.label}: {b.how}")
        opts = (["--threads", str(threads)] if threads else []) + (["--max-time", f"{max_time:g}"] if max_time else [])
        runner = Runner(a, b, profile, opts, deadline, say)
        blocks = runner.blocks(cases, pairs, "comparison")
        got = min((len(v) for v in blocks.values()), default=0)
        items, msgs, compared = gate(cases, blocks, cfg, lambda c: runner.blocks([c], pairs, "confirming round")[0])
    except (GateError, BenchError) as e:
        click.echo(f"error: {e}", err=True)
        click.echo("result: HARNESS ERROR (exit 3)", err=True)
        sys.exit(EXIT_HARNESS)
    finally:
        if runner is not None:
            runner.close()
    msgs.insert(
        0,
        f"A/B: {len(cases)} case(s), {got} interleaved pair(s) each (A/B order balanced and shuffled), "
        f"{runner.n} runs in {time.time() - t0:.0f} s; timings gated on the pairs (Wilcoxon signed-rank on "
        f"log ratios, alpha {cfg.alpha:g}; slower: significant and >= {100 * cfg.ab_min_effect:g}% geo-mean, "
        f"then a confirming round of {pairs} pairs)",
    )
    rep = finish(items, msgs, compared, cfg)
    return rep, f"A: {a.label} at {a.root} ({a.how})", f"B: {b.label} at {b.root}"
