#!/usr/bin/env bash
# backup-now.sh — a verified backup of the live DB now, with the configured retention (keel-ops
# backup → keel-db-backup, the engine keeps running). docs/RUNBOOK.md "Backup now".
#
# Usage: scripts/runbook/backup-now.sh [--stack FILE|-]
# Prints the new backup's path on the host.
# Exit: 0 done; 1 the backup failed (its reason on stderr; the status file records it for the
#       health report); 255 ssh failed; 2 usage; 3 stack outputs missing.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

rb_common_args "$@"
case ${RB_ARGS[0]:-} in
  "") ;;
  *) rb_die 2 "usage: $RB_PROG [--stack FILE|-]" ;;
esac
rb_load_stack
rb_ssh -- sudo "$(rb_tool ops)" backup || rb_die 1 "the backup failed (see above); sudo keel-health --only backup on the host shows the recorded reason"
