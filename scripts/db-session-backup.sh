#!/usr/bin/env bash
# db-session-backup.sh — the pre- and post-session backups around every start and stop of the
# engine (seed 000 §11C). The engine's unit runs it as root (a drop-in: ExecCondition=+ before a
# start, ExecStopPost=+ after a stop) with --as, which runs the DB's side as the engine's user and
# the backups' side as the backup user. Installed on the host as /usr/local/sbin/keel-db-session-backup.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

KEEL_PROG=$(basename -- "$0")
self=$(readlink -f -- "${BASH_SOURCE[0]}" 2>/dev/null || printf '%s' "${BASH_SOURCE[0]}")
KEEL_DB_HERE=$(cd -P -- "$(dirname -- "$self")" && pwd)
for lib in "$KEEL_DB_HERE/db-lib.sh" "$KEEL_DB_HERE/keel-db-lib" ""; do [[ -r $lib ]] && break; done
[[ -n $lib ]] || { echo "$KEEL_PROG: cannot find db-lib.sh or keel-db-lib beside $self" >&2; exit 5; }
# shellcheck source=db-lib.sh
. "$lib"

# How long a post-session backup waits for the sessions directory's lock: systemd counts
# ExecStopPost= against the unit's TimeoutStopSec= (plan/engine.ts STOP_TIMEOUT_SECONDS, 30 s), which
# also has to cover the backup itself.
readonly POST_LOCK_WAIT=10

