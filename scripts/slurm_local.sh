#!/usr/bin/env bash
# A real single-node SLURM cluster on localhost, for hydra/launcher=slurm and tests/e2e/test_slurm.py.
#
#   scripts/slurm_local.sh start    install (apt, once) and start munged, MariaDB, slurmdbd,
#                                   slurmctld, slurmd; idempotent: running daemons are kept
#   scripts/slurm_local.sh stop     cancel jobs, stop the daemons this script started
#   scripts/slurm_local.sh status   daemon states and sinfo; exit 0 when all run
#
# Debian 12, root, no systemd. Recipe and measurements: ../shared/docs/SLURM.md (accounting
# through slurmdbd + a private MariaDB on a unix socket, so a killed job shows up as FAILED in
# sacct and submitit stops waiting for it). State, logs and PID files live under
# $LUNAR_EXP_SLURM_BASE (default /tmp/lunar_exp_slurm); the configs go to /etc/slurm (the path
# sbatch and sacct read without SLURM_CONF) and are only overwritten when this script wrote them.
# Exit status: 0 ok, 1 failure, 3 cannot run here (not root, not Debian/apt, install failed).
set -euo pipefail

BASE=${LUNAR_EXP_SLURM_BASE:-/tmp/lunar_exp_slurm}
ETC=/etc/slurm
MARK="# written by lunar_exp scripts/slurm_local.sh"
CLUSTER=lunar
DB_SOCKET=/run/mysqld/mysqld.sock
PACKAGES=(munge slurm-client slurmctld slurmd slurmdbd mariadb-server)
BINARIES=(munged slurmctld slurmd slurmdbd mariadbd mariadb-install-db sbatch sacct sacctmgr)
RUN=$BASE/run LOG=$BASE/log MYSQL=$BASE/mysql

say() { echo "slurm_local: $*"; }
die() { echo "slurm_local: error: $1" >&2; exit "${2:-1}"; }

