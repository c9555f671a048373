"""The prepared GPU script, checked without a GPU: a dry run of the whole script on CPU ends within
its deadline and writes the result file, the claims table and the log; the gpu plan of every plugin
fits its share of the script with a 30% margin (estimates from stated assumptions, bench/plan.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
from conftest import ROOT

from bench import plan as planner
from bench.discovery import discover
from bench.params import expand_grid

SCRIPT = ROOT / "scripts" / "gpu_suite.sh"


def _shares() -> dict[str, int]:
    m = re.search(r'SHARES=\$\{BENCH_SHARES:-"([^"]+)"\}', SCRIPT.read_text())
    assert m, "the script's default shares"
    return {p: int(s) for p, s in (x.split(":") for x in m.group(1).split())}


def test_the_gpu_plan_of_every_plugin_fits_its_share_with_a_30pct_margin():
    found = discover()
    shares = _shares()
    # + install ~15 s + `bench env` ~5 s + tests 100 s + reserve 30 s: within the script's 560 s deadline
    assert sum(shares.values()) <= 400, shares
    for name, share in shares.items():
        p = found[name].plugin
        assert p is not None, name
        cases = expand_grid(p, "gpu", {})
        planned = planner.plan(p, cases, "cuda")
        total = sum(c.total_s for c in planned)
        unknown = [c for c in planned if not c.known]
        assert not unknown, f"{name}: no estimate_s for {len(unknown)} gpu cases"
        assert total * 1.3 <= share, f"{name}: gpu plan {total:.0f} s x 1.3 > share {share} s"


@pytest.mark.slow
def test_a_cpu_dry_run_ends_within_its_deadline_and_writes_everything(thirdparty, tmp_path):
    env = dict(
        os.environ,
        BENCH_PROFILE="quick",
        BENCH_DEADLINE_S="60",
        BENCH_RESERVE_S="10",
        BENCH_SKIP_INSTALL="1",
        BENCH_SKIP_TESTS="1",
        BENCH_SHARES="toy:30 bare:8 faulty:6",
        OUT=str(tmp_path),
        PYTHON=sys.executable,
        PYTHONPATH=os.pathsep.join([str(thirdparty), str(ROOT)]),
    )
    t0 = time.time()
    p = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=150)
    took = time.time() - t0
    assert p.returncode == 0, p.stderr[-2000:]
    # its deadline, and a few seconds: the last bounded step may be killed a little after it
    assert took <= 60 + 10, took
    res = list(tmp_path.glob("*-quick.jsonl"))
    log = list(tmp_path.glob("*-quick-log.txt"))
    claims = list(tmp_path.glob("*-quick-claims.md"))
    assert res and log and claims, list(tmp_path.iterdir())
    text = log[0].read_text()
    assert "# plugin toy" in text and "# plugin bare" in text and "# done in" in text
    assert "# plugin faulty" in text or "# no time left for faulty" in text  # the last share: what is left
    assert "toy.matmul_flops" in claims[0].read_text()
