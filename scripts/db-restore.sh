#!/usr/bin/env bash
# db-restore.sh — puts a verified backup in place of keel's SQLite DB, keeping the current one aside.
# Installed on the host as /usr/local/sbin/keel-db-restore.
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
usage: $KEEL_PROG [--owner USER[:GROUP]] BACKUP DB
       $KEEL_PROG -h

With the engine stopped: verifies BACKUP (db-gate.sh verify), copies it to a temporary file beside
DB, switches the copy to WAL mode, checkpoints and verifies it, sets mode 0600 and the owner
(--owner, else the current DB's owner), fsyncs it, keeps the current DB aside as
DB.pre-restore-<utc> (with its -wal/-shm/-journal, which must not meet the restored file) and
renames the copy to DB atomically; then verifies DB. BACKUP is only read. Prints "ok".
Refuses (exit 3) while a process holds DB open: stop the engine first. Refuses (exit 2) to run as
root in a directory another user owns or can write: run it as the DB directory's owner (setpriv).
Remove the DB.pre-restore-* files once the restored DB has proven itself.
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
[[ $# -eq 2 ]] || keel_usage_error "expected BACKUP and DB"
[[ ! -L $2 ]] || keel_die "$KEEL_EX_FAIL" "$2 is a symlink" "give the real path of the DB"
if [[ -n $owner ]]; then
  id -u -- "${owner%%:*}" >/dev/null 2>&1 || keel_usage_error "--owner: no such user '${owner%%:*}'"
fi
keel_require_tools sqlite3 od awk

backup=$(keel_abspath "$1")
db=$(keel_abspath "$2")
[[ $backup != "$db" ]] || keel_usage_error "BACKUP and DB are the same file"
keel_require_local "$backup"
keel_require_local "$db"
keel_require_own_dir "$(dirname -- "$db")"
keel_require_unused "$db"
[[ ! -e $db || -f $db ]] || keel_die "$KEEL_EX_FAIL" "$db is not a regular file"
keel_verify "$backup"

tmp=$(mktemp "$(dirname -- "$db")/.$(basename -- "$db").restore.XXXXXX") ||
  keel_die "$KEEL_EX_FAIL" "cannot create a temporary file beside $db"
keel_cleanup_add "$tmp"
keel_copy_db "$backup" "$tmp"
keel_checkpoint "$tmp" wal
chmod 0600 -- "$tmp"
if [[ -n $owner ]]; then
  chown -- "$owner" "$tmp"
elif [[ -e $db && $(id -u) -eq 0 ]]; then
  chown -- "$(keel_owner "$db")" "$tmp"
fi
keel_fsync "$tmp"
keel_verify "$tmp"

keel_require_unused "$db"
keel_install_db "$tmp" "$db" pre-restore
keel_verify "$db"
[[ -z $KEEL_ASIDE ]] || keel_info "the previous DB is kept as $KEEL_ASIDE"
keel_info "restored $backup into $db"
echo ok
