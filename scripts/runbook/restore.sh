#!/usr/bin/env bash
# restore.sh — put a verified backup in place of the live DB: keel-ops checks the backup while the
# engine still runs, stops the engine, restores (keel-db-restore keeps the current DB aside as
# DB.pre-restore-<utc>), starts the engine and confirms it stays up. docs/RUNBOOK.md "Restore".
#
# Usage: scripts/runbook/restore.sh [--stack FILE|-] --list
#        scripts/runbook/restore.sh [--stack FILE|-] [--yes] NAME|latest
#   --list  the backups on the host (name, bytes), oldest first
#   NAME    a backup's file name from --list, e.g. engine-20261122T031700Z.db; latest: the newest
#   --yes   do not ask (without a terminal it is required)
# Exit: 0 restored and the engine steady; 1 failed (the DB is as it was, the engine started again);
#       255 ssh failed; 2 usage or not confirmed; 3 stack outputs missing.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

rb_common_args "$@"
set -- ${RB_ARGS[@]+"${RB_ARGS[@]}"}
list=0 name=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --list) list=1 ;;
    --yes) RB_YES=1 ;;
    -*) rb_die 2 "unknown option $1" ;;
    *)
      [[ -z $name ]] || rb_die 2 "one backup name only"
      name=$1
      ;;
  esac
  shift
done
[[ $list == 1 || -n $name ]] || rb_die 2 "usage: $RB_PROG [--stack FILE|-] --list | [--yes] NAME|latest"
[[ -z $name || $name == latest || $name =~ ^[A-Za-z0-9._-]+-[0-9]{8}T[0-9]{6}Z\.db$ ]] ||
  rb_die 2 "'$name' is not a backup name (NAME-YYYYMMDDTHHMMSSZ.db from --list, or latest)"
rb_load_stack
if [[ $list == 1 ]]; then
  rb_ssh -- sudo "$(rb_tool ops)" backups
  exit 0
fi
rb_confirm "This stops $RB_SERVICE on $RB_ADDRESS and replaces $RB_DB with the backup $name."
rb_ssh -- sudo "$(rb_tool ops)" restore "$name" || rb_die 1 "the restore failed (see above)"
