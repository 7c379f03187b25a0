#!/usr/bin/env bash
# db-session-backup.sh — the pre- and post-session backups around every start and stop of the
# engine (seed 000 §11C). The engine's unit runs it (a drop-in: ExecCondition= before a start,
# ExecStopPost= after a stop), as the engine's user inside the engine's sandbox. Installed on the
# host as /usr/local/sbin/keel-db-session-backup.
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
usage: $KEEL_PROG pre|post [--keep N] DB DIR
       $KEEL_PROG -h

pre   before the engine starts: a verified backup of DB into DIR (db-backup.sh). No DB yet (the
      first start) is not a failure: there is nothing to back up. A failed backup exits non-zero
      with the reason, and the engine does not start (the unit runs this as ExecCondition=, whose
      failure systemd neither restarts nor retries).
post  after the engine stopped, for whatever reason: the same backup of the session just ended.
Exit codes: db-backup.sh's (0 ok, 1 gate, 3 busy, 4 not local, 5 failed), 2 usage.
EOF
}

[[ $# -gt 0 ]] || keel_usage_error "expected pre or post"
case $1 in
  -h | --help) usage; exit 0 ;;
  pre | post) phase=$1; shift ;;
  *) keel_usage_error "expected pre or post, not '$1'" ;;
esac
keep=()
if [[ ${1:-} == --keep ]]; then
  [[ $# -ge 2 ]] || keel_usage_error "--keep needs a number"
  keep=(--keep "$2")
  shift 2
fi
[[ $# -eq 2 ]] || keel_usage_error "expected DB and DIR"
db=$1 dir=$2

if [[ ! -e $db && ! -e $db-wal ]]; then
  keel_info "$phase-session backup: no DB at $db yet (the engine's first start): nothing to back up"
  exit 0
fi
backup=$(keel_sibling backup)
rc=0
file=$("$backup" ${keep[@]+"${keep[@]}"} "$db" "$dir") || rc=$?
if [[ $rc -ne 0 ]]; then
  if [[ $phase == pre ]]; then
    keel_die "$rc" "pre-session backup of $db failed (reason above): the engine does not start without one (seed 000 §11C)" \
      "fix the cause (see $dir/*.status.json), then: sudo systemctl start <the engine's unit>"
  fi
  keel_die "$rc" "post-session backup of $db failed (reason above)" "fix the cause; the next start takes a pre-session backup and starts only if it succeeds"
fi
keel_info "$phase-session backup of $db: $file"
