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
usage: $KEEL_PROG [--keep N] [--name-after-newest] DB DIR
       $KEEL_PROG --prune-only [--keep N] DB DIR
       $KEEL_PROG -h

Copies DB into DIR while the engine keeps writing: one read transaction of a read-only connection
(VACUUM INTO) gives a consistent snapshot without blocking the writer (WAL mode). The copy is
written under a temporary name (.NAME-<utc>.partial.*), verified (db-gate.sh verify), fsynced and
renamed to NAME-<utc>.db (UTC, e.g. app-20261122T031700Z.db, so names sort by time); then only the
newest N such files are kept (--keep N, else \$KEEL_DB_BACKUP_KEEP, else 14). NAME is DB's file
name without its extension. DIR is created (mode 0700) if missing; backups are mode 0600.

Every run, ok or failed, writes DIR/NAME.status.json for the health report:
  {"version":1,"db":…,"time":"<start, UTC ISO 8601>","finished":…,"result":"ok"|"failed",
   "exit_code":…,"file":…|null,"size":<bytes>|null,"sha256":…|null,"reason":"…","keep":N,"count":…,
   "kept_check":{"file":…|null,"result":"ok"|"failed"|"none","reason":"…"}|null,
   "kept_failed":["NAME-<utc>.db",…]}
DIR/NAME.sha256 records each kept backup's sha256 (sha256sum's format). After a new backup, one
older kept backup is checked in turn (the next by name after the one checked last, wrapping;
DIR/.NAME.checked holds that name): its sha256 against the record, then the integrity gate. A
failed check is recorded in kept_check and, until that backup is gone or set aside, in kept_failed
(DIR/.NAME.failed-checks keeps the list; the health report calls it degraded) and on stderr; the run
itself stays ok, since its own backup is good. A backup with no record yet gets one once it passes.
--name-after-newest runs (the session backups) record the sha256 but check nothing else.
A failure (a kill, a full disk, a copy that fails verify) leaves no file under a final name and
exits non-zero with the reason; a temporary file left by a killed run is removed by the next run.
The live DB is only read. Runs on one DIR exclude each other through flock(1) where present.
On success, prints the backup's path.

Names order backups by time, so a new one is never dated before the newest in DIR. When the clock
is behind it (it stepped back after running ahead): up to two minutes, the run waits; further, it
fails (5) and records why. With --name-after-newest (the session backups, which must neither keep
the engine from starting nor outlast its stop timeout) it does neither: the backup is named one
second after the newest, and says so.

--prune-only takes no backup: it only applies the retention (under the same lock), for a disk too
full to write one first. It always keeps the newest backup that passes the integrity gate, besides
the newest N, and removes nothing when none passes (exit 1). The status file is not touched. Prints
what it removed and the bytes freed.
$KEEL_EXIT_CODES_HELP
EOF
}

keep=${KEEL_DB_BACKUP_KEEP:-14}
prune_only=0 name_after=0
while [[ $# -gt 0 ]]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --prune-only) prune_only=1; shift ;;
    --name-after-newest) name_after=1; shift ;;
    --keep) [[ $# -ge 2 ]] || keel_usage_error "--keep needs a number"; keep=$2; shift 2 ;;
    --) shift; break ;;
    -*) keel_usage_error "unknown option $1" ;;
    *) break ;;
  esac
