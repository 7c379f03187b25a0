#!/usr/bin/env bash
# keel-health: is the engine's host healthy? Seed 000 §9 (journald, disk, backups, "engine running
# / not running") plus the checks a 3 a.m. operator wants next to them. Installed as
# /usr/local/sbin/keel-health; runs as root (the deploy user: `sudo keel-health`; the timer:
# keel-health.service). Reads /etc/keel/host.conf (written by keel from the stack config, see
# plan/health.ts), or the file named by $KEEL_HOST_CONF.
#
# Usage: keel-health [--json] [--only CHECK[,CHECK…]] [--record]
#
# Checks (docs/RUNBOOK.md "Status: the health report" says what each means and what to do):
#   engine    the unit: active, automatic restarts, last exit status and what it means
#   db        PRAGMA quick_check on a read-only connection, as the DB's owner
#   backup    the newest verified backup (age) and the last backup run (result, reason)
#   disk      use of the filesystems holding the DB, the backups and the journal
#   time      NTP synchronized (timedatectl)
#   updates   pending security updates (apt-get simulation on the cached lists; no network)
#   fail2ban  the sshd jail: running, current and total bans
#   drift     files keel placed that were changed or removed by hand (keel-place --drift)
#   timer     keel-health.timer active (periodic checks and alerts)
# Each check is ok, degraded, down, or unknown (it could not run: counted as degraded, never as
# ok). The host is as bad as its worst check.
#
# --json    one JSON object on stdout instead of the text report (docs/RUNBOOK.md "JSON")
# --only    run only these checks (the exit code is theirs)
# --record  (keel-health.service) also write the state file and, on a change of overall status,
#           POST a small JSON to the alert webhook if one is configured (keel-health-alert). A
#           failed POST is logged and retried on the next run; it does not change the exit code.
#
# Exit: 0 healthy, 1 degraded, 2 down, 3 could not run at all (usage, unreadable config).
set -euo pipefail
shopt -s nullglob

PROG=keel-health
CONFIG=${KEEL_HOST_CONF:-/etc/keel/host.conf}
ALL_CHECKS=(engine db backup disk time updates fail2ban drift timer)
SEP=$'\x1f'
# How long a backup found too slow to hash is not read again (check_backup): 6 h.
TOO_SLOW_RETRY_SECONDS=21600

usage() {
  echo "usage: $PROG [--json] [--only CHECK[,CHECK…]] [--record]   (checks: ${ALL_CHECKS[*]})" >&2
  exit 3
}
die() {
  echo "$PROG: $*" >&2
  exit 3
}

json=0 record=0 only=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --json) json=1 ;;
    --record) record=1 ;;
    --only)
      [[ $# -ge 2 ]] || usage
      only=$2
      shift
      ;;
    -h | --help) usage ;;
    *) usage ;;
  esac
  shift
done
checks=("${ALL_CHECKS[@]}")
if [[ -n $only ]]; then
  IFS=, read -r -a checks <<<"$only"
  for c in "${checks[@]}"; do
    [[ " ${ALL_CHECKS[*]} " == *" $c "* ]] || die "unknown check '$c' (known: ${ALL_CHECKS[*]})"
  done
fi

# --- config: key=value lines, never sourced --------------------------------------------------
PATH_KEYS=(db backup_dir session_backup_dir journal_dir state_file manifest tools_dir webhook_file)
INT_KEYS=(backup_keep backup_max_age_hours disk_warn_percent disk_crit_percent engine_gate_status
  security_grace_hours db_check_timeout_seconds settle_seconds)
