#!/usr/bin/env bash
# db-migrate-source.sh — the operator's side of keel's migration (seed 000 §4): choose the DB to
# carry to the host and prove it clean. `pulumi up` runs it on the operator's machine (a local
# step) when keel:migrateFrom is set; it is never installed on the host.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

KEEL_PROG=$(basename -- "$0")
self=$(readlink -f -- "${BASH_SOURCE[0]}" 2>/dev/null || printf '%s' "${BASH_SOURCE[0]}")
KEEL_DB_HERE=$(cd -P -- "$(dirname -- "$self")" && pwd)
# shellcheck source=db-lib.sh
. "$KEEL_DB_HERE/db-lib.sh"

usage() {
  cat <<EOF
usage: $KEEL_PROG [--fallback-dir DIR] SRC
       $KEEL_PROG -h

Runs db-gate.sh prepare on SRC (verify, wal_checkpoint(TRUNCATE), -wal empty, verify again): with
the engine stopped on this machine, SRC is then the whole database in one file. If SRC fails the
gate (exit 1) and --fallback-dir is given, the newest file in DIR named *.db, *.sqlite or
*.sqlite3 (by modification time, then by name) that passes db-gate.sh verify and has no -wal
frames or -journal beside it is chosen instead. A failing DB is never chosen.

Prints one line on stdout, in sha256sum's format: "<sha256>  <absolute path of the chosen file>".
keel copies that file to the host, checks the sha256 there and adopts it (docs/DATABASE.md).
Exit codes are db-gate.sh's: 1 SRC failed the gate and no fallback passed (or none was given),
3 SRC is in use (stop the engine first), 4 SRC is not on a local filesystem, 5 other failures
(missing file or tool); 2 usage.
EOF
}

fallback=""
while [[ $# -gt 0 ]]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
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
[[ $rc -eq 1 ]] || exit "$rc" # busy, not local, usage, I/O: db-gate.sh said what to do
[[ -n $fallback ]] || keel_die "$KEEL_EX_GATE" "$1 failed the integrity gate (reason above); it is not carried forward (seed 000 §4)" \
  "repair or replace it, or set keel:migrateFallbackDir to a directory of backups to take the newest clean one"

# Candidates, newest first: modification time, then name (keel's backups sort by name too).
candidates=()
for f in "$fallback"/*.db "$fallback"/*.sqlite "$fallback"/*.sqlite3; do
  [[ -f $f && ! -L $f ]] || continue
  i=${#candidates[@]}
  candidates+=("$f")
  while [[ $i -gt 0 ]]; do
    prev=${candidates[i - 1]}
    if [[ $f -nt $prev ]] || { [[ ! $prev -nt $f ]] && [[ $f > $prev ]]; }; then
      candidates[i]=$prev
      i=$((i - 1))
    else
      break
    fi
  done
  candidates[i]=$f
done
keel_info "$1 failed the integrity gate; looking for the newest clean backup in $fallback (${#candidates[@]} candidate(s))"
for f in ${candidates[@]+"${candidates[@]}"}; do
  if [[ -s $f-wal || -e $f-journal ]]; then
    keel_info "skipped $f: a -wal with frames or a -journal beside it (only a single-file DB is copied)"
    continue
  fi
  if "$gate" verify "$f" >/dev/null; then
    keel_info "using $f, the newest backup that passes the gate, instead of $1"
    result "$f"
    exit 0
  fi
  keel_info "skipped $f: it fails the gate (reason above)"
done
keel_die "$KEEL_EX_GATE" "$1 failed the integrity gate and no backup in $fallback passes it; nothing is carried forward (seed 000 §4)" \
  "repair the DB or put a clean backup into $fallback, then run pulumi up again"
