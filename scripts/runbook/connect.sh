#!/usr/bin/env bash
# connect.sh — an SSH session on the host as the deploy user, trusting only the host key pinned in
# the stack outputs (docs/RUNBOOK.md "Connect").
#
# Usage: scripts/runbook/connect.sh [--stack FILE|-] [-- COMMAND…]
#   Writes keel_known_hosts from the stack's knownHosts, then runs ssh with
#   StrictHostKeyChecking=yes and that file only. With COMMAND, runs it instead of a login shell.
# Exit: ssh's (the command's exit status; 255 when the connection or the host key check failed);
#       2 usage; 3 stack outputs missing.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

rb_common_args "$@"
set -- ${RB_ARGS[@]+"${RB_ARGS[@]}"}
case ${1:-} in
  --) shift ;;
  "") ;;
  *) rb_die 2 "usage: $RB_PROG [--stack FILE|-] [-- COMMAND…]" ;;
esac
rb_load_stack
rb_ssh -- "$@"
