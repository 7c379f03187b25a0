#!/usr/bin/env bash
# db-backup.sh — an online, verified backup of keel's SQLite DB (seed 000 §11C), with retention and
# a status file for the health report. Installed on the host as /usr/local/sbin/keel-db-backup.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

KEEL_PROG=$(basename -- "$0")
self=$(readlink -f -- "${BASH_SOURCE[0]}" 2>/dev/null || printf '%s' "${BASH_SOURCE[0]}")
KEEL_DB_HERE=$(cd -P -- "$(dirname -- "$self")" && pwd)
for lib in "$KEEL_DB_HERE/db-lib.sh" "$KEEL_DB_HERE/keel-db-lib" ""; do [[ -r $lib ]] && break; done
[[ -n $lib ]] || { echo "$KEEL_PROG: cannot find db-lib.sh or keel-db-lib beside $self" >&2; exit 5; }
# shellcheck source=db-lib.sh
. "$lib"

usage() {
  cat <<EOF
usage: $KEEL_PROG [--keep N] [--name-after-newest] [--lock-wait S] DB DIR
       $KEEL_PROG --prune-only [--keep N] DB DIR
       $KEEL_PROG --as ENGINE:BACKUP [--keep N] [--name-after-newest] [--lock-wait S] DB DIR     (root)
       $KEEL_PROG --export [--none-if-missing] DB
       $KEEL_PROG --from-stdin [--none-ok] [--keep N] [--name-after-newest] [--lock-wait S] DB DIR
       $KEEL_PROG -h

Copies DB into DIR while the engine keeps writing: one read transaction of a read-only connection
(VACUUM INTO) gives a consistent snapshot without blocking the writer (WAL mode). The copy is
written under a temporary name (.NAME-<utc>.partial.*), verified (db-gate.sh verify), fsynced and
renamed to NAME-<utc>.db (UTC, e.g. app-20261122T031700Z.db, so names sort by time); then only the
newest N such files are kept (--keep N, else \$KEEL_DB_BACKUP_KEEP, else 14). NAME is DB's file
name without its extension. DIR is created (mode 0700) if missing; backups are mode 0600 (0640,
with DIR's group, from --from-stdin); the lock file is 0600.

Every run, ok or failed, writes DIR/NAME.status.json for the health report:
  {"version":1,"db":…,"time":"<start, UTC ISO 8601>","finished":…,"result":"ok"|"failed",
   "exit_code":…,"file":…|null,"size":<bytes>|null,"sha256":…|null,"identity":"INODE|SIZE|CTIME"|null,
   "reason":"…","keep":N,"count":…,
   "kept_check":{"file":…|null,"result":"ok"|"failed"|"none","reason":"…"}|null,
   "kept_failed":["NAME-<utc>.db",…]}
DIR/NAME.sha256 records each kept backup's sha256 (sha256sum's format). After a new backup, one
older kept backup is checked in turn (the next by name after the one checked last, wrapping;
DIR/.NAME.checked holds that name): its sha256 against the record, then the integrity gate. A
failed check is recorded in kept_check and, until that backup is gone or set aside, in kept_failed
(DIR/.NAME.failed-checks keeps the list; the health report calls it degraded) and on stderr; the run
itself stays ok, since its own backup is good. A backup with no record yet gets one once it passes.
--name-after-newest runs (the session backups) record the sha256 but check nothing else; instead
--also-check D2 (the scheduled backups, D2 the session backups' directory) checks one of D2's
backups in turn too, the same way, under D2's lock (skipped while a session backup holds it), and
adds to the status "also_check":{"dir":…,"file":…|null,"result":…,"reason":"…"} and
"also_failed":[…] (D2's backups that failed a check and are still there).
A failure (a kill, a full disk, a copy that fails verify) leaves no file under a final name and
exits non-zero with the reason; a temporary file left by a killed run is removed by the next run.
The live DB is only read. Runs on one DIR exclude each other through flock(1) where present: a
run that finds DIR's lock held fails at once (3), or with --lock-wait SECONDS waits that long for it
first (the session backups: the scheduled backup's --also-check holds their directory's lock while
it checks one of them, and a start or stop must not fail for that).
On success, prints the backup's path.

Names order backups by time, so a new one is never dated before the newest in DIR. When the clock
is behind it (it stepped back after running ahead): up to two minutes, the run waits; further, it
fails (5) and records why. With --name-after-newest (the session backups, which must neither keep
the engine from starting nor outlast its stop timeout) it does neither: the backup is named one
second after the newest, and says so.

On a keel host the DB and the backups belong to two users (docs/DATABASE.md "The backup
identity"), so a backup is two processes joined by a pipe. --export (as the DB's owner) writes a
consistent copy of DB into a temporary file beside it, then a header line and the copy on stdout,
and removes the file; --none-if-missing sends "none" instead of failing when there is no DB.
--from-stdin (as the backups' owner) stores that stream as a backup of DB in DIR exactly as above
(DB is only the name here, never opened): the stream must be whole (its size is in the header), a
failure the exporter reported is recorded with its reason and exit code; with --none-ok a "none"
stream prints nothing and exits 0. --as ENGINE:BACKUP, as root, runs the two (setpriv, each with
its own groups and no new privileges) and exits with the store side's code; root itself opens
nothing in either directory.

--prune-only takes no backup: it only applies the retention (under the same lock), for a disk too
full to write one first. It always keeps the newest backup that passes the integrity gate, besides
the newest N, and removes nothing when none passes (exit 1). The status file is not touched. Prints
what it removed and the bytes freed.
$KEEL_EXIT_CODES_HELP
EOF
}

keep=${KEEL_DB_BACKUP_KEEP:-14}
prune_only=0 name_after=0 mode=backup as="" none_missing=0 none_ok=0 also_check="" lock_wait=0
while [[ $# -gt 0 ]]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --prune-only) prune_only=1; shift ;;
    --name-after-newest) name_after=1; shift ;;
    --export) mode="export"; shift ;;
    --from-stdin) mode=store; shift ;;
    --as) [[ $# -ge 2 ]] || keel_usage_error "--as needs ENGINE:BACKUP"; mode=as as=$2; shift 2 ;;
    --none-if-missing) none_missing=1; shift ;;
    --none-ok) none_ok=1; shift ;;
    --also-check) [[ $# -ge 2 ]] || keel_usage_error "--also-check needs a directory"; also_check=$2; shift 2 ;;
    --keep) [[ $# -ge 2 ]] || keel_usage_error "--keep needs a number"; keep=$2; shift 2 ;;
    --lock-wait) [[ $# -ge 2 && $2 =~ ^[0-9]{1,5}$ ]] || keel_usage_error "--lock-wait needs a number of seconds"; lock_wait=$((10#$2)); shift 2 ;;
    --) shift; break ;;
    -*) keel_usage_error "unknown option $1" ;;
    *) break ;;
  esac
done
[[ $keep =~ ^[1-9][0-9]*$ ]] || keel_usage_error "the number of backups to keep must be a whole number >= 1, not '$keep'"

# The engine's side of a backup: a consistent copy beside the DB, sent as one header and the bytes.
if [[ $mode == export ]]; then
  [[ $# -eq 1 ]] || keel_usage_error "--export takes DB only"
  # shellcheck disable=SC2317 # called by db-lib's EXIT trap
  keel_exit_hook() { keel_export_failed_header "$1"; }
  keel_require_tools sqlite3
  db=$(keel_abspath "$1")
  keel_require_local "$db"
  if [[ $none_missing -eq 1 && ! -e $db && ! -e $db-wal ]]; then
    keel_export_header none
    exit 0
  fi
  [[ -f $db ]] || keel_die "$KEEL_EX_GATE" "$db: no such DB file" "check the path"
  umask 077
  # Copies a killed exporter left (SIGKILL, a power loss): named after their process, removed once
  # it is gone. Another export running now (the timer's beside a start's) keeps its own.
  for f in "$(dirname -- "$db")/.$(basename -- "$db").export."*; do
    [[ -f $f && ! -L $f && ${f##*.export.} =~ ^([0-9]+)\. && ! -e /proc/${BASH_REMATCH[1]} ]] || continue
    rm -f -- "$f" "$f-journal" && keel_info "removed $f, the copy of an export that was killed"
  done
  tmp=$(mktemp "$(dirname -- "$db")/.$(basename -- "$db").export.$$.XXXXXX") ||
    keel_die "$KEEL_EX_FAIL" "cannot create a file beside $db" "free space there, then run again"
  keel_cleanup_add "$tmp"
  keel_vacuum_into "$db" "$tmp"
  size=$(keel_size "$tmp")
  keel_export_header "size $size"
  cat -- "$tmp" || keel_die "$KEEL_EX_FAIL" "sending the copy of $db failed (the store side ended?)"
  exit 0
fi

# root: the two sides, each as its own user; the store side's result is the run's.
if [[ $mode == as ]]; then
  [[ $# -eq 2 ]] || keel_usage_error "expected DB and DIR"
  keel_as_pair "$as" "$1" "$2"
  store=(--from-stdin --keep "$keep")
  [[ $name_after -eq 0 ]] || store+=(--name-after-newest)
  [[ -z $also_check ]] || store+=(--also-check "$also_check")
  ((lock_wait == 0)) || store+=(--lock-wait "$lock_wait")
  set +e
  trap - ERR
  "${KEEL_AS_ENGINE[@]}" "$self" --export "$1" | "${KEEL_AS_BACKUP[@]}" "$self" "${store[@]}" -- "$1" "$2"
  rcs=("${PIPESTATUS[@]}")
  set -e
  [[ ${rcs[1]} -ne 0 || ${rcs[0]} -eq 0 ]] || keel_info "the export side ended with exit code ${rcs[0]} after the backup was stored (its message above)"
  exit "${rcs[1]}"
fi

[[ $# -eq 2 ]] || keel_usage_error "expected DB and DIR"
keel_require_tools sqlite3 od awk

if [[ $mode == store ]]; then
  # DB is only the backups' name: the store side cannot (and must not) open it.
  [[ $1 == /* ]] || keel_usage_error "--from-stdin needs DB as an absolute path (it names the backups)"
  [[ $prune_only -eq 0 ]] || keel_usage_error "--from-stdin and --prune-only do not go together"
  db=$1
else
  db=$(keel_abspath "$1")
fi
name=$(basename -- "$db")
base=${name%.*}
[[ -n $base ]] || base=$name

# DIR must be local (or, if missing, its parent). Once DIR exists, every outcome is recorded in the
# status file, a refused DB included; a missing DIR is created only for a DB that is accepted.
if [[ -d $2 ]]; then keel_require_local "$2/."; else keel_require_local "$2"; fi
dir="" status="" final="" tmp="" size="" sha="" kept_file="" kept_result=none kept_reason="no older backup to check"
kept_failed=()
started=$(keel_utc_stamp)
# The store side's backups are readable by the directory's group (the engine's, on a keel host:
# keel-ops restore reads them as the engine's user); elsewhere they are the owner's alone.
if [[ $mode == store ]]; then umask 027; else umask 077; fi
if [[ -d $2 ]]; then
  dir=$(cd -P -- "$2" && pwd)
  [[ $prune_only -eq 1 ]] || status=$dir/$base.status.json
elif [[ $prune_only -eq 1 ]]; then
  keel_die "$KEEL_EX_FAIL" "no backup directory $2" "check the path"
fi

write_status() { # write_status RESULT EXIT-CODE REASON
  local st count
  count=$(list_backups | wc -l | tr -d ' ')
  st=$(dir_temp "$dir/.$base.status.XXXXXX") || return 1
  {
    printf '{"version":1,"db":%s,' "$(keel_json_str "$db")"
    printf '"time":"%s","finished":"%s",' "$(iso "$started")" "$(keel_utc_iso)"
    printf '"result":"%s","exit_code":%d,' "$1" "$2"
    if [[ $1 == ok ]]; then
      printf '"file":%s,"size":%d,"sha256":"%s","identity":%s,' "$(keel_json_str "$final")" "$size" "$sha" "$(keel_json_str "$identity")"
    else
      printf '"file":null,"size":null,"sha256":null,"identity":null,'
    fi
    printf '"reason":%s,"keep":%d,"count":%d,' "$(keel_json_str "$3")" "$keep" "$count"
    if [[ $1 == ok ]]; then
      printf '"kept_check":{"file":%s,"result":"%s","reason":%s},' \
        "$( [[ -n $kept_file ]] && keel_json_str "$kept_file" || printf null)" "$kept_result" "$(keel_json_str "$kept_reason")"
    else
      printf '"kept_check":null,'
    fi
    printf '"kept_failed":%s' "$(json_names ${kept_failed[@]+"${kept_failed[@]}"})"
    if [[ $1 == ok && -n $also_check ]]; then
      printf ',"also_check":{"dir":%s,"file":%s,"result":"%s","reason":%s},"also_failed":%s' "$(keel_json_str "$also_check")" \
        "$( [[ -n $also_file ]] && keel_json_str "$also_file" || printf null)" "$also_result" "$(keel_json_str "$also_reason")" \
        "$(json_names ${also_failed[@]+"${also_failed[@]}"})"
    fi
    printf '}\n'
  } >"$st" || { rm -f -- "$st"; return 1; }
  mv -f -- "$st" "$status" || { rm -f -- "$st"; return 1; }
}

json_names() { # a JSON array of the arguments
  local first=1 n
  printf '['
  for n in "$@"; do
    ((first)) || printf ','
    printf '%s' "$(keel_json_str "$n")"
    first=0
  done
  printf ']'
}

iso() { # 20261122T031700Z -> 2026-11-22T03:17:00Z
  local t=$1
  printf '%s-%s-%sT%s:%s:%sZ\n' "${t:0:4}" "${t:4:2}" "${t:6:2}" "${t:9:2}" "${t:11:2}" "${t:13:2}"
}

# A new file in DIR (mktemp's are 0600): on the store side readable by DIR's group like the
# backups, so every file there has one mode and keel-place finds nothing to set back on an up.
dir_temp() {
  local t
  t=$(mktemp "$1") || return 1
  [[ $mode != store ]] || chmod 0640 -- "$t" || { rm -f -- "$t"; return 1; }
  printf '%s\n' "$t"
}

# Final-named backups of this DB in DIR, oldest first.
list_backups() { keel_list_backups "$dir" "$base"; }

keel_exit_hook() {
  [[ $1 -ne 0 && -n $status ]] || return 0
  [[ -z $tmp ]] || rm -f -- "$tmp" "$tmp-journal"
  write_status failed "$1" "${KEEL_LAST_ERROR:-failed with exit code $1}" ||
    keel_err "could not write the status file $status"
}

# The stream, read only once an existing DIR's status file is known, so every outcome there is on
# record (an exporter killed before its header, or sending garbage, is a failed run); a missing DIR
# is made only for a stream that carries a backup. The header, at most 4 KiB.
if [[ $mode == store ]]; then
  header=""
  IFS= read -r -n 4096 header || [[ -n $header ]] ||
    keel_die "$KEEL_EX_FAIL" "the export of $db sent nothing: it was killed or failed before its header (its message, if any, above)"
  export_size=""
  if [[ $header == "$KEEL_EXPORT_MAGIC none" ]]; then
    [[ $none_ok -eq 1 ]] || keel_die "$KEEL_EX_GATE" "$db: no such DB file (the export side found none)" "check the path"
    exit 0
  elif [[ $header =~ ^"$KEEL_EXPORT_MAGIC size "([0-9]{1,15})$ ]]; then
    export_size=${BASH_REMATCH[1]}
  elif [[ $header =~ ^"$KEEL_EXPORT_MAGIC failed "([0-9]{1,3})" "(.*)$ ]]; then
    export_rc=${BASH_REMATCH[1]} export_failure=${BASH_REMATCH[2]}
    [[ $export_rc =~ ^[1-5]$ ]] || export_rc=$KEEL_EX_FAIL
    # A failure the export side reported: recorded in the status file like one of our own.
    keel_die "$export_rc" "the export of $db failed: $export_failure"
  else
    keel_die "$KEEL_EX_FAIL" "stdin is not a backup stream of db-backup.sh --export (it begins '$(printf '%s' "${header:0:60}" | tr -c '[:print:]' '?')')"
  fi
fi
[[ $mode == store ]] || keel_require_local "$db"
if [[ -z $dir ]]; then
  mkdir -m 0700 -- "$2" || keel_die "$KEEL_EX_FAIL" "cannot create the backup directory $2"
  dir=$(cd -P -- "$2" && pwd)
  status=$dir/$base.status.json
fi
[[ $prune_only -eq 1 || $mode == store || -f $db ]] || keel_die "$KEEL_EX_GATE" "$db: no such DB file" "check the path"

if command -v flock >/dev/null 2>&1; then
  # The lock is the owner's alone (0600): a reader of the directory (the engine's group, on a keel
  # host) who could open it could hold the lock and stop every backup. One that is not (keel-place
  # hands an older keel's lock over as 0640) is replaced by a new file, not chmodded: a descriptor
  # opened on the old one while it was readable could hold it still.
  lock=$dir/.$base.backup.lock
  if [[ $mode == store && -f $lock && ! -L $lock && $(keel_stat %a %Lp "$lock") != 600 ]]; then
    { t=$(mktemp "$lock.XXXXXX") && mv -f -- "$t" "$lock"; } || keel_die "$KEEL_EX_FAIL" "cannot replace the lock file $lock"
  fi
  (umask 077 && : >>"$lock") || keel_die "$KEEL_EX_FAIL" "cannot create the lock file in $dir"
  exec 9>>"$lock"
  if ((lock_wait > 0)); then
    flock -w "$lock_wait" 9 || keel_die "$KEEL_EX_BUSY" "another backup of $base into $dir (or the scheduled backup's check of one there) held its lock for $lock_wait s" "wait for it to finish, then run again"
  else
    flock -n 9 || keel_die "$KEEL_EX_BUSY" "another backup of $base into $dir is running" "wait for it to finish"
  fi
  # Under the lock, any temporary file is the leftover of a killed run.
  rm -f -- "$dir/.$base-"*.partial.*
fi

if [[ $prune_only -eq 1 ]]; then
  backups=()
  while IFS= read -r f; do backups+=("$f"); done < <(list_backups)
  verified=""
  for ((i = ${#backups[@]} - 1; i >= 0; i--)); do
    if "$(keel_sibling gate)" verify "${backups[i]}" >/dev/null 2>&1; then
      verified=${backups[i]}
      break
    fi
    keel_info "${backups[i]} fails the integrity gate; it does not count as the backup that is kept"
  done
  [[ -n $verified || ${#backups[@]} -eq 0 ]] ||
    keel_die "$KEEL_EX_GATE" "no backup of $db in $dir passes the integrity gate; nothing was removed" \
      "keep them for now; take a new one as soon as there is room (free space elsewhere: docs/RUNBOOK.md \"Disk full\")"
  removed=0 freed=0
  for ((i = 0; i < ${#backups[@]} - keep; i++)); do
    [[ ${backups[i]} != "$verified" ]] || continue
    freed=$((freed + $(keel_size "${backups[i]}")))
    rm -f -- "${backups[i]}" "${backups[i]}-wal" "${backups[i]}-shm" "${backups[i]}-journal"
    keel_info "removed ${backups[i]}"
    removed=$((removed + 1))
  done
  keel_fsync "$dir"
  echo "pruned $dir: removed $removed backup(s), freed $freed bytes; kept $((${#backups[@]} - removed)), the newest verified ${verified:-none (there was no backup)}"
  exit 0
fi

# Names order backups by time, so a new one must be dated after the newest there is. The clock can
# step back (an NTP correction after it ran ahead): up to two minutes behind the newest name, wait
# for it; further behind, refuse and record it, rather than write a backup that sorts as the
# oldest, which retention would prune at once and `restore latest` would pass over.
newest=$(list_backups | tail -n 1)
newest=${newest##*/}
newest=${newest#"$base"-}
newest=${newest%.db}
fixed_stamp=""
if [[ -n $newest ]]; then
  newest_epoch=$(keel_stamp_epoch "$newest")
  ahead=$((newest_epoch - $(date -u +%s)))
  if ((ahead >= 0 && name_after == 1)); then
    fixed_stamp=$(keel_epoch_stamp $((newest_epoch + 1)))
    keel_info "the clock ($(keel_utc_stamp)) is behind the newest backup in $dir ($newest): this one is named $fixed_stamp, after it; check the clock (timedatectl)"
  elif ((ahead >= 0 && ahead <= 120)); then
    sleep $((ahead + 1))
  elif ((ahead > 120)); then
    keel_die "$KEEL_EX_FAIL" "the newest backup in $dir is dated $newest, $ahead s after this clock ($(keel_utc_stamp)): the clock went back, or that file is dated in the future; nothing was written" \
      "check the clock (timedatectl); if it is right, move the future-dated backups out of $dir (keel-ops backups lists them), then run again"
  fi
fi
# One name per second; a second run within the same second waits for the next one.
for _ in 1 2 3; do
  started=${fixed_stamp:-$(keel_utc_stamp)}
  final=$dir/$base-$started.db
  [[ -e $final ]] || break
  sleep 1
done
[[ ! -e $final ]] || keel_die "$KEEL_EX_FAIL" "$final already exists" "run again in a second"

tmp=$(dir_temp "$dir/.$base-$started.partial.XXXXXX") || keel_die "$KEEL_EX_FAIL" "cannot create a file in $dir"
if [[ $mode == store ]]; then
  # head(1) copies at most the announced size; a shorter stream is an export that died midway.
  head -c "$export_size" >"$tmp" || keel_die "$KEEL_EX_FAIL" "writing the copy into $dir failed (disk full?)" "free space there (or keep fewer backups), then run again"
  got=$(keel_size "$tmp")
  [[ $got == "$export_size" ]] || keel_die "$KEEL_EX_FAIL" "the export of $db ended after $got of $export_size bytes (its message above); nothing was kept"
else
  keel_vacuum_into "$db" "$tmp"
fi
keel_verify "$tmp"
size=$(keel_size "$tmp")
sha=$(keel_sha256 "$tmp")
keel_fsync "$tmp"
[[ ! -e $final ]] || keel_die "$KEEL_EX_FAIL" "$final appeared meanwhile" "run again"
mv -f -- "$tmp" "$final" || keel_die "$KEEL_EX_FAIL" "cannot rename $tmp to $final"
tmp=""
keel_fsync "$dir"
# The file as this run left it (stat's inode, size and ctime in UTC, as keel-health reads them): a backup
# too large for the health check to hash in its time is taken as recorded while these hold.
identity=$(TZ=UTC stat -c '%i|%s|%z' -- "$final") || keel_die "$KEEL_EX_FAIL" "cannot stat $final"

# Retention: the newest $keep final-named backups of this DB stay, and never the one just written.
backups=()
while IFS= read -r f; do backups+=("$f"); done < <(list_backups)
for ((i = 0; i < ${#backups[@]} - keep; i++)); do
  [[ ${backups[i]} != "$final" ]] || continue
  rm -f -- "${backups[i]}" "${backups[i]}-wal" "${backups[i]}-shm" "${backups[i]}-journal"
done
keel_fsync "$dir"

# check_kept D NEW CHECK — the records of the backups in D: D/NAME.sha256 keeps the lines of those
# still there, NEW's (a name; its sha256 is $sha) added when given. With CHECK=1, one older backup
# in turn (the next by name after D/.NAME.checked, wrapping): what it holds now against the
# record, then the integrity gate; a backup with no record yet gets one once it passes.
# D/.NAME.failed-checks lists those that failed and are still there. Sets kept_file, kept_result,
# kept_reason, kept_failed.
check_kept() {
  local d=$1 new=$2 check=$3 manifest=$1/$base.sha256 line rec_sha rec_name f k now_sha out t cursor last failed_list
  local -A recorded=()
  local older=()
  kept_file="" kept_result=none kept_reason="no older backup to check" kept_failed=()
  if [[ -f $manifest && ! -L $manifest ]]; then
    while IFS= read -r line; do
      [[ $line =~ ^([0-9a-f]{64})\ \ (.+)$ ]] || continue
      rec_sha=${BASH_REMATCH[1]} rec_name=${BASH_REMATCH[2]}
      keel_is_backup_name "$base" "$rec_name" && [[ -f $d/$rec_name ]] && recorded[$rec_name]=$rec_sha
    done < <(head -c 1048576 -- "$manifest")
  fi
  [[ -z $new ]] || recorded[$new]=$sha
  while IFS= read -r f; do [[ ${f##*/} == "$new" ]] || older+=("$f"); done < <(keel_list_backups "$d" "$base")
  if ((${#older[@]})) && [[ $check -eq 0 ]]; then
    kept_reason="not checked by a session backup (it must not delay the engine's start or stop; the scheduled backup checks them in turn)"
  elif ((${#older[@]})); then
    cursor=$d/.$base.checked last=""
    [[ -f $cursor && ! -L $cursor ]] && last=$(head -c 200 -- "$cursor")
    kept_file=${older[0]}
    for f in "${older[@]}"; do
      if [[ ${f##*/} > $last ]]; then kept_file=$f; break; fi
    done
    k=${kept_file##*/}
    now_sha=$(keel_sha256 "$kept_file")
    if [[ -n ${recorded[$k]:-} && ${recorded[$k]} != "$now_sha" ]]; then
      kept_result=failed kept_reason="its sha256 is $now_sha, not the ${recorded[$k]} recorded when it was written: it changed on disk"
    elif ! out=$("$(keel_sibling gate)" verify "$kept_file" 2>&1); then
      kept_result=failed kept_reason="it fails the integrity gate: $(tail -n 1 <<<"$out")"
    else
      kept_result=ok kept_reason="sha256 ${recorded[$k]:+as recorded, }integrity ok"
      [[ -n ${recorded[$k]:-} ]] || recorded[$k]=$now_sha
    fi
    [[ $kept_result == ok ]] || keel_err "the kept backup $kept_file failed its check: $kept_reason; set it aside: keel-ops set-aside $k"
    if ! { t=$(dir_temp "$d/.$base.checked.XXXXXX") && printf '%s\n' "$k" >"$t" && mv -f -- "$t" "$cursor"; }; then
      keel_err "could not record $k in $cursor; the next run checks it again"
    fi
  fi
  # Backups that failed a check stay on the list while they are here under their name.
  failed_list=$d/.$base.failed-checks
  if [[ -f $failed_list && ! -L $failed_list ]]; then
    while IFS= read -r line; do
      keel_is_backup_name "$base" "$line" && [[ -f $d/$line && $line != "${kept_file##*/}" ]] && kept_failed+=("$line")
    done < <(head -c 65536 -- "$failed_list")
  elif [[ -f $d/$base.status.json && ! -L $d/$base.status.json ]]; then
    # No list yet: a keel before it recorded only the last check, in the status. A failure there is
    # carried over, or the upgrade would forget it until the turn came round to that backup again.
    line=$(head -c 65536 -- "$d/$base.status.json" | grep -o '"kept_check":{"file":"[^"]*","result":"failed"' | head -n 1) || line=""
    line=${line#*\"file\":\"}
    line=${line%%\"*}
    line=${line##*/}
    keel_is_backup_name "$base" "$line" && [[ -f $d/$line && $line != "${kept_file##*/}" ]] && kept_failed+=("$line")
  fi
  [[ $kept_result != failed ]] || kept_failed+=("${kept_file##*/}")
  t=$(dir_temp "$d/.$base.failed-checks.XXXXXX") || keel_die "$KEEL_EX_FAIL" "cannot create a file in $d"
  printf '%s\n' ${kept_failed[@]+"${kept_failed[@]}"} | sed '/^$/d' >"$t"
  mv -f -- "$t" "$failed_list" || keel_die "$KEEL_EX_FAIL" "cannot rename $t to $failed_list"
  t=$(dir_temp "$d/.$base.sha256.XXXXXX") || keel_die "$KEEL_EX_FAIL" "cannot create a file in $d"
  for k in "${!recorded[@]}"; do printf '%s  %s\n' "${recorded[$k]}" "$k"; done | sort -k 2 >"$t"
  keel_fsync "$t"
  mv -f -- "$t" "$manifest" || keel_die "$KEEL_EX_FAIL" "cannot rename $t to $manifest"
  keel_fsync "$d"
}

# Session backups (--name-after-newest) check no older backup: they sit on the engine's start and stop.
check_kept "$dir" "${final##*/}" $((name_after == 0))

# --also-check D2 (the scheduled backups: D2 is the session backups' directory): one of D2's
# backups in turn as well, under D2's lock (skipped, and said, while a session backup holds it).
also_file="" also_result=none also_reason="" also_failed=()
if [[ -n $also_check ]]; then
  if [[ ! -d $also_check || -L $also_check ]]; then
    also_reason="$also_check is not a directory"
  elif ! { (umask 077 && : >>"$also_check/.$base.backup.lock") && exec 6>>"$also_check/.$base.backup.lock" && flock -n 6; }; then
    also_reason="a session backup held $also_check at the time; the next run checks it"
  else
    saved=("$kept_file" "$kept_result" "$kept_reason")
    saved_failed=(${kept_failed[@]+"${kept_failed[@]}"})
    check_kept "$also_check" "" 1
    also_file=$kept_file also_result=$kept_result also_reason=$kept_reason
    also_failed=(${kept_failed[@]+"${kept_failed[@]}"})
    kept_file=${saved[0]} kept_result=${saved[1]} kept_reason=${saved[2]}
    kept_failed=(${saved_failed[@]+"${saved_failed[@]}"})
    exec 6>&-
  fi
fi

write_status ok 0 "" || keel_die "$KEEL_EX_FAIL" "the backup $final is complete, but the status file $status could not be written"
printf '%s\n' "$final"
