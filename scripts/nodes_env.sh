#!/usr/bin/env bash
# Two hosts on one machine for the real multi-node tests (tests/test_nodes_real.py), and a real SLURM
# cluster over them. Needs root, iproute2, nsenter; the SLURM part needs Debian's slurm-wlm and munge.
#
#   scripts/nodes_env.sh up          two network namespaces joined by a veth pair:
#                                    $NS_A ($ADDR_A/24 on ${NS_A}v) <-> $NS_B ($ADDR_B/24 on ${NS_B}v)
#   scripts/nodes_env.sh slurm-up    + munged, slurmctld (in $NS_A) and two slurmd, node n1 in $NS_A
#                                    and n2 in $NS_B (`slurmd -N`, a Port= each), all under $DIR
#   scripts/nodes_env.sh down        stops what slurm-up started (by its pid files), removes the
#                                    namespaces and $DIR
#
# Every step is idempotent (`up` after `up` rebuilds). The addresses exist only inside the two
# namespaces; the host's own network is not touched. slurmd is started with `nsenter --net=...`,
# not `ip netns exec` (that remounts /sys and slurmd then fails on cgroups). Clients reach the
# cluster from inside a namespace: nsenter --net=/run/netns/$NS_A env SLURM_CONF=$DIR/slurm.conf sbatch ...
set -euo pipefail

NS_A=${BENCH_NS_A:-b25a}
NS_B=${BENCH_NS_B:-b25b}
ADDR_A=${BENCH_ADDR_A:-10.125.0.1}
ADDR_B=${BENCH_ADDR_B:-10.125.0.2}
DIR=${BENCH_SLURM_DIR:-/tmp/b25-slurm}
PORT=${BENCH_SLURM_PORT:-16817} # slurmctld; slurmd n1/n2 on PORT+1 / PORT+2

in_a() { nsenter --net="/run/netns/$NS_A" "$@"; }
in_b() { nsenter --net="/run/netns/$NS_B" "$@"; }

net_down() {
    ip netns del "$NS_A" 2>/dev/null || true
    ip netns del "$NS_B" 2>/dev/null || true
}

net_up() {
    net_down
    ip netns add "$NS_A"
    ip netns add "$NS_B"
    ip link add "${NS_A}v" netns "$NS_A" type veth peer name "${NS_B}v" netns "$NS_B"
    ip -n "$NS_A" addr add "$ADDR_A/24" dev "${NS_A}v"
    ip -n "$NS_B" addr add "$ADDR_B/24" dev "${NS_B}v"
    for ns in "$NS_A" "$NS_B"; do
        ip -n "$ns" link set lo up
        ip -n "$ns" link set "${ns}v" up
    done
    ip -n "$NS_A" route get "$ADDR_B" >/dev/null
    echo "netns: $NS_A ($ADDR_A) <-> $NS_B ($ADDR_B)"
}

stop_pid() { # a process this script started, by its pid file
    local f=$1 pid
    [ -f "$f" ] || return 0
    pid=$(cat "$f" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}

slurm_down() {
    stop_pid "$DIR/slurmd-n1.pid"
    stop_pid "$DIR/slurmd-n2.pid"
    stop_pid "$DIR/slurmctld.pid"
    stop_pid "$DIR/munged.pid"
    rm -rf "$DIR"
}

slurm_up() {
    command -v slurmctld >/dev/null && command -v munged >/dev/null \
        || { echo "slurm-up: slurmctld/munged not installed (apt-get install slurm-wlm munge)" >&2; exit 3; }
    slurm_down
    [ -e "/run/netns/$NS_A" ] || net_up
    mkdir -p "$DIR/ctld" "$DIR/spool" "$DIR/munge"
    chmod 700 "$DIR/munge"
    dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$DIR/munge/munge.key"
    munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.sock" \
        --pid-file="$DIR/munged.pid" --log-file="$DIR/munged.log" --seed-file="$DIR/munge/seed"
    local host cpus
    host=$(hostname -s)
    cpus=$(nproc)
    cat >"$DIR/slurm.conf" <<EOF
ClusterName=b25
SlurmctldHost=$host($ADDR_A)
SlurmctldPort=$PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.sock
CredType=cred/munge
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SlurmdTimeout=30
MinJobAge=600
NodeName=n1 NodeAddr=$ADDR_A NodeHostname=$host Port=$((PORT + 1)) CPUs=$cpus State=UNKNOWN
NodeName=n2 NodeAddr=$ADDR_B NodeHostname=$host Port=$((PORT + 2)) CPUs=$cpus State=UNKNOWN
PartitionName=b25 Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF="$DIR/slurm.conf"
    in_a slurmctld -f "$SLURM_CONF" -i
    in_a slurmd -f "$SLURM_CONF" -N n1
    in_b slurmd -f "$SLURM_CONF" -N n2
    for _ in $(seq 100); do
        if [ "$(in_a sinfo -h -N -o '%N %t' 2>/dev/null | grep -c ' idle')" = 2 ]; then
            echo "slurm: n1 ($ADDR_A) and n2 ($ADDR_B) idle; SLURM_CONF=$SLURM_CONF"
            return 0
        fi
        sleep 0.3
    done
    echo "slurm-up: the nodes did not come up:" >&2
    in_a sinfo -N >&2 || true
    tail -n 20 "$DIR"/*.log >&2 || true
    exit 1
}

case "${1:-}" in
up) net_up ;;
slurm-up) slurm_up ;;
down)
    slurm_down
    net_down
    ;;
*)
    echo "usage: $0 up | slurm-up | down" >&2
    exit 2
    ;;
esac
