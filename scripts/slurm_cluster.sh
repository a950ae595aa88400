#!/usr/bin/env bash
# A real two-node Slurm cluster on this host, for tests and trials:
#   scripts/slurm_cluster.sh start     install slurm-wlm + munge if missing (apt-get), start munge,
#                                      one controller and two nodes; prints the SLURM_CONF to export
#   scripts/slurm_cluster.sh status    what runs (exit 0: all of it; 3: not all)
#   scripts/slurm_cluster.sh stop      cancel the cluster's jobs, end the daemons it started
# Config, state and logs live in one folder, $GANRUN_SLURM_DIR (default /tmp/ganrun-slurm).
# Nodes ganrun-node1 and ganrun-node2 (partition "debug") both listen on 127.0.0.1, on
# their own ports from $GANRUN_SLURM_PORT (default 16817: controller; +1, +2: nodes).
# `start` is idempotent: what already runs is left alone. Needs root (slurmd starts jobs
# as their users; the node names go into /etc/hosts, which `stop` takes out again).
set -euo pipefail

DIR="${GANRUN_SLURM_DIR:-/tmp/ganrun-slurm}"
PORT="${GANRUN_SLURM_PORT:-16817}"
NODES=(ganrun-node1 ganrun-node2)
CONF="$DIR/slurm.conf"
MUNGE_SOCKET="$DIR/munge/munge.socket"
HOSTS_MARK="# ganrun slurm_cluster.sh"
export SLURM_CONF="$CONF"

say() { echo "slurm_cluster: $*"; }
die() { echo "slurm_cluster: error: $*" >&2; exit 2; }

