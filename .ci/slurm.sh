#!/usr/bin/env bash
# A single-node SLURM cluster on localhost, for the SLURM test and for CI.
#
#   .ci/slurm.sh start STATE_DIR   # start munged (unless one already answers), slurmctld, slurmd
#   .ci/slurm.sh stop STATE_DIR    # stop, by PID, exactly the daemons `start` started
#
# Needs root and Debian's `slurm-wlm` and `munge` packages (`.ci/run` installs them).
# No accounting database: Snakemake must poll with `squeue` (see
# workflow/profiles/slurm/config.yaml), and MinJobAge keeps finished jobs visible to it.
# slurm.conf goes to the default path /etc/slurm/slurm.conf because the nested `srun` of
# the Snakemake job step does not pass SLURM_CONF on; an existing slurm.conf that this
# script did not write is never touched.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
MARKER="# written by featlearn .ci/slurm.sh"

die() { echo "slurm.sh: $*" >&2; exit 1; }

wait_for() {  # wait_for SECONDS COMMAND...: retry COMMAND every 0.5 s
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

munge_works() { munge -n 2>/dev/null | unmunge 2>/dev/null | grep -q 'STATUS: *Success'; }

node_idle() { sinfo --noheader --format=%t | grep -qx idle; }

start() {
    local dir=$1
    [[ $(id -u) == 0 ]] || die "must run as root (slurmd runs jobs as their submitting user)"
    for tool in munged slurmctld slurmd sinfo squeue sbatch; do
        command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] || die "$tool not installed (apt-get install slurm-wlm munge)"
    done
    if [[ -e $CONF ]] && ! grep -qxF "$MARKER" "$CONF"; then
        die "$CONF exists and was not written by this script: refusing to replace it"
    fi
    local running
    running=$(sed -n 's/^SlurmctldPidFile=//p' "$CONF" 2>/dev/null || true)
    if [[ -n $running && -s $running ]] && kill -0 "$(cat "$running")" 2>/dev/null; then
        die "a cluster started by this script is running ($running): stop it first"
    fi
    mkdir -p "$dir/state" "$dir/spool"
    dir=$(cd "$dir" && pwd)

    if ! munge_works; then
        install -d -o munge -g munge -m 0755 /run/munge
        # As the munge user, as its own service does: munged refuses a log directory owned by
        # another user than itself.
        runuser -u munge -- /usr/sbin/munged 2>"$dir/munged.err" || die "munged failed: $(cat "$dir/munged.err")"
        cp /run/munge/munged.pid "$dir/munged.pid"
        wait_for 10 munge_works || die "munge does not authenticate"
    fi

    local host memory
    host=$(hostname)
    # Leave about 1 GB to the system; the executor plugin always sends --mem.
    memory=$(($(free -m | awk '/^Mem:/ {print $2}') - 1024))
    cat >"$CONF" <<EOF
$MARKER
ClusterName=local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=3600
MailProg=/bin/true
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=$host CPUs=$(nproc) RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    /usr/sbin/slurmctld
    wait_for 10 test -s "$dir/slurmctld.pid" || die "slurmctld did not start: $(tail -5 "$dir/slurmctld.log")"
    /usr/sbin/slurmd
    wait_for 10 test -s "$dir/slurmd.pid" || die "slurmd did not start: $(tail -5 "$dir/slurmd.log")"
    wait_for 30 node_idle || die "node not idle after 30 s: $(sinfo 2>&1)"
    echo "slurm.sh: cluster up (node $host, $(nproc) CPUs, ${memory} MB), state in $dir"
}

stop_pid_file() {  # stop the daemon whose PID is in file $1 (SIGTERM, then SIGKILL after 10 s)
    local file=$1 pid
    [[ -s $file ]] || return 0
    pid=$(cat "$file")
    if kill "$pid" 2>/dev/null; then
        wait_for 10 bash -c "! kill -0 $pid" || kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

stop() {
    local dir=$1
    [[ -d $dir ]] || return 0
    stop_pid_file "$dir/slurmd.pid"
    stop_pid_file "$dir/slurmctld.pid"
    stop_pid_file "$dir/munged.pid"
    if [[ -e $CONF ]] && grep -qxF "$MARKER" "$CONF"; then
        rm -f "$CONF"
    fi
    echo "slurm.sh: cluster stopped"
}

case "${1:-}" in
    start | stop) [[ $# == 2 ]] || die "usage: $0 start|stop STATE_DIR"; "$1" "$2" ;;
    *) die "usage: $0 start|stop STATE_DIR" ;;
esac
