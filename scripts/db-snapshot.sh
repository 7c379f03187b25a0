#!/usr/bin/env bash
# db-snapshot.sh — a consistent, read-only copy of keel's SQLite DB for analysis (seed 000 §11B:
# analysis reads snapshots, not the live file). Installed on the host as /usr/local/sbin/keel-db-snapshot.
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
usage: $KEEL_PROG [--owner USER[:GROUP]] DB OUT
       $KEEL_PROG -h

Copies DB to OUT while the engine keeps writing (one read transaction of a read-only connection:
VACUUM INTO), verifies the copy (db-gate.sh verify), makes it read-only (mode 0440, owner from
--owner if given), fsyncs it and renames it to OUT. OUT is a rollback-journal DB that readers can
open without creating -wal/-shm files. OUT must not exist: snapshots are never overwritten.
Prints OUT's path.
$KEEL_EXIT_CODES_HELP
EOF
}

owner=""
while [[ $# -gt 0 ]]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --owner) [[ $# -ge 2 ]] || keel_usage_error "--owner needs a user"; owner=$2; shift 2 ;;
    --) shift; break ;;
    -*) keel_usage_error "unknown option $1" ;;
    *) break ;;
  esac
done
[[ $# -eq 2 ]] || keel_usage_error "expected DB and OUT"
if [[ -n $owner ]]; then
  id -u -- "${owner%%:*}" >/dev/null 2>&1 || keel_usage_error "--owner: no such user '${owner%%:*}'"
fi
keel_require_tools sqlite3 od awk

db=$(keel_abspath "$1")
out=$(keel_abspath "$2")
keel_require_local "$db"
keel_require_local "$out"
[[ ! -e $out && ! -L $out ]] || keel_die "$KEEL_EX_FAIL" "$out already exists; snapshots are never overwritten" \
  "choose another name, or remove $out first"
umask 077

tmp=$(mktemp "$(dirname -- "$out")/.$(basename -- "$out").snapshot.XXXXXX") ||
  keel_die "$KEEL_EX_FAIL" "cannot create a temporary file beside $out"
keel_cleanup_add "$tmp"
keel_vacuum_into "$db" "$tmp"
keel_verify "$tmp"
[[ -z $owner ]] || chown -- "$owner" "$tmp"
chmod 0440 -- "$tmp"
keel_fsync "$tmp"
[[ ! -e $out ]] || keel_die "$KEEL_EX_FAIL" "$out appeared meanwhile; it was left as it is"
mv -f -- "$tmp" "$out" || keel_die "$KEEL_EX_FAIL" "cannot rename $tmp to $out"
keel_cleanup_forget "$tmp"
keel_fsync "$(dirname -- "$out")"
printf '%s\n' "$out"
