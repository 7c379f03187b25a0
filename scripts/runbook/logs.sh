#!/usr/bin/env bash
# logs.sh — the engine's journal (or the health check's), read as the deploy user, who is in the
# systemd-journal group. docs/RUNBOOK.md "Logs".
#
# Usage: scripts/runbook/logs.sh [--stack FILE|-] [-f] [-n LINES] [--since WHEN] [--health]
#   -f         follow (Ctrl-C to stop)
#   -n LINES   the last LINES lines (default 200)
#   --since    e.g. "1 hour ago", "2026-11-22 03:00", "today" (journalctl --since)
#   --health   keel-health.service (the timer's runs and alerts) instead of the engine
# Exit: journalctl's; 255 ssh failed; 2 usage; 3 stack outputs missing.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

rb_common_args "$@"
set -- ${RB_ARGS[@]+"${RB_ARGS[@]}"}
lines=200 since="" follow=0 health=0
while [[ $# -gt 0 ]]; do
  case $1 in
    -f) follow=1 ;;
    -n)
      [[ $# -ge 2 && $2 =~ ^[0-9]+$ ]] || rb_die 2 "-n needs a number of lines"
      lines=$2
      shift
      ;;
    --since)
      [[ $# -ge 2 && $2 =~ ^[A-Za-z0-9\ :.+-]+$ ]] || rb_die 2 "--since needs a time such as '1 hour ago' or '2026-11-22 03:00'"
      since=$2
      shift
      ;;
    --health) health=1 ;;
    *) rb_die 2 "usage: $RB_PROG [--stack FILE|-] [-f] [-n LINES] [--since WHEN] [--health]" ;;
  esac
  shift
done
rb_load_stack
unit=$RB_SERVICE
[[ $health == 0 ]] || unit=keel-health.service
remote=(journalctl --unit="$unit" --no-pager --output=short-iso --lines="$lines")
# The remote shell splits words again: the only value with spaces goes in single quotes (checked above).
[[ -z $since ]] || remote+=("--since='$since'")
[[ $follow == 0 ]] || remote+=(--follow)
rb_ssh -- "${remote[@]}"
