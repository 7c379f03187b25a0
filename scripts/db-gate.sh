#!/usr/bin/env bash
# db-gate.sh — keel's SQLite integrity gate (seed 000 §4): verify a DB, prepare it for migration on
# the source machine, adopt it on the host. Installed on the host as /usr/local/sbin/keel-db-gate.
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
usage: $KEEL_PROG verify DB
       $KEEL_PROG prepare DB
       $KEEL_PROG adopt [--replace (--backup-dir DIR | --backup-taken)] [--owner USER[:GROUP]] SRC DEST
       $KEEL_PROG recover DB
       $KEEL_PROG -h

verify   Full PRAGMA integrity_check and foreign_key_check, plus the consistency of the -wal and
         -shm beside DB (a -wal of another DB, a truncated one, one without its DB) and of a hot
         -journal. Prints "ok" and exits 0 only for a clean DB. Never writes to DB, its -wal or
         its -shm: the file is read through an immutable read-only URI, and a -wal holding frames
         is replayed on a private copy (a hard link opened read-only beside a copy of the -wal,
         in a temporary directory beside DB when that directory is the caller's own, else under
         \$TMPDIR or /var/tmp).
prepare  Source side, with the engine stopped: verify, PRAGMA wal_checkpoint(TRUNCATE), confirm
         the -wal is empty or gone, verify again. Then copy only the DB file.
adopt    Host side: verify SRC, copy it (with its -wal) to a temporary file beside DEST, switch
         the copy to WAL mode, checkpoint, verify it, set mode 0600 and the owner (--owner, else
         SRC's owner), fsync, rename it to DEST atomically, then remove SRC. Only if DEST does
         not exist, or with --replace after a verified backup of DEST into DIR (db-backup.sh;
         DIR defaults to \$KEEL_DB_BACKUP_DIR; --backup-taken: the caller took it, as keel-ops adopt
         does through the backup user); the previous DEST stays as DEST.pre-adopt-<utc>.
         As root, only where DEST's directory is root's and no one else can write it (else
         exit 2): in the engine's directory, run it as the engine's user (setpriv).

recover  After a restore or adopt of DB was interrupted mid-swap (its marker DIR/.NAME.swap is
         left): finishes the swap if the new file already has DB's name, else rolls it back (the
         previous DB and its -wal/-shm/-journal get their names back). Prints "ok" (also when
         there was nothing to recover). The engine's start gate refuses to start until then.

prepare and adopt refuse (exit 3) while a process holds the DB (SRC or DEST) open; so does
verify, which reads the file without locks: verify a snapshot (db-snapshot.sh) of a live DB.
$KEEL_EXIT_CODES_HELP
EOF
}