# Daemons are started with fd 9 (the lock) closed, or they would hold the lock forever.
# --- processes ------------------------------------------------------------------------------
# A daemon runs when its PID file names a live (non-zombie) process with the expected comm.
pid_of() { # pidfile comm
    local pid
    [[ -r $1 ]] || return 1
    pid=$(tr -dc 0-9 2>/dev/null <"$1") || return 1
    [[ -n $pid && -r /proc/$pid/comm ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]] || return 1
    [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || return 1
    echo "$pid"
}

stop_daemon() { # name pidfile comm [grace seconds]
    local pid i grace=${4:-15}
    pid=$(pid_of "$2" "$3") || { rm -f "$2"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        pid_of "$2" "$3" >/dev/null || break
        sleep 0.1
    done
    if pid_of "$2" "$3" >/dev/null; then
        say "$1 ($pid) ignored SIGTERM for ${grace}s; SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do pid_of "$2" "$3" >/dev/null || break; sleep 0.1; done
    fi
    rm -f "$2"
    say "stopped $1"
}

wait_for() { # seconds description command...
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
    [[ -n $what ]] && say "$what"
    return 0
}

# --- install ----------------------------------------------------------------------------------
installed() {
    local b
    for b in "${BINARIES[@]}"; do command -v "$b" >/dev/null 2>&1 || return 1; done
}

install_packages() {
    installed && return 0
    [[ $(id -u) == 0 ]] || die "not root: cannot install ${PACKAGES[*]}" 3
    command -v apt-get >/dev/null || die "apt-get not found (Debian 12 expected)" 3
    local policy=/usr/sbin/policy-rc.d own_policy=0 start=$SECONDS
    if [[ ! -e $policy ]]; then # keep package init scripts from starting daemons
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    say "installing ${PACKAGES[*]} (apt, no recommends)"
    local apt=(apt-get install -y -q -o DPkg::Lock::Timeout=120 --no-install-recommends
        "${PACKAGES[@]}") ok=1
    if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" >"$BASE/apt.log" 2>&1; then
        say "apt-get install failed; apt-get update and retry"
        if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive "${apt[@]}"; } \
            >>"$BASE/apt.log" 2>&1; then ok=0; fi
    fi
    if ((own_policy)); then rm -f "$policy" && trap - EXIT; fi
    ((ok)) || { tail -5 "$BASE/apt.log" >&2; die "package install failed (log: $BASE/apt.log)" 3; }
    installed || die "installed, but some of ${BINARIES[*]} are missing" 3
    say "installed in $((SECONDS - start)) s"
}

# --- configs ----------------------------------------------------------------------------------
# Write content $3 to $1 when the file is new or ours; return 0 when its content changed.
write_config() { # path mode content
    local new=$3
    if [[ -e $1 ]] && ! grep -qF "$MARK" "$1"; then
        die "$1 exists and was not written by this script; refusing to overwrite it"
    fi
    if [[ -e $1 && $(cat "$1") == "$new" ]]; then return 1; fi
    mkdir -p "$(dirname "$1")"
    printf '%s\n' "$new" >"$1.tmp" && chmod "$2" "$1.tmp" && mv "$1.tmp" "$1"
    return 0
}

db_password() {
    [[ -s $BASE/dbpass ]] || (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' \
        >"$BASE/dbpass")
    cat "$BASE/dbpass"
}

slurm_conf() {
    local cpus mem_mb real defmem
    cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # nproc obeys OMP_NUM_THREADS
    mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    real=$((mem_mb * 9 / 10))
    defmem=$((real / cpus < 1024 ? real / cpus : 1024))
    cat <<EOF
$MARK (base $BASE)
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobCompType=jobcomp/none
ReturnToService=2
SlurmdTimeout=60
MinJobAge=300
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$defmem
MailProg=/bin/true
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

slurmdbd_conf() {
    cat <<EOF
$MARK (base $BASE)
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$(db_password)
StorageLoc=slurm_acct_db
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
EOF
}

# --- daemons ----------------------------------------------------------------------------------
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munged() {
    if pid_of "$RUN/munge/munged.pid" munged >/dev/null; then return 0; fi
    if munge_ok; then say "reusing a munged this script did not start"; return 0; fi
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0711 /var/lib/munge
    install -d -o munge -g munge -m 0700 /etc/munge /var/log/munge
    install -d -o munge -g munge -m 0755 "$RUN/munge"
    [[ -s /etc/munge/munge.key ]] || runuser -u munge -- mungekey --create >/dev/null
    chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
    runuser -u munge -- /usr/sbin/munged --pid-file="$RUN/munge/munged.pid" </dev/null \
        >>"$LOG/munged.out" 2>&1 9>&-
    wait_for 10 "" munge_ok || die "munged did not answer (see /var/log/munge/munged.log)"
    say "started munged"
}

db() { mariadb --no-defaults --socket="$DB_SOCKET" -u root "$@"; }

start_mariadb() {
    local pidfile=$MYSQL/run/mariadbd.pid
    pid_of "$pidfile" mariadbd >/dev/null && return 0
    if [[ -S $DB_SOCKET ]] && mariadb-admin --no-defaults --socket="$DB_SOCKET" ping \
        >/dev/null 2>&1; then
        die "another MariaDB answers on $DB_SOCKET; stop it or run this on a clean machine"
    fi
    install -d -o mysql -g mysql -m 0755 /run/mysqld
    install -d -o mysql -g mysql -m 0750 "$MYSQL" "$MYSQL/run"
    if [[ ! -d $MYSQL/data/mysql ]]; then
        mariadb-install-db --no-defaults --user=mysql --datadir="$MYSQL/data" \
            --auth-root-authentication-method=socket --skip-test-db >"$LOG/mariadb-install.log" 2>&1 \
            || die "mariadb-install-db failed (log: $LOG/mariadb-install.log)"
    fi
    setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$MYSQL/data" \
        --skip-networking --socket="$DB_SOCKET" --innodb-buffer-pool-size=64M \
        --pid-file="$pidfile" --log-error="$MYSQL/run/mariadbd.err" </dev/null >/dev/null 2>&1 9>&- &
    wait_for 30 "started mariadbd" db -e "SELECT 1" \
        || die "mariadbd did not start (log: $MYSQL/run/mariadbd.err)"
    db -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$(db_password)';
           ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$(db_password)';
           GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
}

start_slurmdbd() {
    if ! pid_of "$RUN/slurmdbd.pid" slurmdbd >/dev/null; then
        slurmdbd </dev/null >>"$LOG/slurmdbd.out" 2>&1 9>&-
        wait_for 30 "started slurmdbd" sacctmgr -n list cluster \
            || die "slurmdbd did not answer (log: $LOG/slurmdbd.log)"
    fi
    if [[ -z $(sacctmgr -n -P list cluster format=Cluster where name=$CLUSTER 2>/dev/null) ]]; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
}

node_state() { sinfo -h -N -n localhost -o %T 2>/dev/null | head -1; }
node_ready() { [[ $(node_state) =~ ^(idle|mixed|allocated|completing) ]]; }

start_slurm() {
    if ! pid_of "$RUN/slurmctld.pid" slurmctld >/dev/null; then
        slurmctld -i </dev/null >>"$LOG/slurmctld.out" 2>&1 9>&-
        wait_for 30 "started slurmctld" scontrol ping || die "slurmctld did not answer"
    fi
    if ! pid_of "$RUN/slurmd.pid" slurmd >/dev/null; then
        slurmd -N localhost </dev/null >>"$LOG/slurmd.out" 2>&1 9>&-
        say "started slurmd"
    fi
    local i
    for ((i = 0; i < 150; i++)); do
        node_ready && break
        if [[ $(node_state) =~ ^(down|drain) ]]; then
            scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true
        fi
        sleep 0.2
    done
    node_ready || die "node localhost is '$(node_state)', not idle (log: $LOG/slurmd.log)"
}

smoke_job() {
    local id state i
    id=$(sbatch --parsable -o /dev/null -e /dev/null --wrap true) || die "sbatch failed"
    for ((i = 0; i < 300; i++)); do
        state=$(scontrol -o show job "$id" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2 || true)
        case $state in
        COMPLETED) say "smoke job $id COMPLETED"; return 0 ;;
        FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY) die "smoke job $id: $state" ;;
        esac
        sleep 0.2
    done
    die "smoke job $id did not finish in 60 s (state ${state:-unknown})"
}

all_running() {
    { pid_of "$RUN/munge/munged.pid" munged || munge_ok; } >/dev/null \
        && pid_of "$MYSQL/run/mariadbd.pid" mariadbd >/dev/null \
        && pid_of "$RUN/slurmdbd.pid" slurmdbd >/dev/null \
        && pid_of "$RUN/slurmctld.pid" slurmctld >/dev/null \
        && pid_of "$RUN/slurmd.pid" slurmd >/dev/null
}

# --- commands ---------------------------------------------------------------------------------
cmd_start() {
    local start=$SECONDS slurm_changed=0 dbd_changed=0
    [[ $(id -u) == 0 ]] || die "must run as root" 3
    mkdir -p "$BASE"
    exec 9>"$BASE/.lock"
    flock 9
    install_packages
    mkdir -p "$RUN" "$LOG" "$BASE/state" "$BASE/spool"
    write_config "$ETC/slurm.conf" 644 "$(slurm_conf)" && slurm_changed=1
    write_config "$ETC/slurmdbd.conf" 600 "$(slurmdbd_conf)" && dbd_changed=1
    if all_running && ((!slurm_changed && !dbd_changed)) && node_ready; then
        say "already running ($((SECONDS - start)) s)"
        return 0
    fi
    if ((dbd_changed)); then stop_daemon slurmdbd "$RUN/slurmdbd.pid" slurmdbd; fi
    if ((slurm_changed || dbd_changed)); then
        stop_daemon slurmd "$RUN/slurmd.pid" slurmd
        stop_daemon slurmctld "$RUN/slurmctld.pid" slurmctld
    fi
    start_munged
    start_mariadb
    start_slurmdbd
    start_slurm
    smoke_job
    say "ready in $((SECONDS - start)) s (partition debug; logs $LOG)"
}

cmd_stop() {
    [[ $(id -u) == 0 ]] || die "must run as root" 3
    [[ -d $BASE ]] || { say "nothing to stop ($BASE absent)"; return 0; }
    exec 9>"$BASE/.lock"
    flock 9
    if pid_of "$RUN/slurmctld.pid" slurmctld >/dev/null; then
        local jobs
        jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ' || true)
        if [[ -n ${jobs// /} ]]; then
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            say "cancelled jobs $jobs"
        fi
    fi
    stop_daemon slurmd "$RUN/slurmd.pid" slurmd
    stop_daemon slurmctld "$RUN/slurmctld.pid" slurmctld
    stop_daemon slurmdbd "$RUN/slurmdbd.pid" slurmdbd
    stop_daemon mariadbd "$MYSQL/run/mariadbd.pid" mariadbd 30
    stop_daemon munged "$RUN/munge/munged.pid" munged
}

cmd_status() {
    local rc=0 name file comm pid
    for entry in "munged $RUN/munge/munged.pid munged" "mariadbd $MYSQL/run/mariadbd.pid mariadbd" \
        "slurmdbd $RUN/slurmdbd.pid slurmdbd" "slurmctld $RUN/slurmctld.pid slurmctld" \
        "slurmd $RUN/slurmd.pid slurmd"; do
        read -r name file comm <<<"$entry"
        if pid=$(pid_of "$file" "$comm"); then
            echo "$name: running (pid $pid)"
        elif [[ $name == munged ]] && munge_ok; then
            echo "munged: running (not started by this script)"
        else
            echo "$name: stopped"
            rc=1
        fi
    done
    ((rc)) || sinfo 2>/dev/null || true
    return $rc
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
    echo "usage: $0 start|stop|status   (state under \$LUNAR_EXP_SLURM_BASE, default $BASE)" >&2
    exit 2
    ;;
esac
