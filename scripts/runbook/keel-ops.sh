#!/usr/bin/env bash
# keel-ops: the runbook's root actions on the host (docs/RUNBOOK.md). Installed as
# /usr/local/sbin/keel-ops, so the deploy user runs it with `sudo keel-ops …` (its sudo covers
# keel's tools only); the operator scripts beside this file call it over SSH. Reads the host's
# paths from /etc/keel/host.conf (plan/health.ts), or the file named by $KEEL_HOST_CONF.
#
# Usage: keel-ops backups                 list the verified backups, oldest first
#        keel-ops backup                  take a verified backup now: the backup timer's own service
#                                         (read as the engine's user, stored by the backup user,
#                                         configured retention)
#        keel-ops prune [N]               keep only the newest N backups, scheduled and session
#                                         (default: the configured retention), and always the newest
#                                         verified one, without taking a new one: for a full disk
#        keel-ops restore NAME|latest     stop the engine, put backup NAME in place of the DB, start it
#        keel-ops set-aside NAME          rename backup NAME to .set-aside-NAME beside it (as the
#                                         backup user): never listed, restored or pruned again,
#                                         kept for a look (a backup that failed its check)
#        keel-ops snapshot                a read-only copy of the live DB for analysis, owned by the
#                                         deploy user in ~/keel-snapshots/ (prints its path)
#        keel-ops adopt FILE              migrate: FILE (in ~/keel-incoming/ of the deploy user) passes
#                                         the integrity gate and replaces the DB (after a verified
#                                         backup of it into the backups), the engine stopped meanwhile
#        keel-ops recover                 after a restore or adopt was interrupted mid-swap (the engine
#                                         then refuses to start): finish it or put the previous DB back
#        keel-ops asides                  list the previous DBs a restore or adopt kept beside the DB,
#                                         and the backups set aside
#        keel-ops remove-asides           remove the previous DBs (once the DB in place has proven
#                                         itself); backups set aside stay, for a look
#        keel-ops stop | start | restart  the engine's unit; start and restart confirm it stays up
#        keel-ops audit KEY [WHEN]        the audit log's records for KEY (identity, sudoers, sshd,
#                                         keel, units, sudo-exec, modules, time-change; see
#                                         docs/HARDENING.md "Audit") since WHEN (recent, boot, today,
#                                         yesterday, this-week, week-ago, this-month; default
#                                         week-ago), interpreted (ausearch -i)
#        keel-ops verify-packages         every installed file that no longer matches its Debian
#                                         package (debsums -c); exit 1 when there is one
#
# The DB work is keel-db-backup/-restore/-snapshot/-gate (docs/DATABASE.md); this tool adds the
# engine's stop and start around it and checks every name it is given.
#
# Exit: 0 done; 1 failed (the DB tool's or the unit's reason on stderr); 2 usage; 3 an input is
#       not as expected (no such backup, a file outside the incoming directory, no config).
set -euo pipefail
shopt -s nullglob

PROG=keel-ops
CONFIG=${KEEL_HOST_CONF:-/etc/keel/host.conf}

usage() {
  sed -n 's/^# \{0,1\}//; /^Usage:/,/^$/p' "$0" | sed '/^$/d' >&2
  exit 2
}
fail() {
  local code=$1
  shift
  echo "$PROG: $*" >&2
  exit "$code"
}

