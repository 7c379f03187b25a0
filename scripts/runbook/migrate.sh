#!/usr/bin/env bash
# migrate.sh — move an SQLite DB from this machine to the host, only if it passes the integrity gate
# (seed 000 §4; docs/DATABASE.md "Migration"; docs/RUNBOOK.md "Migrate the DB"):
#   1. here, with all engine activity stopped: scripts/host/keel-db-gate prepare DB (integrity_check,
#      wal_checkpoint(TRUNCATE), the -wal empty, integrity_check again); a DB that fails is not
#      carried forward
#   2. upload the single DB file into ~deploy/keel-incoming/ and compare sha256 on both sides
#   3. on the host, keel-ops adopt: the gate again, journal_mode=WAL, wal_checkpoint(TRUNCATE),
#      the gate again, a verified backup of the current DB, the engine stopped, the atomic swap,
#      the engine started and confirmed steady
#
# Usage: scripts/runbook/migrate.sh [--stack FILE|-] [--yes] DB
# Exit: 0 migrated and the engine steady; 1 a gate or the transfer failed (nothing on the host
#       changed unless the message says so); 255 ssh failed; 2 usage or not confirmed; 3 stack
#       outputs missing; the gate's own codes from step 1 (3: the DB is still in use here).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

rb_common_args "$@"
set -- ${RB_ARGS[@]+"${RB_ARGS[@]}"}
db=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --yes) RB_YES=1 ;;
    -*) rb_die 2 "unknown option $1" ;;
    *)
      [[ -z $db ]] || rb_die 2 "one DB only"
      db=$1
      ;;
  esac
  shift
done
[[ -n $db ]] || rb_die 2 "usage: $RB_PROG [--stack FILE|-] [--yes] DB"
[[ -f $db ]] || rb_die 2 "no such file: $db"
rb_load_stack

echo "$RB_PROG: 1/3 the integrity gate on $db (stop every engine using it first)" >&2
rc=0
"$RB_REPO/scripts/host/keel-db-gate" prepare "$db" >/dev/null || rc=$?
[[ $rc -eq 0 ]] || rb_die "$rc" "$db did not pass the gate: do not carry it forward. Take the newest backup that passes 'scripts/host/keel-db-gate verify' instead (docs/RUNBOOK.md \"Migrate the DB\")"
sha=$(rb_sha256 "$db")

rb_confirm "This replaces $RB_DB on $RB_ADDRESS with $db (sha256 $sha), stopping $RB_SERVICE meanwhile."
incoming=/home/$RB_USER/keel-incoming
name=incoming-$(date -u +%Y%m%dT%H%M%SZ).db
echo "$RB_PROG: 2/3 upload to $incoming/$name" >&2
rb_ssh -- "umask 077 && mkdir -p $incoming && cat > $incoming/.$name.partial && mv $incoming/.$name.partial $incoming/$name" <"$db" ||
  rb_die 1 "the upload failed; nothing on the host changed"
there=$(rb_ssh -- sha256sum "$incoming/$name" | cut -d' ' -f1)
if [[ $there != "$sha" ]]; then
  rb_ssh -- rm -f "$incoming/$name" || true
  rb_die 1 "the uploaded file's sha256 ($there) is not the local one ($sha); nothing on the host changed; run again"
fi

echo "$RB_PROG: 3/3 adopt on the host" >&2
rb_ssh -- sudo "$(rb_tool ops)" adopt "$incoming/$name" || rb_die 1 "adopt failed on the host (see above)"
