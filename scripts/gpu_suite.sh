#!/usr/bin/env bash
# The one prepared script for a lent GPU machine (the `device` tool; issue 9). No network there:
# the project installs from this checkout without dependencies (python3 there has torch, pandas,
# click, tabulate, matplotlib, scipy, nvidia-ml-py); bitsandbytes travels as a wheel in .whl/:
#
#   here, once:  echo /.whl/ >> .git/info/exclude
#                python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#                    --implementation cp --platform manylinux_2_24_x86_64 -d .whl bitsandbytes==0.50.2
#   device run:  command "bash scripts/gpu_suite.sh", carry [".whl"], timeout_s 590
#
# It writes to $OUT (what comes back: at most 8 files): <device>-gpu.jsonl (every row),
# <device>-gpu-claims.md, <device>-gpu-log.txt. Commit the .jsonl under results/ and build the
# report here: `bench report results/<device>-gpu.jsonl -o report/`.
# Overrides for a dry run on CPU: BENCH_PROFILE=quick BENCH_PLUGINS="ddp" BENCH_SHARE_S=60 OUT=/tmp/x.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/runs}
PROFILE=${BENCH_PROFILE:-gpu}
# plugin:seconds, in order: the cheap, most valuable evidence first. A plugin may use its share
# plus whatever the plugins before it left unused; when its time is up it is interrupted like a
# Ctrl-C (finished rows kept) and the next one starts. 450 s in all, + at most 75 s of GPU tests
# first: the whole script fits one device call (run it with timeout_s 590).
SHARES=${BENCH_SHARES:-"precision:55 fsdp:95 ddp:20 quantization:55 attention:150 scaling:75"}
if [ -n "${BENCH_PLUGINS:-}" ]; then
    SHARES=$(for p in $BENCH_PLUGINS; do printf '%s:%s ' "$p" "${BENCH_SHARE_S:-60}"; done)
fi
PLUGINS=$(for s in $SHARES; do printf '%s ' "${s%%:*}"; done)
mkdir -p "$OUT"
SITE=$(mktemp -d /tmp/bench-site.XXXX)
trap 'rm -rf "$SITE"' EXIT
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl || echo "warning: wheels did not install" >&2
fi
# --target gives a dist-info with the entry points, so discovery sees the built-in plugins.
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target "$SITE" . || exit 3
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
BENCH=(python3 -m bench.cli)
DEV=$(python3 -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')" \
      | tr -c 'A-Za-z0-9.\n' '-' | tr 'A-Z' 'a-z' | sed 's/--*/-/g; s/-$//')
RES="$OUT/$DEV-$PROFILE.jsonl"
LOG="$OUT/$DEV-$PROFILE-log.txt"
{
    echo "# $(date -u +%FT%TZ) device=$DEV profile=$PROFILE plugins=$PLUGINS"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || true
    "${BENCH[@]}" env
} >"$LOG" 2>&1
if [ -z "${BENCH_SKIP_TESTS:-}" ]; then  # the CUDA paths' own tests (tests/test_gpu.py), bounded
    echo "# pytest -m gpu" >>"$LOG"
    timeout -k 5 75 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py >>"$LOG" 2>&1
    echo "# pytest exit $?" >>"$LOG"
fi
start=$(date +%s)
total=0
for s in $SHARES; do total=$((total + ${s##*:})); done
later=$total
for s in $SHARES; do
    p=${s%%:*}
    later=$((later - ${s##*:}))
    left=$((total - later - ($(date +%s) - start)))  # its share + what earlier plugins left unused
    if [ "$left" -lt 15 ]; then
        echo "# no time left for $p" >>"$LOG"
        continue
    fi
    echo "# plugin $p, ${left}s" >>"$LOG"
    # timeout: the runner then keeps every finished row (SIGINT = Ctrl-C) and exits 130
    timeout -s INT -k 15 "$left" "${BENCH[@]}" run --plugin "$p" --profile "$PROFILE" --out "$RES" --format none >>"$LOG" 2>&1
    echo "# plugin $p exit $?" >>"$LOG"
done
"${BENCH[@]}" show "$RES" --format markdown >>"$LOG" 2>&1
"${BENCH[@]}" claims "$RES" --format markdown >"$OUT/$DEV-$PROFILE-claims.md" 2>>"$LOG"
echo "# done in $(($(date +%s) - start))s" >>"$LOG"
tail -40 "$LOG"
