#!/usr/bin/env bash
# db-migrate-source.sh — the operator's side of keel's migration (seed 000 §4): choose the DB to
# carry to the host and prove it clean. `pulumi up` runs it on the operator's machine (a local
# step) when keel:migrateFrom is set; it is never installed on the host.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

# The DB tools' library, in scripts/host/ (this file is never installed on the host).
# shellcheck source=../host/keel-db-lib
. "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}" 2>/dev/null || printf '%s' "${BASH_SOURCE[0]}")")/../host/keel-db-lib" || exit 5

usage() {
  cat <<EOF
usage: $KEEL_PROG [--fallback-dir DIR [--accept-fallback SHA256]] SRC
       $KEEL_PROG -h

Runs keel-db-gate prepare on SRC (verify, wal_checkpoint(TRUNCATE), -wal empty, verify again): with
the engine stopped on this machine, SRC is then the whole database in one file. A failing DB is
never chosen. If SRC fails the gate:
- with a hot rollback journal beside it (an interrupted transaction, which SQLite rolls back the
  next time the DB is opened for writing), SRC is not damaged: no fallback; exit 1 with what to do.
- otherwise, with --fallback-dir, the newest backup in DIR named NAME-YYYYMMDDTHHMMSSZ.db (NAME:
  SRC's file name without its extension; newest by the name's UTC time, never by modification
  time) that passes keel-db-gate verify and has no -wal frames or -journal beside it is the
  candidate. It is taken only with consent: --accept-fallback must be its sha256
  (keel:migrateAcceptFallback). Without it (or with another) exit 1, naming the candidate, its
  time and its sha256, and the line that consents.

Prints one line on stdout, in sha256sum's format: "<sha256>  <absolute path of the chosen file>".
keel copies that file to the host, checks the sha256 there and adopts it (docs/DATABASE.md).
Exit codes are keel-db-gate's: 1 SRC failed the gate and no fallback passed (or none was given),
3 SRC is in use (stop the engine first), 4 SRC is not on a local filesystem, 5 other failures
(missing file or tool); 2 usage.
EOF
}

fallback="" accept=""
while [[ $# -gt 0 ]]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --accept-fallback) [[ $# -ge 2 && $2 =~ ^[0-9a-f]{64}$ ]] || keel_usage_error "--accept-fallback needs a sha256 (64 hex digits)"; accept=$2; shift 2 ;;
    --fallback-dir) [[ $# -ge 2 ]] || keel_usage_error "--fallback-dir needs a directory"; fallback=$2; shift 2 ;;
    --) shift; break ;;
    -*) keel_usage_error "unknown option $1" ;;
    *) break ;;
  esac
done
[[ $# -eq 1 ]] || keel_usage_error "expected SRC"
[[ -z $fallback || -d $fallback ]] || keel_die "$KEEL_EX_FAIL" "the fallback directory $fallback does not exist" \
  "set keel:migrateFallbackDir to a directory of backups on this machine, or remove it"
gate=$(keel_sibling gate)

# The result line names the file by path: a path with a line break could not be read back.
result() { # result FILE
  local abs
  abs=$(keel_abspath "$1")
  [[ $abs != *$'\n'* ]] || keel_die "$KEEL_EX_FAIL" "the path of $1 holds a line break" "rename the file"
  printf '%s  %s\n' "$(keel_sha256 "$abs")" "$abs"
}

rc=0
"$gate" prepare "$1" >/dev/null || rc=$?
if [[ $rc -eq 0 ]]; then
  keel_info "$1 passed the gate: it is the DB to migrate"
  result "$1"
  exit 0
fi
[[ $rc -eq 1 ]] || exit "$rc" # busy, not local, usage, I/O: keel-db-gate said what to do
if [[ -s $1-journal && $(keel_bytes "$1-journal" 0 8) == "217 213 5 249 32 161 99 215" ]]; then
  keel_die "$KEEL_EX_GATE" "$1 has a hot rollback journal ($1-journal): a transaction on it was interrupted, which SQLite rolls back when the DB is next opened for writing. keel does not fall back to an older backup for that (other findings of the gate are above)" \
    "open it once with the application, or: sqlite3 '$1' 'PRAGMA quick_check' (SQLite rolls the journal back), then pulumi up again"
fi
[[ -n $fallback ]] || keel_die "$KEEL_EX_GATE" "$1 failed the integrity gate (reason above); it is not carried forward (seed 000 §4)" \
  "repair or replace it, or set keel:migrateFallbackDir to a directory of backups to take the newest clean one"

# Candidates: SRC's backups by keel's names (NAME-<UTC time>.db), newest time first. The time in
# the name is when the backup was taken; a modification time is only when the file was last
# copied (an old backup copied today must not win), and any other file may be anything.
name=$(basename -- "$1")
base=${name%.*}
candidates=()
while IFS= read -r f; do candidates=("$f" ${candidates[@]+"${candidates[@]}"}); done < <(keel_list_backups "$fallback" "$base")
keel_info "$1 failed the integrity gate; looking for the newest clean backup of it in $fallback (${#candidates[@]} named $base-<UTC time>.db)"
for f in ${candidates[@]+"${candidates[@]}"}; do
  if [[ -s $f-wal || -e $f-journal ]]; then
    keel_info "skipped $f: a -wal with frames or a -journal beside it (only a single-file DB is copied)"
    continue
  fi
  if "$gate" verify "$f" >/dev/null; then
    sum=$(keel_sha256 "$f")
    n=${f##*/}
    n=${n#"$base"-}
    n=${n%.db}
    when="${n:0:4}-${n:4:2}-${n:6:2} ${n:9:2}:${n:11:2}:${n:13:2} UTC"
    if [[ $accept == "$sum" ]]; then
      keel_info "using $f (taken $when, sha256 $sum) instead of $1: keel:migrateAcceptFallback names it"
      result "$f"
      exit 0
    fi
    keel_die "$KEEL_EX_GATE" "$1 failed the integrity gate. The newest clean backup of it is $f, taken $when, sha256 $sum; keel takes a fallback only with your consent${accept:+ (keel:migrateAcceptFallback is $accept, another file)}: the rows written after $when would be lost" \
      "if that backup is the data to carry forward: pulumi config set keel:migrateAcceptFallback $sum, then pulumi up"
  fi
  keel_info "skipped $f: it fails the gate (reason above)"
done
keel_die "$KEEL_EX_GATE" "$1 failed the integrity gate and no backup of it in $fallback passes it; nothing is carried forward (seed 000 §4)" \
  "repair the DB or put a clean backup named $base-YYYYMMDDTHHMMSSZ.db into $fallback, then run pulumi up again"