[[ $# -ge 1 ]] || usage
cmd=$1
shift
case $cmd in
  backups | backup | snapshot | recover | asides | remove-asides | stop | start | restart) [[ $# -eq 0 ]] || usage ;;
  restore | adopt | set-aside) [[ $# -eq 1 ]] || usage ;;
  prune) [[ $# -le 1 ]] || usage ;;
  audit) [[ $# -ge 1 && $# -le 2 ]] || usage ;;
  verify-packages) [[ $# -eq 0 ]] || usage ;;
  -h | --help | *) usage ;;
esac
[[ $EUID -eq 0 ]] || fail 2 "run as root: sudo $PROG $cmd"

# The host's audit log and package check need no stack paths.
if [[ $cmd == audit ]]; then
  key=$1 when=${2:-week-ago}
  case $key in
    identity | sudoers | sshd | keel | units | sudo-exec | modules | time-change) ;;
    *) fail 2 "no audit key '$key'; use one of: identity sudoers sshd keel units sudo-exec modules time-change" ;;
  esac
  case $when in
    recent | boot | today | yesterday | this-week | week-ago | this-month) ;;
    *) fail 2 "WHEN '$when' is not one of: recent boot today yesterday this-week week-ago this-month" ;;
  esac
  command -v ausearch >/dev/null || fail 1 "ausearch is missing: auditd is not installed (keel's first boot installs it)"
  # --input-logs: read the log files even though stdin is not a terminal (sudo over SSH).
  if err=$(ausearch --input-logs -i -k "$key" --start "$when" 2>&1 >&3); then
    exit 0
  elif [[ $err == *"<no matches>"* ]]; then
    echo "$PROG: no audit records with key $key since $when"
    exit 0
  fi
  fail 1 "ausearch failed: $err"
fi 3>&1
if [[ $cmd == verify-packages ]]; then
  command -v debsums >/dev/null || fail 1 "debsums is missing (keel's first boot installs it)"
  # -c: the changed files on stdout; warnings (a package without md5sums) go to stderr as they are.
  rc=0
  changed=$(debsums -c) || rc=$?
  if [[ -n $changed ]]; then
    printf '%s\n' "$changed" >&2
    fail 1 "the files above differ from their packages; find out who changed them: keel-ops audit (docs/RUNBOOK.md)"
  fi
  [[ $rc -eq 0 ]] || fail 1 "debsums failed (exit $rc; its messages above)"
  echo "$PROG: every installed package file matches its package"
  exit 0
fi

declare -A conf=()
[[ -r $CONFIG ]] || fail 3 "cannot read $CONFIG; keel writes it on pulumi up (the tools step)"
while IFS= read -r line || [[ -n $line ]]; do
  [[ $line =~ ^([a-z0-9_]+)=([A-Za-z0-9._/@-]*)$ ]] && conf[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
done <"$CONFIG"
for k in unit db app_user backup_user deploy_user backup_dir backup_keep backup_service tools_dir settle_seconds ops_lock; do
  [[ -n ${conf[$k]:-} ]] || fail 3 "$CONFIG has no $k; run pulumi up"
done
unit=${conf[unit]} db=${conf[db]} dir=${conf[backup_dir]} tools=${conf[tools_dir]}
name=${db##*/}
base=${name%.*}
deploy_home=$(getent passwd "${conf[deploy_user]}" | cut -d: -f6) || fail 3 "no user ${conf[deploy_user]}"

tool() { # the path of keel-<name>, which must be installed
  [[ -x $tools/keel-$1 ]] || fail 1 "$tools/keel-$1 is not installed; run pulumi up"
  printf '%s' "$tools/keel-$1"
}
show() { systemctl show --property="$1" --value -- "$unit"; }
# Runs a command as the engine's user (as_app) or the backup user (as_backup). The DB's directory
# is the engine's and the backups are the backup user's: root creates, copies and renames nothing
# there (their owner could swap a name for a link in between); keel's DB tools refuse to, and run
# as the directory's owner instead.
# Bounded: a user may signal (stop) its own processes, so a compromised engine could otherwise
# hold root's keel-ops forever; timeout runs as root and ends them (SIGKILL at last).
as_user() {
  local u=$1
  shift
  # fd 8 (the ops lock) stays here: a user's process that kept it could hold off the next keel-ops.
  timeout --kill-after=30 "${KEEL_OPS_TIMEOUT:-3600}" setpriv --reuid="$u" --regid="$u" --init-groups --no-new-privs -- "$@" 8>&-
}
as_app() { as_user "${conf[app_user]}" "$@"; }
as_backup() { as_user "${conf[backup_user]}" "$@"; }

# Final-named backups of the DB, oldest first (the names keel-db-backup gives them).
backups() {
  local f n
  for f in "$dir/$base"-*.db; do
    n=${f##*/}
    n=${n#"$base"-}
    [[ -f $f && ! -L $f && ${n%.db} =~ ^[0-9]{8}T[0-9]{6}Z$ ]] && printf '%s\n' "$f"
  done
  return 0
}

# The previous DBs keel-db-restore and keel-db-gate adopt keep beside the DB (with their -wal/-shm/-journal).
asides() {
  local f
  for f in "$db".pre-restore-* "$db".pre-adopt-*; do
    [[ $f =~ \.pre-(restore|adopt)-[0-9]{8}T[0-9]{6}Z(-wal|-shm|-journal)?$ && -f $f ]] && printf '%s\n' "$f"
  done
  # Backups set aside (keel-ops set-aside), scheduled and session ones.
  for f in "$dir/.set-aside-$base"-*.db ${conf[session_backup_dir]:+"${conf[session_backup_dir]}/.set-aside-$base"-*.db}; do
    [[ ${f##*/} =~ ^\.set-aside-$base-[0-9]{8}T[0-9]{6}Z\.db$ && -f $f && ! -L $f ]] && printf '%s\n' "$f"
  done
  return 0
}

# The operation lock (issue 17 #7): held exclusively from the engine's stop until the DB is in
# place; the engine's pre-session backup waits for it (shared), so no start slips in between.
# Released before every start of keel-ops' own, and by the exit.
ops_lock() {
  [[ ${conf[ops_lock]} == /run/keel/* ]] || fail 3 "$CONFIG: ops_lock must be a file in /run/keel"
  [[ -d /run/keel ]] || mkdir -m 0755 /run/keel
  [[ ${conf[ops_lock]} != *..* ]] || fail 3 "$CONFIG: ops_lock must not contain .."
  # root's alone (0600): a reader (the engine can read /run) could hold it and stall keel-ops.
  (umask 077 && : >>"${conf[ops_lock]}")
  exec 8>>"${conf[ops_lock]}"
  chmod 0600 -- "${conf[ops_lock]}"
  # A start's pre-session backup holds it (shared) for as long as it runs: up to keel:startTimeoutMinutes.
  flock -x -w 3600 8 || fail 1 "${conf[ops_lock]} stayed held for an hour: another keel-ops restore, adopt or recover, or a start of the engine still taking its pre-session backup; wait for it"
}
ops_unlock() { exec 8>&-; }

stop_engine() {
  if [[ $(show ActiveState) == active || $(show ActiveState) == activating ]]; then
    systemctl stop -- "$unit"
    echo "$PROG: stopped $unit"
  fi
}

# Starts the unit (out of a failed state too) and requires it to stay active, with the same main
# PID and no automatic restart, for settle_seconds.
start_engine() {
  local pid restarts
  ops_unlock
  [[ $(show ActiveState) != failed ]] || systemctl reset-failed -- "$unit"
  systemctl "${1:-start}" -- "$unit"
  pid=$(show MainPID)
  restarts=$(show NRestarts)
  sleep "${conf[settle_seconds]}"
  if [[ $(show ActiveState) == active && $(show MainPID) == "$pid" && $(show NRestarts) == "$restarts" && $pid != 0 ]]; then
    echo "$PROG: $unit active and steady (pid $pid)"
    return 0
  fi
  echo "$PROG: $unit did not stay up: $(show ActiveState)/$(show SubState), result $(show Result), exit status $(show ExecMainStatus); its journal:" >&2
  journalctl --unit="$unit" --lines=20 --no-pager --output=short-iso >&2 || true
  return 1
}

# The DB file's identity (device, inode, size, mtime) for telling whether a failed restore or
# adopt changed it: only then may keel-ops say the DB "is as it was".
db_identity() { stat -c '%d:%i:%s:%Y' -- "$db" 2>/dev/null || echo none; }
swap_marker() { printf '%s/.%s.swap\n' "$(dirname -- "$db")" "$name"; }

# after_failure WHAT EXIT-CODE IDENTITY-BEFORE: says what state the DB is in, then starts the engine
# only where that is safe, and exits 1.
after_failure() {
  if [[ -e $(swap_marker) ]]; then
    echo "$PROG: $1 failed (exit $2) while it swapped the DB; the engine stays stopped (its start gate refuses a half-swapped DB). Run: sudo keel-ops recover, then sudo keel-ops start" >&2
  elif [[ $(db_identity) == "$3" ]]; then
    echo "$PROG: $1 failed (exit $2); $db is as it was. Starting $unit again." >&2
    start_engine || true
  else
    echo "$PROG: $1 failed (exit $2) after $db was replaced; the previous DB is kept beside it (sudo keel-ops asides). The engine stays stopped: decide which DB you want (restore another backup, or put the aside back), then sudo keel-ops start." >&2
  fi
  exit 1
}

case $cmd in
  prune)
    n=${1:-${conf[backup_keep]}}
    [[ $n =~ ^[1-9][0-9]{0,3}$ ]] || fail 2 "N must be a whole number from 1, not '$n'"
    for d in "$dir" ${conf[session_backup_dir]:+"${conf[session_backup_dir]}"}; do
      [[ -d $d ]] || continue
      as_backup "$(tool db-backup)" --prune-only --keep "$n" "$db" "$d" || fail 1 "pruning $d failed (reason above)"
    done
    echo "$PROG: set keel:backupRetention to $n too (pulumi config set keel:backupRetention $n; pulumi up), or the next backups keep ${conf[backup_keep]} again"
    ;;
  recover)
    ops_lock
    as_app "$(tool db-gate)" recover "$db" >/dev/null || fail 1 "the recovery failed (reason above)"
    echo "$PROG: $db is consistent (nothing was half-swapped, or the interrupted swap is finished or rolled back); start the engine: sudo keel-ops start"
    ;;
  backups)
    backups | while IFS= read -r f; do printf '%s\t%s\n' "${f##*/}" "$(stat -c %s -- "$f")"; done
    ;;
  backup)
    # The timer's service: the same user, sandbox and retention as every scheduled backup. A oneshot:
    # systemctl returns when it finished, non-zero when it failed (its reason is in its journal).
    service=${conf[backup_service]}
    if ! systemctl start -- "$service"; then
      echo "$PROG: the backup failed; its reason:" >&2
      journalctl --unit="$service" --lines=5 --no-pager --output=cat >&2 || true
      exit 1
    fi
    newest=$(backups | tail -n 1)
    [[ -n $newest ]] || fail 1 "$service succeeded but $dir holds no backup of $db"
    printf '%s\n' "$newest"
    ;;
  restore)
    want=$1
    if [[ $want == latest ]]; then
      want=$(backups | tail -n 1)
      [[ -n $want ]] || fail 3 "no backup of $db in $dir"
      want=${want##*/}
    fi
    [[ $want =~ ^$base-[0-9]{8}T[0-9]{6}Z\.db$ && -f $dir/$want && ! -L $dir/$want ]] ||
      fail 3 "no backup named '$want' in $dir; list them with: sudo keel-ops backups"
    # Verify while the engine still runs: a bad backup costs no downtime.
    as_app "$(tool db-gate)" verify "$dir/$want" >/dev/null || fail 1 "$want fails the integrity gate; pick an older one (sudo keel-ops backups)"
    ops_lock
    stop_engine
    rc=0
    before=$(db_identity)
    as_app "$(tool db-restore)" "$dir/$want" "$db" >/dev/null || rc=$?
    if [[ $rc -ne 0 ]]; then
      after_failure "the restore" "$rc" "$before"
    fi
    echo "$PROG: restored $want into $db (the previous DB is kept beside it as ${name}.pre-restore-*)"
    start_engine
    ;;
  set-aside)
    want=$1
    # A scheduled backup, or else a session backup of that name (health names both).
    in=$dir
    [[ -e $dir/$want || -z ${conf[session_backup_dir]:-} ]] || in=${conf[session_backup_dir]}
    [[ $want =~ ^$base-[0-9]{8}T[0-9]{6}Z\.db$ && -f $in/$want && ! -L $in/$want ]] ||
      fail 3 "no backup named '$want' in $dir${conf[session_backup_dir]:+ or ${conf[session_backup_dir]}}; list them with: sudo keel-ops backups"
    # The backup directories are the backup user's: the rename is that user's, never root's.
    as_backup mv -n -T -- "$in/$want" "$in/.set-aside-$want" || fail 1 "could not rename $want (reason above)"
    [[ ! -e $in/$want ]] || fail 1 "$in/.set-aside-$want already exists; $want stays where it is"
    echo "$PROG: set $want aside as $in/.set-aside-$want: no longer listed, restored or pruned; remove it once you know why it changed"
    ;;
  snapshot)
    out_dir=$deploy_home/keel-snapshots
    install -d -m 0700 -o "${conf[deploy_user]}" -g "${conf[deploy_user]}" -- "$out_dir"
    out=$out_dir/$base-snapshot-$(date -u +%Y%m%dT%H%M%SZ).db
    "$(tool db-snapshot)" --owner "${conf[deploy_user]}:${conf[deploy_user]}" "$db" "$out" >/dev/null
    printf '%s\n' "$out"
    ;;
  adopt)
    incoming=$deploy_home/keel-incoming
    src=$(realpath -e -- "$1" 2>/dev/null) || fail 3 "no such file: $1"
    [[ $src == "$incoming"/* && ! -L $1 && -f $src ]] ||
      fail 3 "$1: adopt takes a file uploaded into $incoming/ (scripts/runbook/migrate.sh puts it there)"
    "$(tool db-gate)" verify "$src" >/dev/null || fail 1 "$src fails the integrity gate: it is not carried forward (seed 000 §4); nothing changed"
    ops_lock
    stop_engine
    # adopt runs as the DB's owner, like every backup: the verified backup it takes of the current
    # DB, its lock and status file then belong to the engine's user as the timer's do. So it gets
    # its own copy of the upload beside the DB (the upload is in the deploy user's home, which the
    # engine's user cannot read): root reads the upload, the engine's user writes the copy.
    copy=$(as_app mktemp "$(dirname -- "$db")/.keel-ops-adopt.XXXXXX") || fail 1 "cannot create a file beside $db as ${conf[app_user]}"
    as_app dd of="$copy" bs=1M conv=fsync status=none <"$src" || { rm -f -- "$copy"; fail 1 "cannot copy $src beside $db (disk full?); nothing changed"; }
    replace=()
    rc=0
    before=$(db_identity)
    if [[ -e $db ]]; then
      # A verified backup of the current DB first, the way every backup is taken: read as the
      # engine's user, stored by the backup user (keel-db-backup --as), with the configured retention.
      timeout --kill-after=30 "${KEEL_OPS_TIMEOUT:-3600}" "$(tool db-backup)" --as "${conf[app_user]}:${conf[backup_user]}" \
        --keep "${conf[backup_keep]}" "$db" "$dir" >/dev/null 8>&- || rc=$?
      if [[ $rc -ne 0 ]]; then
        rm -f -- "$copy"
        after_failure "the backup of the current DB before adopt" "$rc" "$before"
      fi
      replace=(--replace --backup-taken)
    fi
    as_app "$(tool db-gate)" adopt ${replace[@]+"${replace[@]}"} "$copy" "$db" >/dev/null || rc=$?
    rm -f -- "$copy"
    if [[ $rc -ne 0 ]]; then
      after_failure "adopt" "$rc" "$before"
    fi
    rm -f -- "$src"
    echo "$PROG: adopted $1 as $db (a verified backup of the previous DB is in $dir)"
    start_engine
    ;;
  asides)
    asides | while IFS= read -r f; do printf '%s\t%s\n' "$f" "$(stat -c %s -- "$f")"; done
    ;;
  remove-asides)
    n=0
    while IFS= read -r f; do
      # Backups set aside stay: they may be the evidence of what changed them (listed, not removed).
      [[ ${f%/*} != "$dir" && ${f%/*} != "${conf[session_backup_dir]:-}" ]] || continue
      rm -f -- "$f"
      n=$((n + 1))
    done < <(asides)
    echo "$PROG: removed $n file(s) kept aside by restore or adopt"
    ;;
  stop)
    stop_engine
    echo "$PROG: $unit is $(show ActiveState)"
    ;;
  start)
    start_engine
    ;;
  restart)
    start_engine restart
    ;;
esac