usage() {
  cat <<EOF
usage: $KEEL_PROG pre|post [--as ENGINE:BACKUP] [--ops-lock FILE] [--deadline SECONDS] [--keep N]
                       [--lock-wait SECONDS] [--history HDIR]... DB DIR
       $KEEL_PROG -h

pre   before the engine starts: waits for a restore or adopt swapping DB to finish, and refuses
      (exit 1) after one that was interrupted (db-gate.sh recover). Then a verified backup of DB
      into DIR (db-backup.sh). No DB is a first start, with nothing to back up, only if DB never
      had a backup: none in DIR nor in any HDIR (the scheduled backups' directory), and no status
      file of one. Otherwise the DB went
      missing (deleted, moved, a mount that failed) and the engine must not start on an empty
      one: exit 1, "DB missing: restore". A failed backup exits non-zero with the reason, and the
      engine does not start (the unit runs this as ExecCondition=, whose failure systemd neither
      restarts nor retries).
post  after the engine stopped, for whatever reason: the same backup of the session just ended.

The backup is two processes joined by a pipe (db-backup.sh -h, docs/DATABASE.md "The backup
identity"): the DB's side (the swap lock, then db-backup.sh --export) and the backups' side
(db-backup.sh --from-stdin, then the missing-DB check). With --as ENGINE:BACKUP, run as root (the
engine's unit runs it with the "+" prefix), each side runs as its own user (setpriv); without it,
both run as the caller. --ops-lock FILE (pre, as root): first wait up to 10 minutes for a shared
flock on FILE, which keel-ops holds from its stop of the engine until a restore or adopt is in
place, so no start slips in between (exit 3 when it is still held then). --deadline SECONDS: the
lock's wait and the backup together end within SECONDS (then exit 5, the backup kept nowhere): the
unit's start timeout is longer, because a start that runs into it is restarted and one whose
ExecCondition= fails is not.
--lock-wait SECONDS: how long the backups' side waits for DIR's lock, which the scheduled backup
holds while it checks one session backup (db-backup.sh --also-check): by default 10 minutes before a
start (at most half of what is left of --deadline), $POST_LOCK_WAIT s after a stop (under the unit's stop
timeout); then exit 3.
Exit codes: db-backup.sh's (0 ok, 1 gate, 3 busy, 4 not local, 5 failed), 2 usage.
EOF
}

[[ $# -gt 0 ]] || keel_usage_error "expected pre or post"
side=both
case $1 in
  -h | --help) usage; exit 0 ;;
  export | store) side=$1; shift ;;
esac
case ${1:-} in
  pre | post) phase=$1; shift ;;
  *) keel_usage_error "expected pre or post, not '${1:-}'" ;;
esac
keep=() history=() as="" ops_lock="" deadline="" lock_wait=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --keep) [[ $# -ge 2 ]] || keel_usage_error "--keep needs a number"; keep=(--keep "$2"); shift 2 ;;
    --history) [[ $# -ge 2 ]] || keel_usage_error "--history needs a directory"; history+=("$2"); shift 2 ;;
    --as) [[ $# -ge 2 ]] || keel_usage_error "--as needs ENGINE:BACKUP"; as=$2; shift 2 ;;
    --ops-lock) [[ $# -ge 2 ]] || keel_usage_error "--ops-lock needs a file"; ops_lock=$2; shift 2 ;;
    --deadline) [[ $# -ge 2 && $2 =~ ^[1-9][0-9]{0,5}$ ]] || keel_usage_error "--deadline needs a number of seconds"; deadline=$2; shift 2 ;;
    --lock-wait) [[ $# -ge 2 && $2 =~ ^[0-9]{1,5}$ ]] || keel_usage_error "--lock-wait needs a number of seconds"; lock_wait=$((10#$2)); shift 2 ;;
    --) shift; break ;;
    -*) keel_usage_error "unknown option $1" ;;
    *) break ;;
  esac
done

# The DB's side: the swap lock, then the copy on stdout (db-backup.sh --export).
if [[ $side == export ]]; then
  [[ $# -eq 1 ]] || keel_usage_error "export takes DB only"
  db=$1
  # shellcheck disable=SC2317 # called by db-lib's EXIT trap
  keel_exit_hook() { keel_export_failed_header "$1"; }
  if [[ $phase == pre && -d $(dirname -- "$db") ]]; then
    # A restore or adopt swapping the DB right now: wait for it (the swap lock), then refuse to start
    # on a swap that was interrupted (its marker is left).
    keel_swap_lock "$db"
    [[ ! -e $(keel_swap_marker "$db") ]] ||
      keel_die "$KEEL_EX_GATE" "a restore or adopt of $db was interrupted while it swapped the DB ($(keel_swap_marker "$db") is left): the engine does not start on a half-swapped DB" \
        "sudo keel-ops recover (finishes the swap or puts the previous DB back), then sudo keel-ops start"
    exec 7>&-
  fi
  exec "$(keel_sibling backup)" --export --none-if-missing "$db"
fi

[[ $# -eq 2 ]] || keel_usage_error "expected DB and DIR"
db=$1 dir=$2

# Both sides, joined by a pipe; with --as (root) each as its own user.
if [[ $side == both ]]; then
  # systemd runs ExecStopPost= after a failed ExecCondition= too: nothing ran, so nothing ended to
  # back up (and the pre-session backup's failure stays the one on record).
  if [[ $phase == post && ${SERVICE_RESULT:-} == exec-condition ]]; then
    keel_info "post-session backup: the start was refused before the engine ran (the pre-session backup's reason above); nothing to back up"
    exit 0
  fi
  opts=(${keep[@]+"${keep[@]}"})
  for h in ${history[@]+"${history[@]}"}; do opts+=(--history "$h"); done
  export_side=("$self" export "$phase" -- "$db")
  store_as=()
  if [[ -n $as ]]; then
    keel_as_pair "$as" "$db" "$dir"
    export_side=("${KEEL_AS_ENGINE[@]}" "${export_side[@]}")
    store_as=("${KEEL_AS_BACKUP[@]}")
  fi
  started_at=$(date +%s)
  if [[ -n $ops_lock && $phase == pre ]]; then
    # Only a post-session backup runs inside keel-ops' stop (systemctl stop waits for it): it must
    # not wait for keel-ops' lock, or the two would wait for each other.
    [[ $ops_lock == /run/keel/* && $(id -u) -eq 0 ]] || keel_usage_error "--ops-lock takes a file in /run/keel, as root"
    [[ -d /run/keel ]] || mkdir -m 0755 /run/keel || keel_die "$KEEL_EX_FAIL" "cannot create /run/keel"
    [[ $ops_lock != *..* ]] || keel_usage_error "--ops-lock: no .. in the path"
    # root's alone (0600): a reader could hold it and keep keel-ops from its restore.
    if ! { (umask 077 && : >>"$ops_lock") && exec 8>>"$ops_lock" && chmod 0600 -- "$ops_lock"; }; then
      keel_die "$KEEL_EX_FAIL" "cannot open $ops_lock"
    fi
    # Root does arithmetic with it: a number, or the default (the unit's environment is not root's to trust).
    wait_s=600
    [[ ! ${KEEL_OPS_LOCK_WAIT:-} =~ ^[0-9]{1,6}$ ]] || wait_s=$KEEL_OPS_LOCK_WAIT
    [[ -z $deadline ]] || ((wait_s < deadline)) || wait_s=$((deadline / 2))
    flock -s -w "$wait_s" 8 ||
      keel_die "$KEEL_EX_BUSY" "keel-ops has held $ops_lock (a restore or adopt) for $wait_s s: the engine does not start meanwhile" \
        "wait for keel-ops to finish, then sudo keel-ops start"
  fi
  left_at=$(date +%s)
  # The sessions directory's lock: the scheduled backup's --also-check holds it while it checks one
  # session backup, and a start or stop must not fail for that. A pre-session backup waits for it
  # for up to 10 minutes, and at most half of what is left of its deadline (the backup needs the
  # rest; a lock held longer ends as "busy", exit 3, not as the deadline's "the DB has grown"); a
  # post-session one, which runs under the unit's stop timeout, for POST_LOCK_WAIT seconds: after
  # that it fails, and the next start's pre-session backup takes the same DB.
  wait_lock=${lock_wait:-$([[ $phase == pre ]] && echo 600 || echo "$POST_LOCK_WAIT")}
  if [[ -n $deadline ]]; then
    left=$((deadline - (left_at - started_at)))
    ((left > 0)) || keel_die "$KEEL_EX_FAIL" "no time left for the $phase-session backup within its deadline of $deadline s"
    ((wait_lock <= left / 2)) || wait_lock=$((left / 2))
    # Both sides end by the deadline: timeout sends TERM (their traps remove what they wrote), then KILL.
    export_side=(timeout -k 5 "$left" "${export_side[@]}")
    store_as=(timeout -k 5 "$left" ${store_as[@]+"${store_as[@]}"})
  fi
  store_side=(${store_as[@]+"${store_as[@]}"} "$self" store "$phase" ${opts[@]+"${opts[@]}"} --lock-wait "$wait_lock" -- "$db" "$dir")
  set +e
  trap - ERR
  # Neither side inherits the lock (fd 8): one that kept it could hold off keel-ops.
  "${export_side[@]}" 8>&- | "${store_side[@]}" 8>&-
  rcs=("${PIPESTATUS[@]}")
  set -e
  if [[ -n $deadline ]] && [[ ${rcs[1]} -eq 124 || ${rcs[1]} -eq 137 || ${rcs[0]} -eq 124 || ${rcs[0]} -eq 137 ]]; then
    keel_die "$KEEL_EX_FAIL" "the $phase-session backup of $db did not finish within $deadline s ($((left_at - started_at)) s of it waiting for keel-ops' lock), so the engine does not start (a start that ran into the unit's timeout would be restarted over and over): the DB has grown past what keel:startTimeoutMinutes allows" \
      "raise it (pulumi config set keel:startTimeoutMinutes 60; pulumi up), then sudo keel-ops start; docs/DATABASE.md \"Large DBs\""
  fi
  exit "${rcs[1]}"
fi

# The backups' side. Evidence that DB existed once: a backup of it (its name's pattern) or a status
# file of one.
backed_up_before() {
  local name base d f
  name=$(basename -- "$db")
  base=${name%.*}
  for d in "$dir" ${history[@]+"${history[@]}"}; do
    [[ ! -e $d/$base.status.json ]] || { printf '%s\n' "$d/$base.status.json"; return 0; }
    f=$(keel_list_backups "$d" "$base" | head -n 1)
    [[ -z $f ]] || { printf '%s\n' "$f"; return 0; }
  done
  return 1
}

rc=0
# --name-after-newest: a clock that stepped back must neither keep the engine from starting nor make
# the post-session backup wait past the unit's stop timeout (db-backup.sh -h).
file=$("$(keel_sibling backup)" --from-stdin --none-ok ${keep[@]+"${keep[@]}"} --name-after-newest --lock-wait "${lock_wait:-0}" -- "$db" "$dir") || rc=$?
if [[ $rc -ne 0 ]]; then
  if [[ $phase == pre ]]; then
    keel_die "$rc" "pre-session backup of $db failed (reason above): the engine does not start without one (seed 000 §11C)" \
      "fix the cause (see $dir/*.status.json), then: sudo systemctl start <the engine's unit>"
  fi
  keel_die "$rc" "post-session backup of $db failed (reason above)" "fix the cause; the next start takes a pre-session backup and starts only if it succeeds"
fi
if [[ -z $file ]]; then
  # The DB's side found no DB (nor a -wal of one).
  if [[ $phase == pre ]] && evidence=$(backed_up_before); then
    keel_die "$KEEL_EX_GATE" "DB missing: restore. There is no DB at $db, but it had backups ($evidence): it was deleted or moved, or its disk is not mounted. The engine does not start on an empty DB" \
      "find the DB (mounts, a move), or restore the newest backup: sudo keel-ops restore latest. To start empty on purpose, move the backups of it out of $dir${history[0]:+ and ${history[*]}} first"
  fi
  keel_info "$phase-session backup: no DB at $db yet (the engine's first start): nothing to back up"
  exit 0
fi
keel_info "$phase-session backup of $db: $file"