NAME_KEYS=(app unit app_user backup_user deploy_user fail2ban_jail health_timer)
declare -A conf=()
[[ -r $CONFIG ]] || die "cannot read the config $CONFIG; keel writes it on pulumi up (the tools step)"
lineno=0
while IFS= read -r line || [[ -n $line ]]; do
  lineno=$((lineno + 1))
  [[ $line =~ ^[[:space:]]*(#|$) ]] && continue
  [[ $line =~ ^([a-z0-9_]+)=(.*)$ ]] || die "$CONFIG:$lineno: expected key=value"
  conf[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
done <"$CONFIG"
for k in "${PATH_KEYS[@]}"; do
  [[ ${conf[$k]:-} =~ ^/[A-Za-z0-9._/-]*$ ]] || die "$CONFIG: $k must be an absolute path, found '${conf[$k]:-}'"
done
for k in "${INT_KEYS[@]}"; do
  [[ ${conf[$k]:-} =~ ^[0-9]+$ ]] || die "$CONFIG: $k must be a whole number, found '${conf[$k]:-}'"
done
for k in "${NAME_KEYS[@]}"; do
  [[ ${conf[$k]:-} =~ ^[A-Za-z0-9_.@-]+$ ]] || die "$CONFIG: $k must be a name, found '${conf[$k]:-}'"
done

NOW=$(date -u +%s)
HOST=$(uname -n)
iso() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ; }

# --- state: what the last --record run saw (key=value) ------------------------------------------
declare -A state=()
if [[ -r ${conf[state_file]} ]]; then
  while IFS= read -r line || [[ -n $line ]]; do
    [[ $line =~ ^([a-z0-9_]+)=(.*)$ ]] && state[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
  done <"${conf[state_file]}"
fi

# --- JSON helpers ------------------------------------------------------------------------------
js() { # a JSON string
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\t'/\\t}
  s=${s//[[:cntrl:]]/?}
  printf '"%s"' "$s"
}
jint() { if [[ ${1:-} =~ ^[0-9]+$ ]]; then printf '%d' "$((10#$1))"; else printf null; fi; }
jstr_or_null() { if [[ -n ${1:-} ]]; then js "$1"; else printf null; fi; }
jobj() { # jobj KEY JSON-VALUE ... -> {"KEY":VALUE,...}
  local out="{" sep=""
  while [[ $# -ge 2 ]]; do
    out+="$sep$(js "$1"):$2"
    sep=","
    shift 2
  done
  printf '%s}' "$out"
}
jarr() { # jarr JSON-VALUE ... -> [VALUE,...]
  local out="[" sep="" v
  for v in "$@"; do
    out+="$sep$v"
    sep=","
  done
  printf '%s]' "$out"
}
jstrs() { # jstrs STRING ... -> ["STRING",...]
  local a=() v
  for v in "$@"; do a+=("$(js "$v")"); done
  jarr ${a[@]+"${a[@]}"}
}

# A check prints one record: STATUS SEP SUMMARY SEP WHAT-TO-DO SEP DETAILS-JSON.
result() {
  local details=${4:-}
  [[ -n $details ]] || details="{}"
  printf '%s%s%s%s%s%s%s' "$1" "$SEP" "$2" "$SEP" "$3" "$SEP" "$details"
}

human_bytes() { numfmt --to=iec-i --suffix=B "${1:-0}" 2>/dev/null || printf '%s bytes' "${1:-0}"; }
hours() { awk -v s="$1" 'BEGIN { printf "%.1f", s / 3600 }'; }

# --- engine ------------------------------------------------------------------------------------
# What an exit status of the engine means (docs/ENGINE.md "The startup gate").
exit_meaning() { # CODE STATUS: CODE is systemd's ExecMainCode (1 exited, 2 killed, 3 dumped)
  local code=$1 status=$2 name=""
  case $code in
    1)
      name=$(systemd-analyze exit-status "$status" 2>/dev/null | awk 'NR == 2 { print $1 }') || name=""
      if [[ $status == "${conf[engine_gate_status]}" ]]; then
        printf 'status=%s/%s: the startup gate failed; the engine refused to start and says why in its journal' "$status" "${name:-CONFIG}"
      elif [[ $status == 0 ]]; then
        printf 'status=0/SUCCESS: the engine exited cleanly (it was stopped, or ended by itself)'
      elif ((status >= 200 && status < 256)); then
        printf 'status=%s/%s: systemd could not set up the process (%s)' "$status" "${name:-?}" "${name:-see systemctl status}"
      else
        printf 'status=%s%s: the engine failed (a crash or an error it reported)' "$status" "${name:+/$name}"
      fi
      ;;
    2) printf 'signal=SIG%s: the engine was killed' "$(kill -l "$status" 2>/dev/null || echo "$status")" ;;
    3) printf 'signal=SIG%s: the engine crashed and dumped core' "$(kill -l "$status" 2>/dev/null || echo "$status")" ;;
    *) printf 'no exit recorded' ;;
  esac
}

check_engine() {
  local unit=${conf[unit]} out line status summary todo="" last=null meaning=""
  declare -A p=()
  if ! out=$(systemctl show "$unit" -p LoadState -p ActiveState -p SubState -p UnitFileState -p NRestarts \
    -p MainPID -p ExecMainCode -p ExecMainStatus -p Result -p StateChangeTimestamp 2>&1); then
    result unknown "systemctl show $unit failed: ${out//$'\n'/ }" "check that systemd is running: systemctl is-system-running"
    return
  fi
  while IFS= read -r line; do p[${line%%=*}]=${line#*=}; done <<<"$out"
  if [[ ${p[ExecMainCode]:-0} != 0 ]]; then
    meaning=$(exit_meaning "${p[ExecMainCode]}" "${p[ExecMainStatus]:-0}")
    last=$(jobj code "$(jint "${p[ExecMainCode]}")" status "$(jint "${p[ExecMainStatus]}")" meaning "$(js "$meaning")")
  fi
  local details
  details=$(jobj unit "$(js "$unit")" load_state "$(js "${p[LoadState]:-}")" active_state "$(js "${p[ActiveState]:-}")" \
    sub_state "$(js "${p[SubState]:-}")" unit_file_state "$(js "${p[UnitFileState]:-}")" main_pid "$(jint "${p[MainPID]:-}")" \
    n_restarts "$(jint "${p[NRestarts]:-}")" result "$(js "${p[Result]:-}")" since "$(jstr_or_null "${p[StateChangeTimestamp]:-}")" \
    last_exit "$last")
  local journal="journalctl -u $unit -n 50"
  if [[ ${p[LoadState]:-} != loaded ]]; then
    result down "$unit is not installed (LoadState=${p[LoadState]:-?})" "run pulumi up: the engine-unit step installs it" "$details"
    return
  fi
  case ${p[ActiveState]:-} in
    active)
      status=ok
      summary="$unit active (${p[SubState]:-?}) since ${p[StateChangeTimestamp]:-?}, pid ${p[MainPID]:-?}, ${p[NRestarts]:-?} automatic restart(s)"
      if [[ ${p[UnitFileState]:-} != enabled ]]; then
        status=degraded
        summary+="; not enabled (${p[UnitFileState]:-?}): it will not start after a reboot"
        todo="run pulumi up (the engine-start step enables it)"
      fi
      ;;
    activating)
      status=degraded
      summary="$unit is restarting (${p[SubState]:-?}) after ${p[NRestarts]:-?} automatic restart(s)${meaning:+; last exit $meaning}"
      todo="read $journal; it comes back by itself or stops at the start limit (then: docs/RUNBOOK.md \"Engine not active\")"
      ;;
    failed | inactive)
      status=down
      summary="$unit is ${p[ActiveState]} (result ${p[Result]:-?})${meaning:+; last exit $meaning}"
      [[ ${p[Result]:-} != start-limit-hit ]] || summary+="; it crashed too often and systemd stopped restarting it"
      todo="read $journal, fix the cause, then scripts/runbook/engine.sh restart (docs/RUNBOOK.md \"Engine not active\")"
      ;;
    *)
      status=degraded
      summary="$unit is ${p[ActiveState]:-?} (${p[SubState]:-?})"
      todo="run keel-health again in a minute; if it stays, read $journal"
      ;;
  esac
  result "$status" "$summary" "$todo" "$details"
}

# --- db ----------------------------------------------------------------------------------------
# Runs argv as the owner of FILE (root runs it with the owner's uid and gid; others run it as is),
# so that SQLite creates any -wal/-shm as the engine would.
as_owner_of() {
  local file=$1 uid gid
  shift
  uid=$(stat -c %u -- "$file")
  gid=$(stat -c %g -- "$file")
  if [[ $EUID -eq 0 && $uid -ne 0 ]]; then
    setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$@"
  else
    "$@"
  fi
}