done
[[ $# -eq 2 ]] || keel_usage_error "expected DB and DIR"
[[ $keep =~ ^[1-9][0-9]*$ ]] || keel_usage_error "the number of backups to keep must be a whole number >= 1, not '$keep'"
keel_require_tools sqlite3 od awk

db=$(keel_abspath "$1")
name=$(basename -- "$db")
base=${name%.*}
[[ -n $base ]] || base=$name

# DIR must be local (or, if missing, its parent). Once DIR exists, every outcome is recorded in the
# status file, a refused DB included; a missing DIR is created only for a DB that is accepted.
if [[ -d $2 ]]; then keel_require_local "$2/."; else keel_require_local "$2"; fi
dir="" status="" final="" tmp="" size="" sha="" kept_file="" kept_result=none kept_reason="no older backup to check"
kept_failed=()
started=$(keel_utc_stamp)
umask 077
if [[ -d $2 ]]; then
  dir=$(cd -P -- "$2" && pwd)
  [[ $prune_only -eq 1 ]] || status=$dir/$base.status.json
elif [[ $prune_only -eq 1 ]]; then
  keel_die "$KEEL_EX_FAIL" "no backup directory $2" "check the path"
fi

write_status() { # write_status RESULT EXIT-CODE REASON
  local st count
  count=$(list_backups | wc -l | tr -d ' ')
  st=$(mktemp "$dir/.$base.status.XXXXXX") || return 1
  {
    printf '{"version":1,"db":%s,' "$(keel_json_str "$db")"
    printf '"time":"%s","finished":"%s",' "$(iso "$started")" "$(keel_utc_iso)"
    printf '"result":"%s","exit_code":%d,' "$1" "$2"
    if [[ $1 == ok ]]; then
      printf '"file":%s,"size":%d,"sha256":"%s",' "$(keel_json_str "$final")" "$size" "$sha"
    else
      printf '"file":null,"size":null,"sha256":null,'
    fi
    printf '"reason":%s,"keep":%d,"count":%d,' "$(keel_json_str "$3")" "$keep" "$count"
    if [[ $1 == ok ]]; then
      printf '"kept_check":{"file":%s,"result":"%s","reason":%s},' \
        "$( [[ -n $kept_file ]] && keel_json_str "$kept_file" || printf null)" "$kept_result" "$(keel_json_str "$kept_reason")"
    else
      printf '"kept_check":null,'
    fi
    printf '"kept_failed":['
    local first=1 n
    for n in "${kept_failed[@]}"; do
      ((first)) || printf ','
      printf '%s' "$(keel_json_str "$n")"
      first=0
    done
    printf ']}\n'
  } >"$st" || { rm -f -- "$st"; return 1; }
  mv -f -- "$st" "$status" || { rm -f -- "$st"; return 1; }
}

iso() { # 20261122T031700Z -> 2026-11-22T03:17:00Z
  local t=$1
  printf '%s-%s-%sT%s:%s:%sZ\n' "${t:0:4}" "${t:4:2}" "${t:6:2}" "${t:9:2}" "${t:11:2}" "${t:13:2}"
}

# Final-named backups of this DB in DIR, oldest first.
list_backups() { keel_list_backups "$dir" "$base"; }

keel_exit_hook() {
  [[ $1 -ne 0 && -n $status ]] || return 0
  [[ -z $tmp ]] || rm -f -- "$tmp" "$tmp-journal"
  write_status failed "$1" "${KEEL_LAST_ERROR:-failed with exit code $1}" ||
    keel_err "could not write the status file $status"
}

keel_require_local "$db"
if [[ -z $dir ]]; then
  mkdir -m 0700 -- "$2" || keel_die "$KEEL_EX_FAIL" "cannot create the backup directory $2"
  dir=$(cd -P -- "$2" && pwd)
  status=$dir/$base.status.json
fi
[[ $prune_only -eq 1 || -f $db ]] || keel_die "$KEEL_EX_GATE" "$db: no such DB file" "check the path"

if command -v flock >/dev/null 2>&1; then
  exec 9>>"$dir/.$base.backup.lock"
  flock -n 9 || keel_die "$KEEL_EX_BUSY" "another backup of $base into $dir is running" "wait for it to finish"
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

tmp=$(mktemp "$dir/.$base-$started.partial.XXXXXX") || keel_die "$KEEL_EX_FAIL" "cannot create a file in $dir"
keel_vacuum_into "$db" "$tmp"
keel_verify "$tmp"
size=$(keel_size "$tmp")
sha=$(keel_sha256 "$tmp")
keel_fsync "$tmp"
[[ ! -e $final ]] || keel_die "$KEEL_EX_FAIL" "$final appeared meanwhile" "run again"
mv -f -- "$tmp" "$final" || keel_die "$KEEL_EX_FAIL" "cannot rename $tmp to $final"
tmp=""
keel_fsync "$dir"

# Retention: the newest $keep final-named backups of this DB stay, and never the one just written.
backups=()
while IFS= read -r f; do backups+=("$f"); done < <(list_backups)
for ((i = 0; i < ${#backups[@]} - keep; i++)); do
  [[ ${backups[i]} != "$final" ]] || continue
  rm -f -- "${backups[i]}" "${backups[i]}-wal" "${backups[i]}-shm" "${backups[i]}-journal"
done
keel_fsync "$dir"

# The record of what each kept backup holds: lines of backups still here, the new one's added.
manifest=$dir/$base.sha256
declare -A recorded=()
if [[ -f $manifest && ! -L $manifest ]]; then
  while IFS= read -r line; do
    [[ $line =~ ^([0-9a-f]{64})\ \ (.+)$ ]] || continue
    rec_sha=${BASH_REMATCH[1]} rec_name=${BASH_REMATCH[2]}
    keel_is_backup_name "$base" "$rec_name" && [[ -f $dir/$rec_name ]] && recorded[$rec_name]=$rec_sha
  done < <(head -c 1048576 -- "$manifest")
fi
recorded[${final##*/}]=$sha

# One older kept backup, in turn: what it holds now against the record, then the integrity gate.
backups=()
while IFS= read -r f; do [[ $f == "$final" ]] || backups+=("$f"); done < <(list_backups)
# Session backups (--name-after-newest) skip it: they sit on the engine's start and stop.
if ((${#backups[@]})) && [[ $name_after -eq 1 ]]; then
  kept_reason="not checked by a session backup (it must not delay the engine's start or stop)"
elif ((${#backups[@]})); then
  cursor=$dir/.$base.checked last=""
  [[ -f $cursor && ! -L $cursor ]] && last=$(head -c 200 -- "$cursor")
  kept_file=${backups[0]}
  for f in "${backups[@]}"; do
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
  if ! { t=$(mktemp "$dir/.$base.checked.XXXXXX") && printf '%s\n' "$k" >"$t" && mv -f -- "$t" "$cursor"; }; then
    keel_err "could not record $k in $cursor; the next run checks it again"
  fi
fi
# Backups that failed a check stay on the list while they are here under their name.
failed_list=$dir/.$base.failed-checks
if [[ -f $failed_list && ! -L $failed_list ]]; then
  while IFS= read -r line; do
    keel_is_backup_name "$base" "$line" && [[ -f $dir/$line && $line != "${kept_file##*/}" ]] && kept_failed+=("$line")
  done < <(head -c 65536 -- "$failed_list")
fi
[[ $kept_result != failed ]] || kept_failed+=("${kept_file##*/}")
t=$(mktemp "$dir/.$base.failed-checks.XXXXXX") || keel_die "$KEEL_EX_FAIL" "cannot create a file in $dir"
printf '%s\n' ${kept_failed[@]+"${kept_failed[@]}"} | sed '/^$/d' >"$t"
mv -f -- "$t" "$failed_list" || keel_die "$KEEL_EX_FAIL" "cannot rename $t to $failed_list"
t=$(mktemp "$dir/.$base.sha256.XXXXXX") || keel_die "$KEEL_EX_FAIL" "cannot create a file in $dir"
for k in "${!recorded[@]}"; do printf '%s  %s\n' "${recorded[$k]}" "$k"; done | sort -k 2 >"$t"
keel_fsync "$t"
mv -f -- "$t" "$manifest" || keel_die "$KEEL_EX_FAIL" "cannot rename $t to $manifest"
keel_fsync "$dir"

write_status ok 0 "" || keel_die "$KEEL_EX_FAIL" "the backup $final is complete, but the status file $status could not be written"
printf '%s\n' "$final"