cmd_verify() {
  [[ $# -eq 1 ]] || keel_usage_error "verify needs exactly one DB"
  local db
  db=$(keel_abspath "$1")
  keel_verify "$db"
  echo ok
}

cmd_prepare() {
  [[ $# -eq 1 ]] || keel_usage_error "prepare needs exactly one DB"
  local db
  db=$(keel_abspath "$1")
  keel_verify "$db"
  keel_checkpoint "$db"
  keel_verify "$db"
  keel_info "$db is clean and its -wal is empty: copy only this file"
  echo ok
}

cmd_adopt() {
  local replace=0 owner="" backup_dir=${KEEL_DB_BACKUP_DIR:-} backup_taken=0
  while [[ $# -gt 0 ]]; do
    case $1 in
      --replace) replace=1; shift ;;
      --owner) [[ $# -ge 2 ]] || keel_usage_error "--owner needs a user"; owner=$2; shift 2 ;;
      --backup-dir) [[ $# -ge 2 ]] || keel_usage_error "--backup-dir needs a directory"; backup_dir=$2; shift 2 ;;
      --backup-taken) backup_taken=1; shift ;;
      --) shift; break ;;
      -*) keel_usage_error "unknown option $1" ;;
      *) break ;;
    esac
  done
  [[ $# -eq 2 ]] || keel_usage_error "adopt needs SRC and DEST"
  [[ ! -L $1 ]] || keel_die "$KEEL_EX_FAIL" "$1 is a symlink; adopt consumes SRC" "give the real path of the file"
  [[ ! -L $2 ]] || keel_die "$KEEL_EX_FAIL" "$2 is a symlink" "give the real path of the DB"
  if [[ -n $owner ]]; then
    id -u -- "${owner%%:*}" >/dev/null 2>&1 || keel_usage_error "--owner: no such user '${owner%%:*}'"
  fi
  local src dest tmp
  src=$(keel_abspath "$1")
  dest=$(keel_abspath "$2")
  [[ $src != "$dest" ]] || keel_usage_error "SRC and DEST are the same file"
  keel_require_local "$src"
  keel_require_local "$dest"
  keel_require_own_dir "$(dirname -- "$dest")"
  keel_require_unused "$src"
  keel_require_unused "$dest"
  if [[ -e $dest ]]; then
    [[ $replace -eq 1 ]] || keel_die "$KEEL_EX_FAIL" "$dest already exists; nothing was changed" \
      "to replace it, run again with --replace --backup-dir DIR (a verified backup of it is taken first)"
    [[ -n $backup_dir || $backup_taken -eq 1 ]] || keel_usage_error "--replace needs --backup-dir DIR (or KEEL_DB_BACKUP_DIR), or --backup-taken"
    [[ -f $dest ]] || keel_die "$KEEL_EX_FAIL" "$dest is not a regular file"
  else
    local ext
    for ext in -wal -shm -journal; do
      [[ ! -e $dest$ext ]] || keel_die "$KEEL_EX_FAIL" "$dest$ext exists without $dest" \
        "inspect it and move it away: a new DB must never meet an old -wal, -shm or -journal"
    done
  fi

  keel_verify "$src"
  tmp=$(mktemp "$(dirname -- "$dest")/.$(basename -- "$dest").adopt.XXXXXX") ||
    keel_die "$KEEL_EX_FAIL" "cannot create a temporary file beside $dest"
  keel_cleanup_add "$tmp"
  keel_copy_db "$src" "$tmp"
  keel_checkpoint "$tmp" wal
  chmod 0600 -- "$tmp"
  if [[ -n $owner ]]; then
    chown -- "$owner" "$tmp"
  elif [[ $(id -u) -eq 0 ]]; then
    chown -- "$(keel_owner "$src")" "$tmp"
  fi
  keel_fsync "$tmp"
  keel_verify "$tmp"

  if [[ -e $dest && $backup_taken -eq 0 ]]; then
    local rc=0
    "$(keel_sibling backup)" "$dest" "$backup_dir" >/dev/null || rc=$?
    [[ $rc -eq 0 ]] || keel_die "$rc" "could not take a verified backup of $dest (see above); nothing was replaced" \
      "if $dest is damaged and you mean to discard it, move it away yourself and run adopt again"
    keel_require_unused "$dest"
  fi
  keel_install_db "$tmp" "$dest" pre-adopt
  rm -f -- "$src" "$src-wal" "$src-shm"
  keel_fsync "$(dirname -- "$src")"
  [[ -z $KEEL_ASIDE ]] || keel_info "the previous $dest is kept as $KEEL_ASIDE"
  keel_info "adopted into $dest (WAL mode, mode 0600, owner $(keel_owner "$dest"))"
  echo ok
}

cmd_recover() {
  [[ $# -eq 1 ]] || keel_usage_error "recover needs DB"
  local db
  db=$(keel_abspath "$1")
  keel_require_own_dir "$(dirname -- "$db")"
  keel_swap_lock "$db"
  keel_swap_recover "$db"
  echo ok
}

[[ $# -gt 0 ]] || keel_usage_error "missing command"
case $1 in
  -h | --help) usage; exit 0 ;;
  verify | prepare | adopt | recover)
    keel_require_tools sqlite3 od awk
    cmd=$1; shift; "cmd_$cmd" "$@" ;;
  *) keel_usage_error "unknown command '$1'" ;;
esac