check_db() {
  local db=${conf[db]} size wal=0 out rc t0 secs details
  if [[ ! -e $db ]]; then
    result down "no DB at $db" "has the engine ever started? docs/RUNBOOK.md \"DB integrity\"" "$(jobj path "$(js "$db")")"
    return
  fi
  if ! command -v sqlite3 >/dev/null; then
    result unknown "sqlite3 is not installed: the DB cannot be checked" "apt-get install sqlite3" "$(jobj path "$(js "$db")")"
    return
  fi
  size=$(stat -c %s -- "$db")
  [[ ! -e $db-wal ]] || wal=$(stat -c %s -- "$db-wal")
  t0=$(date +%s)
  # mode=ro: this connection never writes the DB. quick_check skips index-vs-table cross checks:
  # O(N), cheap enough for every run; the full integrity_check is the gate's (keel-db-gate verify).
  out=$(as_owner_of "$db" timeout "${conf[db_check_timeout_seconds]}" \
    sqlite3 -readonly -bail -cmd ".timeout 10000" "file:$db?mode=ro" "PRAGMA quick_check;" 2>&1) && rc=0 || rc=$?
  secs=$(($(date +%s) - t0))
  local first
  first=$(head -n 5 <<<"$out")
  # The previous DBs a restore or adopt kept beside it (keel-ops asides): full copies on the DB's disk.
  local f asides=() aside_bytes=0 note="" todo=""
  for f in "$db".pre-restore-* "$db".pre-adopt-*; do
    if [[ $f =~ \.pre-(restore|adopt)-[0-9]{8}T[0-9]{6}Z(-wal|-shm|-journal)?$ && -f $f && ! -L $f ]]; then
      asides+=("$f")
      aside_bytes=$((aside_bytes + $(stat -c %s -- "$f" 2>/dev/null || echo 0)))
    fi
  done
  if ((${#asides[@]})); then
    note="; ${#asides[@]} file(s) of previous DBs kept aside by a restore or adopt ($(human_bytes "$aside_bytes"))"
    todo="once this DB has proven itself: sudo keel-ops remove-asides (sudo keel-ops asides lists them)"
  fi
  details=$(jobj path "$(js "$db")" size_bytes "$(jint "$size")" wal_bytes "$(jint "$wal")" \
    quick_check "$(js "$first")" seconds "$(jint "$secs")" asides "$(jstrs ${asides[@]+"${asides[@]}"})" aside_bytes "$(jint "$aside_bytes")")
  if [[ $rc -eq 0 && $out == ok ]]; then
    result ok "quick_check ok on $db ($(human_bytes "$size"), -wal $(human_bytes "$wal"), ${secs}s)$note" "$todo" "$details"
  elif [[ $rc -eq 124 ]]; then
    result unknown "quick_check on $db did not finish within ${conf[db_check_timeout_seconds]}s" \
      "run it by hand: sudo keel-health --only db; a slow disk or a huge DB" "$details"
  elif [[ $out =~ (locked|busy|unable\ to\ open|readonly|permission\ denied|out\ of\ memory) && ! $out =~ (malformed|not\ a\ database) ]]; then
    result unknown "quick_check on $db could not run: ${first//$'\n'/ }" "run it again; if it persists, read docs/RUNBOOK.md \"DB integrity\"" "$details"
  else
    result down "quick_check on $db failed: ${first//$'\n'/ }" \
      "stop the engine and restore the newest clean backup: docs/RUNBOOK.md \"DB integrity\"" "$details"
  fi
}

# --- backup ------------------------------------------------------------------------------------
# 20261122T031700Z -> seconds since the epoch, by arithmetic: no date(1) parser, whose accepted forms
# differ between GNU and Rust coreutils. The twin of db-lib.sh's keel_stamp_epoch.
stamp_epoch() {
  local t=$1 y m d era yoe doy
  [[ $t =~ ^([0-9]{4})([0-9]{2})([0-9]{2})T([0-9]{2})([0-9]{2})([0-9]{2})Z$ ]] || return 1
  y=$((10#${BASH_REMATCH[1]})) m=$((10#${BASH_REMATCH[2]})) d=$((10#${BASH_REMATCH[3]}))
  # A field out of its range (month 13, hour 24) is refused.
  ((y >= 1 && m >= 1 && m <= 12 && d >= 1 && d <= 31 && 10#${BASH_REMATCH[4]} < 24 && 10#${BASH_REMATCH[5]} < 60 && 10#${BASH_REMATCH[6]} < 60)) || return 1
  ((m > 2)) || y=$((y - 1))
  era=$((y / 400)) yoe=$((y % 400)) doy=$(((153 * ((m + 9) % 12) + 2) / 5 + d - 1))
  echo $(((era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468) * 86400 + 10#${BASH_REMATCH[4]} * 3600 + 10#${BASH_REMATCH[5]} * 60 + 10#${BASH_REMATCH[6]}))
}

# The sha256 of a backup, as root, read through a descriptor opened without following a link or
# blocking on a pipe; a regular file without holes only (keel-db-backup writes every byte; a hole
# is a planted file of any length that costs no disk; SEEK_HOLE, not the block count, which a
# compressing filesystem makes small), read up to its size, within 300 s (keel-health.service's
# TimeoutStartSec is 600). Exit 124 when the 300 s ran out, another non-zero status otherwise.
hash_backup() {
  timeout 300 python3 -c '
import hashlib, os, stat, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
st = os.fstat(fd)
if not stat.S_ISREG(st.st_mode) or (st.st_size > 0 and os.lseek(fd, 0, os.SEEK_HOLE) < st.st_size):
    sys.exit(2)
os.lseek(fd, 0, os.SEEK_SET)
h, left = hashlib.sha256(), st.st_size
while left > 0:
    b = os.read(fd, min(1 << 20, left))
    if not b:
        break
    h.update(b)
    left -= len(b)
print(h.hexdigest())
' "$1" 2>/dev/null
}

# is_backup_name BASE NAME: NAME as keel-db-backup names a backup of a DB named BASE.*
# (keel-db-lib's keel_is_backup_name; that library's traps keep it out of this script).
is_backup_name() {
  local n=${2#"$1"-}
  [[ $2 == "$1-$n" && $n =~ ^[0-9]{8}T[0-9]{6}Z\.db$ ]]
}

check_backup() {
  local dir=${conf[backup_dir]} db=${conf[db]} name base status_file max=$((conf[backup_max_age_hours] * 3600))
  name=${db##*/}
  base=${name%.*}
  status_file=$dir/$base.status.json
  local backups=() f n
  # The backup tree is the backup user's, closed to writes by anyone else, and so is everything in
  # it (docs/DATABASE.md "The backup identity"): otherwise the engine's user, or another, could
  # delete, rewrite or forge backups. Checked first: nothing read from the tree counts until then.
  local d open_tree="" st others
  for d in "$dir" "${conf[session_backup_dir]}"; do
    st=$(stat -c '%U %a %F' -- "$d" 2>/dev/null) || continue
    if [[ -L $d || ${st%% *} != "${conf[backup_user]}" || $st != *" directory" ]] || ((8#$(cut -d' ' -f2 <<<"$st") & 8#022)); then
      open_tree+="${open_tree:+, }$d (${st% directory})"
      continue
    fi
    # Entries of another user (a link or file an older keel's engine left), or a file with a second
    # name (a hard link the engine may still write through). find -P follows no link.
    others=$(timeout 20 find -P "$d" -mindepth 1 -maxdepth 1 \( ! -user "${conf[backup_user]}" -o \( ! -type d -links +1 \) \) -printf '%f ' 2>/dev/null | head -c 400) || others="(cannot list it)"
    [[ -z $others ]] || open_tree+="${open_tree:+, }$d holds ${others% } (another user's, or a second name of a file)"
  done
  if [[ -n $open_tree ]]; then
    result degraded "the backup tree is not the backup user's alone: $open_tree; the engine's user could delete, rewrite or forge backups" \
      "run pulumi up: keel gives the directories to ${conf[backup_user]} (2750) and hands its files over; set aside or remove what it leaves (named on the step's stderr); then find out who changed it: sudo keel-ops audit keel" \
      "$(jobj dir "$(js "$dir")")"
    return
  fi
  # What the backup directory holds is read as hostile (issue 11): its writer may be compromised.
  # Regular files only (no link, no pipe), named as keel-db-backup names them.
  for f in "$dir/$base"-*.db; do
    [[ -f $f && ! -L $f ]] && is_backup_name "$base" "${f##*/}" && backups+=("$f")
  done
  # A path the status names: one of this directory's backups, or nothing keel wrote.
  in_backup_dir() { [[ ${1%/*} == "$dir" ]] && is_backup_name "$base" "${1##*/}"; }
  local newest=null newest_file="" newest_size=0 newest_head="" age="" last=null run_result="" run_time="" run_reason="" run_file="" run_size=""
  local run_sha="" run_identity="" kept_file="" kept_result="" kept_reason="" sha_now="" sha_id="" sha_seen="" kept_failed=() rewritten=0
  local too_slow=""
  local sessions=${conf[session_backup_dir]} session_failed=()
  if [[ ${#backups[@]} -gt 0 ]]; then
    newest_file=${backups[-1]}
    n=${newest_file##*/}
    n=${n#"$base"-}
    local at
    at=$(stamp_epoch "${n%.db}")
    age=$((NOW - at))
    newest_size=$(stat -c %s -- "$newest_file" 2>/dev/null) || newest_size=0
    newest_head=$(timeout 10 head -c 15 -- "$newest_file" 2>/dev/null | tr -dc 'A-Za-z0-9 ') || newest_head=""
    newest=$(jobj file "$(js "$newest_file")" time "$(js "$(iso "$at")")" age_seconds "$(jint "$age")" \
      size_bytes "$(jint "$newest_size")")
  fi
  if [[ -e $status_file || -L $status_file ]]; then
    local fields=()
    # The status file is one line of JSON written by keel-db-backup (docs/DATABASE.md). Opened
    # without following a link and without blocking (a named pipe there must not hang the check),
    # a regular file of at most 64 KiB, under a timeout.
    if ! mapfile -d '' -t fields < <(timeout 20 python3 -c '
import json, os, stat, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
if not stat.S_ISREG(os.fstat(fd).st_mode):
    sys.exit("not a regular file")
d = json.loads(os.read(fd, 65536).decode("utf-8", "replace"))
if not isinstance(d, dict) or d.get("result") not in ("ok", "failed"):
    sys.exit("not a backup status")
kept = d.get("kept_check") if isinstance(d.get("kept_check"), dict) else {}
failed = d.get("kept_failed") if isinstance(d.get("kept_failed"), list) else []
also = d.get("also_failed") if isinstance(d.get("also_failed"), list) else []
for v in [d.get(k) for k in ("result", "time", "finished", "exit_code", "reason", "keep", "count", "file", "size", "sha256", "identity")] + \
        [kept.get(k) for k in ("file", "result", "reason")] + [" ".join(str(n) for n in failed), " ".join(str(n) for n in also)]:
    sys.stdout.write(("" if v is None else str(v).replace("\0", "")) + "\0")
' "$status_file" 2>/dev/null) || [[ ${#fields[@]} -ne 16 ]]; then
      result unknown "cannot read the backup status $status_file" "look at it: sudo cat $status_file; the next backup run rewrites it" \
        "$(jobj dir "$(js "$dir")" status_file "$(js "$status_file")")"
      return
    fi
    run_result=${fields[0]} run_time=${fields[1]} run_reason=${fields[4]} run_file=${fields[7]} run_size=${fields[8]}
    run_sha=${fields[9]} run_identity=${fields[10]} kept_file=${fields[11]} kept_result=${fields[12]} kept_reason=${fields[13]}
    # The backups that failed a check and are still here under their name (set aside: gone).
    local failed_names=()
    read -ra failed_names <<<"${fields[14]}"
    for n in ${failed_names[@]+"${failed_names[@]}"}; do
      is_backup_name "$base" "$n" && [[ -f $dir/$n && ! -L $dir/$n ]] && kept_failed+=("$n")
    done
    # The session backups the scheduled run checked in turn (--also-check) and found changed.
    read -ra failed_names <<<"${fields[15]}"
    for n in ${failed_names[@]+"${failed_names[@]}"}; do
      is_backup_name "$base" "$n" && [[ -f $sessions/$n && ! -L $sessions/$n ]] && session_failed+=("$n")
    done
    # The files it names are this directory's backups, or the status is not keel's: the check
    # stats and hashes them as root, and must not report on any other file of the host.
    if { [[ -n $run_file ]] && ! in_backup_dir "$run_file"; } || { [[ -n $kept_file ]] && ! in_backup_dir "$kept_file"; } ||
      [[ -n $run_sha && ! $run_sha =~ ^[0-9a-f]{64}$ ]] || [[ ${fields[0]} == ok && -z $run_sha ]]; then
      result unknown "cannot read the backup status $status_file" "look at it: sudo cat $status_file; the next backup run rewrites it" \
        "$(jobj dir "$(js "$dir")" status_file "$(js "$status_file")")"
      return
    fi
    last=$(jobj result "$(js "${fields[0]}")" time "$(js "${fields[1]}")" finished "$(js "${fields[2]}")" \
      exit_code "$(jint "${fields[3]}")" reason "$(js "${fields[4]}")" keep "$(jint "${fields[5]}")" count "$(jint "${fields[6]}")")
  fi
  local run_now_size=""
  if [[ $run_result == ok && -n $run_file ]]; then
    if [[ -f $run_file && ! -L $run_file ]]; then run_now_size=$(stat -c %s -- "$run_file" 2>/dev/null) || run_now_size=""; fi
  fi
  # What the last run's file holds now, against the sha256 it recorded. Hashing a large DB at every
  # run would cost minutes of disk reads: a hash stays valid while the file's inode, size and ctime
  # do (only root can set a ctime back), as the last recorded run saw them. The state (backup_sha:
  # file|inode|size|ctime|sha256 now|sha256 first seen|how; it leaves this subshell in the details
  # as sha_checked) also keeps the first sha256 this check saw for the file: a status rewritten later
  # to match a changed file does not make it right. A file too large to hash in 300 s (some 70 GB at
  # a VPS disk's read rate) is taken as its run recorded it (how: identity) while its inode, size
  # and ctime are still those the run recorded in the status after it wrote it; the scheduled runs'
  # check of the kept backups reads it whole in turn (one older backup per run). One found too slow
  # without that identity (how: too_slow, with the time it was found so) is not read again while its
  # own inode, size and ctime hold, for TOO_SLOW_RETRY_SECONDS: a timeout that a busy disk caused
  # clears itself then.
  if [[ $run_result == ok && -n $run_sha && -n $run_now_size && $run_now_size == "$run_size" ]]; then
    sha_id="$run_file|$(TZ=UTC stat -c '%i|%s|%z' -- "$run_file" 2>/dev/null)"
    local w_file w_ino w_size w_ctime w_now w_first w_how content first how=hash rc=0
    IFS='|' read -r w_file w_ino w_size w_ctime w_now w_first w_how <<<"${state[backup_sha]:-}"
    [[ -n $w_first ]] || w_first=$w_now
    local same_file=0
    [[ "$w_file|$w_ino|$w_size|$w_ctime" != "$sha_id" ]] || same_file=1
    if ((same_file)) && [[ $w_now =~ ^[0-9a-f]{64}$ ]]; then
      content=$w_now
      [[ $w_how != identity ]] || how=identity
    else
      # A file this check already found too slow to hash, and unchanged since, is not read again
      # (300 s of disk reads at every run): the outcome below is decided without reading it.
      local slow_since=$NOW
      if ((same_file)) && [[ $w_how == too_slow && $w_now =~ ^[0-9]+$ ]] && ((NOW - w_now < TOO_SLOW_RETRY_SECONDS)); then
        rc=124 slow_since=$w_now
      else
        content=$(hash_backup "$run_file") || rc=$?
      fi
      if ((rc == 124)) && [[ -n $run_identity && "$run_file|$run_identity" == "$sha_id" ]]; then
        content=$run_sha how=identity
      elif ((rc == 124)); then
        content=unreadable how=too_slow too_slow="its inode, size or ctime is not what the run recorded"
        [[ -n $run_identity ]] || too_slow="its run (an older keel) recorded no inode, size and ctime to go by"
      elif ((rc != 0)); then
        content=unreadable
      fi
    fi
    first=$content
    [[ $w_file != "$run_file" || ! $w_first =~ ^[0-9a-f]{64}$ ]] || first=$w_first
    sha_now=$content
    if [[ $content == "$run_sha" && $first != "$run_sha" ]]; then sha_now=$first rewritten=1; fi
    if [[ $content != unreadable ]]; then
      sha_seen="$sha_id|$content|$first|$how"
    elif [[ $how == too_slow ]]; then
      sha_seen="$sha_id|$slow_since|$first|too_slow"
    fi
  fi
  local details
  details=$(jobj dir "$(js "$dir")" status_file "$(js "$status_file")" max_age_hours "$(jint "${conf[backup_max_age_hours]}")" \
    count "$(jint "${#backups[@]}")" newest "$newest" last_run "$last" sha_checked "$(jstr_or_null "$sha_seen")")
  local todo_now="take one now (scripts/runbook/backup-now.sh) and read why the timer did not: docs/RUNBOOK.md \"Backups\""
  if [[ $run_result == failed ]]; then
    result degraded "the last backup run ($run_time) failed: $run_reason" \
      "fix what it says, then scripts/runbook/backup-now.sh (docs/RUNBOOK.md \"Backups\")" "$details"
  elif [[ $run_result == ok && -n $run_file && $run_now_size != "$run_size" ]]; then
    local now_is="gone"
    [[ -z $run_now_size ]] || now_is="now $run_now_size bytes"
    result degraded "the last backup run ($run_time) wrote $run_file ($run_size bytes), which is $now_is" \
      "find out who removed or changed it (sudo keel-ops audit keel); take a new one: scripts/runbook/backup-now.sh (docs/RUNBOOK.md \"Backups\")" "$details"
  elif [[ -n $too_slow ]]; then
    result degraded "the last backup run ($run_time) wrote $run_file: it cannot be hashed within 300 s, and $too_slow, so this check cannot tell it is unchanged" \
      "take a new backup, which records them: scripts/runbook/backup-now.sh (docs/RUNBOOK.md \"Backups failing\")" "$details"
  elif [[ -n $sha_now && $sha_now != "$run_sha" ]]; then
    local now_holds="cannot be read to check it (not a regular file, or a file with holes)"
    [[ $sha_now == unreadable ]] || now_holds="now holds sha256 $sha_now"
    ((rewritten == 0)) || now_holds="held sha256 $sha_now when this check first read it (the status was rewritten)"
    result degraded "the last backup run ($run_time) wrote $run_file with sha256 $run_sha; it $now_holds: it changed on disk" \
      "set it aside (sudo keel-ops set-aside ${run_file##*/}), find out who changed it (sudo keel-ops audit keel), take a new one: scripts/runbook/backup-now.sh (docs/RUNBOOK.md \"Backups failing\")" "$details"
  elif [[ $run_result == ok && ${#kept_failed[@]} -gt 0 ]]; then
    local why=""
    [[ $kept_result != failed || ${kept_file##*/} != "${kept_failed[-1]}" ]] || why=" (the last run's: $kept_reason)"
    result degraded "${#kept_failed[@]} kept backup(s) failed their check: ${kept_failed[*]}$why" \
      "set each aside (sudo keel-ops set-aside NAME): a restore must not pick it; the backup runs check the others in turn (docs/RUNBOOK.md \"Backups failing\")" "$details"
  elif [[ $run_result == ok && ${#session_failed[@]} -gt 0 ]]; then
    result degraded "${#session_failed[@]} session backup(s) failed their check: ${session_failed[*]} (in $sessions)" \
      "set each aside (sudo keel-ops set-aside NAME): a restore must not pick it (docs/RUNBOOK.md \"Backups failing\")" "$details"
  elif [[ -n $newest_file && $age -lt -300 ]]; then
    result degraded "the newest backup is dated $(hours $((-age))) h in the future: $newest_file (the clock was wrong when it was taken, or the file was planted)" \
      "check the clock (timedatectl), list the backups (sudo keel-ops backups) and move that file away; then scripts/runbook/backup-now.sh" "$details"
  elif [[ -n $newest_file && ($newest_size -lt 512 || $newest_head != "SQLite format 3") ]]; then
    result degraded "the newest backup $newest_file is not an SQLite DB ($newest_size bytes)" \
      "move it away (sudo keel-ops backups lists them), then scripts/runbook/backup-now.sh (docs/RUNBOOK.md \"Backups\")" "$details"
  elif [[ $run_result == ok && -n $run_file && -n $newest_file && $newest_file != "$run_file" ]]; then
    # Only keel-db-backup names files here, and its last run wrote the newest; a newer one came from
    # elsewhere, or the status names an older one (what `restore latest` picks is then unchecked).
    result degraded "the newest backup $newest_file is not the one the last backup run wrote ($run_file)" \
      "set it aside if nobody here made it (sudo keel-ops set-aside ${newest_file##*/}), then scripts/runbook/backup-now.sh (docs/RUNBOOK.md \"Backups failing\")" "$details"
  elif [[ -z $newest_file ]]; then
    local born
    born=$(stat -c %W -- "$db" 2>/dev/null) || born=0
    if [[ $born =~ ^[0-9]+$ && $born -gt 0 && $((NOW - born)) -lt $max ]]; then
      result ok "no backup yet; the DB is $(hours $((NOW - born))) h old (a backup is expected within ${conf[backup_max_age_hours]} h)" "" "$details"
    else
      result degraded "no backup of $db in $dir" "$todo_now" "$details"
    fi
  elif [[ $age -gt $max ]]; then
    result degraded "the newest backup is $(hours "$age") h old (more than ${conf[backup_max_age_hours]} h): $newest_file" "$todo_now" "$details"
  else
    result ok "newest backup $(hours "$age") h ago ($newest_file), ${#backups[@]} kept; last run ${run_result:-not recorded}" "" "$details"
  fi
}

# --- disk --------------------------------------------------------------------------------------
check_disk() {
  local warn=${conf[disk_warn_percent]} crit=${conf[disk_crit_percent]} worst=ok
  local journal=${conf[journal_dir]}
  [[ -d $journal ]] || journal=/run/log/journal
  local names=(db backups journal) paths=("$(dirname -- "${conf[db]}")" "${conf[backup_dir]}" "$journal")
  local locations=() parts=() i out fs size avail pct mount data
  for i in "${!names[@]}"; do
    if [[ ! -d ${paths[i]} ]]; then
      result unknown "${names[i]} location ${paths[i]} does not exist" "run pulumi up (the layout step creates it)" \
        "$(jobj warn_percent "$warn" crit_percent "$crit")"
      return
    fi
    if ! out=$(df -P -B1 -- "${paths[i]}" 2>&1 | tail -n 1) || [[ -z $out ]]; then
      result unknown "df ${paths[i]} failed: $out" "" "$(jobj warn_percent "$warn" crit_percent "$crit")"
      return
    fi
    read -r fs size _ avail pct mount <<<"$out"
    pct=${pct%\%}
    data=$(du -sb -- "${paths[i]}" 2>/dev/null | cut -f1) || data=""
    if [[ ! $pct =~ ^[0-9]+$ ]]; then
      result unknown "df ${paths[i]} printed no use percentage: $out" "" "$(jobj warn_percent "$warn" crit_percent "$crit")"
      return
    fi
    if ((pct >= crit)); then
      worst=down
    elif ((pct >= warn)) && [[ $worst == ok ]]; then
      worst=degraded
    fi
    locations+=("$(jobj name "$(js "${names[i]}")" path "$(js "${paths[i]}")" filesystem "$(js "$fs")" mount "$(js "$mount")" \
      use_percent "$(jint "$pct")" size_bytes "$(jint "$size")" avail_bytes "$(jint "$avail")" data_bytes "$(jint "$data")")")
    parts+=("${names[i]} ${paths[i]} $(human_bytes "$data"), $pct% of $mount used ($(human_bytes "$avail") free)")
  done
  local summary todo=""
  summary="$(printf '%s; ' "${parts[@]}")(degraded at $warn%, down at $crit%)"
  [[ $worst == ok ]] || todo="free space or grow the disk: docs/RUNBOOK.md \"Disk full\""
  result "$worst" "$summary" "$todo" "$(jobj warn_percent "$(jint "$warn")" crit_percent "$(jint "$crit")" locations "$(jarr "${locations[@]}")")"
}

# --- time --------------------------------------------------------------------------------------
check_time() {
  local out
  if ! out=$(timedatectl show -p NTPSynchronized --value 2>&1); then
    result unknown "timedatectl failed: ${out//$'\n'/ }" "systemctl status systemd-timedated; systemctl status systemd-timesyncd, or chrony on ubuntu-26.04"
    return
  fi
  case $out in
    yes) result ok "clock synchronized (NTP)" "" "$(jobj ntp_synchronized true)" ;;
    no) result degraded "clock not synchronized" "timedatectl timesync-status, or chronyc tracking on ubuntu-26.04 (docs/RUNBOOK.md \"Time\")" "$(jobj ntp_synchronized false)" ;;
    *) result unknown "timedatectl printed '$out' for NTPSynchronized" "timedatectl status" ;;
  esac
}

# --- updates -----------------------------------------------------------------------------------
check_updates() {
  local out pkgs=() line since grace=$((conf[security_grace_hours] * 3600)) reboot=false
  # A simulation on the lists apt already has: no download, no lock, no cache file written.
  if ! out=$(LC_ALL=C apt-get -s -q -o Debug::NoLocking=1 -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= dist-upgrade 2>&1); then
    result unknown "apt-get -s dist-upgrade failed: $(tail -n 1 <<<"$out")" "run it by hand: apt-get -s dist-upgrade"
    return
  fi
  while IFS= read -r line; do
    [[ $line =~ ^Inst\ ([^ ]+)\ .*\(.*-security.*\) ]] && pkgs+=("${BASH_REMATCH[1]}")
  done <<<"$out"
  [[ ! -e /run/reboot-required ]] || reboot=true
  local n=${#pkgs[@]} details
  since=${state[security_pending_since]:-}
  [[ $since =~ ^[0-9]+$ ]] || since=$NOW
  ((n > 0)) || since=""
  details=$(jobj pending "$(jint "$n")" packages "$(jstrs ${pkgs[@]+"${pkgs[@]}"})" pending_since "$(if [[ -n $since ]]; then js "$(iso "$since")"; else printf null; fi)" \
    grace_hours "$(jint "${conf[security_grace_hours]}")" reboot_required "$reboot")
  local tail=""
  [[ $reboot == false ]] || tail="; a reboot is required to finish an update"
  local shown=${pkgs[*]:0:10}
  ((n <= 10)) || shown+=" and $((n - 10)) more"
  if ((n == 0)); then
    result ok "no pending security updates$tail" "" "$details"
  elif ((NOW - since > grace)); then
    result degraded "$n security update(s) pending for $(hours $((NOW - since))) h: $shown$tail" \
      "unattended-upgrades should have installed them: docs/RUNBOOK.md \"Security updates\"" "$details"
  else
    result ok "$n security update(s) pending since $(iso "$since") (unattended-upgrades installs them; degraded after ${conf[security_grace_hours]} h): $shown$tail" "" "$details"
  fi
}

# --- fail2ban ----------------------------------------------------------------------------------
check_fail2ban() {
  local jail=${conf[fail2ban_jail]} out cur="" total="" failed="" ips=""
  if ! command -v fail2ban-client >/dev/null; then
    result degraded "fail2ban is not installed: nothing bans SSH brute force" "run pulumi up; see docs/HARDENING.md"
    return
  fi
  if ! out=$(fail2ban-client status "$jail" 2>&1); then
    out=$(tail -n 1 <<<"$out")
    out=${out##*ERROR}
    result degraded "fail2ban jail $jail is not running: ${out#"${out%%[![:space:]]*}"}" "systemctl status fail2ban; journalctl -u fail2ban -n 50 (docs/RUNBOOK.md \"fail2ban\")"
    return
  fi
  [[ $out =~ Currently\ failed:[[:space:]]*([0-9]+) ]] && failed=${BASH_REMATCH[1]}
  [[ $out =~ Currently\ banned:[[:space:]]*([0-9]+) ]] && cur=${BASH_REMATCH[1]}
  [[ $out =~ Total\ banned:[[:space:]]*([0-9]+) ]] && total=${BASH_REMATCH[1]}
  [[ $out =~ Banned\ IP\ list:[[:space:]]*([^$'\n']*) ]] && ips=${BASH_REMATCH[1]}
  if [[ -z $cur ]]; then
    result unknown "fail2ban-client status $jail printed no ban count" "fail2ban-client status $jail"
    return
  fi
  local list=()
  read -r -a list <<<"$ips"
  result ok "jail $jail: $cur banned now, ${total:-?} since fail2ban started, ${failed:-?} address(es) failing now" "" \
    "$(jobj jail "$(js "$jail")" currently_banned "$(jint "$cur")" total_banned "$(jint "$total")" currently_failed "$(jint "$failed")" \
      banned_ips "$(jstrs ${list[@]+"${list[@]}"})")"
}

# --- drift -------------------------------------------------------------------------------------
check_drift() {
  local manifest=${conf[manifest]} out rc files=() line
  if [[ ! -s $manifest ]]; then
    result unknown "no manifest at $manifest: keel has placed nothing here, or it was removed" "run pulumi up"
    return
  fi
  out=$(KEEL_MANIFEST=$manifest "${conf[tools_dir]}/keel-place" --drift 2>&1) && rc=0 || rc=$?
  while IFS= read -r line; do [[ -z $line ]] || files+=("$line"); done <<<"$out"
  local details
  details=$(jobj manifest "$(js "$manifest")" drifted "$(jstrs ${files[@]+"${files[@]}"})")
  case $rc in
    0) result ok "every file keel placed is as placed" "" "$details" ;;
    1) result degraded "${#files[@]} file(s) keel placed were changed by hand: $(printf '%s; ' "${files[@]}")" \
      "pulumi up puts them back; make the change in the stack config instead (docs/RUNBOOK.md \"Drift\")" "$details" ;;
    *) result unknown "keel-place --drift failed (exit $rc): ${out//$'\n'/ }" "" "$details" ;;
  esac
}

# --- timer -------------------------------------------------------------------------------------
webhook_configured() { [[ -s ${conf[webhook_file]} ]] && grep -q '[^[:space:]]' -- "${conf[webhook_file]}"; }

check_timer() {
  local timer=${conf[health_timer]} out line webhook=false
  declare -A p=()
  ! webhook_configured || webhook=true
  if ! out=$(systemctl show "$timer" -p LoadState -p ActiveState -p NextElapseUSecRealtime -p LastTriggerUSec 2>&1); then
    result unknown "systemctl show $timer failed: ${out//$'\n'/ }" "check that systemd is running: systemctl is-system-running"
    return
  fi
  while IFS= read -r line; do p[${line%%=*}]=${line#*=}; done <<<"$out"
  local details
  details=$(jobj timer "$(js "$timer")" active_state "$(js "${p[ActiveState]:-}")" next "$(jstr_or_null "${p[NextElapseUSecRealtime]:-}")" \
    last "$(jstr_or_null "${p[LastTriggerUSec]:-}")" webhook "$webhook")
  local hook="no alert webhook configured"
  [[ $webhook == false ]] || hook="alerts go to the webhook"
  if [[ ${p[ActiveState]:-} == active ]]; then
    result ok "$timer active, last run ${p[LastTriggerUSec]:-never}, next ${p[NextElapseUSecRealtime]:-?}; $hook" "" "$details"
  else
    result degraded "$timer is ${p[ActiveState]:-?} (${p[LoadState]:-?}): no periodic checks, no alerts" \
      "run pulumi up (the health-units step enables it)" "$details"
  fi
}

# --- run the checks ----------------------------------------------------------------------------
rank() { case $1 in ok) echo 0 ;; degraded | unknown) echo 1 ;; *) echo 2 ;; esac }

declare -A r_status=() r_summary=() r_todo=() r_details=()
worst=0
for c in "${checks[@]}"; do
  # Each check runs in a subshell with errexit: a check that breaks is reported as unknown.
  set +e
  rec=$(
    set -e
    case $c in
      engine) check_engine ;;
      db) check_db ;;
      backup) check_backup ;;
      disk) check_disk ;;
      time) check_time ;;
      updates) check_updates ;;
      fail2ban) check_fail2ban ;;
      drift) check_drift ;;
      timer) check_timer ;;
    esac
  )
  rc=$?
  set -e
  IFS=$SEP read -r -d '' st summary todo details <<<"$rec" || true
  details=${details%$'\n'}
  if [[ $rc -ne 0 || ! $st =~ ^(ok|degraded|down|unknown)$ ]]; then
    st=unknown summary="the $c check failed unexpectedly (exit $rc)" todo="run sudo keel-health --only $c and read its errors" details="{}"
  fi
  [[ -n $details ]] || details="{}"
  r_status[$c]=$st r_summary[$c]=$summary r_todo[$c]=$todo r_details[$c]=$details
  r=$(rank "$st")
  ((r <= worst)) || worst=$r
done
overall=(healthy degraded down)
status=${overall[worst]}

problems=()
for c in "${checks[@]}"; do
  [[ ${r_status[$c]} == ok ]] || problems+=("$c: ${r_summary[$c]}")
done

# --- record and alert --------------------------------------------------------------------------
record_state() {
  local file=${conf[state_file]} prev=${state[status]:-} since=${state[since]:-} notified=${state[notified]:-}
  local pending_since=""
  exec 8>>"$file.lock"
  flock -w 60 8 || { echo "$PROG: another keel-health --record holds $file.lock; not recording" >&2; return 0; }
  if [[ $prev != "$status" ]]; then
    since=$NOW
    echo "$PROG: status ${prev:-unrecorded} -> $status" >&2
  fi
  if [[ ${r_details[updates]:-} =~ \"pending\":([0-9]+) ]] && ((BASH_REMATCH[1] > 0)); then
    pending_since=${state[security_pending_since]:-$NOW}
  elif [[ -z ${r_details[updates]:-} ]]; then
    pending_since=${state[security_pending_since]:-}
  fi
  if ! webhook_configured; then
    notified=$status
  elif [[ $notified != "$status" && ! (-z $notified && $status == healthy) ]]; then
    local payload text
    text="keel: ${conf[app]} on $HOST is ${status^^} (was ${notified:-unrecorded})"
    ((${#problems[@]} == 0)) || text+=": $(printf '%s; ' "${problems[@]}")"
    payload=$(jobj version 1 host "$(js "$HOST")" app "$(js "${conf[app]}")" status "$(js "$status")" \
      previous "$(jstr_or_null "$notified")" time "$(js "$(iso "$NOW")")" exit_code "$worst" \
      problems "$(jstrs ${problems[@]+"${problems[@]}"})" text "$(js "$text")")
    if "${conf[tools_dir]}/keel-health-alert" "${conf[webhook_file]}" <<<"$payload"; then
      notified=$status
    else
      echo "$PROG: the alert webhook was not reached; the next run tries again" >&2
    fi
  else
    [[ -n $notified ]] || notified=$status
  fi
  [[ -n $notified ]] || notified=$status
  # What the backup check hashed (check_backup: the file's identity, its sha256 now and the first
  # one seen), kept so the next run need not hash again and cannot be told another first sha256.
  local sha_checked=""
  [[ ${r_details[backup]:-} =~ \"sha_checked\":\"([^\"]*)\" ]] && sha_checked=${BASH_REMATCH[1]}
  local tmp
  tmp=$(mktemp "$file.XXXXXX")
  printf 'status=%s\nsince=%s\nchecked=%s\nnotified=%s\nsecurity_pending_since=%s\nbackup_sha=%s\n' \
    "$status" "$since" "$NOW" "$notified" "$pending_since" "$sha_checked" >"$tmp"
  chmod 0600 "$tmp"
  mv -f -- "$tmp" "$file"
}
if [[ $record == 1 ]]; then
  umask 077
  record_state
fi

# --- report ------------------------------------------------------------------------------------
if [[ $json == 1 ]]; then
  items=()
  for c in "${checks[@]}"; do
    items+=("$(js "$c"):$(jobj status "$(js "${r_status[$c]}")" summary "$(js "${r_summary[$c]}")" \
      todo "$(jstr_or_null "${r_todo[$c]}")" details "${r_details[$c]}")")
  done
  printf '%s\n' "$(jobj version 1 host "$(js "$HOST")" app "$(js "${conf[app]}")" time "$(js "$(iso "$NOW")")" \
    status "$(js "$status")" exit_code "$worst" checks "{$(IFS=,; echo "${items[*]}")}")"
else
  label() { case $1 in ok) echo ok ;; degraded) echo DEGRADED ;; down) echo DOWN ;; *) echo UNKNOWN ;; esac }
  printf '%s: %s on %s at %s: %s (exit %d)\n' "$PROG" "${conf[app]}" "$HOST" "$(iso "$NOW")" "${status^^}" "$worst"
  for c in "${checks[@]}"; do
    printf '  %-9s %-9s %s\n' "$(label "${r_status[$c]}")" "$c" "${r_summary[$c]}"
  done
  todos=()
  for c in "${checks[@]}"; do
    [[ ${r_status[$c]} == ok || -z ${r_todo[$c]} ]] || todos+=("$(printf '  %-9s %s' "$c" "${r_todo[$c]}")")
  done
  if ((${#todos[@]} > 0)); then
    printf '\nwhat to do:\n'
    printf '%s\n' "${todos[@]}"
  fi
fi
exit "$worst"