# ------------------------------------------------------------------ processes
# A daemon is "ours" when its pid file names a live process whose command line holds $DIR.
pid_of() {  # pid_of PIDFILE -> the pid, or nothing
    local pid
    [[ -f "$1" ]] || return 0
    pid="$(tr -dc 0-9 < "$1")"
    [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 0
    tr '\0' ' ' < "/proc/$pid/cmdline" | grep -F -- "$DIR" >/dev/null && echo "$pid"
    return 0
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local seconds="$1" what="$2"
    shift 2
    for _ in $(seq $((seconds * 5))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "$what did not happen within ${seconds} s; see the logs in $DIR/log"
}

stop_pid() {  # stop_pid PIDFILE NAME: TERM, then KILL after 10 s
    local pid
    pid="$(pid_of "$1")"
    [[ -n "$pid" ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        [[ -d "/proc/$pid" ]] || break
        sleep 0.2
    done
    [[ -d "/proc/$pid" ]] && kill -KILL "$pid" 2>/dev/null || true
    rm -f "$1"
    say "stopped $2 (pid $pid)"
}

# ------------------------------------------------------------------ set-up
install_packages() {
    local missing=()
    command -v munged >/dev/null || missing+=(munge)
    for tool in slurmctld slurmd sbatch; do
        command -v "$tool" >/dev/null || { missing+=(slurm-wlm); break; }
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null || die "${missing[*]} not installed and no apt-get here; install them with the system's package manager"
    [[ $(id -u) -eq 0 ]] || die "${missing[*]} not installed; run as root to install them with apt-get"
    say "installing ${missing[*]} (apt-get)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
        > "$DIR/log/apt-get.log" 2>&1 || die "apt-get install ${missing[*]} failed; see $DIR/log/apt-get.log"
}

resolve_node_names() {
    # Lightning takes MASTER_ADDR from the job's first node name: every node name must resolve.
    local unresolved=()
    for node in "${NODES[@]}"; do
        getent hosts "$node" >/dev/null || unresolved+=("$node")
    done
    [[ ${#unresolved[@]} -eq 0 ]] && return 0
    [[ -w /etc/hosts ]] || die "${unresolved[*]} do not resolve and /etc/hosts is not writable; add: 127.0.0.1 ${unresolved[*]}"
    echo "127.0.0.1 ${unresolved[*]} $HOSTS_MARK" >> /etc/hosts
    say "added ${unresolved[*]} to /etc/hosts (127.0.0.1)"
}

write_config() {
    local cpus memory
    cpus="$(nproc)"
    (( cpus < 4 )) && cpus=4  # launcher=slurm asks 4 CPUs per task by default
    memory=16384  # MB per node; not enforced here (no cgroups), declared so default requests fit
    mkdir -p "$DIR"/{munge,state,run,log}
    chmod 700 "$DIR/munge"
    if [[ ! -s "$DIR/munge/munge.key" ]]; then
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
        chmod 400 "$DIR/munge/munge.key"
    fi
    cat > "$CONF.partial" <<EOF
# Written by scripts/slurm_cluster.sh: two nodes on one host (127.0.0.1), no accounting database.
ClusterName=ganrun
SlurmctldHost=$(uname -n | cut -d. -f1)(127.0.0.1)
SlurmctldPort=$PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire: a requeued job may start again cred_expire + 1 s later (Slurm's default: 120 s)
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
CredType=cred/munge
StateSaveLocation=$DIR/state/controller
SlurmdSpoolDir=$DIR/state/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
JobRequeue=1
KillWait=10
MinJobAge=600
SlurmdTimeout=60
NodeName=${NODES[0]} NodeAddr=127.0.0.1 Port=$((PORT + 1)) CPUs=$cpus RealMemory=$memory State=UNKNOWN
NodeName=${NODES[1]} NodeAddr=127.0.0.1 Port=$((PORT + 2)) CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.partial" "$CONF"
}

start_munge() {
    [[ -n "$(pid_of "$DIR/run/munged.pid")" ]] && return 0
    munged --force --socket="$MUNGE_SOCKET" --key-file="$DIR/munge/munge.key" --pid-file="$DIR/run/munged.pid" \
        --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" 9>&- \
        || die "munged did not start; see $DIR/log/munged.log"
    wait_for 10 "munged's socket" test -S "$MUNGE_SOCKET"
    say "started munged (socket $MUNGE_SOCKET)"
}

start_controller() {
    [[ -n "$(pid_of "$DIR/run/slurmctld.pid")" ]] && return 0
    slurmctld -f "$CONF" 9>&- || die "slurmctld did not start; see $DIR/log/slurmctld.log"
    wait_for 30 "the controller answering" scontrol ping
    say "started slurmctld (port $PORT)"
}

start_node() {
    local node="$1"
    [[ -n "$(pid_of "$DIR/run/slurmd-$node.pid")" ]] && return 0
    mkdir -p "$DIR/state/$node"
    slurmd -f "$CONF" -N "$node" 9>&- || die "slurmd -N $node did not start; see $DIR/log/slurmd-$node.log"
    say "started slurmd -N $node"
}

nodes_idle() {
    local states
    states="$(sinfo -h -N -o '%N %t' 2>/dev/null)" || return 1
    for node in "${NODES[@]}"; do
        grep -Eq "^$node (idle|mix|alloc)" <<< "$states" || return 1
    done
}

# ------------------------------------------------------------------ commands
start() {
    [[ $(id -u) -eq 0 ]] || die "start needs root (slurmd runs jobs as their users; /etc/hosts gets the node names)"
    mkdir -p "$DIR/log"
    install_packages
    resolve_node_names
    if [[ -z "$(pid_of "$DIR/run/slurmctld.pid")" ]]; then
        write_config  # rewritten only while the controller is down: a running cluster keeps its config
    fi
    start_munge
    start_controller
    for node in "${NODES[@]}"; do start_node "$node"; done
    wait_for 60 "both nodes reporting idle" nodes_idle
    say "running: partition debug, nodes ${NODES[*]}; config, state and logs in $DIR"
    say "use it with: export SLURM_CONF=$CONF"
}

stop() {
    if [[ -n "$(pid_of "$DIR/run/slurmctld.pid")" ]]; then
        local jobs
        jobs="$(squeue -h -o %A 2>/dev/null | tr '\n' ' ' || true)"
        if [[ -n "${jobs// }" ]]; then
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            for _ in $(seq 150); do  # up to 30 s; the daemons are stopped either way
                [[ -z "$(squeue -h -o %A 2>/dev/null || true)" ]] && break
                sleep 0.2
            done
            say "cancelled jobs $jobs"
        fi
    fi
    for node in "${NODES[@]}"; do stop_pid "$DIR/run/slurmd-$node.pid" "slurmd -N $node"; done
    stop_pid "$DIR/run/slurmctld.pid" slurmctld
    stop_pid "$DIR/run/munged.pid" munged
    if grep -qF "$HOSTS_MARK" /etc/hosts 2>/dev/null && [[ -w /etc/hosts ]]; then
        grep -vF "$HOSTS_MARK" /etc/hosts > "$DIR/hosts.partial" || true
        cat "$DIR/hosts.partial" > /etc/hosts  # in place: /etc/hosts may be a bind mount
        rm -f "$DIR/hosts.partial"
        say "removed ${NODES[*]} from /etc/hosts"
    fi
    say "stopped; config, state and logs stay in $DIR"
}

status() {
    local down=0 pid
    for entry in "munged:munged.pid" "slurmctld:slurmctld.pid" "slurmd -N ${NODES[0]}:slurmd-${NODES[0]}.pid" \
                 "slurmd -N ${NODES[1]}:slurmd-${NODES[1]}.pid"; do
        pid="$(pid_of "$DIR/run/${entry#*:}")"
        if [[ -n "$pid" ]]; then say "${entry%%:*}: running (pid $pid)"; else say "${entry%%:*}: stopped"; down=1; fi
    done
    if [[ $down -eq 0 ]]; then
        sinfo -N -o '%N %P %t %c %m' || down=1
        say "export SLURM_CONF=$CONF"
    fi
    return $((down * 3))
}

locked() {  # one start/stop at a time (test workers may call start together); daemons get no fd 9
    mkdir -p "$(dirname "$DIR")"
    exec 9> "$DIR.lock"
    flock -w 300 9 || die "another slurm_cluster.sh holds $DIR.lock"
    "$@"
}

case "${1:-}" in
    start) locked start ;;
    stop) locked stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status   (config, state and logs in \$GANRUN_SLURM_DIR, now $DIR)" >&2; exit 2 ;;
esac
