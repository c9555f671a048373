#!/usr/bin/env bash
# The one prepared script for a lent GPU machine (the `device` tool): one call, no network there.
#
#   here, once:  bash scripts/gpu_prepare.sh      # .whl/: this project's wheel + bitsandbytes 0.50.2 (CUDA 13)
#                bash scripts/gpu_suite.sh --dry-run   # the plan on this machine: every case and its estimate
#   device run:  command "bash scripts/gpu_suite.sh", carry [".whl"], timeout_s 580
#
# One deadline from the first line (BENCH_DEADLINE_S, default 560 s, under the call's 580 s), with a
# reserve (BENCH_RESERVE_S, 30 s) kept for the claims table, the tables and the log at the end. The
# plugins run in the order of the value of what only a GPU can measure, each with `bench run
# --deadline` (cases are cut to fit; a plugin cut short keeps and summarizes what finished), each
# within its share of the time left (see below). It writes to $OUT (what comes
# back): <device>-gpu.jsonl (every row), <device>-gpu-claims.md, <device>-gpu-log.txt.
#
# Dry run on a CPU (checked by tests/test_gpu_suite.py): BENCH_PROFILE=quick BENCH_DEADLINE_S=120
#   BENCH_SHARES="precision:40" OUT=/tmp/x BENCH_SKIP_INSTALL=1 bash scripts/gpu_suite.sh
set -uo pipefail
START=$(date +%s)
cd "$(dirname "$0")/.."
DEADLINE_S=${BENCH_DEADLINE_S:-560}
RESERVE_S=${BENCH_RESERVE_S:-30}
TESTS_S=${BENCH_TESTS_S:-100}
OWN_S=${BENCH_OWN_S:-8}  # a `bench run`'s own start-up (torch import, discovery), summary and exit
OUT=${OUT:-results/runs}
PROFILE=${BENCH_PROFILE:-gpu}
PY=${PYTHON:-python3}  # the device's python3 has torch; a dry run here passes the venv's
# plugin:seconds in order of value (issue 14): bitsandbytes' CUDA kernels, fused attention TFLOP/s,
# CUDA peak memory per FSDP stage beside the simulator's prediction, the device's bf16 matmul peak,
# then inference (decode bandwidth) and scaling (its claims are judged on CPU already). DDP is fsdp's
# stage 0. `bench run --profile gpu --plan` shows each plugin's estimate (tests/test_gpu_suite.py keeps
# every plan within its share with a 30% margin; 397 s in all).
SHARES=${BENCH_SHARES:-"quantization:80 attention:68 fsdp:73 precision:47 inference:58 scaling:71"}
elapsed() { echo $(($(date +%s) - START)); }
left() { echo $((DEADLINE_S - RESERVE_S - $(elapsed))); }
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ "${1:-}" = "--dry-run" ]; then
    for s in $SHARES; do "$PY" -m bench.cli run --plugin "${s%%:*}" --profile gpu --plan --deadline "${s##*:}"; done
    exit 0
fi

# Install: this project's wheel (built here: no build backend runs on the device) and bitsandbytes'.
SITE=$(mktemp -d /tmp/bench-site.XXXX)
trap 'rm -rf "$SITE"' EXIT
if [ -z "${BENCH_SKIP_INSTALL:-}" ]; then
    if ls .whl/*.whl >/dev/null 2>&1; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl \
            || echo "warning: a carried wheel did not install" >&2
    fi
    if ! ls "$SITE"/llm_blocks_bench-*.dist-info >/dev/null 2>&1; then  # no project wheel carried
        echo "warning: no project wheel in .whl/ (bash scripts/gpu_prepare.sh); building here" >&2
        "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target "$SITE" . || exit 3
    fi
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
BENCH=("$PY" -m bench.cli)
DEV=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')" \
      | tr -c 'A-Za-z0-9.\n' '-' | tr 'A-Z' 'a-z' | sed 's/--*/-/g; s/-$//')
RES="$OUT/$DEV-$PROFILE.jsonl"
LOG="$OUT/$DEV-$PROFILE-log.txt"
CLAIMS="$OUT/$DEV-$PROFILE-claims.md"
{
    echo "# $(date -u +%FT%TZ) device=$DEV profile=$PROFILE deadline=${DEADLINE_S}s reserve=${RESERVE_S}s shares=$SHARES"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv 2>&1 || true
    timeout 30 "${BENCH[@]}" env
    echo "# installed after $(elapsed)s"
} >"$LOG" 2>&1

# The CUDA paths' own tests (tests/test_gpu.py), bounded.
if [ -z "${BENCH_SKIP_TESTS:-}" ]; then
    t=$((TESTS_S < $(left) - 60 ? TESTS_S : $(left) - 60))
    if [ "$t" -gt 10 ]; then
        echo "# pytest -m gpu, ${t}s" >>"$LOG"
        timeout -k 5 "$t" "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py >>"$LOG" 2>&1
        echo "# pytest exit $? after $(elapsed)s" >>"$LOG"
    fi
fi

# The plugins: each gets its share of the time left, in proportion to the shares still to run (so
# what earlier plugins leave unused goes to the later ones, and a slow install or test step shrinks
# every share alike instead of starving the first), never past the deadline.
rest=0
for s in $SHARES; do rest=$((rest + ${s##*:})); done
for s in $SHARES; do
    p=${s%%:*}
    share=${s##*:}
    mine=$(($(left) * share / rest))
    rest=$((rest - share))
    if [ "$mine" -lt $((OWN_S + 5)) ]; then
        echo "# no time left for $p (${mine}s)" >>"$LOG"
        continue
    fi
    echo "# plugin $p, ${mine}s, at $(elapsed)s" >>"$LOG"
    # --deadline cuts cases to fit (counted from bench run's start; OWN_S kept for its start-up, the
    # summary and the exit); at `mine` seconds the timeout interrupts it like a Ctrl-C (finished rows
    # kept and summarized), and kills it OWN_S later at the latest
    timeout -s INT -k "$OWN_S" "$mine" "${BENCH[@]}" run --plugin "$p" --profile "$PROFILE" \
        --deadline $((mine - OWN_S)) --out "$RES" --format none >>"$LOG" 2>&1
    echo "# plugin $p exit $? after $(elapsed)s" >>"$LOG"
done

# The reserve: the claims table first (the most valuable), then the tables in the log, each bounded
# by what is left before the deadline.
until_deadline() { local t=$((DEADLINE_S - $(elapsed) - 2)); echo $((t > 5 ? t : 5)); }
if [ -s "$RES" ]; then
    timeout "$(until_deadline)" "${BENCH[@]}" claims "$RES" --format markdown >"$CLAIMS" 2>>"$LOG"
    timeout "$(until_deadline)" "${BENCH[@]}" show "$RES" --format markdown >>"$LOG" 2>&1
else
    echo "# no rows were written" >>"$LOG"
fi
echo "# done in $(elapsed)s (deadline ${DEADLINE_S}s)" >>"$LOG"
tail -40 "$LOG"
