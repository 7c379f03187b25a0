#!/usr/bin/env bash
# status.sh — the host's health report (keel-health, run remotely as root through sudo).
# docs/RUNBOOK.md "Status".
#
# Usage: scripts/runbook/status.sh [--stack FILE|-] [--json] [--only CHECK[,CHECK…]]
# Exit: keel-health's: 0 healthy, 1 degraded, 2 down, 3 the check could not run;
#       255 ssh failed (host unreachable or its key is not the pinned one); 2 usage here as well.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

rb_common_args "$@"
set -- ${RB_ARGS[@]+"${RB_ARGS[@]}"}
remote=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --json) remote+=(--json) ;;
    --only)
      [[ $# -ge 2 && $2 =~ ^[a-z0-9,]+$ ]] || rb_die 2 "--only needs check names, e.g. --only engine,db"
      remote+=(--only "$2")
      shift
      ;;
    *) rb_die 2 "usage: $RB_PROG [--stack FILE|-] [--json] [--only CHECK[,CHECK…]]" ;;
  esac
  shift
done
rb_load_stack
rb_ssh -- sudo "$(rb_tool health)" ${remote[@]+"${remote[@]}"}
